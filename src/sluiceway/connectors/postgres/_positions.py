"""Where a PostgreSQL source partition stands, and the SQL that reads on from there.

A keyed read orders rows by its key (``(cursor, primary key)`` for an incremental
source, the primary key for a full read), so a position is the key of the last
row delivered, kept as PostgreSQL text so it round-trips exactly through the
state's JSON: ``{"after": ["2024-05-01 10:00:00+00", "42"], "gen": 0, "done":
false}``. Rows tying on the cursor across a batch boundary are told apart by the
primary key, so none is skipped. A full read counts generations (``gen``): a
finished one (``done``) makes the next run read the table again under a new
generation, an unfinished one is resumed. A partitioned source also keeps the
points its split column was cut at (``split``), fixed when the partitions were
first split, so every run reads the same ranges.

A keyless read (a query without ``key``) can only count rows: ``{"row": n,
"gen": g, "done": …}``; it cannot resume or replay.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sluiceway.connectors.postgres._catalog import SourceColumn

if TYPE_CHECKING:
    from psycopg import sql

__all__ = ["KeyRange", "Where", "PartitionPosition", "key_texts", "value_text"]

KeyRange = tuple[str | None, str | None]
"""A partition's ``[low, high)`` on its split column, as text; None is unbounded."""


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """One partition's position (see the module docstring for the JSON form)."""

    after: tuple[str, ...] | None = None
    gen: int = 0
    done: bool = False
    row: int | None = None
    split: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gen": self.gen, "done": self.done}
        if self.row is not None:
            out["row"] = self.row
        else:
            out["after"] = list(self.after) if self.after is not None else None
        if self.split is not None:
            out["split"] = list(self.split)
        return out

    @classmethod
    def from_json(cls, data: Any) -> PartitionPosition | None:
        """The position stored in state, or None if it is not one of this source's."""
        if not isinstance(data, Mapping) or "gen" not in data:
            return None
        after = data.get("after")
        split = data.get("split")
        return cls(
            after=tuple(str(v) for v in after) if isinstance(after, list) else None,
            gen=int(data.get("gen", 0)),
            done=bool(data.get("done", False)),
            row=int(data["row"]) if data.get("row") is not None else None,
            split=tuple(str(v) for v in split) if isinstance(split, list) else None,
        )

    def advanced(
        self, *, after: tuple[str, ...] | None, rows: int, done: bool
    ) -> PartitionPosition:
        """The position after ``rows`` more rows whose last key is ``after``."""
        if self.row is not None:
            return replace(self, row=self.row + rows, done=done)
        return replace(self, after=after if after is not None else self.after, done=done)


def value_text(value: Any) -> str:
    """A Python value of a key column as PostgreSQL input text (exact round trip)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def key_texts(table: pa.Table, names: Sequence[str], row: int) -> tuple[str, ...]:
    """The key of row ``row`` of a decoded chunk, as text (numeric and uuid arrive as text)."""
    out: list[str] = []
    for name in names:
        value = table.column(name)[row]
        if isinstance(value, pa.ExtensionScalar):
            value = value.value
        out.append(value_text(value.as_py()))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Where:
    """Builds the WHERE clause of a read: key bounds, the cursor's upper bound, a range."""

    order: Sequence[SourceColumn]
    cursor: SourceColumn | None = None
    split: SourceColumn | None = None

    def clause(
        self,
        *,
        after: Sequence[str] | None = None,
        upto: Sequence[str] | None = None,
        upper_bound: str | None = None,
        key_range: KeyRange | None = None,
    ) -> sql.Composable:
        from psycopg import sql

        conditions: list[sql.Composable] = []
        if self.cursor is not None:
            ref = _ref(self.cursor)
            conditions.append(sql.SQL("{} IS NOT NULL").format(ref))
            if upper_bound is not None:
                conditions.append(sql.SQL("{} <= {}").format(ref, self.cursor.literal(upper_bound)))
        if after is not None:
            conditions.append(self._compare(">", after))
        if upto is not None:
            conditions.append(self._compare("<=", upto))
        if key_range is not None and self.split is not None:
            low, high = key_range
            ref = _ref(self.split)
            if low is not None and low == high:  # an empty partition (fewer distinct values)
                return sql.SQL(" WHERE FALSE")
            if low is not None:
                conditions.append(sql.SQL("{} >= {}").format(ref, self.split.literal(low)))
            if high is not None:
                below = sql.SQL("{} < {}").format(ref, self.split.literal(high))
                if low is None:  # the first partition also holds rows whose split value is null
                    below = sql.SQL("({} OR {} IS NULL)").format(below, ref)
                conditions.append(below)
        if not conditions:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)

    def order_by(self) -> sql.Composable:
        from psycopg import sql

        if not self.order:
            return sql.SQL("")
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(_ref(c) for c in self.order)

    def _compare(self, op: str, values: Sequence[str]) -> sql.Composable:
        from psycopg import sql

        if len(values) != len(self.order):
            raise ValueError(
                f"a position holds {len(values)} key values, the key has {len(self.order)}"
            )
        left = sql.SQL(", ").join(_ref(c) for c in self.order)
        right = sql.SQL(", ").join(c.literal(v) for c, v in zip(self.order, values, strict=True))
        if len(self.order) == 1:
            return sql.SQL("{} " + op + " {}").format(left, right)
        return sql.SQL("({}) " + op + " ({})").format(left, right)


def _ref(column: SourceColumn) -> sql.Composable:
    from psycopg import sql

    return sql.SQL("s.{}").format(sql.Identifier(column.name))
