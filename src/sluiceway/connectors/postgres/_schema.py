"""The statements of the PostgreSQL sink, run in its transaction.

:class:`TableWriter` creates and evolves the target, writes the copied rows into
it (isolating the rows the database refuses), keeps the ledger and swaps a
replaced table in. It holds a psycopg cursor; the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sluiceway.connectors.postgres._connection import db_message, is_row_error, sqlstate
from sluiceway.connectors.postgres._tables import (
    ORDINAL,
    Column,
    Target,
    casted,
    columns_of,
    ledger_rows,
    ordinal_filter,
    wanted_type,
)
from sluiceway.core.batch import Batch
from sluiceway.core.errors import DataError, SinkError
from sluiceway.core.stages import RowRejection, SinkContext

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["Mapped", "TableWriter", "straight_copy"]

_SAVEPOINT = "sluiceway_rows"
_CANNOT_CAST = "42846"


@dataclass(frozen=True, slots=True)
class Mapped:
    """A batch column written into a table column: ``expr`` reads it from the copy."""

    column: str
    expr: sql.Composable
    straight: str | None = None
    """How a binary COPY of the batch column goes straight into the target column:
    ``"as is"``, ``"json"`` (sent as JSON text) or None (it needs the cast above)."""


@dataclass(slots=True)
class TableWriter:
    cur: psycopg.Cursor[Any]
    pipeline: str
    table: Target
    mode: str
    keys: Sequence[str]
    order_by: str | None
    schema_mode: str
    create: bool
    column_types: Mapping[str, str]
    budget: int
    copy: Target

    # -- the ledger -----------------------------------------------------------------

    def ensure_schema(self, schema: str) -> None:
        """Create ``schema`` when missing (not otherwise: that needs a privilege)."""
        from psycopg import sql

        row = self.cur.execute("SELECT to_regnamespace(%s) IS NULL", [schema]).fetchone()
        if row and row[0]:
            self._execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))

    def ensure_ledger(self) -> None:
        from psycopg import sql

        ledger = self.table.ledger()
        self.ensure_schema(ledger.schema)
        self._execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, target text NOT NULL, "
                "partition text NOT NULL, start_pos text, end_pos text, end_int bigint, "
                "seq bigint, run_id text, written bigint, rejected jsonb, "
                "loaded_at timestamptz NOT NULL DEFAULT now())"
            ).format(ledger.ident)
        )
        self._execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (pipeline, target, partition)").format(
                sql.Identifier(ledger.name + "_lookup"), ledger.ident
            )
        )

    def holds(self, batch: Batch) -> bool:
        """Whether the ledger holds every source partition of ``batch`` for the target."""
        from psycopg import sql

        rows = ledger_rows(batch)
        found = self.cur.execute(
            sql.SQL(
                "SELECT count(*) FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[]) "
                "AS p(partition, start_pos, end_pos, end_int) WHERE NOT EXISTS ("
                "SELECT 1 FROM {} AS l WHERE l.pipeline = %s AND l.target = %s "
                "AND l.partition = p.partition AND ((p.end_int IS NOT NULL AND l.end_int >= "
                "p.end_int) OR (l.start_pos = p.start_pos AND l.end_pos = p.end_pos)))"
            ).format(self.table.ledger().ident),
            [*_columns(rows), self.pipeline, self._target_label()],
        ).fetchone()
        return found is not None and int(found[0]) == 0

    def record(
        self, batch: Batch, context: SinkContext, written: int, rejected: Sequence[RowRejection]
    ) -> None:
        self._execute(self.record_statement(batch, context, written, rejected))

    def record_statement(
        self, batch: Batch, context: SinkContext, written: int, rejected: Sequence[RowRejection]
    ) -> sql.Composed:
        """The ledger rows of ``batch`` as one statement, its values as quoted literals
        (so it can also run on the ADBC connection of a straight COPY)."""
        from psycopg import sql

        refused = json.dumps([[r.row_index, r.error_type, r.message] for r in rejected])
        values = [
            self.pipeline,
            self._target_label(),
            batch.seq,
            context.run_id,
            written,
            refused,
            *_columns(ledger_rows(batch)),
        ]
        return sql.SQL(
            "INSERT INTO {} (pipeline, target, partition, start_pos, end_pos, end_int, seq, "
            "run_id, written, rejected) SELECT {}, {}, p.partition, p.start_pos, p.end_pos, "
            "p.end_int, {}::int8, {}, {}::int8, {}::jsonb FROM unnest({}::text[], {}::text[], "
            "{}::text[], {}::int8[]) AS p(partition, start_pos, end_pos, end_int)"
        ).format(self.table.ledger().ident, *(sql.Literal(v) for v in values))

    def outcome(self, batch: Batch) -> tuple[int, list[tuple[int, str, str]]] | None:
        """What the ledger recorded for exactly this batch: (written, rejected rows)."""
        from psycopg import sql

        name, start, end, _ = ledger_rows(batch)[0]
        row = self.cur.execute(
            sql.SQL(
                "SELECT written, rejected FROM {} WHERE pipeline = %s AND target = %s "
                "AND partition = %s AND start_pos = %s AND end_pos = %s LIMIT 1"
            ).format(self.table.ledger().ident),
            [self.pipeline, self._target_label(), name, start, end],
        ).fetchone()
        if row is None or row[0] is None:
            return None
        rejected = row[1] if isinstance(row[1], list) else json.loads(row[1] or "[]")
        return int(row[0]), [(int(i), str(t), str(m)) for i, t, m in rejected]

    def _target_label(self) -> str:
        return (self.table.staging() if self.mode == "replace" else self.table).label

    # -- the target's shape ---------------------------------------------------------

    def check_merge_index(self, table: Target) -> None:
        """Merge needs a unique index on exactly the keys (``ON CONFLICT`` infers it)."""
        row = self.cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = to_regclass(%s) "
            "AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND "
            "(SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s::text[])",
            [table.ident.as_string(self.cur), sorted(self.keys)],
        ).fetchone()
        if not (row and row[0]):
            from psycopg import sql

            keys = sql.SQL(", ").join(sql.Identifier(k) for k in self.keys)
            hint = sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(table.ident, keys)
            raise SinkError(
                f"merge into {table.label!r} needs a unique index on ({', '.join(self.keys)}); "
                f"create it: {hint.as_string(self.cur)}"
            )

    def prepare(self, target: Target, schema: pa.Schema, copied: Sequence[Column]) -> list[Mapped]:
        """Create or evolve ``target`` for the batch's columns (or refuse them when frozen)."""
        copy_types = {c.name: c.type for c in copied}
        existing = columns_of(self.cur, target)
        if existing is None and target != self.table and columns_of(self.cur, self.table):
            # replace: stage into a table shaped like the one it replaces.
            self._like(target, self.table)
            existing = columns_of(self.cur, target)
        if existing is None:
            if not self.create:
                raise SinkError(f"table {target.label!r} does not exist and create is false")
            self._create(target, schema, copy_types)
            existing = columns_of(self.cur, target) or []
        by_name = {c.name: c for c in existing}
        extra = [f for f in schema if f.name not in by_name]
        if self.schema_mode == "freeze":
            self._check_frozen(target, schema, existing, copy_types)
        for f in extra:
            self._add_column(target, f, copy_types[f.name])
        if extra:
            existing = columns_of(self.cur, target) or []
            by_name = {c.name: c for c in existing}
        return [
            Mapped(
                f.name,
                casted(f.name, copy_types[f.name], by_name[f.name].type),
                straight=straight_copy(copy_types[f.name], by_name[f.name].type),
            )
            for f in schema
        ]

    def _like(self, target: Target, model: Target) -> None:
        from psycopg import sql

        self._execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE {} INCLUDING CONSTRAINTS INCLUDING INDEXES "
                "INCLUDING DEFAULTS INCLUDING COMMENTS)"
            ).format(target.ident, model.ident)
        )

    def _create(self, target: Target, schema: pa.Schema, copy_types: Mapping[str, str]) -> None:
        from psycopg import sql

        columns = [
            sql.SQL("{} {}").format(
                sql.Identifier(f.name), sql.SQL(self._type(f, copy_types[f.name]))
            )
            for f in schema
        ]
        if self.mode == "merge":
            missing = [k for k in self.keys if k not in schema.names]
            if missing:
                raise DataError(f"batch lacks merge key column(s) {missing}")
            columns.append(
                sql.SQL("PRIMARY KEY ({})").format(
                    sql.SQL(", ").join(sql.Identifier(k) for k in self.keys)
                )
            )
        self._execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target.schema))
        )
        self._execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                target.ident, sql.SQL(", ").join(columns)
            )
        )

    def _add_column(self, target: Target, field: pa.Field, copy_type: str) -> None:
        from psycopg import sql

        self._execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                target.ident, sql.Identifier(field.name), sql.SQL(self._type(field, copy_type))
            )
        )

    def _type(self, field: pa.Field, copy_type: str) -> str:
        """The first candidate type the server knows (``column_types`` must be known)."""
        candidates = wanted_type(field, copy_type, self.column_types)
        for index, candidate in enumerate(candidates):
            if candidate == copy_type:
                return candidate
            explicit = field.name in self.column_types and index == 0
            self.cur.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                row = self.cur.execute("SELECT to_regtype(%s) IS NOT NULL", [candidate]).fetchone()
                known = bool(row and row[0])
            except Exception as exc:
                if not type(exc).__module__.startswith("psycopg"):
                    raise
                known = False
            finally:
                self.cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            if known:
                return candidate
            if explicit:
                raise SinkError(
                    f"column_types: {candidate!r} (column {field.name!r}) is not a type "
                    f"known to the server"
                )
        return copy_type

    def _check_frozen(
        self,
        target: Target,
        schema: pa.Schema,
        existing: Sequence[Column],
        copy_types: Mapping[str, str],
    ) -> None:
        by_name = {c.name: c for c in existing}
        extra = [f.name for f in schema if f.name not in by_name]
        missing = [c.name for c in existing if c.name not in schema.names]
        mismatched = [
            f"{f.name!r} (batch {copy_types[f.name]}, table {by_name[f.name].type})"
            for f in schema
            if f.name in by_name
            and copy_types[f.name] != by_name[f.name].type
            and not self._castable(copy_types[f.name], by_name[f.name].type)
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
            f"batch does not match the frozen schema of table {target.label!r}: "
            + "; ".join(problems)
        )

    def _castable(self, source: str, target: str) -> bool:
        self.cur.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            self.cur.execute(f"SELECT CAST(NULL::{source} AS {target})")  # server-printed types
        except Exception as exc:
            if sqlstate(exc) != _CANNOT_CAST:
                raise
            return False
        finally:
            self.cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        return True

    # -- rows -----------------------------------------------------------------------

    def write(self, target: Target, columns: Sequence[Mapped], rows: int) -> list[tuple[int, str]]:
        """Write copied rows ``0 … rows-1`` into ``target``; return the refused (row, message).

        A statement that fails on a row's values is retried on halves of its rows,
        each under a savepoint, until the refused rows stand alone.
        """
        refused: list[tuple[int, str]] = []
        spent = 0
        action = self._conflict_action(target, columns) if self.mode == "merge" else None

        def attempt(low: int, high: int) -> None:
            nonlocal spent
            spent += 1
            if spent > self.budget:
                raise DataError(
                    f"more than {self.budget} statements were needed to isolate the rows "
                    f"{target.label!r} refuses (first: {refused[0][1] if refused else '?'}); "
                    "the batch is dead-lettered whole"
                )
            self.cur.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                self.cur.execute(self._rows_sql(target, columns, (low, high, rows), action))
            except Exception as exc:
                if not (type(exc).__module__.startswith("psycopg") and is_row_error(exc)):
                    raise
                self.cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                if high - low == 1:
                    refused.append((low, db_message(exc)))
                    return
                middle = (low + high) // 2
                attempt(low, middle)
                attempt(middle, high)
                return
            self.cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")

        attempt(0, rows)
        return refused

    def _rows_sql(
        self,
        target: Target,
        columns: Sequence[Mapped],
        bounds: tuple[int, int, int],
        action: sql.Composable | None,
    ) -> sql.Composed:
        from psycopg import sql

        names = sql.SQL(", ").join(sql.Identifier(c.column) for c in columns)
        where = ordinal_filter(*bounds)
        if self.mode != "merge":
            return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} AS s{}").format(
                target.ident,
                names,
                sql.SQL(", ").join(c.expr for c in columns),
                self.copy.ident,
                where,
            )
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in self.keys)
        order = [
            *(
                [sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(self.order_by))]
                if self.order_by
                else []
            ),
            sql.SQL("{} DESC").format(sql.Identifier(ORDINAL)),
        ]
        inner = sql.SQL("SELECT {}, s.{} FROM {} AS s{}").format(
            sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(c.expr, sql.Identifier(c.column)) for c in columns
            ),
            sql.Identifier(ORDINAL),
            self.copy.ident,
            where,
        )
        latest = sql.SQL("SELECT DISTINCT ON ({}) * FROM ({}) AS c ORDER BY {}, {}").format(
            keys, inner, keys, sql.SQL(", ").join(order)
        )
        return sql.SQL(
            "INSERT INTO {} AS t ({}) SELECT {} FROM ({}) AS l ON CONFLICT ({}) {}"
        ).format(target.ident, names, names, latest, keys, action)

    def _conflict_action(self, target: Target, columns: Sequence[Mapped]) -> sql.Composable:
        """Merge's ``ON CONFLICT`` action: replace non-key columns unless the row is older."""
        from psycopg import sql

        existing = columns_of(self.cur, target) or []
        incoming = {c.column for c in columns}
        updates = [
            sql.SQL("{} = {}").format(
                sql.Identifier(c.name),
                sql.SQL("EXCLUDED.{}").format(sql.Identifier(c.name))
                if c.name in incoming
                else sql.SQL("NULL"),
            )
            for c in existing
            if c.name not in self.keys
        ]
        if not updates:
            return sql.SQL("DO NOTHING")
        guard: sql.Composable = sql.SQL("")
        if self.order_by is not None:
            ob = sql.Identifier(self.order_by)
            guard = sql.SQL(" WHERE t.{} IS NULL OR EXCLUDED.{} >= t.{}").format(ob, ob, ob)
        return sql.SQL("DO UPDATE SET {}{}").format(sql.SQL(", ").join(updates), guard)

    # -- replace --------------------------------------------------------------------

    def swap(self, table: Target, staging: Target) -> bool:
        """Put ``staging`` in the place of ``table`` (and relabel the ledger); False if none."""
        from psycopg import sql

        if columns_of(self.cur, staging) is None:
            return False
        self._execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident))
        self._execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging.ident, sql.Identifier(table.name))
        )
        ledger = table.ledger().ident
        self._execute(
            sql.SQL("DELETE FROM {} WHERE pipeline = %s AND target = %s").format(ledger),
            [self.pipeline, table.label],
        )
        self._execute(
            sql.SQL("UPDATE {} SET target = %s WHERE pipeline = %s AND target = %s").format(ledger),
            [table.label, self.pipeline, staging.label],
        )
        return True

    def _execute(self, statement: sql.Composed, params: Sequence[Any] | None = None) -> None:
        self.cur.execute(statement, params)


def straight_copy(copied: str, target: str) -> str | None:
    """Whether a column the copy table holds as ``copied`` can be binary-COPYed into a
    column of type ``target``: the same type, or the same wire format whose input
    function applies the target's modifier (a value it rejects fails the COPY, and the
    batch then goes the copy-table way, where refused rows are isolated)."""
    if copied == target:
        return "as is"
    if copied == "numeric" and target.startswith("numeric("):
        return "as is"
    if copied == "text" and target.startswith(("character varying", "character(")):
        return "as is"
    if copied == "text" and target in ("json", "jsonb"):
        return "json"
    return None


def _columns(rows: Sequence[tuple[str, str, str, int | None]]) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(4)]
