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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.connectors.postgres._catalog import INTERVAL_TYPE, SCALED_NAN, SourceColumn
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
        self._scaled = [i for i, c in enumerate(self.columns) if c.read == "scaled"]

    def convert(
        self,
        raw: pa.Table,
        partition: str,
        position_of: Callable[[pa.Table, int], str],
    ) -> Converted:
        """``raw`` (as decoded, same columns in the same order) in the planned schema."""
        nan_rejects: pa.Table | None = None
        if self._scaled and raw.num_rows:
            raw = self._unpack_scaled(raw)
            raw, nan_rejects = self._set_aside_nan(raw, partition, position_of)
        arrays = [_column(column, raw.column(i)) for i, column in enumerate(self.columns)]
        table = pa.Table.from_arrays(arrays, names=[c.name for c in self.columns])
        rejected: pa.Table | None = nan_rejects
        if self._casts and table.num_rows:
            result = checked_cast(table, self._casts)
            if result.failures:
                failing = table.take(pa.array([f.row for f in result.failures], pa.int64()))
                misfits = _rejects(failing, raw, result.failures, partition, position_of)
                rejected = misfits if rejected is None else pa.concat_tables([rejected, misfits])
            table = result.table
        if table.schema.types != self.schema.types:
            table = table.cast(self.schema)
        return Converted(pa.Table.from_arrays(table.columns, schema=self.schema), rejected)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def _unpack_scaled(self, raw: pa.Table) -> pa.Table:
        """Scaled columns, as ``numeric_send`` bytes, made their unscaled int64 values."""
        columns = list(raw.columns)
        for i in self._scaled:
            scale = self.columns[i].arrow.scale
            columns[i] = pa.chunked_array(
                [numeric_send_to_unscaled(chunk, scale) for chunk in columns[i].chunks],
                type=pa.int64(),
            )
        return pa.Table.from_arrays(columns, names=raw.column_names)

    def _set_aside_nan(
        self,
        raw: pa.Table,
        partition: str,
        position_of: Callable[[pa.Table, int], str],
    ) -> tuple[pa.Table, pa.Table | None]:
        """Rows whose scaled numeric is NaN, dead-lettered as misfits; the others."""
        # The sentinel is int64's minimum: a column whose minimum is above it has no NaN.
        # (A cheap test, and no Python value made into an Arrow scalar: pyarrow's first
        # such conversion imports pandas, ~0.2 s, on the thread that reads the table.)
        suspects = [i for i in self._scaled if pc.min(raw.column(i)).as_py() == SCALED_NAN]
        if not suspects:
            return raw, None
        bad: pa.Array | None = None
        for i in suspects:
            is_nan = pc.fill_null(pc.equal(raw.column(i), SCALED_NAN), False)
            bad = is_nan if bad is None else pc.or_(bad, is_nan)
        assert bad is not None
        rows = pc.indices_nonzero(bad)
        failures = []
        for row in rows.to_pylist():
            column = next(
                self.columns[i] for i in suspects if raw.column(i)[row].as_py() == SCALED_NAN
            )
            failures.append(
                CastFailure(
                    row=row,
                    column=column.name,
                    value="NaN",
                    message=f"value 'NaN' in column {column.name!r} does not fit {column.arrow}",
                )
            )
        taken = raw.take(rows)
        # The rows as PostgreSQL has them: NaN (or the number) in scaled columns.
        shown = pa.Table.from_arrays(
            [
                _scaled_text(taken.column(i), c)
                if c.read == "scaled"
                else _column(c, taken.column(i))
                for i, c in enumerate(self.columns)
            ],
            names=[c.name for c in self.columns],
        )
        rejects = _rejects(shown, raw, failures, partition, position_of)
        return raw.filter(pc.invert(bad)), rejects


def _column(column: SourceColumn, data: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.read == "scaled":
        return pa.chunked_array(
            [_unscaled_to_decimal(chunk, column.arrow) for chunk in data.chunks], type=column.arrow
        )
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


_POW10 = np.array([10**i for i in range(19)], dtype=np.int64)
_SPECIAL = 0xC000  # numeric_send's sign word for NaN (0xC000) and ±Infinity (0xD000, 0xF000)
_NEGATIVE = 0x4000


def numeric_send_to_unscaled(chunk: pa.Array, scale: int) -> pa.Array:
    """``numeric_send`` bytes → the value times 10^scale as int64, nulls kept; vectorised.

    The binary form is four big-endian 16-bit words (digit count, weight of the first
    digit in powers of 10000, sign, display scale), then the base-10000 digits:
    value = Σ digit[k] · 10000^(weight − k). Every value is an even number of bytes,
    so the whole data buffer reads as one array of 16-bit words. Times 10^scale, a
    digit group lands at 10^(4·(weight − k) + scale); a group below 10^0 straddles
    the scale and is divided down, exactly (a column's values carry at most
    ``scale`` fractional digits). Every term, and the sum, stays below 10^18 for
    p ≤ 18. NaN (and the infinities, which a numeric(p, s) column cannot hold)
    become :data:`SCALED_NAN`.
    """
    n = len(chunk)
    if n in (0, chunk.null_count):  # nothing to decode
        return pa.nulls(n, pa.int64())
    large = pa.types.is_large_binary(chunk.type)
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if large else np.int32)
    offsets = offsets[chunk.offset : chunk.offset + n + 1].astype(np.int64)
    base, end = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)  # 8 + 2 per digit; a null's slot is empty
    most = max(int(lengths.max()) // 2 - 4, 0)
    raw = np.frombuffer(data_buffer, dtype=np.uint8)[base:end]
    words = np.zeros(len(raw) // 2 + most + 4, dtype=np.int64)  # padded past the end
    words[: len(raw) // 2] = raw[: len(raw) // 2 * 2].view(">u2")
    at = (offsets[:-1] - base) // 2
    count = lengths // 2 - 4
    weight = words[at + 1]
    weight = np.where(weight >= 0x8000, weight - 0x10000, weight)
    sign = np.where(count >= 0, words[at + 2], 0)
    value = np.zeros(n, dtype=np.int64)
    for k in range(most):
        digit = words[at + 4 + k] * (count > k)
        power = 4 * (weight - k) + scale  # where this digit group lands in the result
        if scale % 4:  # a group straddling the scale: divide it down (exactly)
            digit //= _POW10[np.clip(-power, 0, 3)]
        value += digit * _POW10[np.clip(power, 0, 18)]
    value = np.where(sign == _NEGATIVE, -value, value)
    value[sign >= _SPECIAL] = SCALED_NAN
    validity = chunk.is_valid().buffers()[1] if chunk.null_count else None
    return pa.Array.from_buffers(
        pa.int64(), n, [validity, pa.py_buffer(value)], null_count=chunk.null_count
    )


def _unscaled_to_decimal(chunk: pa.Array, dtype: pa.DataType) -> pa.Array:
    """int64 unscaled values → decimal128 with the same digits, by reinterpreting bytes.

    A decimal128 value is the 16-byte little-endian two's complement of its unscaled
    integer: the int64 in the low half, its sign extension in the high half.
    """

    n = len(chunk)
    if n == 0:
        return pa.array([], type=dtype)
    if chunk.type != pa.int64():
        chunk = chunk.cast(pa.int64())
    # The data buffer as it is (slots under nulls hold anything; the validity masks
    # them): no fill_null(0), whose Python 0 would make pyarrow import pandas.
    values = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset : chunk.offset + n]
    lanes = np.empty(2 * n, dtype=np.int64)
    lanes[0::2] = values
    lanes[1::2] = values >> 63
    validity = chunk.is_valid().buffers()[1] if chunk.null_count else None
    return pa.Array.from_buffers(
        dtype, n, [validity, pa.py_buffer(lanes)], null_count=chunk.null_count
    )


def _scaled_text(data: pa.ChunkedArray, column: SourceColumn) -> pa.ChunkedArray:
    """A scaled numeric column as PostgreSQL spells it (NaN, or the decimal's text)."""
    chunks = []
    for chunk in data.chunks:
        nan = pc.fill_null(pc.equal(chunk, SCALED_NAN), False)
        number = _unscaled_to_decimal(pc.if_else(nan, 0, chunk), column.arrow).cast(pa.string())
        chunks.append(pc.if_else(nan, "NaN", number))
    return pa.chunked_array(chunks, type=pa.string())


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
    shown: pa.Table,
    raw: pa.Table,
    failures: Sequence[CastFailure],
    partition: str,
    position_of: Callable[[pa.Table, int], str],
) -> pa.Table:
    """Dead-letter entries for ``failures`` (rows of ``raw``); ``shown`` holds exactly
    the failing rows, in the same order, as the entries show them."""
    rows = [f.row for f in failures]
    raw_rows = rows_to_json(shown)
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
