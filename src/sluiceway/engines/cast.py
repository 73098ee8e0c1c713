"""Checked casts: values that do not fit the declared type are reported, never nulled.

:func:`checked_cast` casts whole columns with Arrow's safe cast. Only when a column
fails does it look for the failing rows — vectorised through Polars' non-strict
cast (a value that was not null and became null did not fit) — and, where Arrow
and Polars disagree, value by value for that column alone. The rows that fit are
cast; the rows that do not are returned with the column, the value and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.batch import arange
from sluiceway.engines.types import type_name

__all__ = ["CastFailure", "CastResult", "checked_cast"]

_TRUE = ["true", "t", "yes", "y", "1", "on"]
_FALSE = ["false", "f", "no", "n", "0", "off"]


@dataclass(frozen=True, slots=True)
class CastFailure:
    row: int
    column: str
    value: str
    message: str


@dataclass(slots=True)
class CastResult:
    """``table`` holds the rows that fit (cast); ``failures`` one entry per row that did not."""

    table: pa.Table
    bad_rows: list[int] = field(default_factory=list)
    failures: list[CastFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def _convert(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast one column, raising on any value that does not fit.

    Beyond Arrow's safe cast: strings become booleans by a fixed vocabulary, and
    strings without a UTC offset become instants in the target's zone (with an
    offset they are converted).
    """
    if _is_text(arr.type) and target == pa.bool_():
        norm = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        is_true = pc.is_in(norm, value_set=pa.array(_TRUE))
        is_false = pc.is_in(norm, value_set=pa.array(_FALSE))
        bad = pc.and_(pc.is_valid(arr), pc.invert(pc.or_(is_true, is_false)))
        if pc.any(bad).as_py():
            raise pa.ArrowInvalid("not a boolean")
        return pc.if_else(pc.is_valid(arr), is_true, pa.scalar(None, pa.bool_()))
    if _is_text(arr.type) and pa.types.is_timestamp(target) and target.tz:
        has_offset = pc.fill_null(pc.match_substring_regex(arr, _OFFSET), False)
        null = pa.scalar(None, arr.type)
        aware = pc.cast(pc.if_else(has_offset, arr, null), target, safe=True)
        naive = pc.cast(pc.if_else(has_offset, null, arr), pa.timestamp(target.unit), safe=True)
        local = pc.assume_timezone(naive, target.tz)
        return pc.coalesce(aware, pc.cast(local, target))
    if _is_text(arr.type) and pa.types.is_time(target):
        import polars as pl

        series = pl.from_arrow(arr)
        assert isinstance(series, pl.Series)
        try:
            parsed = series.str.to_time(strict=True)
        except pl.exceptions.PolarsError as exc:
            raise pa.ArrowInvalid(str(exc)) from exc
        return pc.cast(parsed.to_arrow(), target)
    if pa.types.is_integer(arr.type) and pa.types.is_decimal(target):
        # Arrow casts int64 only to decimals wide enough for any int64; go through one.
        wide = pa.decimal128(38, target.scale)
        return pc.cast(pc.cast(arr, wide, safe=True), target, safe=True)
    if pa.types.is_floating(arr.type) and pa.types.is_decimal(target):
        cast = pc.cast(arr, target, safe=True)
        # Reject values the scale would round (1.234 -> 1.23), not float noise (0.1 + 0.2).
        drift = pc.abs(pc.subtract(pc.cast(cast, pa.float64()), pc.cast(arr, pa.float64())))
        tolerance = pc.add(pc.multiply(pc.abs(pc.cast(arr, pa.float64())), 1e-12), 1e-12)
        if not pc.all(pc.fill_null(pc.less_equal(drift, tolerance), True)).as_py():
            raise pa.ArrowInvalid("value would be rounded to fit the decimal scale")
        return cast
    return pc.cast(arr, target, safe=True)


def _polars_bad_mask(arr: pa.Array, target: pa.DataType) -> pa.Array | None:
    """Rows Polars' non-strict cast turns to null: the values that do not fit."""
    try:
        import polars as pl

        series = pl.from_arrow(arr)
        assert isinstance(series, pl.Series)
        if _is_text(arr.type) and pa.types.is_timestamp(target):
            out = series.str.to_datetime(strict=False, time_unit=target.unit)
        elif _is_text(arr.type) and pa.types.is_date(target):
            out = series.str.to_date(strict=False)
        else:
            empty = pl.from_arrow(pa.array([], type=target))
            assert isinstance(empty, pl.Series)
            out = series.cast(empty.dtype, strict=False)
        mask = (series.is_not_null() & out.is_null()).to_arrow()
    except Exception:
        return None
    return pc.cast(mask, pa.bool_())


def _scalar_bad_mask(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Value by value (slow; used only when the vectorised paths disagree)."""
    bad: list[bool] = []
    for i in range(len(arr)):
        item = arr.slice(i, 1)
        if item.null_count:
            bad.append(False)
            continue
        try:
            _convert(item, target)
            bad.append(False)
        except _CAST_ERRORS:
            bad.append(True)
    return pa.array(bad, type=pa.bool_())


def _cast_column(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array | None, pa.Array | None]:
    """(cast values, None) when all fit, else (None, mask of the rows that do not)."""
    if arr.type == target:
        return arr, None
    try:
        return _convert(arr, target), None
    except _CAST_ERRORS:
        pass
    bad = _polars_bad_mask(arr, target)
    if bad is not None and pc.any(bad).as_py():
        try:
            _convert(pc.filter(arr, pc.invert(bad)), target)
        except _CAST_ERRORS:
            pass
        else:
            # Polars may flag values Arrow accepts (e.g. mixed timestamp formats):
            # confirm each flagged value on its own.
            flagged = pc.indices_nonzero(bad)
            confirmed = _scalar_bad_mask(arr.take(flagged), target)
            rows = pc.filter(flagged, confirmed)
            mask = pc.is_in(arange(len(arr)), value_set=pc.cast(rows, pa.int64()))
            return None, mask
    return None, _scalar_bad_mask(arr, target)


def checked_cast(table: pa.Table, types: Mapping[str, pa.DataType]) -> CastResult:
    """Cast ``types``' columns of ``table``; rows with a value that does not fit are set aside.

    A row with several bad values is reported once, for its first bad column.
    Columns not in ``types`` are left as they are.
    """
    missing = [name for name in types if name not in table.column_names]
    if missing:
        raise KeyError(f"columns not found: {', '.join(missing)}")
    combined = table.combine_chunks()
    casts: dict[str, pa.Array | None] = {}
    bad_any: pa.Array | None = None
    first_bad: dict[int, tuple[str, str]] = {}
    for name, target in types.items():
        arr = combined.column(name).combine_chunks()
        values, bad = _cast_column(arr, target)
        casts[name] = values
        if bad is None:
            continue
        for i in pc.indices_nonzero(bad).to_pylist():
            if i not in first_bad:
                first_bad[i] = (name, str(arr[i].as_py()))
        bad_any = bad if bad_any is None else pc.or_(bad_any, bad)

    if bad_any is None:
        out = combined
        for name, values in casts.items():
            assert values is not None
            out = out.set_column(out.column_names.index(name), name, values)
        return CastResult(out)

    keep = pc.invert(bad_any)
    out = combined.filter(keep)
    for name, target in types.items():
        values = casts[name]
        if values is not None:
            column = pc.filter(values, keep)
        else:
            kept = out.column(name).combine_chunks()
            # Only nulls may remain when no value of this column fits the type at all.
            column = (
                _convert(kept, target)
                if kept.null_count < len(kept)
                else pa.nulls(len(kept), type=target)
            )
        out = out.set_column(out.column_names.index(name), name, column)
    rows = sorted(first_bad)
    failures = [
        CastFailure(
            row=i,
            column=first_bad[i][0],
            value=first_bad[i][1],
            message=(
                f"value {first_bad[i][1]!r} in column {first_bad[i][0]!r} does not fit "
                f"{type_name(types[first_bad[i][0]])}"
            ),
        )
        for i in rows
    ]
    return CastResult(out, rows, failures)
