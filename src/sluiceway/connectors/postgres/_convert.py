"""From what the ADBC driver decoded to the source's Arrow schema, vectorised.

The driver hands ``numeric`` over as text, ``json``/``jsonb`` and enums as
extension types, and ``interval`` as Arrow's month_day_nano. :class:`Converter`
turns a decoded chunk into the planned schema without a Python loop over rows:
numeric text is cast with :func:`~sluiceway.engines.cast.checked_cast`, so a value
that does not fit its decimal (``NaN``, ``Infinity``, too many digits for an
unconstrained column's declared scale) sets its row aside with the column, the
value and the reason — the row is dead-lettered, never nulled or rounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.connectors.postgres._catalog import INTERVAL_TYPE, SourceColumn
from sluiceway.core.batch import arange
from sluiceway.core.dlq import REJECT_SCHEMA, rows_to_json
from sluiceway.engines.cast import CastFailure, checked_cast

__all__ = ["Converted", "Converter", "interval_to_struct", "struct_to_interval"]


@dataclass(frozen=True, slots=True)
class Converted:
    """Rows in the source's schema, and the rows that did not fit it (``REJECT_SCHEMA``)."""

    table: pa.Table
    rejected: pa.Table | None


class Converter:
    """Converts decoded chunks of one source to its planned schema.

    ``types`` are declared column types (checked casts applied after the type
    mapping); ``position_of`` names a rejected row's position (its key) from the
    raw chunk and the row's index.
    """

    def __init__(
        self, columns: Sequence[SourceColumn], types: Mapping[str, pa.DataType] | None = None
    ) -> None:
        self.columns = list(columns)
        self.types = dict(types or {})
        fields = []
        for column in self.columns:
            f = column.field
            if column.name in self.types:
                f = f.with_type(self.types[column.name])
            fields.append(f)
        self.schema = pa.schema(fields)
        self._casts = {
            c.name: self.types.get(c.name, c.arrow)
            for c in self.columns
            if c.read == "numeric" or c.name in self.types
        }

    def convert(
        self,
        raw: pa.Table,
        partition: str,
        position_of: Callable[[pa.Table, int], str],
    ) -> Converted:
        """``raw`` (as decoded, same columns in the same order) in the planned schema."""
        arrays = [_column(column, raw.column(i)) for i, column in enumerate(self.columns)]
        table = pa.Table.from_arrays(arrays, names=[c.name for c in self.columns])
        rejected: pa.Table | None = None
        if self._casts and table.num_rows:
            result = checked_cast(table, self._casts)
            if result.failures:
                rejected = _rejects(table, raw, result.failures, partition, position_of)
            table = result.table
        if table.schema.types != self.schema.types:
            table = table.cast(self.schema)
        return Converted(pa.Table.from_arrays(table.columns, schema=self.schema), rejected)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


def _column(column: SourceColumn, data: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.read == "native":
        return data if data.type == column.arrow else data.cast(column.arrow)
    if column.read in ("json", "enum", "numeric"):
        chunks = [_storage(chunk) for chunk in data.chunks]
        target = pa.string()
        return pa.chunked_array([c.cast(target) for c in chunks], type=target)
    if column.read == "interval":
        return pa.chunked_array(
            [interval_to_struct(chunk) for chunk in data.chunks], type=INTERVAL_TYPE
        )
    return data.cast(column.arrow)


def _storage(chunk: pa.Array) -> pa.Array:
    """The storage array of an extension array (the driver's numeric, JSON and enum types)."""
    return chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk


def interval_to_struct(chunk: pa.Array) -> pa.Array:
    """month_day_nano → struct<months, days, nanos>, by reinterpreting the 16-byte values."""
    if pa.types.is_struct(chunk.type):
        return chunk
    n = len(chunk)
    if n == 0:
        return pa.array([], type=INTERVAL_TYPE)
    data = chunk.buffers()[1]
    ints = pa.Array.from_buffers(pa.int32(), 4 * (chunk.offset + n), [None, data])
    longs = pa.Array.from_buffers(pa.int64(), 2 * (chunk.offset + n), [None, data])
    rows = pc.add(arange(n), chunk.offset)
    months = ints.take(pc.multiply(rows, 4))
    days = ints.take(pc.add(pc.multiply(rows, 4), 1))
    nanos = longs.take(pc.add(pc.multiply(rows, 2), 1))
    mask = chunk.is_null() if chunk.null_count else None
    return pa.StructArray.from_arrays([months, days, nanos], fields=list(INTERVAL_TYPE), mask=mask)


def struct_to_interval(chunk: pa.Array) -> pa.Array:
    """struct<months, days, nanos> → month_day_nano (for writing an interval back)."""
    n = len(chunk)
    if n == 0:
        return pa.array([], type=pa.month_day_nano_interval())
    assert isinstance(chunk, pa.StructArray)
    months, days, nanos = (chunk.field(i) for i in range(3))
    months = pc.fill_null(months.cast(pa.int64()), 0)
    days = pc.fill_null(days.cast(pa.int64()), 0)
    nanos = pc.fill_null(nanos.cast(pa.int64()), 0)
    # A value is 16 bytes: int32 months, int32 days, int64 nanos (little-endian), so
    # its first int64 lane is months | days << 32; interleave that lane with nanos.
    low = pc.bit_wise_or(pc.bit_wise_and(months, 0xFFFFFFFF), pc.shift_left(days, 32))
    lanes = pa.concat_arrays([low, nanos]).take(_interleave_index(n))
    validity = chunk.is_valid().buffers()[1] if chunk.null_count else None
    return pa.Array.from_buffers(
        pa.month_day_nano_interval(), n, [validity, lanes.buffers()[1]], null_count=chunk.null_count
    )


def _interleave_index(n: int) -> pa.Array:
    """[0, n, 1, n+1, 2, n+2, …]: takes ``low`` and ``nanos`` lanes alternately."""
    i = arange(2 * n)
    half = pc.shift_right(i, 1)
    odd = pc.bit_wise_and(i, 1)
    return pc.add(half, pc.multiply(odd, n))


def _rejects(
    table: pa.Table,
    raw: pa.Table,
    failures: Sequence[CastFailure],
    partition: str,
    position_of: Callable[[pa.Table, int], str],
) -> pa.Table:
    rows = [f.row for f in failures]
    raw_rows = rows_to_json(table.take(pa.array(rows, pa.int64())))
    entries = [
        {
            "partition": partition,
            "position": position_of(raw, row),
            "line": None,
            "raw": text,
            "error_type": "CastError",
            "error_message": failure.message,
            "column": failure.column,
            "value": failure.value,
        }
        for row, failure, text in zip(rows, failures, raw_rows, strict=True)
    ]
    return pa.Table.from_pylist(entries, schema=REJECT_SCHEMA)


def key_json(values: Sequence[str | None]) -> str:
    """A row's key as compact JSON (its position in dead-letter entries)."""
    return json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)
