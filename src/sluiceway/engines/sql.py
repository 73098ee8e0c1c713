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
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from sluiceway.core.errors import ConfigError, TransformError
from sluiceway.core.stages import BaseTransformer

if TYPE_CHECKING:
    import polars as pl

__all__ = ["SQLEngine", "SQLTransformer", "check_query", "default_threads"]

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
