"""Records of one file on their way to batches: numbering, cutting, casting.

Every format reader turns a file into :class:`Chunk` objects: decoded rows with
their record index (0-based, counting rejected records too) and physical line,
plus the records it could not decode. :func:`pieces` regroups the chunks into
batch-sized pieces ``[start, end)`` of record indexes, never spanning files, and
:func:`conform` casts a piece's rows to the file's column types, setting aside the
values that do not fit. All of it is vectorised; Python runs per rejected record
only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.dlq import reject_table, rows_to_json
from sluiceway.engines.cast import CastFailure, CastResult, checked_cast
from sluiceway.engines.types import type_name

__all__ = [
    "Chunk",
    "Conformed",
    "Hint",
    "Piece",
    "Reject",
    "Rows",
    "Targets",
    "cast_rows",
    "conform",
    "fill_around",
    "locate",
    "pieces",
    "rejects_table",
    "widen",
]


@dataclass(frozen=True, slots=True)
class Hint:
    """A column type to unify with, not to enforce (nested JSON whose fields may grow)."""

    type: pa.DataType


#: Column types of a file: enforced (a type), unified with a hint (:class:`Hint`), or
#: None: whatever type the rows bring, unified per batch.
Targets = Mapping[str, pa.DataType | Hint | None]


@dataclass(frozen=True, slots=True)
class Rows:
    """Decoded rows with each row's record index and (for text formats) physical line."""

    table: pa.Table
    index: pa.Array
    line: pa.Array | None

    def between(self, lo: int, hi: int) -> Rows | None:
        """The rows whose record index is in ``[lo, hi)`` (indexes are ascending)."""
        n = len(self.index)
        if n == 0:
            return None
        first = int(self.index[0].as_py())
        last = int(self.index[n - 1].as_py())
        if first >= lo and last < hi:
            return self
        a = int(pc.sum(pc.less(self.index, lo)).as_py() or 0)
        b = int(pc.sum(pc.less(self.index, hi)).as_py() or 0)
        if b <= a:
            return None
        line = self.line.slice(a, b - a) if self.line is not None else None
        return Rows(self.table.slice(a, b - a), self.index.slice(a, b - a), line)


@dataclass(frozen=True, slots=True)
class Reject:
    """A source record that is not a row: it could not be decoded, or a value did not fit."""

    index: int
    line: int | None
    raw: str | None
    error_type: str
    message: str
    column: str | None = None
    value: str | None = None


@dataclass(slots=True)
class Chunk:
    """Consecutive records of a file, ending before record index ``end``."""

    rows: list[Rows]
    rejects: list[Reject]
    end: int


@dataclass(slots=True)
class Piece:
    """The records ``[start, end)`` of a file that make one batch."""

    start: int
    end: int
    rows: list[Rows] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def take(self, chunk: Chunk, hi: int) -> None:
        """Add the chunk's records in ``[self.end, hi)``."""
        lo = self.end
        for rows in chunk.rows:
            part = rows.between(lo, hi)
            if part is not None:
                self.rows.append(part)
        self.rejects.extend(r for r in chunk.rejects if lo <= r.index < hi)
        self.end = max(self.end, min(chunk.end, hi))


def pieces(
    chunks: Iterator[Chunk], start: int, size: int, stop_at: int | None = None
) -> Iterator[tuple[Piece, bool]]:
    """Cut a file's chunks into pieces of ``size`` records from ``start`` on.

    Records before ``start`` (already committed) and from ``stop_at`` on are dropped.
    Each piece comes with ``last``: True for the final piece of the file. A piece is
    held back until a later record shows it is not the last, so a file always ends
    with a piece marked last, and an empty file gives one empty piece.
    """
    current = Piece(start, start)
    boundary = start + size
    held: Piece | None = None
    for chunk in chunks:
        limit = chunk.end if stop_at is None else min(chunk.end, stop_at)
        while limit > current.end:
            before = current.end
            current.take(chunk, min(limit, boundary))
            if held is not None and current.end > before:
                yield held, False
                held = None
            if current.end < boundary:
                break
            held = current
            current = Piece(boundary, boundary)
            boundary += size
        if stop_at is not None and chunk.end >= stop_at:
            break
    if current.end > current.start:
        if held is not None:
            yield held, False
        yield current, True
    else:
        yield (held if held is not None else current), True


def fill_around(first: int, count: int, holes: Sequence[int]) -> pa.Array:
    """``count`` ascending integers from ``first`` on, skipping the ``holes`` (ascending).

    Vectorised: item ``i`` lands on ``first + i + #{j: holes[j] - j <= first + i}``.
    Without holes (every Parquet chunk, most text ones) it is numpy's ``arange``:
    no polars import, and no Python value made into an Arrow scalar (pyarrow's first
    such conversion imports pandas), on the thread that reads.
    """
    useful = [h for h in holes if h >= first]
    if not (useful and count):
        import numpy as np

        values = np.arange(first, first + count, dtype=np.int64)
        return pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(values)])
    import polars as pl

    base = pl.int_range(first, first + count, dtype=pl.Int64, eager=True)
    shifted = pl.Series([h - j for j, h in enumerate(useful)], dtype=pl.Int64)
    base = base + shifted.search_sorted(base, side="right").cast(pl.Int64)
    array: pa.Array = base.to_arrow()
    return array.cast(pa.int64())


def widen(dtype: pa.DataType) -> pa.DataType | None:
    """The type to hold a column whose first block was inferred as ``dtype``.

    Seconds and milliseconds widen to microseconds so later values with a fraction
    still fit; None for types a later block cannot be checked against (null, time,
    nested), which then stay as decoded.
    """
    if pa.types.is_null(dtype) or pa.types.is_time(dtype) or pa.types.is_nested(dtype):
        return None
    if pa.types.is_timestamp(dtype) and dtype.unit in ("s", "ms"):
        return pa.timestamp("us", tz=dtype.tz)
    return dtype


@dataclass(slots=True)
class Conformed:
    """A piece's rows cast to the file's types, and the records whose values did not fit."""

    table: pa.Table
    index: pa.Array
    line: pa.Array | None
    rejects: list[Reject]


def conform(rows: Sequence[Rows], targets: Targets, where: str, *, lines: bool) -> Conformed:
    """Align every part to the same columns and cast them; misfits become CastError rejects.

    Columns with a target type are cast to it; the others take the type the parts
    (and the column's hint) agree on by Arrow's permissive promotion, else the
    first of them. Columns
    absent from a part are null there. ``where`` (the partition key) starts messages;
    ``lines`` says whether the parts carry physical line numbers.
    """
    types = _resolve(rows, targets)
    tables: list[pa.Table] = []
    indexes: list[pa.Array] = []
    line_parts: list[pa.Array] = []
    rejects: list[Reject] = []
    for part in rows:
        table = part.table
        n = table.num_rows
        for name, dtype in types.items():
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(n, type=dtype))
        table = table.select(list(types))
        casts = {
            name: dtype for name, dtype in types.items() if table.schema.field(name).type != dtype
        }
        index, line = part.index, part.line
        if casts:
            result = cast_rows(table, casts)
            if result.failures:
                raws = rows_to_json(table.take(result.bad_rows))
                for failure, raw in zip(result.failures, raws, strict=True):
                    at = int(index[failure.row].as_py())
                    ln = line[failure.row].as_py() if line is not None else None
                    rejects.append(
                        Reject(
                            index=at,
                            line=ln,
                            raw=raw,
                            error_type="CastError",
                            message=f"{locate(where, at, ln)}: {failure.message}",
                            column=failure.column,
                            value=failure.value,
                        )
                    )
                bad = pa.array(result.bad_rows, type=pa.int64())
                keep = pc.invert(pc.is_in(fill_around(0, n, ()), value_set=bad))
                index = index.filter(keep)
                line = line.filter(keep) if line is not None else None
            table = result.table
        tables.append(table)
        indexes.append(index)
        if line is not None:
            line_parts.append(line)
    schema = pa.schema([pa.field(name, dtype) for name, dtype in types.items()])
    if not types:  # rows without columns (``{}`` lines): concatenating would lose them
        total = sum(t.num_rows for t in tables)
        table = pa.table([pa.nulls(total)], names=["_"]).drop_columns(["_"])
    else:
        table = pa.concat_tables(tables) if tables else schema.empty_table()
    empty = pa.nulls(0, pa.int64())  # not pa.array([]): that imports pandas
    index = pa.concat_arrays(indexes) if indexes else empty
    line_out = (pa.concat_arrays(line_parts) if line_parts else empty) if lines else None
    return Conformed(table, index, line_out, rejects)


def cast_rows(table: pa.Table, casts: Mapping[str, pa.DataType]) -> CastResult:
    """:func:`~sluiceway.engines.cast.checked_cast`, also for casts Arrow cannot do at all.

    When a column's type cannot be cast to the target (a JSON object to a string, a
    string to a time), every non-null value of it is a misfit.
    """
    impossible = {name: t for name, t in casts.items() if not _castable(table, name, t)}
    if not impossible:
        return checked_cast(table, casts)
    first_bad: dict[int, tuple[str, str]] = {}
    for name in impossible:
        column = table.column(name)
        for i in pc.indices_nonzero(pc.is_valid(column)).to_pylist():
            first_bad.setdefault(i, (name, _show(column[i].as_py())))
    n = table.num_rows
    bad = pa.array(sorted(first_bad), type=pa.int64())
    kept = fill_around(0, n, ()).filter(pc.invert(pc.is_in(fill_around(0, n, ()), value_set=bad)))
    rest = table.take(kept)
    for name, dtype in impossible.items():
        rest = rest.set_column(
            rest.column_names.index(name), name, pa.nulls(rest.num_rows, type=dtype)
        )
    inner = checked_cast(rest, {k: v for k, v in casts.items() if k not in impossible})
    failures = [
        CastFailure(
            i,
            name,
            value,
            f"value {value!r} in column {name!r} does not fit {type_name(impossible[name])}",
        )
        for i, (name, value) in first_bad.items()
    ]
    mapped = kept.to_pylist()
    failures += [CastFailure(mapped[f.row], f.column, f.value, f.message) for f in inner.failures]
    failures.sort(key=lambda f: f.row)
    return CastResult(inner.table, [f.row for f in failures], failures)


def _show(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _castable(table: pa.Table, name: str, target: pa.DataType) -> bool:
    try:
        pc.cast(pa.nulls(1, type=table.schema.field(name).type), target)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    except pa.ArrowInvalid:
        return True
    return True


def _resolve(rows: Sequence[Rows], targets: Targets) -> dict[str, pa.DataType]:
    seen: dict[str, list[pa.DataType]] = {name: [] for name in targets}
    for part in rows:
        for f in part.table.schema:
            seen.setdefault(f.name, []).append(f.type)
    resolved: dict[str, pa.DataType] = {}
    for name, found in seen.items():
        declared = targets.get(name)
        if isinstance(declared, pa.DataType):
            resolved[name] = declared
            continue
        typed = [t for t in found if not pa.types.is_null(t)]
        if isinstance(declared, Hint):
            typed.insert(0, declared.type)
        if not typed:
            resolved[name] = pa.null()
            continue
        try:
            unified = pa.unify_schemas(
                [pa.schema([pa.field(name, t)]) for t in typed], promote_options="permissive"
            )
            resolved[name] = unified.field(name).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            resolved[name] = typed[0]
    return resolved


def locate(where: str, index: int, line: int | None) -> str:
    """``file:line`` for text formats, ``file record N`` otherwise (N is 0-based)."""
    return f"{where}:{line}" if line is not None else f"{where} record {index}"


def rejects_table(partition: str, rejects: Sequence[Reject]) -> pa.Table:
    """The rejects as a :data:`~sluiceway.core.dlq.REJECT_SCHEMA` table, in record order."""
    ordered = sorted(rejects, key=lambda r: r.index)
    return reject_table(
        [
            {
                "partition": partition,
                "position": str(r.index),
                "line": r.line,
                "raw": r.raw,
                "error_type": r.error_type,
                "error_message": r.message,
                "column": r.column,
                "value": r.value,
            }
            for r in ordered
        ]
    )
