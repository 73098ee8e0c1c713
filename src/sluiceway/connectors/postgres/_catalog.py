"""What a PostgreSQL source's columns are, read once from the catalogue, and how to read them.

The type of every column is decided before the first row is read, from the
result description of ``SELECT … LIMIT 0`` (type OID and modifier) and
``pg_type`` — not from the data — so every batch of a run has the same Arrow
schema, empty batches included:

============================  ==========================================================
PostgreSQL                    Arrow
============================  ==========================================================
smallint, integer, bigint     int16, int32, int64
real, double precision        float32, float64
boolean                       bool
text, varchar, char, name     string
numeric(p, s)                 decimal128(p, s) (decimal256 above 38 digits)
numeric                       decimal128(precision, scale) as configured; misfits dead-lettered
date, time                    date32, time64[us]
timestamp                     timestamp[us]
timestamptz                   timestamp[us, UTC] (the instant; the zone is not stored)
interval                      struct<months: int32, days: int32, nanos: int64>
bytea                         binary
json, jsonb                   string (the JSON text)
uuid                          string (canonical text form)
enums                         string (the label)
arrays of the types above     list<…> (arrays of other types: list<string>)
anything else                 string (PostgreSQL's text form)
============================  ==========================================================

Domains are read as their base type. Each Arrow field carries the PostgreSQL type
in its metadata (``sluiceway.postgres.type``), which the PostgreSQL sink uses to
create a column of the same type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from sluiceway.core.batch import HIDDEN_PREFIX
from sluiceway.core.errors import ConfigError

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = [
    "INTERVAL_TYPE",
    "PG_TYPE_KEY",
    "ReadKind",
    "SourceColumn",
    "describe_columns",
    "primary_key",
    "row_estimate",
]

#: Field metadata key holding a column's PostgreSQL type (``format_type``).
PG_TYPE_KEY = b"sluiceway.postgres.type"

#: How an ``interval`` travels: Parquet, Polars and Delta reject Arrow's month_day_nano.
INTERVAL_TYPE = pa.struct(
    [
        pa.field("months", pa.int32()),
        pa.field("days", pa.int32()),
        pa.field("nanos", pa.int64()),
    ]
)

ReadKind = Literal["native", "numeric", "scaled", "json", "enum", "interval", "text"]
"""How a column's values are turned into Arrow after the driver decoded them."""

_NATIVE: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}
_TEMPORAL = frozenset({"date", "timestamp", "timestamptz"})
#: numeric(p, s) with p up to this travels as its unscaled bigint (see SourceColumn.scaled).
SCALED_MAX_PRECISION = 18
#: The unscaled value a scaled numeric's NaN becomes: no numeric(18, s) value scales to it.
SCALED_NAN = -(2**63)

#: Types that can order a key, a cursor or a partition split, and round-trip as text.
_KEYABLE = frozenset(
    {
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "text",
        "varchar",
        "bpchar",
        "name",
        "numeric",
        "uuid",
        "date",
        "time",
        "timestamp",
        "timestamptz",
    }
)
_NUMERIC_BASE = 4  # PostgreSQL stores numeric's typmod as ((precision << 16) | scale) + 4


@dataclass(frozen=True, slots=True)
class SourceColumn:
    """One column of the source: its PostgreSQL type and how it arrives in Arrow."""

    name: str
    pg_type: str
    """``format_type`` of the (base) type, e.g. ``numeric(12,2)``, ``integer[]``."""
    base: str
    """``pg_type.typname`` of the base type (``int8``, ``numeric``, ``_int4`` …)."""
    read: ReadKind
    arrow: pa.DataType
    cast: str | None = None
    """A server-side cast applied in the SELECT list (``text``, ``text[]``, ``bigint``)."""

    @property
    def keyable(self) -> bool:
        return self.base in _KEYABLE

    @property
    def temporal(self) -> bool:
        return self.base in _TEMPORAL

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow, metadata={PG_TYPE_KEY: self.pg_type.encode()})

    def scaled(self) -> SourceColumn:
        """This ``numeric(p, s)`` column read as its binary form, rebuilt as decimal128.

        The ADBC driver decodes numeric to text, which cost about a third of a read's
        client CPU. Instead the SELECT list asks for ``numeric_send(column)``: the bytes
        binary COPY would send anyway (base-10000 digits), handed over as ``bytea``
        (a plain copy for the driver) and turned into the unscaled integer with
        vectorised numpy on the client (:func:`._convert.numeric_send_to_unscaled`).
        Scaling on the server (``(column * 10^s)::int8``) cost the server ~1 s more
        CPU per 5M rows than sending the column, on a machine whose two cores both
        work. Exact for p ≤ 18 (|value| · 10^s < 10^18 < 2^63); NaN becomes
        :data:`SCALED_NAN` and is dead-lettered like a misfit. Only for columns that
        are no part of a key, cursor or split (those are read back as text to write
        positions).
        """
        arrow = self.arrow
        if (
            self.read != "numeric"
            or not pa.types.is_decimal128(arrow)
            or not 0 <= arrow.scale <= arrow.precision <= SCALED_MAX_PRECISION
            or self.pg_type == "numeric"  # unconstrained: any scale, NaN, infinities
        ):
            return self
        return replace(self, read="scaled")

    def select(self, alias: str = "s") -> sql.Composable:
        """The SELECT-list expression reading this column."""
        from psycopg import sql

        ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(self.name))
        if self.read == "scaled":
            ref = sql.SQL("numeric_send({})").format(ref)
        elif self.cast is not None:
            ref = sql.SQL("{}::{}").format(ref, sql.SQL(self.cast))
        return sql.SQL("{} AS {}").format(ref, sql.Identifier(self.name))

    def literal(self, text: str) -> sql.Composable:
        """A value of this column written as SQL: ``'<text>'::<type>``."""
        from psycopg import sql

        return sql.SQL("{}::{}").format(sql.Literal(text), sql.SQL(self.pg_type))


@dataclass(frozen=True, slots=True)
class _PgType:
    oid: int
    name: str
    schema: str
    typtype: str
    category: str
    base_oid: int
    base_typmod: int
    elem_name: str | None
    elem_schema: str | None
    elem_typtype: str | None


def describe_columns(
    con: psycopg.Connection[Any],
    source: sql.Composable,
    *,
    numeric_precision: int,
    numeric_scale: int,
) -> list[SourceColumn]:
    """The columns ``SELECT * FROM <source>`` returns, with their read plan."""
    from psycopg import sql

    with con.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {} AS s LIMIT 0").format(source))
        result = cur.pgresult
        description = cur.description or []
        assert result is not None
        fields = [(d.name, result.ftype(i), result.fmod(i)) for i, d in enumerate(description)]
    names = [name for name, _, _ in fields]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"the source returns duplicate column name(s): {', '.join(duplicated)}")
    hidden = [n for n in names if n.startswith(HIDDEN_PREFIX)]
    if hidden:
        raise ConfigError(f"column name(s) {hidden} use the reserved prefix {HIDDEN_PREFIX!r}")
    types = _types(con, {oid for _, oid, _ in fields})
    resolved: list[tuple[str, _PgType, int]] = []
    for name, oid, modifier in fields:
        pg, typmod, seen = types[oid], modifier, 0
        while pg.typtype == "d" and seen < 16:  # a domain: read its base type
            typmod = pg.base_typmod
            pg = _types(con, {pg.base_oid})[pg.base_oid]
            seen += 1
        resolved.append((name, pg, typmod))
    formatted = _format_types(con, [(pg.oid, typmod) for _, pg, typmod in resolved])
    return [
        _plan(name, pg, typmod, pg_type, (numeric_precision, numeric_scale))
        for (name, pg, typmod), pg_type in zip(resolved, formatted, strict=True)
    ]


def _plan(
    name: str, pg: _PgType, typmod: int, pg_type: str, unconstrained: tuple[int, int]
) -> SourceColumn:
    builtin = pg.schema == "pg_catalog"
    if builtin and pg.name in _NATIVE:
        return SourceColumn(name, pg_type, pg.name, "native", _NATIVE[pg.name])
    if builtin and pg.name == "numeric":
        return SourceColumn(name, pg_type, "numeric", "numeric", _numeric(typmod, *unconstrained))
    if builtin and pg.name in ("json", "jsonb"):
        return SourceColumn(name, pg_type, pg.name, "json", pa.string())
    if builtin and pg.name == "uuid":
        return SourceColumn(name, pg_type, "uuid", "native", pa.string(), cast="text")
    if builtin and pg.name == "interval":
        return SourceColumn(name, pg_type, "interval", "interval", INTERVAL_TYPE)
    if builtin and pg.name == "oid":
        return SourceColumn(name, pg_type, "oid", "native", pa.int64(), cast="bigint")
    if pg.typtype == "e":
        return SourceColumn(name, pg_type, pg.name, "enum", pa.string())
    if pg.category == "A" and pg.elem_name is not None:
        if pg.elem_schema == "pg_catalog" and pg.elem_name in _NATIVE:
            return SourceColumn(name, pg_type, pg.name, "native", pa.list_(_NATIVE[pg.elem_name]))
        return SourceColumn(name, pg_type, pg.name, "native", pa.list_(pa.string()), cast="text[]")
    return SourceColumn(name, pg_type, pg.name, "native", pa.string(), cast="text")


def _numeric(typmod: int, precision: int, scale: int) -> pa.DataType:
    if typmod < _NUMERIC_BASE:
        return pa.decimal128(precision, scale)
    p = ((typmod - _NUMERIC_BASE) >> 16) & 0xFFFF
    s = (typmod - _NUMERIC_BASE) & 0xFFFF
    if s > 0x7FF:  # PostgreSQL 15 allows negative scales, stored as 11-bit two's complement
        s -= 0x1000
    if 0 <= s <= p <= 38:
        return pa.decimal128(p, s)
    if 0 <= s <= p <= 76:
        return pa.decimal256(p, s)
    # numeric(2, 5) or numeric(5, -2): hold the digits in a type wide enough for both.
    digits = max(p, s) - min(s, 0)
    return pa.decimal128(min(max(digits, 1), 38), max(s, 0))


def _types(con: psycopg.Connection[Any], oids: set[int]) -> dict[int, _PgType]:
    rows = con.execute(
        "SELECT t.oid::int8, t.typname::text, n.nspname::text, t.typtype::text, "
        "t.typcategory::text, t.typbasetype::int8, t.typtypmod, e.typname::text, "
        "en.nspname::text, e.typtype::text "
        "FROM pg_catalog.pg_type t "
        "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
        "LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "LEFT JOIN pg_catalog.pg_namespace en ON en.oid = e.typnamespace "
        "WHERE t.oid = ANY(%s::oid[])",
        [sorted(oids)],
    ).fetchall()
    return {int(row[0]): _PgType(*row) for row in rows}


def _format_types(con: psycopg.Connection[Any], pairs: Sequence[tuple[int, int]]) -> list[str]:
    if not pairs:
        return []
    rows = con.execute(
        "SELECT format_type(x.o, NULLIF(x.m, -1)) FROM unnest(%s::oid[], %s::int4[]) "
        "WITH ORDINALITY AS x(o, m, i) ORDER BY x.i",
        [[oid for oid, _ in pairs], [typmod for _, typmod in pairs]],
    ).fetchall()
    return [str(row[0]) for row in rows]


def primary_key(con: psycopg.Connection[Any], relation: sql.Composable) -> list[str]:
    """The primary-key columns of a table, in key order (empty when it has none)."""
    from psycopg import sql

    rows = con.execute(
        sql.SQL(
            "SELECT a.attname::text FROM pg_catalog.pg_index i "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass({}) AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)"
        ).format(sql.Literal(relation.as_string(con)))
    ).fetchall()
    return [str(row[0]) for row in rows]


def row_estimate(con: psycopg.Connection[Any], relation: sql.Composable) -> int:
    """The planner's row estimate of a table (``reltuples``; 0 when never analysed)."""
    from psycopg import sql

    row = con.execute(
        sql.SQL(
            "SELECT c.reltuples::int8 FROM pg_catalog.pg_class c WHERE c.oid = to_regclass({})"
        ).format(sql.Literal(relation.as_string(con)))
    ).fetchone()
    return max(int(row[0]), 0) if row is not None and row[0] is not None else 0
