"""PostgreSQL sink (``type: postgres``): bulk COPY, then one transaction per batch.

Each batch is first bulk-copied (``COPY … FROM STDIN (FORMAT binary)``, encoded
from Arrow in C++ by the ADBC driver) into an unlogged copy table owned by the
sink. Then, in one psycopg transaction, the rows go from there into the target —
``INSERT … SELECT`` for ``append`` and ``replace``, ``INSERT … ON CONFLICT (keys)
DO UPDATE`` for ``merge`` — together with the batch's rows in the
``_sluiceway_ledger`` table. The transaction is left open by :meth:`load` and
committed by :meth:`commit`, after the runner made the refused rows durable in
the dead-letter queue.

Rows the database refuses (a constraint, a value the column's type rejects) are
isolated by bisection under savepoints: the statement is retried on halves of the
rows until each refused row stands alone; those rows are returned with the
database's message and the others are written.

Once a batch went that way with columns that need no cast and no refused row, the
next batches of the same columns skip the copy table: they are ``COPY``-ed straight
into the target, with their ledger rows, in one ADBC transaction that :meth:`commit`
commits (see :meth:`PostgresLoader._load_straight`).

The ledger makes the sink idempotent: :meth:`committed` finds a batch already
held, so a rerun after a crash between the sink's commit and the state commit
skips it, even for ``append``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from sluiceway.connectors.postgres._connection import (
    PostgresConnection,
    connect_adbc,
    connect_psycopg,
    db_message,
    is_connection_error,
    is_row_error,
    translate,
)
from sluiceway.connectors.postgres._schema import Mapped, TableWriter
from sluiceway.connectors.postgres._tables import (
    ORDINAL,
    Column,
    Target,
    columns_of,
    for_ingest,
    null_mask,
)
from sluiceway.core.batch import Batch
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import DataError, SinkError, SluicewayError
from sluiceway.core.retry import RetryExhaustedError, RetryPolicy, call_with_retry
from sluiceway.core.stages import BaseLoader, LoadResult, RowRejection, SinkContext

if TYPE_CHECKING:
    import psycopg

    from sluiceway.connectors.postgres._connection import AdbcHandles

__all__ = ["PostgresLoader"]

_log = structlog.get_logger("sluiceway.connectors.postgres")
_WHAT = "the postgres sink"

LoadMode = Literal["append", "replace", "merge"]


class PostgresLoader(BaseLoader[dict[str, Any]]):
    """Loads batches into one PostgreSQL table, idempotently.

    ``mode`` is ``append``, ``replace`` (written into ``<table>__sluiceway_staging``
    and swapped in atomically when the run succeeds) or ``merge`` (upsert on
    ``keys``; the last row per key in a batch wins, by ``order_by`` then batch
    order, and a row never overwrites one whose ``order_by`` is greater).
    ``schema_mode: evolve`` adds new columns, ``freeze`` dead-letters a batch whose
    columns differ from the table's. ``column_types`` picks the type of columns the
    sink creates. ``isolation_budget`` bounds the statements spent isolating
    refused rows; past it, the batch is dead-lettered whole. ``reconnect`` retries
    the ledger look-up the runner makes outside its load retries.
    """

    type_name = "postgres"

    def __init__(
        self,
        connection: PostgresConnection,
        table: str,
        *,
        mode: LoadMode = "append",
        keys: Sequence[str] = (),
        order_by: str | None = None,
        schema_mode: Literal["evolve", "freeze"] = "evolve",
        create: bool = True,
        column_types: Mapping[str, str] | None = None,
        isolation_budget: int = 512,
        reconnect: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("append", "replace", "merge"):
            raise ValueError(f"mode must be append, replace or merge, not {mode!r}")
        if mode == "merge" and not keys:
            raise ValueError("mode 'merge' needs keys")
        self.connection = connection
        self.table_name = table
        self.mode: LoadMode = mode
        self.keys = list(keys)
        self.order_by = order_by
        self.schema_mode = schema_mode
        self.create = create
        self.column_types = dict(column_types or {})
        self.isolation_budget = isolation_budget
        self.reconnect = reconnect or RetryPolicy(attempts=5, initial_delay=0.5, max_delay=10.0)
        self._pg: psycopg.Connection[Any] | None = None
        self._adbc: AdbcHandles | None = None
        self._table: Target | None = None
        self._copy_schema: pa.Schema | None = None
        self._copy_columns: list[Column] = []
        self._uncertain: int | None = None
        # The straight COPY (see _load_straight): the batch shape it was proven for, the
        # batch whose ADBC transaction is open, and whether a refusal turned it off.
        self._straight_shape: pa.Schema | None = None
        self._straight_json: frozenset[str] = frozenset()
        self._straight_open: int | None = None
        self._straight_off = False

    # -- names ----------------------------------------------------------------------

    @property
    def table(self) -> Target:
        if self._table is None:
            raise SinkError(f"postgres sink {self.table_name!r} is not open")
        return self._table

    @property
    def target(self) -> Target:
        """Where batches go: the table, or its staging table in ``replace`` mode."""
        return self.table.staging() if self.mode == "replace" else self.table

    def describe(self) -> Mapping[str, Any]:
        return {
            "type": self.type_name,
            "server": self.connection.describe(),
            "table": self.table_name,
            "mode": self.mode,
        }

    # -- lifecycle ------------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Connect, make sure the ledger exists, and check the target can take the mode."""
        super().open(context)
        try:
            with self._work("prepare the ledger") as cur:
                if self._table is None:
                    row = cur.execute("SELECT current_schema()").fetchone()
                    default = str(row[0]) if row and row[0] else "public"
                    self._table = Target.parse(self.table_name, default)
                self._writer(cur).ensure_ledger()
                existing = columns_of(cur, self.table)
                if existing is None and not self.create:
                    raise SinkError(
                        f"table {self.table.label!r} does not exist and the sink is set to "
                        "create: false"
                    )
                if existing is not None and self.mode == "merge":
                    self._writer(cur).check_merge_index(self.table)
                self._commit()
        except BaseException:
            self.close()
            raise

    def committed(self, batch: Batch) -> bool:
        """True when the ledger already holds every source partition of ``batch``."""
        if not batch.positions:
            return False

        def read() -> bool:
            with self._work("read the ledger") as cur:
                held = self._writer(cur).holds(batch)
                self._commit()
            return held

        # The runner asks outside its load retries: ride out a lost connection here.
        def retrying(attempt: int, exc: BaseException, delay: float) -> None:
            _log.warning(
                "postgres_sink_retrying",
                table=self.table_name,
                attempt=attempt,
                delay=delay,
                error=str(exc),
            )

        try:
            held, _ = call_with_retry(read, self.reconnect, on_retry=retrying)
        except RetryExhaustedError as exc:
            raise SinkError(f"postgres sink {self.table_name!r}: {exc.last}") from exc.last
        return held

    def load(self, batch: Batch) -> LoadResult:
        """Copy the batch; write it and its ledger rows in a transaction left open."""
        if self._uncertain == batch.seq:
            known = self._outcome_if_committed(batch)
            if known is not None:
                return known
        data = batch.to_arrow()
        refused: list[RowRejection] = []
        rows: pa.Array | None = None
        if self.mode == "merge":
            data, refused, rows = self._refuse_null_keys(data)
        self._reset_transaction()
        ingest = for_ingest(data) if data.num_rows else None
        if ingest is not None and self._straight_ready(ingest):
            straight = self._load_straight(batch, ingest)
            if straight is not None:
                return straight
        if ingest is not None:
            self._copy(ingest)
        try:
            with self._work("load a batch") as cur:
                writer = self._writer(cur)
                failed: list[tuple[int, str]] = []
                if data.num_rows:
                    columns = writer.prepare(self.target, data.schema, self._copy_columns)
                    failed = writer.write(self.target, columns, data.num_rows)
                    if ingest is not None and self._straight_allowed(columns, failed):
                        self._straight_shape = _without_ordinal(ingest).schema
                        self._straight_json = frozenset(
                            c.column for c in columns if c.straight == "json"
                        )
                for index, message in failed:
                    original = int(rows[index].as_py()) if rows is not None else index
                    refused.append(RowRejection(original, message, error_type="RowRefused"))
                refused.sort(key=lambda r: r.row_index)
                written = data.num_rows - len(failed)
                writer.record(batch, self.context, written, refused)
                crash_point("mid_load")
        except BaseException:
            self.abort(batch)
            raise
        # The transaction stays open: the runner dead-letters the refused rows, then commits.
        return LoadResult(written=written, rejected=refused)

    def commit(self, batch: Batch) -> None:
        """Commit what ``load`` wrote (rows and ledger rows together)."""
        if self._straight_open is not None:
            self._commit_straight(batch)
            return
        con = self._pg
        if con is None:
            return
        try:
            con.commit()
        except Exception as exc:
            if _from_client(exc) and is_connection_error(exc):
                # The commit may or may not have happened: the retry asks the ledger.
                self._uncertain = batch.seq
                self._drop()
            raise _translated(exc, f"commit a batch into {self.table_name!r}") from exc
        self._uncertain = None

    def abort(self, batch: Batch) -> None:
        self._end_straight(commit=False)
        con = self._pg
        if con is None:
            return
        try:
            con.rollback()
        except Exception:
            self._drop()

    def finish(self) -> None:
        """In ``replace`` mode, swap the staging table in, in one transaction."""
        if self.mode != "replace":
            return
        with self._work("swap the staging table in") as cur:
            if self._writer(cur).swap(self.table, self.target):
                self._commit()

    def close(self) -> None:
        if self._adbc is not None and self._table is not None and self._copy_schema is not None:
            with contextlib.suppress(Exception):
                self._adbc_execute(
                    _drop_sql(self.target.copy_table(self.context.pipeline), self._pg)
                )
        self._drop()

    # -- pieces ---------------------------------------------------------------------

    def _writer(self, cur: psycopg.Cursor[Any]) -> TableWriter:
        return TableWriter(
            cur,
            pipeline=self.context.pipeline,
            table=self.table,
            mode=self.mode,
            keys=self.keys,
            order_by=self.order_by,
            schema_mode=self.schema_mode,
            create=self.create,
            column_types=self.column_types,
            budget=self.isolation_budget,
            copy=self.target.copy_table(self.context.pipeline),
        )

    def _refuse_null_keys(
        self, data: pa.Table
    ) -> tuple[pa.Table, list[RowRejection], pa.Array | None]:
        needed = [*self.keys, *([self.order_by] if self.order_by else [])]
        absent = [name for name in needed if name not in data.column_names]
        if absent:
            raise DataError(
                f"batch lacks merge column(s) {', '.join(repr(a) for a in absent)} "
                f"needed for table {self.table_name!r}"
            )
        mask = null_mask(data, self.keys)
        if mask is None:
            return data, [], None
        keys = ", ".join(self.keys)
        refused = [
            RowRejection(int(i), f"merge key ({keys}) is null", error_type="NullMergeKey")
            for i in pc.indices_nonzero(mask).to_pylist()
        ]
        kept = pc.indices_nonzero(pc.invert(mask))
        return data.filter(pc.invert(mask)), refused, kept

    # -- the straight COPY -----------------------------------------------------------

    def _straight_allowed(self, columns: Sequence[Mapped], failed: Sequence[Any]) -> bool:
        """After a batch went the copy-table way: may batches of its shape COPY straight?

        Only ``append`` and ``replace`` (merge needs ``ON CONFLICT``), only when every
        column can go into its target column without a cast (see
        :func:`._schema.straight_copy`), and not once the table refused a row this run.
        """
        if self.mode == "merge" or self._straight_off or failed:
            return False
        return all(c.straight is not None for c in columns)

    def _straight_ready(self, ingest: pa.Table) -> bool:
        """Whether this batch has a shape :meth:`_straight_allowed` proved (never merge)."""
        shape = self._straight_shape
        return (
            shape is not None
            and not self._straight_off
            and shape.equals(_without_ordinal(ingest).schema)
        )

    def _load_straight(self, batch: Batch, ingest: pa.Table) -> LoadResult | None:
        """COPY the batch straight into the target, with its ledger rows, in one ADBC
        transaction left open for :meth:`commit`.

        The copy-table way costs the server the rows twice (a COPY, then ``INSERT …
        SELECT``); this is one COPY. It is taken once a batch of the same shape went
        the copy-table way with every column already of the target's type. If the
        server refuses a row (a constraint, a value), the transaction is rolled back
        and ``None`` sends the batch the copy-table way, where refused rows are
        isolated and dead-lettered; the straight way stays off for the rest of the run.
        """
        import adbc_driver_manager

        target = self.target
        options = {
            "adbc.ingest.target_table": target.name,
            "adbc.ingest.target_db_schema": target.schema,
        }
        with self._work("prepare the ledger row") as cur:
            ledger = self._writer(cur).record_statement(batch, self.context, ingest.num_rows, [])
            statement = ledger.as_string(cur)
            self._commit()
        _, connection = self._adbc_connection()
        try:
            with self._translating("copy a batch"):
                connection.set_autocommit(False)
                self._straight_open = batch.seq
                try:
                    self._ingest(self._straight_table(ingest), options, "append")
                except adbc_driver_manager.Error as exc:
                    if not is_row_error(exc):
                        raise
                    self._end_straight(commit=False)
                    self._straight_off = True
                    _log.info(
                        "postgres_straight_copy_off",
                        table=self.table_name,
                        seq=batch.seq,
                        reason=db_message(exc),
                    )
                    return None
                self._adbc_execute(statement)
                crash_point("mid_load")
        except BaseException:
            self._end_straight(commit=False)
            raise
        return LoadResult(written=ingest.num_rows)

    def _straight_table(self, ingest: pa.Table) -> pa.Table:
        """The batch as the straight COPY sends it: JSON text typed as JSON for the driver."""
        table = _without_ordinal(ingest)
        for name in self._straight_json:
            i = table.schema.get_field_index(name)
            column = table.column(i)
            json = pa.json_(column.type)
            chunks = [pa.ExtensionArray.from_storage(json, c) for c in column.chunks]
            table = table.set_column(i, name, pa.chunked_array(chunks, type=json))
        return table

    def _commit_straight(self, batch: Batch) -> None:
        try:
            with self._translating("commit a batch"):
                self._end_straight(commit=True)
        except SluicewayError:
            if self._adbc is None:  # the connection went: the commit may have landed
                self._uncertain = batch.seq
            raise
        self._uncertain = None

    def _end_straight(self, *, commit: bool) -> None:
        """Commit or roll back the straight COPY's transaction; back to autocommit."""
        if self._straight_open is None:
            return
        self._straight_open = None
        adbc = self._adbc
        if adbc is None:
            return
        connection = adbc[1]
        try:
            if commit:
                connection.commit()
            else:
                connection.rollback()
            connection.set_autocommit(True)
        except Exception as exc:
            if commit and not is_connection_error(exc):
                # The session is there and its transaction failed: leave it usable.
                with contextlib.suppress(Exception):
                    connection.rollback()
                    connection.set_autocommit(True)
                raise
            self._drop()  # an unusable session: the server rolls back what it held
            if commit:
                raise

    def _copy(self, ingest: pa.Table) -> None:
        """Bulk-copy the rows into the sink's unlogged copy table (autocommitted)."""
        copy = self.target.copy_table(self.context.pipeline)
        options = {
            "adbc.ingest.target_table": copy.name,
            "adbc.ingest.target_db_schema": copy.schema,
        }
        with self._translating("copy a batch"):
            if self._copy_schema is None or not self._copy_schema.equals(ingest.schema):
                # A new shape: let the driver create the table, then make it unlogged.
                self._ingest(ingest.schema.empty_table(), options, "replace")
                self._adbc_execute(_unlogged_sql(copy, self._pg))
                self._copy_schema = ingest.schema
                with self._work("describe the copy table") as cur:
                    self._copy_columns = columns_of(cur, copy) or []
                    self._commit()
            else:
                self._adbc_execute(_truncate_sql(copy, self._pg))
            self._ingest(ingest, options, "append")

    def _ingest(self, table: pa.Table, options: dict[str, str], mode: str) -> None:
        import adbc_driver_manager

        _, connection = self._adbc_connection()
        statement = adbc_driver_manager.AdbcStatement(connection)
        try:
            statement.set_options(**options, **{"adbc.ingest.mode": f"adbc.ingest.mode.{mode}"})
            statement.bind_stream(
                pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
            )
            statement.execute_update()
        finally:
            statement.close()

    def _adbc_execute(self, query: str) -> None:
        import adbc_driver_manager

        _, connection = self._adbc_connection()
        statement = adbc_driver_manager.AdbcStatement(connection)
        try:
            statement.set_sql_query(query)
            statement.execute_update()
        finally:
            statement.close()

    def _outcome_if_committed(self, batch: Batch) -> LoadResult | None:
        """After a commit whose outcome is unknown: what the ledger says was written."""
        with self._work("read the ledger") as cur:
            found = self._writer(cur).outcome(batch)
            self._commit()
        if found is None:
            return None
        written, rejected = found
        _log.info("postgres_commit_confirmed", seq=batch.seq, table=self.table_name)
        self._uncertain = None
        return LoadResult(
            written=written,
            rejected=[RowRejection(int(i), str(m), error_type=str(t)) for i, t, m in rejected],
        )

    # -- connections ----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed:
            self._pg = connect_psycopg(
                self.connection, autocommit=False, error=SinkError, what=_WHAT
            )
        return self._pg

    def _adbc_connection(self) -> AdbcHandles:
        if self._adbc is None:
            self._adbc = connect_adbc(self.connection, error=SinkError, what=_WHAT)
            self._copy_schema = None
        return self._adbc

    def _reset_transaction(self) -> None:
        con = self._pg
        if con is not None and not con.closed and con.info.transaction_status != 0:
            with self._translating("end an open transaction"):
                con.rollback()

    def _commit(self) -> None:
        with self._translating("commit"):
            self._connection().commit()

    @contextlib.contextmanager
    def _work(self, action: str) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor on the transaction connection; errors rolled back and translated."""
        con = self._connection()
        try:
            with self._translating(action), con.cursor() as cur:
                yield cur
        except BaseException:
            if self._pg is not None and not self._pg.closed:
                try:
                    self._pg.rollback()
                except Exception:
                    self._drop()
            raise

    @contextlib.contextmanager
    def _translating(self, action: str) -> Iterator[None]:
        try:
            yield
        except SluicewayError:
            raise
        except Exception as exc:
            if not _from_client(exc):
                raise
            if is_connection_error(exc):
                self._drop()
            raise _translated(exc, f"{action} into {self.table_name!r}") from exc

    def _drop(self) -> None:
        """Forget both connections (closing them); the next use reconnects."""
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(Exception):
                pg.close()
        adbc, self._adbc = self._adbc, None
        self._copy_schema = None
        if adbc is not None:
            for resource in reversed(adbc):
                with contextlib.suppress(Exception):
                    resource.close()


def _without_ordinal(ingest: pa.Table) -> pa.Table:
    return ingest.drop_columns([ORDINAL])


def _from_client(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("psycopg", "adbc_driver"))


def _translated(exc: BaseException, action: str) -> SluicewayError:
    return translate(exc, action, SinkError)


def _statement(template: str, table: Target, context: Any) -> str:
    from psycopg import sql

    return sql.SQL(template).format(table.ident).as_string(context)


def _unlogged_sql(table: Target, context: Any) -> str:
    return _statement("ALTER TABLE {} SET UNLOGGED", table, context)


def _truncate_sql(table: Target, context: Any) -> str:
    return _statement("TRUNCATE {}", table, context)


def _drop_sql(table: Target, context: Any) -> str:
    return _statement("DROP TABLE IF EXISTS {}", table, context)
