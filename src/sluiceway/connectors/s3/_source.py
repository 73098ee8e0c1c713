"""The object-store source (``type: s3``): the file sources' formats over S3, read in parallel.

Parsing, record-exact rejects, positions, resume and exact replay are the file
connectors' (:mod:`sluiceway.connectors.files`); this module adds what objects in
a bucket need:

- an ``s3fs`` filesystem configured from the spec (endpoint, region, credentials),
  whose listing also yields each object's ETag — the fingerprint that makes a run
  read only new or changed objects;
- bounded concurrency: up to ``concurrency`` objects are read at once, their
  batches handed on in key order;
- Hive partition directories (``date=2026-11-01/``) as columns;
- a corrupt object (not Parquet, a broken gzip stream) dead-lettered with its key
  while the other objects load; it is read again only once it changes;
- a read that fails on a network error is retried, resuming after the last batch
  already handed on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Literal

import pyarrow as pa
import structlog

from sluiceway.connectors.files import (
    CsvExtractor,
    FileExtractor,
    FileSet,
    JsonlExtractor,
    ParquetExtractor,
    SourceFile,
    file_position,
)
from sluiceway.connectors.s3._errors import is_transient
from sluiceway.connectors.s3._listing import S3FileSet, hive_values
from sluiceway.connectors.s3._objects import read_concurrently
from sluiceway.connectors.s3._options import S3Options, is_s3_uri, split_uri
from sluiceway.core.batch import Batch, PartitionSpan
from sluiceway.core.dlq import reject_table
from sluiceway.core.errors import SourceError
from sluiceway.core.stages import SourceContext
from sluiceway.engines.cast import checked_cast

__all__ = [
    "ObjectSource",
    "S3CsvExtractor",
    "S3JsonlExtractor",
    "S3ParquetExtractor",
    "is_corrupt",
]

_log = structlog.get_logger("sluiceway.connectors.s3")

#: OSError messages of codecs that found bytes they cannot decode (not the network).
_CODEC_FAILURE = re.compile(
    r"inflate|deflate|decompress|zstd|gzip|bz2|lz4|snappy|brotli|corrupt|truncated|magic",
    re.IGNORECASE,
)


class _BadPartitionValueError(ValueError):
    """A Hive partition value does not fit the column's declared type."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_corrupt(exc: BaseException) -> bool:
    """Whether reading failed on the object's bytes (as opposed to reaching them).

    Only positive evidence counts: Arrow's decoding errors, invalid text, an early
    end of a compressed stream, a codec's complaint. A failure of the network or of
    permissions is never taken for a corrupt object, so it cannot be skipped.
    """
    causes = list(_chain(exc))
    if any(is_transient(c) or isinstance(c, FileNotFoundError | PermissionError) for c in causes):
        return False
    for cause in causes:
        if isinstance(
            cause,
            pa.ArrowInvalid
            | pa.ArrowNotImplementedError
            | pa.ArrowTypeError
            | pa.ArrowKeyError
            | UnicodeError
            | EOFError
            | _BadPartitionValueError,
        ):
            return True
        if type(cause) is OSError and _CODEC_FAILURE.search(str(cause)):
            return True
    return False


def _retryable(exc: BaseException) -> bool:
    return any(is_transient(c) for c in _chain(exc))


class ObjectSource(FileExtractor):
    """What the S3 source adds to a file source of any format (a mixin, first in the MRO).

    ``options`` reach ``s3://`` paths; any other fsspec path (a local folder) is
    read as the file sources read it, so a pipeline moves from a folder to a bucket
    by changing its path. ``concurrency`` objects are read at once;
    ``hive_partitioning`` turns ``name=value`` directories into string columns (or
    the types ``schema`` declares for them); ``read_retries`` retries a read that
    failed on a network error, resuming after the last batch handed on.
    ``reader="arrow"`` opens objects with pyarrow's C++ S3 client (no GIL held while
    reading); ``"s3fs"`` keeps every request in ``s3fs``.
    """

    type_name = "s3"

    def __init__(
        self,
        path: str,
        *,
        options: S3Options | None = None,
        concurrency: int = 4,
        hive_partitioning: bool = True,
        read_retries: int = 3,
        retry_delay: float = 0.5,
        reader: Literal["arrow", "s3fs"] = "arrow",
        label: str = "s3",
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        self.label = label
        self.read_with = reader
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.options = options or S3Options()
        self.concurrency = concurrency
        self.hive_partitioning = hive_partitioning
        self.read_retries = read_retries
        self.retry_delay = retry_delay
        self.partition_types: dict[str, pa.DataType] = {}
        self._partition_values: dict[str, dict[str, pa.Scalar]] = {}

    @property
    def name(self) -> str:
        return self.label

    # -- where the objects are -------------------------------------------------------

    @property
    def fileset(self) -> FileSet:
        if self._fileset is None:
            if is_s3_uri(self.path):
                what = f"source {self.path}"
                fs = partial(self.options.filesystem, what)
                arrow = client = None
                if self.read_with == "arrow":
                    arrow = self.options.arrow_filesystem(split_uri(self.path).bucket)
                    client = self.options.client(what)
                self._fileset = S3FileSet(self.path, fs, arrow, client)
            else:
                self._fileset = FileSet(self.path)
        return self._fileset

    def open(self, context: SourceContext) -> None:
        """List the objects, and set the columns their Hive directories give aside."""
        self._fileset = None  # a fresh listing (and fresh ETags) for every run
        self._partition_values.clear()
        super().open(context)
        if not self.hive_partitioning:
            return
        names: dict[str, None] = {}
        for file in self.files():
            for name in hive_values(file.path):
                names[name] = None
        for name in names:
            # Declared types of partition columns are applied here, not by the reader
            # (the column is not in the object).
            declared = self.schema.pop(name, None)
            if declared is not None or name not in self.partition_types:
                self.partition_types[name] = declared or pa.string()

    def describe(self) -> Mapping[str, Any]:
        return {"type": self.label, "path": self.path, "concurrency": self.concurrency}

    # -- reading ---------------------------------------------------------------------

    def extract(self) -> Iterator[Batch]:
        files = self.files()
        if not files:
            _log.warning("no_input_files", source=self.label, path=self.path)
        tasks: list[Callable[[], Iterator[Batch]]] = []
        for file in files:
            fp = self.fileset.fingerprint(file.path)
            start = self._resume_row(file, fp)
            if start is not None:
                tasks.append(partial(self._read_object, file, fp, start))
        yield from read_concurrently(
            tasks,
            concurrency=self.concurrency,
            stop=self.context.stop,
            name=f"sluiceway-{self.label}",
        )

    def _read_object(self, file: SourceFile, fp: str, start: int) -> Iterator[Batch]:
        """One object's batches; a network failure is retried from the last batch on."""
        row, attempt = start, 0
        while True:
            try:
                for batch in self._read(file, fp, row, self.batch_size):
                    yield batch
                    end = batch.positions[file.key].end
                    row = int(end["row"])
                return
            except SourceError as exc:
                if attempt >= self.read_retries or not _retryable(exc):
                    raise
                attempt += 1
                delay = self.retry_delay * 2 ** (attempt - 1)
                _log.warning(
                    "object_read_retried",
                    source=self.label,
                    file=file.key,
                    row=row,
                    attempt=attempt,
                    delay=delay,
                    error=str(exc),
                )
                time.sleep(delay)

    def _read(
        self, file: SourceFile, fp: str, start: int, size: int, stop_at: int | None = None
    ) -> Iterator[Batch]:
        """The file sources' batches plus partition columns; a corrupt object as a reject."""
        row = start
        try:
            for read in super()._read(file, fp, start, size, stop_at):
                batch = self._with_partitions(file, read)
                row = int(batch.positions[file.key].end["row"])
                yield batch
        except SourceError as exc:
            if _vanished(exc):
                _log.warning("input_object_vanished", source=self.label, file=file.key)
                return
            if not is_corrupt(exc):
                raise
            yield self._corrupt(file, fp, row, exc)
        except _BadPartitionValueError as exc:
            yield self._corrupt(file, fp, row, exc)
        except Exception as exc:
            if not _retryable(exc) and not type(exc).__module__.startswith("botocore"):
                raise
            raise SourceError(f"cannot read {file.key}: {exc}") from exc

    def _corrupt(self, file: SourceFile, fp: str, row: int, exc: BaseException) -> Batch:
        """A batch of no rows whose one rejected record names the object and the error.

        Its end position is ``done``: the object is not read again until it changes.
        """
        _log.warning("corrupt_object", source=self.label, file=file.key, error=str(exc))
        rejected = reject_table(
            [
                {
                    "partition": file.key,
                    "position": str(row),
                    "error_type": "DecodeError",
                    "error_message": (
                        f"corrupt object {file.key} (from record {row} on): {exc}; "
                        "it is skipped until it changes"
                    ),
                }
            ]
        )
        return Batch.from_source(
            pa.table({}),
            {file.key: PartitionSpan(file_position(row, fp), file_position(row, fp, done=True), 0)},
            rejected=rejected,
        )

    # -- Hive partitions -------------------------------------------------------------

    def _values(self, file: SourceFile) -> dict[str, pa.Scalar]:
        cached = self._partition_values.get(file.key)
        if cached is not None:
            return cached
        raw = hive_values(file.path)
        values: dict[str, pa.Scalar] = {}
        for name, dtype in self.partition_types.items():
            text = raw.get(name)
            if text is None:
                values[name] = pa.scalar(None, dtype)
                continue
            result = checked_cast(pa.table({name: pa.array([text])}), {name: dtype})
            if not result.ok:
                raise _BadPartitionValueError(
                    f"partition directory {name}={text!r} does not fit the declared type {dtype}"
                )
            values[name] = result.table.column(name)[0]
        self._partition_values[file.key] = values
        return values

    def _with_partitions(self, file: SourceFile, batch: Batch) -> Batch:
        if not self.partition_types:
            return batch
        data = batch.data
        n = data.num_rows
        for name, value in self._values(file).items():
            if name in data.column_names:
                continue  # the object's own column wins
            data = data.append_column(name, pa.repeat(value, n))
        return batch.with_data(data)


def _vanished(exc: BaseException) -> bool:
    return any(isinstance(c, FileNotFoundError) for c in _chain(exc))


class S3ParquetExtractor(ObjectSource, ParquetExtractor):
    """Parquet objects, read by row group."""


class S3CsvExtractor(ObjectSource, CsvExtractor):
    """CSV objects (optionally gzip/zstd/bz2), streamed in blocks."""


class S3JsonlExtractor(ObjectSource, JsonlExtractor):
    """JSON Lines objects (optionally gzip/zstd/bz2), one object per line."""
