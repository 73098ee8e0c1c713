"""The PostgreSQL sink's tables: names, column types, the staging copy and the ledger.

Nothing from data or config reaches SQL unescaped: identifiers go through
``psycopg.sql.Identifier`` and values through ``sql.Literal`` or parameters; the
only SQL type names used are ones the server itself printed (``format_type``) or
that ``to_regtype`` accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.connectors.postgres._catalog import INTERVAL_TYPE, PG_TYPE_KEY
from sluiceway.connectors.postgres._convert import struct_to_interval
from sluiceway.core.batch import Batch, Position, arange

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = [
    "LEDGER_TABLE",
    "ORDINAL",
    "STAGING_SUFFIX",
    "Column",
    "Target",
    "columns_of",
    "for_ingest",
    "ledger_rows",
    "wanted_type",
]

#: The table (in the target's schema) recording which source positions a target holds.
LEDGER_TABLE = "_sluiceway_ledger"
#: Appended to the table name to name the table a ``replace`` run writes into.
STAGING_SUFFIX = "__sluiceway_staging"
#: The row's index in the batch, carried through the staging table.
ORDINAL = "_sluiceway_ord"
_MAX_IDENTIFIER = 63


def _short(name: str, suffix: str) -> str:
    """``name + suffix`` within PostgreSQL's 63-byte identifier limit (hashed when longer)."""
    full = name + suffix
    if len(full.encode()) <= _MAX_IDENTIFIER:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    room = _MAX_IDENTIFIER - len(suffix.encode()) - len(digest) - 1
    head = name.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}{suffix}"


@dataclass(frozen=True, slots=True)
class Target:
    """A table as ``schema.name``; the schema defaults to the connection's first one."""

    schema: str
    name: str

    @classmethod
    def parse(cls, value: str, default_schema: str) -> Target:
        schema, _, name = value.rpartition(".")
        return cls(schema or default_schema, name)

    @property
    def ident(self) -> sql.Identifier:
        from psycopg import sql

        return sql.Identifier(self.schema, self.name)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def staging(self) -> Target:
        return Target(self.schema, _short(self.name, STAGING_SUFFIX))

    def sibling(self, name: str) -> Target:
        return Target(self.schema, name)

    def ledger(self) -> Target:
        return Target(self.schema, LEDGER_TABLE)

    def copy_table(self, pipeline: str) -> Target:
        """The unlogged table a batch is bulk-copied into before it is written."""
        digest = hashlib.sha256(f"{pipeline}\x1f{self.label}".encode()).hexdigest()[:12]
        return Target(self.schema, f"_sluiceway_copy_{digest}")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    """``format_type`` as the server prints it."""


def columns_of(cur: psycopg.Cursor[Any], table: Target) -> list[Column] | None:
    """A table's columns in order, or None when it does not exist."""
    rows = cur.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [table.ident.as_string(cur)],
    ).fetchall()
    if rows:
        return [Column(str(name), str(type_)) for name, type_ in rows]
    exists = cur.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [table.ident.as_string(cur)]
    ).fetchone()
    return [] if exists and exists[0] else None


# -- Arrow → the bulk copy ------------------------------------------------------------


def for_ingest(table: pa.Table) -> pa.Table:
    """The batch in types the ADBC driver can ``COPY``, plus the ordinal column.

    Intervals (``struct<months, days, nanos>``) become month_day_nano; other
    structs, maps and nested lists become JSON text (``jsonb`` when the sink creates them);
    dictionaries are decoded; unsigned 64-bit integers become numeric.
    """
    arrays: list[pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for f, column in zip(table.schema, table.columns, strict=True):
        new_type, array = _ingest_column(f.type, column)
        fields.append(pa.field(f.name, new_type))
        arrays.append(array)
    fields.append(pa.field(ORDINAL, pa.int64()))
    arrays.append(pa.chunked_array([arange(table.num_rows)]))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _ingest_column(
    dtype: pa.DataType, column: pa.ChunkedArray
) -> tuple[pa.DataType, pa.ChunkedArray]:
    if isinstance(dtype, pa.ExtensionType):
        storage = pa.chunked_array([c.storage for c in column.chunks], type=dtype.storage_type)
        if dtype.extension_name == "arrow.uuid":
            return pa.string(), _uuid_text(storage)
        return _ingest_column(dtype.storage_type, storage)
    if pa.types.is_dictionary(dtype):
        return _ingest_column(dtype.value_type, column.cast(dtype.value_type))
    if dtype.equals(INTERVAL_TYPE):
        target = pa.month_day_nano_interval()
        return target, pa.chunked_array([struct_to_interval(c) for c in column.chunks], target)
    if json_encoded(dtype):
        return pa.string(), _json_text(column)
    if pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        target = pa.list_(dtype.value_type)
        return _ingest_column(target, column.cast(target))
    if pa.types.is_uint64(dtype):
        target = pa.decimal128(20, 0)
        return target, column.cast(target)
    if pa.types.is_decimal256(dtype):
        return pa.string(), column.cast(pa.string())
    simple = {
        pa.types.is_null: pa.string(),
        pa.types.is_float16: pa.float32(),
        pa.types.is_date64: pa.date32(),
        pa.types.is_string_view: pa.string(),
        pa.types.is_binary_view: pa.binary(),
        pa.types.is_large_binary: pa.binary(),
        pa.types.is_fixed_size_binary: pa.binary(),
    }
    for test, target in simple.items():
        if test(dtype):
            return target, column.cast(target)
    if pa.types.is_time32(dtype):
        return pa.time64("us"), column.cast(pa.time64("us"))
    return dtype, column


def json_encoded(dtype: pa.DataType) -> bool:
    """Whether the sink writes this type as JSON text (structs, maps, nested lists)."""
    if dtype.equals(INTERVAL_TYPE):
        return False
    return bool(pa.types.is_struct(dtype) or pa.types.is_map(dtype) or _nested_list(dtype))


def _nested_list(dtype: pa.DataType) -> bool:
    if not (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)):
        return bool(pa.types.is_fixed_size_list(dtype) and pa.types.is_nested(dtype.value_type))
    return bool(pa.types.is_nested(dtype.value_type))


def _json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each value as JSON text (a per-value path: only for structs, maps, nested lists)."""
    values = [
        None if v is None else json.dumps(v, default=_json_value, separators=(",", ":"))
        for v in column.to_pylist()
    ]
    return pa.chunked_array([pa.array(values, pa.string())])


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def _uuid_text(storage: pa.ChunkedArray) -> pa.ChunkedArray:
    import polars as pl

    series = pl.from_arrow(storage)
    assert isinstance(series, pl.Series)
    hexed = series.bin.encode("hex")
    parts = [hexed.str.slice(a, b - a) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))]
    text = pl.select(pl.concat_str(parts, separator="-")).to_series()
    return pa.chunked_array([text.to_arrow().cast(pa.string())])


def wanted_type(field: pa.Field, copied: str, overrides: Mapping[str, str]) -> list[str]:
    """Candidate types for a column the sink creates, best first (the last always works).

    An explicit ``column_types`` entry wins; then the PostgreSQL type the source
    recorded in the field (kept when the values still have a compatible Arrow
    type); then a type derived from Arrow; finally the bulk copy's own type.
    """
    out: list[str] = []
    if field.name in overrides:
        out.append(overrides[field.name])
    meta = field.metadata or {}
    hint = meta.get(PG_TYPE_KEY)
    dtype = field.type
    if hint is not None and _hint_fits(dtype):
        out.append(hint.decode())
    if json_encoded(dtype):
        out.append("jsonb")
    elif pa.types.is_decimal128(dtype):
        out.append(f"numeric({dtype.precision},{dtype.scale})")
    elif pa.types.is_uint64(dtype):
        out.append("numeric(20,0)")
    out.append(copied)
    return out


def _hint_fits(dtype: pa.DataType) -> bool:
    """Whether values of this Arrow type can still be of the type the source recorded."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return True
    if pa.types.is_decimal(dtype) or dtype.equals(INTERVAL_TYPE):
        return True
    if pa.types.is_list(dtype) and pa.types.is_string(dtype.value_type):
        return True
    return not pa.types.is_nested(dtype) and not pa.types.is_null(dtype)


# -- the ledger -----------------------------------------------------------------------


def _position_json(value: Position) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _int_position(value: Position) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def ledger_rows(batch: Batch) -> list[tuple[str, str, str, int | None]]:
    """(partition, start, end, integer end) per source partition of ``batch``."""
    return [
        (name, _position_json(span.start), _position_json(span.end), _int_position(span.end))
        for name, span in batch.positions.items()
    ]


def ordinal_filter(low: int, high: int, total: int) -> sql.Composable:
    """``WHERE`` on the ordinal for rows ``[low, high)`` (nothing when that is every row)."""
    from psycopg import sql

    if low <= 0 and high >= total:
        return sql.SQL("")
    return sql.SQL(" WHERE s.{} >= {} AND s.{} < {}").format(
        sql.Identifier(ORDINAL), sql.Literal(low), sql.Identifier(ORDINAL), sql.Literal(high)
    )


def casted(name: str, source_type: str, target_type: str) -> sql.Composable:
    """``s."name"``, cast to the target column's type when the copy's type differs."""
    from psycopg import sql

    ref = sql.SQL("s.{}").format(sql.Identifier(name))
    if source_type == target_type:
        return ref
    return sql.SQL("CAST({} AS {})").format(ref, sql.SQL(target_type))


def null_mask(table: pa.Table, keys: Sequence[str]) -> pa.ChunkedArray | None:
    """True where any of ``keys`` is null (None when none is)."""
    mask: Any = None
    for key in keys:
        is_null = pc.is_null(table.column(key))
        mask = is_null if mask is None else pc.or_(mask, is_null)
    if mask is None or not pc.any(mask).as_py():
        return None
    result: pa.ChunkedArray = mask
    return result
