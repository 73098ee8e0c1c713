"""The unit that flows between stages: Arrow data plus where it came from.

A :class:`Batch` holds an Arrow table whose hidden column ``_sluiceway_row_id``
numbers the rows as the extractor produced them (0..n-1). The runner keeps that id
through every transform, so a row that fails anywhere can be traced back to its
source partition and position, and that position to a stable ``dlq_id``.

Rows of a batch are grouped by source partition, in the order of
:attr:`Batch.positions`; ``PartitionSpan.rows`` says how many rows each covers.
"""

from __future__ import annotations

import array
import bisect
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

__all__ = [
    "HIDDEN_PREFIX",
    "META_LINE",
    "META_POSITION",
    "META_RAW",
    "ROW_ID",
    "Batch",
    "arange",
    "PartitionSpan",
    "Position",
    "drop_hidden",
]

Position: TypeAlias = Any
"""A JSON-serialisable source position: an int offset, a cursor tuple, a dict."""

HIDDEN_PREFIX = "_sluiceway_"
ROW_ID = "_sluiceway_row_id"

#: Optional per-row source metadata columns (``Batch.meta``), aligned with row ids.
META_POSITION = "position"
META_LINE = "line"
META_RAW = "raw"


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The part of one source partition a batch covers: ``[start, end)`` and its row count."""

    start: Position
    end: Position
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "rows": self.rows}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionSpan:
        return cls(start=data["start"], end=data["end"], rows=int(data["rows"]))


_arange_lock = threading.Lock()
_arange_cache: pa.Array | None = None


def arange(n: int) -> pa.Array:
    """``0 .. n-1`` as int64, a zero-copy slice of a cached buffer (no per-row Python)."""
    global _arange_cache  # noqa: PLW0603 - a grow-only cache shared by all batches
    cache = _arange_cache
    if cache is None or len(cache) < n:
        with _arange_lock:
            cache = _arange_cache
            if cache is None or len(cache) < n:
                size = max(n, 2 * (len(cache) if cache is not None else 0), 1024)
                buffer = pa.py_buffer(array.array("q", range(size)))
                cache = pa.Array.from_buffers(pa.int64(), size, [None, buffer])
                _arange_cache = cache
    return cache.slice(0, n)


def drop_hidden(table: pa.Table) -> pa.Table:
    """The table without sluiceway's hidden columns, as a user or a sink sees it."""
    hidden = [name for name in table.column_names if name.startswith(HIDDEN_PREFIX)]
    return table.drop_columns(hidden) if hidden else table


@dataclass(frozen=True, slots=True)
class RowOrigin:
    """Where one row came from: its source partition and position (both may be unknown)."""

    partition: str | None
    position: str
    line: int | None
    raw: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    """Arrow rows plus sequence number, source positions and row lineage."""

    data: pa.Table
    seq: int
    positions: Mapping[str, PartitionSpan]
    meta: pa.Table | None = None
    upper_bound: Position = None
    extracted_rows: int = 0
    rejected: pa.Table | None = None
    _cumulative: tuple[int, ...] = field(default=(), repr=False, compare=False)

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_source(
        cls,
        data: pa.Table | pa.RecordBatch,
        positions: Mapping[str, PartitionSpan],
        *,
        meta: pa.Table | None = None,
        upper_bound: Position = None,
        seq: int = -1,
        rejected: pa.Table | None = None,
    ) -> Batch:
        """Wrap freshly extracted rows; the runner assigns ``seq`` when it takes the batch.

        ``rejected`` holds source records that could not be decoded or cast (schema
        :data:`~sluiceway.core.dlq.REJECT_SCHEMA`); they count as read and go straight
        to the dead-letter queue. They are not part of ``positions[...].rows``.
        """
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if ROW_ID in table.column_names:
            table = table.drop_columns([ROW_ID])
        n = table.num_rows
        covered = sum(span.rows for span in positions.values())
        if covered != n:
            raise ValueError(f"positions cover {covered} rows but the batch holds {n}")
        if meta is not None and meta.num_rows != n:
            raise ValueError(f"meta has {meta.num_rows} rows but the batch holds {n}")
        table = table.append_column(ROW_ID, arange(n))
        return cls(
            data=table,
            seq=seq,
            positions=dict(positions),
            meta=meta,
            upper_bound=upper_bound,
            extracted_rows=n,
            rejected=rejected if rejected is not None and rejected.num_rows else None,
        )

    def sequenced(self, seq: int) -> Batch:
        return replace(self, seq=seq)

    def with_data(self, data: pa.Table) -> Batch:
        """The same batch holding other rows (which must carry ``ROW_ID``)."""
        if ROW_ID not in data.column_names:
            raise ValueError(f"batch data must carry the {ROW_ID} column")
        return replace(self, data=data)

    # -- views --------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        return int(self.data.num_rows)

    @property
    def num_rejected(self) -> int:
        return int(self.rejected.num_rows) if self.rejected is not None else 0

    def __len__(self) -> int:
        return self.num_rows

    @property
    def row_ids(self) -> pa.ChunkedArray:
        return self.data.column(ROW_ID)

    def to_arrow(self) -> pa.Table:
        """The rows without hidden columns."""
        return drop_hidden(self.data)

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        frame = pl.from_arrow(self.to_arrow())
        assert isinstance(frame, pl.DataFrame)
        return frame

    def to_pandas(self) -> pd.DataFrame:
        frame: pd.DataFrame = self.to_arrow().to_pandas()
        return frame

    def to_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.to_arrow().to_pylist()
        return records

    def iter_partitions(self) -> Iterator[tuple[str, PartitionSpan]]:
        yield from self.positions.items()

    # -- lineage ------------------------------------------------------------------

    def origins(self, row_ids: Sequence[int]) -> list[RowOrigin]:
        """Source partition and position of each given row id (for dead-letter entries)."""
        cumulative = self._cumulative or self._compute_cumulative()
        names = list(self.positions)
        spans = list(self.positions.values())
        # Only the asked-for rows of the meta columns are turned into Python objects.
        known = [rid for rid in row_ids if 0 <= rid < self.extracted_rows]
        at = {rid: i for i, rid in enumerate(known)}
        meta_pos = _meta_column(self.meta, META_POSITION, known)
        meta_line = _meta_column(self.meta, META_LINE, known)
        meta_raw = _meta_column(self.meta, META_RAW, known)
        out: list[RowOrigin] = []
        for rid in row_ids:
            if rid < 0 or rid >= self.extracted_rows:
                # A row a non-row-wise transform created: no single source row.
                out.append(RowOrigin(None, f"seq{self.seq}/derived{rid}", None, None))
                continue
            idx = bisect.bisect_right(cumulative, rid)
            name, span = names[idx], spans[idx]
            k = rid - (cumulative[idx - 1] if idx else 0)
            j = at[rid]
            if meta_pos is not None and meta_pos[j] is not None:
                position = str(meta_pos[j])
            elif isinstance(span.start, int) and not isinstance(span.start, bool):
                position = str(span.start + k)
            else:
                position = f"{_compact(span.start)}+{k}"
            line = meta_line[j] if meta_line is not None else None
            raw = meta_raw[j] if meta_raw is not None else None
            out.append(RowOrigin(name, position, line, raw))
        return out

    def _compute_cumulative(self) -> tuple[int, ...]:
        total = 0
        acc: list[int] = []
        for span in self.positions.values():
            total += span.rows
            acc.append(total)
        return tuple(acc)


def _meta_column(meta: pa.Table | None, name: str, rows: Sequence[int]) -> list[Any] | None:
    if meta is None or name not in meta.column_names:
        return None
    values: list[Any] = meta.column(name).take(pa.array(rows, type=pa.int64())).to_pylist()
    return values


def _compact(value: Position) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
