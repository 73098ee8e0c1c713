"""The type vocabulary of pipeline specs, mapped to Arrow types.

Accepted names (case-insensitive): ``int8 … int64``, ``uint8 … uint64``, ``int``,
``integer``, ``bigint``, ``smallint``, ``float``/``float32``, ``double``/``float64``,
``bool``/``boolean``, ``string``/``str``/``text``/``utf8``/``json``, ``binary``/``bytes``,
``date``, ``time``, ``timestamp`` (= ``timestamp[us]``), ``timestamp[ms]``,
``timestamp[us, UTC]``, ``timestamptz`` (= ``timestamp[us, UTC]``), ``datetime``,
``decimal(p, s)`` (also ``numeric(p, s)``, ``decimal128(p, s)``).
"""

from __future__ import annotations

import re

import pyarrow as pa

from sluiceway.core.errors import ConfigError

__all__ = ["parse_type", "type_name"]

_SIMPLE: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "smallint": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "integer": pa.int64(),
    "bigint": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float": pa.float32(),
    "float32": pa.float32(),
    "real": pa.float32(),
    "double": pa.float64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "str": pa.string(),
    "text": pa.string(),
    "utf8": pa.string(),
    "json": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "bytes": pa.binary(),
    "date": pa.date32(),
    "date32": pa.date32(),
    "time": pa.time64("us"),
    "time64": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "datetime": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}

_DECIMAL = re.compile(r"^(?:decimal|numeric|decimal128)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_TIMESTAMP = re.compile(r"^timestamp\s*\[\s*(s|ms|us|ns)\s*(?:,\s*(?:tz\s*=\s*)?([^\]]+?))?\s*\]$")


def parse_type(text: str) -> pa.DataType:
    """The Arrow type a spec's type name stands for; :class:`ConfigError` if unknown."""
    key = text.strip().lower()
    if key in _SIMPLE:
        return _SIMPLE[key]
    match = _DECIMAL.match(key)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ConfigError(
                f"decimal({precision}, {scale}): need 1 <= precision <= 38, scale <= precision"
            )
        return pa.decimal128(precision, scale)
    match = _TIMESTAMP.match(text.strip())
    if match:
        unit, tz = match.group(1).lower(), match.group(2)
        return pa.timestamp(unit, tz=tz.strip() if tz else None)
    raise ConfigError(
        f"unknown type {text!r}; use e.g. int64, double, bool, string, date, "
        "timestamp[us], timestamp[us, UTC], decimal(10, 2)"
    )


def type_name(dtype: pa.DataType) -> str:
    """The spec name for an Arrow type (round-trips through :func:`parse_type`)."""
    if pa.types.is_decimal(dtype):
        return f"decimal({dtype.precision}, {dtype.scale})"
    if pa.types.is_timestamp(dtype):
        return f"timestamp[{dtype.unit}, {dtype.tz}]" if dtype.tz else f"timestamp[{dtype.unit}]"
    if dtype == pa.date32():
        return "date"
    if dtype == pa.bool_():
        return "bool"
    return str(dtype)
