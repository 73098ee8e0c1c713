"""Fitting a batch to a Delta table: null columns, strict checks, columns a merge lacks.

Types are compared as Delta sees them (``long``, ``string``, ``timestamp`` …), so
Arrow's variants of one Delta type (``string`` and ``large_string``) are equal. A
strict table accepts integer and float widening (``integer`` into ``long``) and
nothing else; any other difference is a :class:`DataError` naming every column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from sluiceway.core.errors import DataError

__all__ = ["add_missing", "check_strict", "delta_types", "fill_null_types"]

_WIDENS = {
    ("byte", "short"),
    ("byte", "integer"),
    ("byte", "long"),
    ("short", "integer"),
    ("short", "long"),
    ("integer", "long"),
    ("float", "double"),
}


def _type_text(dtype: Any) -> str:
    to_json = getattr(dtype, "to_json", None)
    text = to_json() if callable(to_json) else str(dtype)
    return str(text).strip('"')


def delta_types(schema: pa.Schema) -> dict[str, str]:
    """Each column's Delta type, as text (``long``, ``{"type":"struct",…}``)."""
    from deltalake import Schema

    return {field.name: _type_text(field.type) for field in Schema.from_arrow(schema).fields}


def fill_null_types(data: pa.Table, table_schema: pa.Schema | None) -> pa.Table:
    """Columns of Arrow's null type (all values missing) typed as the table's, else string.

    Delta has no type for "always null"; left alone, such a column would become an
    unusable ``void`` column of the table.
    """
    for index, field in enumerate(data.schema):
        if not pa.types.is_null(field.type):
            continue
        target = pa.string()
        if table_schema is not None and field.name in table_schema.names:
            target = table_schema.field(field.name).type
        data = data.set_column(index, pa.field(field.name, target), pa.nulls(data.num_rows, target))
    return data


def add_missing(data: pa.Table, table_schema: pa.Schema, skip: Sequence[str] = ()) -> pa.Table:
    """The batch plus a null column for each table column it lacks (merge: the row is replaced)."""
    for field in table_schema:
        if field.name not in data.column_names and field.name not in skip:
            data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
    return data


def check_strict(data: pa.Table, table_schema: pa.Schema, uri: str) -> None:
    """Raise :class:`DataError` unless the batch has the table's columns and types."""
    incoming = delta_types(data.schema)
    existing = delta_types(table_schema)
    extra = [name for name in incoming if name not in existing]
    missing = [name for name in existing if name not in incoming]
    mismatched = [
        f"{name!r} (batch {incoming[name]}, table {existing[name]})"
        for name in incoming
        if name in existing
        and incoming[name] != existing[name]
        and (incoming[name], existing[name]) not in _WIDENS
    ]
    if not (extra or missing or mismatched):
        return
    problems = []
    if extra:
        problems.append("extra column(s) " + ", ".join(repr(n) for n in extra))
    if missing:
        problems.append("missing column(s) " + ", ".join(repr(n) for n in missing))
    if mismatched:
        problems.append("mismatched type(s) " + ", ".join(mismatched))
    raise DataError(
        f"batch does not match the strict schema of delta table {uri}: " + "; ".join(problems)
    )
