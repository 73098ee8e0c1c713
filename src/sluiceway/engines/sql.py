"""SQL over each batch, on DuckDB (default) or Polars.

The batch is visible to the query as a table named ``batch``, hidden row id
included, so ``SELECT *, x * 2 AS y FROM batch`` (or a ``WHERE``) keeps each row's
lineage. A query that aggregates or drops the row id is handled by the runner
(see :mod:`sluiceway.core.lineage`). The query runs per batch: ``GROUP BY`` and
``DISTINCT`` results depend on batch boundaries.

Errors are split by what fixes them. A query that cannot be parsed or bound
(syntax error, unknown column, table or function) is a :class:`ConfigError`: it
would fail on every batch, so the run stops instead of dead-lettering everything.
A value the query cannot handle (a failed cast, an out-of-range number) is a
:class:`TransformError`, a data error: the runner bisects the batch and
dead-letters only the rows that fail.

Columns a query only passes through (``SELECT *, … FROM batch``, never named
anywhere in it) do not travel through DuckDB: the plan (:func:`passthrough_plan`,
read from DuckDB's own parse tree) sends the referenced columns and the row id,
then puts the others back, in their place in ``*``, taken by row id from the
input with their Arrow types unchanged (dictionary columns excepted: DuckDB
decodes those, as it would if they went through). Converting text columns to DuckDB and
back is most of the cost of a projection; a query the plan cannot prove safe
(a second ``*``, ``EXCLUDE``/``REPLACE``/``COLUMNS``, the table used as a row,
an output name equal to a passed column) runs on the whole batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.batch import ROW_ID
from sluiceway.core.errors import ConfigError, TransformError
from sluiceway.core.stages import BaseTransformer

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "Passthrough",
    "SQLEngine",
    "SQLTransformer",
    "check_query",
    "default_threads",
    "passthrough_plan",
]

SQLEngine = Literal["duckdb", "polars"]

#: The name the batch has inside a query.
TABLE = "batch"

#: DuckDB errors that no batch can fix: the query itself is wrong.
_DUCKDB_CONFIG_ERRORS = (
    "ParserException",
    "SyntaxException",
    "BinderException",
    "CatalogException",
)
#: Polars errors that mean the query itself is wrong.
_POLARS_CONFIG_ERRORS = (
    "SQLSyntaxError",
    "SQLInterfaceError",
    "ColumnNotFoundError",
    "SchemaFieldNotFoundError",
)


def default_threads() -> int:
    """DuckDB threads per transformer: the machine's cores, at most 4.

    Several stages and the extractor's prefetch share the machine; one SQL stage
    using every core would starve them.
    """
    return max(1, min(4, os.cpu_count() or 1))


def check_query(query: str, *, transform: str) -> None:
    """Parse ``query`` with DuckDB; :class:`ConfigError` unless it is one query.

    Run at build time so ``sluiceway validate`` reports a syntax error without data.
    Column and function names are checked on the first batch (they need its schema).
    """
    import duckdb

    con = duckdb.connect()
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise ConfigError(f"sql transform {transform!r}: {exc}") from exc
    finally:
        con.close()
    if len(statements) != 1:
        raise ConfigError(
            f"sql transform {transform!r}: expected one query over `{TABLE}`, "
            f"got {len(statements)} statements"
        )
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.MULTI):
        raise ConfigError(
            f"sql transform {transform!r}: expected a query (SELECT) over `{TABLE}`, "
            f"got a {kind.name} statement"
        )


@dataclass(frozen=True)
class Passthrough:
    """What a query reads: ``*`` is select item ``star_index``; ``referenced`` names
    (lower case) are every column name the query mentions anywhere."""

    star_index: int
    referenced: frozenset[str]


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict in a parse tree, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def passthrough_plan(query: str) -> Passthrough | None:
    """The plan for running ``query`` without the columns it only passes through, or
    None when the parse tree does not prove that safe.

    Safe means: one plain ``SELECT`` over the base table ``batch`` (no ``DISTINCT``,
    ``ORDER BY``, ``LIMIT``, ``GROUP BY``, ``HAVING``, ``QUALIFY``, CTE, set operation
    or join), whose only ``*`` anywhere is an unqualified select item with no
    ``EXCLUDE``/``REPLACE``/``RENAME``/``COLUMNS``, and that never names the table
    itself as a value. Then the rows and the non-star outputs depend only on the
    referenced columns, and ``*`` lists the others unchanged.
    """
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
        tree = json.loads(row[0]) if row else {}
    except (duckdb.Error, TypeError, ValueError):
        return None
    finally:
        con.close()
    statements = tree.get("statements") if not tree.get("error") else None
    if not statements or len(statements) != 1:
        return None
    node = statements[0].get("node") or {}
    source = node.get("from_table") or {}
    if (
        node.get("type") != "SELECT_NODE"
        or node.get("modifiers")
        or (node.get("cte_map") or {}).get("map")
        or node.get("group_expressions")
        or node.get("group_sets")
        or node.get("having")
        or node.get("qualify")
        or node.get("sample")
        or source.get("type") != "BASE_TABLE"
        or str(source.get("table_name", "")).lower() != TABLE
        or source.get("schema_name")
        or source.get("catalog_name")
        or source.get("sample")
        or source.get("at_clause")
        or source.get("column_name_alias")
    ):
        return None
    items = node.get("select_list") or []
    stars = [n for n in _nodes(node) if n.get("class") == "STAR" or n.get("type") == "STAR"]
    if len(stars) != 1:
        return None
    star = stars[0]
    if not any(item is star for item in items) or any(
        star.get(key)
        for key in (
            "relation_name",
            "exclude_list",
            "replace_list",
            "rename_list",
            "qualified_exclude_list",
            "columns",
            "expr",
            "alias",
        )
    ):
        return None
    tables = {TABLE, str(source.get("alias") or "").lower()} - {""}
    referenced: set[str] = set()
    for n in _nodes(node):
        if "POSITIONAL" in str(n.get("class", "")) or "POSITIONAL" in str(n.get("type", "")):
            return None  # `#2` names a column by its place, which narrowing moves
        if n.get("class") == "COLUMN_REF":
            names = [str(name).lower() for name in n.get("column_names") or []]
            if not names or (len(names) == 1 and names[0] in tables):
                return None  # the table used as a value (a row struct)
            referenced.add(names[-1])
            referenced.update(names[:-1])  # struct paths: keep their first name too
    index = next(i for i, item in enumerate(items) if item is star)
    return Passthrough(star_index=index, referenced=frozenset(referenced))


class SQLTransformer(BaseTransformer[pa.Table, pa.Table]):
    """Runs one SQL query over each batch (a table named ``batch``).

    DuckDB holds one connection per transformer, opened in :meth:`open` with
    ``threads`` threads (default :func:`default_threads`) and closed in
    :meth:`close`. ``engine="polars"`` runs the query with Polars' SQL context
    instead (no connection to hold).
    """

    frame = "arrow"

    def __init__(
        self,
        query: str,
        *,
        engine: SQLEngine = "duckdb",
        name: str | None = None,
        row_wise: bool | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(name or "sql")
        if engine not in ("duckdb", "polars"):
            raise ConfigError(f"sql transform {self.name!r}: unknown engine {engine!r}")
        if engine == "duckdb":
            check_query(query, transform=self.name)
        self.query = query
        self.engine: SQLEngine = engine
        self.row_wise = row_wise
        self.threads = threads or default_threads()
        self._con: Any = None
        self._plan = passthrough_plan(query) if engine == "duckdb" else None

    def __repr__(self) -> str:
        return f"SQLTransformer(name={self.name!r}, engine={self.engine!r}, query={self.query!r})"

    def open(self) -> None:
        if self.engine != "duckdb" or self._con is not None:
            return
        import duckdb

        con = duckdb.connect(config={"threads": self.threads})
        self._con = con

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()

    def transform(self, data: pa.Table) -> pa.Table:
        if self.engine == "polars":
            return self._run_polars(data)
        return self._run_duckdb(data)

    # -- engines ------------------------------------------------------------------

    def _run_duckdb(self, data: pa.Table) -> pa.Table:
        plan = self._plan
        if plan is None or ROW_ID not in data.column_names:
            return self._query_duckdb(data)
        names = data.column_names
        # Dictionary columns still go through DuckDB, which decodes them, so sinks see
        # the same types whichever way a column travels.
        passed = [
            name
            for name in names
            if name != ROW_ID
            and name.lower() not in plan.referenced
            and not pa.types.is_dictionary(data.schema.field(name).type)
        ]
        if not passed:
            return self._query_duckdb(data)
        sent = [name for name in names if name not in passed]
        narrow = self._query_duckdb(data.select(sent))
        k, width = plan.star_index, len(sent)
        out_names = narrow.column_names
        others = out_names[:k] + out_names[k + width :]
        if out_names[k : k + width] != sent or {n.lower() for n in others} & {
            n.lower() for n in passed
        }:
            return self._query_duckdb(data)  # DuckDB renamed a clash: run as written
        # The passed columns, for the rows the query kept (by row id), in its order.
        kept = data.select(passed)
        ids = narrow.column(k + sent.index(ROW_ID))
        if not ids.equals(data.column(ROW_ID)):
            kept = kept.take(pc.index_in(ids, value_set=data.column(ROW_ID)))
        at = {name: k + i for i, name in enumerate(sent)}
        picked: list[tuple[pa.Table, int | str]] = [
            *((narrow, i) for i in range(k)),
            *((kept, name) if name not in at else (narrow, at[name]) for name in names),
            *((narrow, i) for i in range(k + width, narrow.num_columns)),
        ]
        return pa.Table.from_arrays(
            [table.column(c) for table, c in picked],
            schema=pa.schema([table.schema.field(c) for table, c in picked]),
        )

    def _query_duckdb(self, data: pa.Table) -> pa.Table:
        import duckdb

        if self._con is None:
            self.open()
        con = self._con
        try:
            con.register(TABLE, data)
            result: pa.Table = con.sql(self.query).to_arrow_table()
        except duckdb.Error as exc:
            config = tuple(getattr(duckdb, name) for name in _DUCKDB_CONFIG_ERRORS)
            raise self._translate(exc, config) from exc
        finally:
            con.unregister(TABLE)
        return result

    def _run_polars(self, data: pa.Table) -> pa.Table:
        import polars as pl

        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        context = pl.SQLContext(frames={TABLE: frame}, eager=True)
        try:
            out = context.execute(self.query)
        except pl.exceptions.PolarsError as exc:
            config = tuple(getattr(pl.exceptions, name) for name in _POLARS_CONFIG_ERRORS)
            raise self._translate(exc, config) from exc
        return _polars_to_arrow(out)

    def _translate(self, exc: Exception, config_errors: tuple[type[Exception], ...]) -> Exception:
        """The error to raise for a library error: config (stop) or data (bisect)."""
        if isinstance(exc, config_errors):
            return ConfigError(f"sql transform {self.name!r}: {exc}")
        return TransformError(f"sql transform {self.name!r}: {exc}")


def _polars_to_arrow(frame: pl.DataFrame) -> pa.Table:
    table: pa.Table = frame.to_arrow()
    return table
