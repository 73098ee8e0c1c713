"""File sinks: one file per batch, named by the batch's sequence number.

``part-000000000042.parquet`` holds batch 42. A part is written under a temporary
name, flushed to disk and renamed, so a reader never sees half a file and a replayed
batch (after a crash) overwrites its own part instead of adding its rows twice.
Part names come from the pipeline's state: reset the state and the sequence starts
over, overwriting the parts of the same numbers.

``mode: replace`` stages the run's parts in ``<path>/_staging/``; when the run
succeeds, :meth:`FileLoader.finish` moves them in and deletes the parts of earlier
runs. That swap is not atomic across files: a reader during it may see old and new
parts together. A crash in the middle is finished by the next run (a marker in
``_staging`` lists the new parts). A run that staged nothing leaves the target as is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sluiceway.core.batch import Batch
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import ConfigError, SinkError
from sluiceway.core.stages import BaseLoader, LoadResult, SinkContext

__all__ = ["CsvLoader", "FileLoader", "JsonlLoader", "LoadMode", "ParquetLoader", "part_name"]

LoadMode = Literal["append", "replace"]

STAGING = "_staging"
_MARKER = "_swap.json"


def part_name(seq: int, extension: str) -> str:
    """The file name of batch ``seq``'s part."""
    if seq < 0:
        raise ValueError("a batch needs its sequence number (assigned by the runner)")
    return f"part-{seq:012d}.{extension}"


class FileLoader(BaseLoader[dict[str, Any]]):
    """Writes each batch as one file under a local directory ``path``."""

    extension: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str], *, mode: LoadMode = "append") -> None:
        super().__init__()
        if mode not in ("append", "replace"):
            raise ValueError(f"mode must be 'append' or 'replace', not {mode!r}")
        text = os.fspath(path)
        if "://" in text and not text.startswith("file://"):
            raise ConfigError(f"file sinks write to a local directory, not {text}")
        self.path = Path(text.removeprefix("file://"))
        self.mode: LoadMode = mode
        self._parts = re.compile(rf"^part-\d{{12}}\.{re.escape(self.extension)}$")

    @abstractmethod
    def write(self, table: pa.Table, sink: BinaryIO) -> None:
        """Write ``table`` in this format to an open binary file."""

    @property
    def staging(self) -> Path:
        return self.path / STAGING

    @property
    def _target(self) -> Path:
        return self.staging if self.mode == "replace" else self.path

    def describe(self) -> Mapping[str, Any]:
        return {"type": self.type_name, "path": str(self.path), "mode": self.mode}

    def open(self, context: SinkContext) -> None:
        """Create the directory and prove it writable; finish a swap a crash interrupted."""
        super().open(context)
        target = self._target
        try:
            target.mkdir(parents=True, exist_ok=True)
            probe = target / f".sluiceway-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            for stale in target.glob(".part-*.tmp"):
                stale.unlink()
        except OSError as exc:
            raise SinkError(
                f"{self.type_name} sink directory {target} is not writable: {exc}"
            ) from exc
        if self.mode == "replace" and (self.staging / _MARKER).exists():
            self._swap()

    def load(self, batch: Batch) -> LoadResult:
        table = batch.to_arrow()
        name = part_name(batch.seq, self.extension)
        final = self._target / name
        temp = self._target / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            try:
                with open(temp, "wb") as fh:
                    self.write(table, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                crash_point("mid_load")
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            _fsync_dir(self._target)
        except OSError as exc:
            raise SinkError(f"cannot write {final}: {exc}") from exc
        return LoadResult(written=table.num_rows)

    def finish(self) -> None:
        """In replace mode, swap the staged parts in for the old ones."""
        if self.mode == "replace":
            self._swap()

    def _list(self, directory: Path) -> list[str]:
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if self._parts.match(p.name))

    def _swap(self) -> None:
        staged = self._list(self.staging)
        marker = self.staging / _MARKER
        try:
            names = set(staged)
            if marker.exists():
                names.update(json.loads(marker.read_text(encoding="utf-8")))
            if not names:
                return
            temp = self.staging / f".{_MARKER}.tmp"
            temp.write_text(json.dumps(sorted(names)), encoding="utf-8")
            os.replace(temp, marker)
            _fsync_dir(self.staging)
            for name in staged:
                os.replace(self.staging / name, self.path / name)
            for name in self._list(self.path):
                if name not in names:
                    (self.path / name).unlink()
            _fsync_dir(self.path)
            marker.unlink()
        except (OSError, ValueError) as exc:
            raise SinkError(f"cannot swap the staged parts into {self.path}: {exc}") from exc


class ParquetLoader(FileLoader):
    """Parquet parts (zstd-compressed by default)."""

    type_name = "parquet"
    extension = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: LoadMode = "append",
        compression: str = "zstd",
        row_group_size: int | None = None,
    ) -> None:
        super().__init__(path, mode=mode)
        self.compression = compression
        self.row_group_size = row_group_size
        self._dictionary: dict[str, bool] = {}

    def write(self, table: pa.Table, sink: BinaryIO) -> None:
        try:
            pq.write_table(
                table,
                sink,
                compression=self.compression,
                row_group_size=self.row_group_size,
                use_dictionary=[f.name for f in table.schema if self._wants_dictionary(table, f)],
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SinkError(f"cannot write Parquet to {self.path}: {exc}") from exc

    def _wants_dictionary(self, table: pa.Table, field: pa.Field) -> bool:
        """Dictionary-encode low-cardinality text; numbers and mostly-unique text go plain.

        A dictionary pays off for repeated values (a status, a country). For numbers,
        and for text whose values are mostly distinct (names, JSON documents), Parquet
        builds the dictionary, finds it too large and falls back to plain encoding:
        the hashing is wasted and the file ends up larger. Decided once per column
        and run, from the first batch's first ``_SAMPLE`` values.
        """
        kind = field.type
        if pa.types.is_dictionary(kind) or pa.types.is_boolean(kind):
            return True
        if not (
            pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
        ):
            return False
        decided = self._dictionary.get(field.name)
        if decided is None:
            sample = table.column(field.name).slice(0, _SAMPLE)
            present = len(sample) - sample.null_count
            if present < _SAMPLE // 10:
                return True  # too few values to judge: the writer's own fallback decides
            decided = pc.count_distinct(sample).as_py() <= present // 2
            self._dictionary[field.name] = decided
        return decided

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "compression": self.compression}


#: Values of a text column looked at to decide its Parquet encoding.
_SAMPLE = 10_000


class CsvLoader(FileLoader):
    """CSV parts with a header row; nested columns cannot be written as CSV."""

    type_name = "csv"
    extension = "csv"

    def write(self, table: pa.Table, sink: BinaryIO) -> None:
        try:
            pacsv.write_csv(table, sink)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            types = ", ".join(
                f"{f.name}: {f.type}" for f in table.schema if pa.types.is_nested(f.type)
            )
            hint = f" (nested columns {types}: use a jsonl or parquet sink)" if types else ""
            raise SinkError(f"cannot write CSV to {self.path}: {exc}{hint}") from exc


class JsonlLoader(FileLoader):
    """JSON Lines parts: one object per row; dates and timestamps as ISO strings."""

    type_name = "jsonl"
    extension = "jsonl"

    def write(self, table: pa.Table, sink: BinaryIO) -> None:
        import polars as pl

        try:
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            frame.write_ndjson(sink)
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise SinkError(f"cannot write JSON Lines to {self.path}: {exc}") from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
