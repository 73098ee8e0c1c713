"""Rows back from their DLQ form: ``row`` (JSON per row) and ``row_types`` (Arrow types).

The DLQ stores each row as it entered the failing stage as a JSON object, with the
Arrow type of every column beside it (``str(pa.DataType)``, e.g. ``int64``,
``timestamp[us, tz=UTC]``, ``decimal128(10, 2)``, ``list<item: string>``).
:func:`rebuild_rows` turns such rows back into an Arrow table of exactly those
types, so a replayed row enters its stage as it left the first time.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.dlq import has_binary as _has_binary

__all__ = ["parse_arrow_type", "rebuild_rows"]

_SIMPLE: dict[str, pa.DataType] = {
    "null": pa.null(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "halffloat": pa.float16(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "string_view": pa.string_view(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "binary_view": pa.binary_view(),
    "date32[day]": pa.date32(),
    "date64[ms]": pa.date64(),
}
_UNIT = re.compile(r"(timestamp|time32|time64|duration)\[(s|ms|us|ns)(?:, tz=([^\]]+))?\]")
_DECIMAL = re.compile(r"decimal(32|64|128|256)\((\d+), (-?\d+)\)")
_FIXED_BINARY = re.compile(r"fixed_size_binary\[(\d+)\]")
_DICTIONARY = re.compile(r"dictionary<values=(.+), indices=(\w+), ordered=([01])>")


class _TypeParser:
    """Recursive descent over the text of ``str(pa.DataType)``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"cannot read Arrow type {self.text!r}: {what} at {self.pos}")

    def parse(self) -> pa.DataType:
        dtype = self.type_()
        if self.pos != len(self.text):
            raise self.error("unexpected text")
        return dtype

    def _take(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def _expect(self, token: str) -> None:
        if not self._take(token):
            raise self.error(f"expected {token!r}")

    def _bracketed(self, opening: str, closing: str) -> str:
        """The text up to the matching ``closing`` (consumed), nesting respected."""
        depth, start = 1, self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == opening:
                depth += 1
            elif char == closing:
                depth -= 1
                if depth == 0:
                    return self.text[start : self.pos - 1]
        raise self.error(f"unclosed {opening!r}")

    def field(self) -> pa.Field:
        colon = self.text.find(": ", self.pos)
        if colon < 0:
            raise self.error("expected 'name: type'")
        name = self.text[self.pos : colon]
        self.pos = colon + 2
        dtype = self.type_()
        nullable = not self._take(" not null")
        return pa.field(name, dtype, nullable)

    def type_(self) -> pa.DataType:
        rest = self.text[self.pos :]
        for prefix, build in (("list<", pa.list_), ("large_list<", pa.large_list)):
            if rest.startswith(prefix):
                self.pos += len(prefix)
                item = self.field()
                self._expect(">")
                return build(item)
        if rest.startswith("fixed_size_list<"):
            self.pos += len("fixed_size_list<")
            item = self.field()
            self._expect(">[")
            size = int(self._bracketed("[", "]"))
            return pa.list_(item, size)
        if rest.startswith("struct<"):
            self.pos += len("struct<")
            fields: list[pa.Field] = []
            while not self._take(">"):
                if fields:
                    self._expect(", ")
                fields.append(self.field())
            return pa.struct(fields)
        if rest.startswith("map<"):
            self.pos += len("map<")
            key = self.type_()
            self._expect(", ")
            value = self.type_()
            keys_sorted = self._take(", keys_sorted")
            self._expect(">")
            return pa.map_(key, value, keys_sorted)
        if rest.startswith("dictionary<"):
            self.pos += len("dictionary<")
            inner = "dictionary<" + self._bracketed("<", ">") + ">"
            match = _DICTIONARY.fullmatch(inner)
            if match is None:
                raise self.error("bad dictionary type")
            values = _TypeParser(match.group(1)).parse()
            indices = _SIMPLE.get(match.group(2))
            if indices is None:
                raise self.error("bad dictionary indices")
            return pa.dictionary(indices, values, ordered=match.group(3) == "1")
        for pattern in (_UNIT, _DECIMAL, _FIXED_BINARY):
            match = pattern.match(rest)
            if match is not None:
                self.pos += match.end()
                return _from_match(pattern, match)
        word = re.match(r"[a-z_0-9]+(?:\[(?:day|ms)\])?", rest)
        if word is not None and word.group(0) in _SIMPLE:
            self.pos += word.end()
            return _SIMPLE[word.group(0)]
        raise self.error("unknown type")


def _from_match(pattern: re.Pattern[str], match: re.Match[str]) -> pa.DataType:
    if pattern is _UNIT:
        kind, unit, tz = match.group(1), match.group(2), match.group(3)
        if kind == "timestamp":
            return pa.timestamp(unit, tz=tz)
        if kind == "duration":
            return pa.duration(unit)
        return pa.time32(unit) if kind == "time32" else pa.time64(unit)
    if pattern is _DECIMAL:
        bits, precision, scale = match.group(1), int(match.group(2)), int(match.group(3))
        factory = {"32": "decimal32", "64": "decimal64", "128": "decimal128", "256": "decimal256"}
        dtype: pa.DataType = getattr(pa, factory[bits])(precision, scale)
        return dtype
    return pa.binary(int(match.group(1)))


def parse_arrow_type(text: str) -> pa.DataType:
    """The Arrow type whose ``str()`` is ``text`` (the inverse of ``str(pa.DataType)``)."""
    return _TypeParser(text.strip()).parse()


_NUM = r"(\d+(?:\.\d+)?)"
_ISO_DURATION = re.compile(rf"^(-)?P(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$")
_CLOCK_DURATION = re.compile(
    r"^(-?\d+) days?, (\d+):(\d\d):(\d\d(?:\.\d+)?)$|^(\d+):(\d\d):(\d\d(?:\.\d+)?)$"
)


def _duration(text: str) -> dt.timedelta:
    """``PT3S`` / ``P1DT2H`` (ISO 8601, as Polars writes) or ``1 day, 0:00:03`` (Python)."""
    iso = _ISO_DURATION.match(text)
    if iso is not None:
        sign = -1 if iso.group(1) else 1
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups()[1:])
        return sign * dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    clock = _CLOCK_DURATION.match(text)
    if clock is None:
        raise ValueError(f"not a duration: {text!r}")
    g = clock.groups()
    days, (h, m, s) = (int(g[0]), g[1:4]) if g[0] is not None else (0, g[4:7])
    return dt.timedelta(days=days, hours=int(h), minutes=int(m), seconds=float(s))


def _py(value: Any, dtype: pa.DataType) -> Any:
    """A JSON value as the Python value ``pa.array`` takes for ``dtype``."""
    if value is None:
        return None
    if pa.types.is_dictionary(dtype):
        return _py(value, dtype.value_type)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return [_py(v, dtype.value_type) for v in value]
    if pa.types.is_fixed_size_list(dtype):
        return [_py(v, dtype.value_type) for v in value]
    if pa.types.is_map(dtype):
        pairs = value.items() if isinstance(value, dict) else value
        return [(_py(k, dtype.key_type), _py(v, dtype.item_type)) for k, v in pairs]
    if pa.types.is_struct(dtype):
        return {f.name: _py(value.get(f.name), f.type) for f in dtype}
    if not isinstance(value, str):
        return value
    if pa.types.is_timestamp(dtype):
        return dt.datetime.fromisoformat(value)
    if pa.types.is_date(dtype):
        return dt.date.fromisoformat(value[:10])
    if pa.types.is_time(dtype):
        return dt.time.fromisoformat(value)
    if pa.types.is_duration(dtype):
        return _duration(value)
    if pa.types.is_decimal(dtype):
        return decimal.Decimal(value)
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return base64.b64decode(value)
    if pa.types.is_fixed_size_binary(dtype) or pa.types.is_binary_view(dtype):
        return base64.b64decode(value)
    return value


def _column(values: list[Any], dtype: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(dtype):
        plain = _column(values, dtype.value_type).dictionary_encode()
        return plain.cast(dtype)
    if not _has_binary(dtype):  # pa.array would take base64 text as the bytes themselves
        try:
            return pa.array(values, type=dtype)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    textual = pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or pa.types.is_decimal(dtype)
    if textual and all(v is None or isinstance(v, str) for v in values):
        try:
            return pc.cast(pa.array(values, pa.string()), dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return pa.array([_py(v, dtype) for v in values], type=dtype)


def rebuild_rows(rows: Sequence[str], row_types: str) -> pa.Table:
    """The Arrow table of ``rows`` (JSON objects) with the column types of ``row_types``.

    Raises :class:`ValueError` when a type or a value cannot be read back.
    """
    try:
        types: dict[str, str] = json.loads(row_types)
        schema = pa.schema([pa.field(name, parse_arrow_type(t)) for name, t in types.items()])
        records = [json.loads(text) for text in rows]
        columns = [_column([r.get(f.name) for r in records], f.type) for f in schema]
    except (pa.ArrowException, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot rebuild rows of types {row_types}: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=schema)
