"""Merge semantics shared with the DuckDB sink: keys, ``order_by``, deletes, null keys.

- The last row per key in a batch wins: the greatest ``order_by`` (nulls count as
  the oldest), ties broken by batch order. Only the winners reach the MERGE.
- An incoming row never overwrites (or deletes) a row whose ``order_by`` is newer:
  the update and delete clauses carry ``t.ob IS NULL OR s.ob >= t.ob``.
- ``delete_when`` (a SQL condition over the incoming row) marks rows that delete
  their key; they are evaluated in DuckDB over the Arrow batch, not row by row.
- Rows whose key is null are refused one by one (dead-lettered).

The winners are chosen by DuckDB over the key columns only; the batch itself is
then ``take``-n in Arrow, so the types the table receives are the batch's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.batch import arange
from sluiceway.core.errors import ConfigError, DataError
from sluiceway.core.stages import RowRejection

__all__ = [
    "DELETE_FLAG",
    "both",
    "delete_flags",
    "last_per_key",
    "merge_clauses",
    "quote",
    "refuse_null_keys",
]

#: The column carrying ``delete_when``'s verdict into the MERGE (never written).
DELETE_FLAG = "_sluiceway_delete"
_ORDINAL = "_sluiceway_ord"


def quote(name: str) -> str:
    """A column name for delta-rs SQL: backticks keep its case and any character."""
    return "`" + name.replace("`", "``") + "`"


def refuse_null_keys(
    data: pa.Table, keys: Sequence[str], order_by: str | None, uri: str
) -> tuple[pa.Table, list[RowRejection]]:
    """The rows with every key set, and a rejection for each row with a null key."""
    absent = [k for k in keys if k not in data.column_names]
    if order_by is not None and order_by not in data.column_names:
        absent.append(order_by)
    if absent:
        raise DataError(
            f"batch lacks merge column(s) {', '.join(repr(a) for a in absent)} "
            f"needed for delta table {uri}"
        )
    null_key: pa.ChunkedArray | pa.Array | None = None
    for key in keys:
        is_null = pc.is_null(data.column(key))
        null_key = is_null if null_key is None else pc.or_(null_key, is_null)
    assert null_key is not None
    if not pc.any(null_key).as_py():
        return data, []
    indices = pc.indices_nonzero(null_key).to_pylist()
    names = ", ".join(keys)
    rejected = [
        RowRejection(i, f"merge key ({names}) is null", error_type="NullMergeKey") for i in indices
    ]
    return data.filter(pc.invert(null_key)), rejected


def last_per_key(data: pa.Table, keys: Sequence[str], order_by: str | None) -> pa.Table:
    """One row per key: the greatest ``order_by`` (nulls last), then the latest in the batch."""
    import duckdb

    if data.num_rows <= 1:
        return data
    columns = {f"k{i}": data.column(key) for i, key in enumerate(keys)}
    if order_by is not None:
        columns["ob"] = data.column(order_by)
    columns[_ORDINAL] = arange(data.num_rows)
    frame = pa.table(columns)
    order = ['"ob" DESC NULLS LAST'] if order_by is not None else []
    order.append(f'"{_ORDINAL}" DESC')
    partition = ", ".join(f'"k{i}"' for i in range(len(keys)))
    with duckdb.connect() as con:
        con.register("frame", frame)
        kept = con.sql(
            f'SELECT "{_ORDINAL}" FROM frame QUALIFY row_number() OVER '
            f"(PARTITION BY {partition} ORDER BY {', '.join(order)}) = 1 "
            f'ORDER BY "{_ORDINAL}"'
        ).to_arrow_table()
    if kept.num_rows == data.num_rows:
        return data
    return data.take(kept.column(0))


def delete_flags(data: pa.Table, condition: str) -> pa.Array:
    """``condition`` (DuckDB SQL over the batch's columns) per row; null counts as false."""
    import duckdb

    with duckdb.connect() as con:
        con.register("batch", data)
        try:
            result = con.sql(
                f"SELECT coalesce(CAST(({condition}) AS BOOLEAN), false) AS flag FROM batch"
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise ConfigError(f"delete_when {condition!r} cannot be evaluated: {exc}") from exc
    flags = result.column(0).combine_chunks()
    if len(flags) != data.num_rows:  # pragma: no cover - a projection keeps every row
        raise DataError("delete_when did not give one verdict per row")
    return flags


def merge_clauses(
    keys: Sequence[str], order_by: str | None, deletes: bool
) -> tuple[str, str | None, str | None]:
    """(ON condition, update/delete guard, delete condition) in delta-rs SQL."""
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
    guard = None
    if order_by is not None:
        ob = quote(order_by)
        guard = f"(t.{ob} IS NULL OR s.{ob} >= t.{ob})"
    delete = f"s.{quote(DELETE_FLAG)}" if deletes else None
    return on, guard, delete


def both(*conditions: str | None) -> str | None:
    """The conjunction of the given conditions (None when there are none)."""
    present = [c for c in conditions if c]
    return " AND ".join(present) if present else None
