"""Parquet files, read with ``ParquetFile.iter_batches``; a resume skips whole row groups.

A record is a row; its position is the row's index in the file. Rows carry no line
number. Declared ``schema`` types are checked casts: a value that does not fit is
dead-lettered with the row, never nulled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.connectors.files._fs import FileSet, SourceFile
from sluiceway.connectors.files._records import Chunk, Rows, fill_around
from sluiceway.connectors.files._source import FileExtractor, FileReader
from sluiceway.core.errors import SourceError

__all__ = ["ParquetExtractor"]


class ParquetExtractor(FileExtractor):
    """Parquet files, each file one partition; ``columns`` reads a subset."""

    type_name = "parquet"

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 50_000,
        schema: dict[str, str | pa.DataType] | None = None,
        incremental: bool = True,
        columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(path, batch_size=batch_size, schema=schema, incremental=incremental)
        self.columns = list(columns) if columns is not None else None

    def reader(self, fileset: FileSet, file: SourceFile) -> FileReader:
        return _ParquetReader(self, fileset, file)


class _ParquetReader(FileReader):
    lines = False

    def __init__(self, source: ParquetExtractor, fileset: FileSet, file: SourceFile) -> None:
        self.source = source
        self.file = file
        self._handle: Any = None
        try:
            self._handle = fileset.fs.open(file.path, "rb")
            # pre_buffer fetches a row group's column chunks in a few coalesced ranges,
            # concurrently: on an object store that is one round trip per row group
            # instead of one per column. Groups are read one at a time, so it holds at
            # most one group; on a local disk it only costs that memory.
            self._file = pq.ParquetFile(self._handle, pre_buffer=not fileset.local)
        except FileNotFoundError as exc:
            self.close()
            raise SourceError(f"input file {file.key} does not exist") from exc
        except (OSError, pa.ArrowException) as exc:
            self.close()
            raise SourceError(f"cannot read {file.key} as Parquet: {exc}") from exc
        schema: pa.Schema = self._file.schema_arrow
        wanted = source.columns if source.columns is not None else list(schema.names)
        missing = [c for c in [*wanted, *source.schema] if c not in wanted or c not in schema.names]
        if missing:
            self.close()
            raise SourceError(
                f"{file.key}: column(s) {sorted(set(missing))} are not read from the file "
                f"(its columns: {schema.names}, columns read: {wanted})"
            )
        self._columns = source.columns
        self.targets = {name: source.schema.get(name) or schema.field(name).type for name in wanted}

    def chunks(self, start: int, batch_size: int, stop_at: int | None) -> Iterator[Chunk]:
        meta = self._file.metadata
        base, first = 0, meta.num_row_groups
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if base + rows > start:
                first = group
                break
            base += rows
        groups = list(range(first, meta.num_row_groups))
        for table in self._batches(groups, batch_size):
            n = table.num_rows
            yield Chunk([Rows(table, fill_around(base, n, ()), None)], [], base + n)
            base += n
            if stop_at is not None and base >= stop_at:
                return

    def _batches(self, groups: list[int], batch_size: int) -> Iterator[pa.Table]:
        """Tables of ``batch_size`` rows (the last may be short), read one row group at a time.

        One reader over all the row groups keeps buffers that grow with the file
        (seen here: 292 MB at 1M rows, 324 MB at 5M); a reader per row group holds
        at most one group's and is faster. Batches still span row groups: the
        pieces are joined without copying (the table then has two chunks).
        """
        pending: list[pa.RecordBatch] = []
        count = 0
        for group in groups:
            for piece in self._file.iter_batches(
                batch_size=batch_size, row_groups=[group], columns=self._columns, use_threads=False
            ):
                if piece.num_rows == 0:
                    continue
                pending.append(piece)
                count += piece.num_rows
                while count >= batch_size:
                    table = pa.Table.from_batches(pending)
                    rest = table.slice(batch_size)
                    yield table.slice(0, batch_size)
                    pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(pending)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
