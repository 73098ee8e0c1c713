"""DuckDB sink (``type: duckdb``): the embedded default warehouse.

Every batch is loaded through Arrow (the batch is registered with the connection
and read by one bulk statement) in a single transaction together with a row per
source partition in the ``_sluiceway_ledger`` table. The ledger is what makes the
sink idempotent: :meth:`DuckDBLoader.committed` finds a batch the sink already
holds, so a rerun after a crash between the sink's commit and the state commit
skips it instead of loading it twice.

Modes:

- ``append`` inserts the rows;
- ``merge`` upserts on ``keys``; the last row per key in a batch wins (the greatest
  ``order_by``, ties broken by batch order) and a row older than the one in the
  table by ``order_by`` never overwrites it, so an out-of-order replay is harmless;
- ``replace`` writes into ``<table>__sluiceway_staging`` during the run and swaps
  it in atomically when the run succeeds.

``duckdb`` is imported when the sink opens, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationError, field_validator, model_validator

from sluiceway.core.batch import Batch, Position
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import ConfigError, DataError, SinkError, SluicewayError, TransientError
from sluiceway.core.stages import BaseLoader, LoadResult, RowRejection, SinkContext
from sluiceway.plugins import BuildContext, Plugin, StageConfig

if TYPE_CHECKING:
    import duckdb

__all__ = ["DUCKDB_SINK", "LEDGER_TABLE", "STAGING_SUFFIX", "DuckDBLoader", "DuckDBSinkConfig"]

#: The table (in schema ``main``) recording which source positions each target holds.
LEDGER_TABLE = "_sluiceway_ledger"
#: Appended to the table name to name the table a ``replace`` run writes into.
STAGING_SUFFIX = "__sluiceway_staging"

_MEMORY = ":memory:"
_INCOMING = "_sluiceway_incoming"
_LEDGER_ROWS = "_sluiceway_ledger_rows"
_ORDINAL = "_sluiceway_ord"
_NULL_TYPE = '"NULL"'


class DuckDBSinkConfig(StageConfig):
    """``sink: {type: duckdb, database: …, table: …}`` as written in a pipeline spec.

    ``table`` may be ``schema.table``. ``keys`` and ``order_by`` belong to
    ``mode: merge`` (``keys`` is required there). ``schema_mode: evolve`` adds the
    new columns a batch brings; ``freeze`` dead-letters a batch whose columns differ
    from the table's. ``create: false`` requires the table to exist already.
    """

    type: Literal["duckdb"] = "duckdb"
    database: str
    table: str
    mode: Literal["append", "replace", "merge"] = "append"
    keys: list[str] = Field(default_factory=list)
    order_by: str | None = None
    schema_mode: Literal["evolve", "freeze"] = "evolve"
    create: bool = True

    @field_validator("database")
    @classmethod
    def _database_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("database must be a file path (or ':memory:')")
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(part.strip() for part in parts):
            raise ValueError(f"table must be 'table' or 'schema.table', got {value!r}")
        name = parts[-1]
        if name.lower() == LEDGER_TABLE or name.lower().endswith(STAGING_SUFFIX):
            raise ValueError(f"table name {name!r} is reserved for sluiceway's own tables")
        return value

    @field_validator("keys")
    @classmethod
    def _keys_distinct(cls, value: list[str]) -> list[str]:
        if any(not key.strip() for key in value):
            raise ValueError("keys must be non-empty column names")
        lowered = [key.lower() for key in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"keys must not repeat a column: {value}")
        return value

    @model_validator(mode="after")
    def _mode_options(self) -> DuckDBSinkConfig:
        if self.mode == "merge" and not self.keys:
            raise ValueError("mode 'merge' needs keys: the column(s) that identify a row")
        if self.mode != "merge" and (self.keys or self.order_by is not None):
            raise ValueError(f"keys and order_by only apply to mode 'merge', not {self.mode!r}")
        if self.order_by is not None and self.order_by.lower() in {k.lower() for k in self.keys}:
            raise ValueError(f"order_by {self.order_by!r} must not be one of the keys")
        return self


def _quote(name: str) -> str:
    """A DuckDB identifier, quoted so that any name (quotes, spaces, keywords) is safe."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class _Table:
    schema: str
    name: str

    @classmethod
    def parse(cls, value: str) -> _Table:
        schema, _, name = value.rpartition(".")
        return cls(schema or "main", name)

    @property
    def sql(self) -> str:
        return f"{_quote(self.schema)}.{_quote(self.name)}"

    @property
    def label(self) -> str:
        """How the ledger names this table (DuckDB names are case-insensitive)."""
        return f"{self.schema}.{self.name}".lower()

    def staging(self) -> _Table:
        return _Table(self.schema, self.name + STAGING_SUFFIX)


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    type: str


class DuckDBLoader(BaseLoader[Any]):
    """Loads batches into one DuckDB table, idempotently, through Arrow.

    One connection is held from :meth:`open` to :meth:`close`. Each :meth:`load` is
    one transaction holding the data statements and the ledger rows of the batch.
    Columns are matched by name (case-insensitively, as DuckDB does); columns a
    batch lacks are NULL.

    In ``merge`` mode an incoming row replaces the whole row in the table (columns it
    lacks become NULL) unless its ``order_by`` is older; a null ``order_by`` counts
    as the oldest. Rows whose key is null are refused individually (dead-lettered).
    ``LoadResult.written`` counts every other row of the batch, including rows
    superseded within the batch or kept out by the ``order_by`` guard: the sink has
    acknowledged them, they are not lost.
    """

    type_name = "duckdb"

    def __init__(
        self,
        database: str | os.PathLike[str],
        table: str,
        *,
        mode: Literal["append", "replace", "merge"] = "append",
        keys: Sequence[str] = (),
        order_by: str | None = None,
        schema_mode: Literal["evolve", "freeze"] = "evolve",
        create: bool = True,
    ) -> None:
        super().__init__()
        try:
            self.config = DuckDBSinkConfig(
                database=os.fspath(database),
                table=table,
                mode=mode,
                keys=list(keys),
                order_by=order_by,
                schema_mode=schema_mode,
                create=create,
            )
        except ValidationError as exc:
            problems = "; ".join(str(err["msg"]) for err in exc.errors())
            raise ConfigError(f"invalid duckdb sink: {problems}") from exc
        self.database = self.config.database
        self.table = _Table.parse(self.config.table)
        self._target = self.table.staging() if mode == "replace" else self.table
        self._con: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def from_config(cls, config: DuckDBSinkConfig, ctx: BuildContext) -> DuckDBLoader:
        """Build from a spec's config; a relative ``database`` is relative to the spec file."""
        database = config.database if config.database == _MEMORY else ctx.path(config.database)
        return cls(
            database,
            config.table,
            mode=config.mode,
            keys=config.keys,
            order_by=config.order_by,
            schema_mode=config.schema_mode,
            create=config.create,
        )

    @property
    def mode(self) -> Literal["append", "replace", "merge"]:
        return self.config.mode

    # -- lifecycle ----------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Connect for writing and make sure the ledger exists.

        Raises :class:`SinkError` when the database cannot be opened for writing and
        :class:`TransientError` when another process holds DuckDB's file lock.
        """
        super().open(context)
        import duckdb

        if self.database != _MEMORY:
            try:
                Path(self.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(
                    f"cannot create the folder of DuckDB database {self.database!r}: {exc}"
                ) from exc
        try:
            self._con = duckdb.connect(self.database)
        except duckdb.Error as exc:
            message = _message(exc)
            if isinstance(exc, duckdb.IOException) and "lock" in message.lower():
                raise TransientError(
                    f"DuckDB database {self.database!r} is locked by another process: {message}"
                ) from exc
            raise SinkError(
                f"cannot open DuckDB database {self.database!r} for writing: {message}"
            ) from exc
        try:
            with self._errors("prepare the ledger"):
                self._sql(
                    f"CREATE TABLE IF NOT EXISTS main.{_quote(LEDGER_TABLE)} ("
                    '"pipeline" VARCHAR NOT NULL, "target" VARCHAR NOT NULL, '
                    '"partition" VARCHAR NOT NULL, "start_pos" VARCHAR, "end_pos" VARCHAR, '
                    '"seq" BIGINT, "run_id" VARCHAR, "loaded_at" TIMESTAMP WITH TIME ZONE)'
                )
                if not self.config.create and self._columns(self.table) is None:
                    raise SinkError(
                        f"table {self.config.table!r} does not exist in {self.database!r} "
                        "and the sink is set to create: false"
                    )
        except BaseException:
            # The runner only closes stages that opened: do not leak the file lock.
            self.close()
            raise

    def committed(self, batch: Batch) -> bool:
        """True when the ledger already holds every source partition of ``batch``.

        For an integer position a recorded end at or beyond the batch's end counts;
        any other position must match the recorded (start, end) exactly.
        """
        if not batch.positions:
            return False
        parts = _ledger_rows(batch, "", "", "")
        con = self._connection()
        with self._errors("read the ledger"), self._registered(_LEDGER_ROWS, parts):
            row = con.execute(
                f"SELECT count(*) FROM {_quote(_LEDGER_ROWS)} AS p WHERE NOT EXISTS ("
                f"SELECT 1 FROM main.{_quote(LEDGER_TABLE)} AS l "
                'WHERE l."pipeline" = ? AND l."target" = ? AND l."partition" = p."partition" '
                'AND ((p."end_int" IS NOT NULL AND TRY_CAST(l."end_pos" AS BIGINT) >= p."end_int") '
                'OR (l."start_pos" = p."start_pos" AND l."end_pos" = p."end_pos")))',
                [self.context.pipeline, self._target.label],
            ).fetchall()
        return bool(row) and row[0][0] == 0

    def load(self, batch: Batch) -> LoadResult:
        """Write the batch and its ledger rows in one transaction, left open for ``commit``."""
        data = batch.to_arrow()
        rejected: list[RowRejection] = []
        if self.mode == "merge":
            data, rejected = self._refuse_null_keys(data)
        con = self._connection()
        incoming = _with_ordinal(data) if self.mode == "merge" else data
        with self._errors("load a batch"), self._registered(_INCOMING, incoming):
            con.begin()
            try:
                if data.num_rows:
                    columns = self._prepare(self._target, self._incoming_columns())
                    if self.mode == "merge":
                        self._merge(columns)
                    else:
                        self._insert(columns)
                self._record(batch)
                crash_point("mid_load")
            except BaseException:
                _rollback(con)
                raise
        # The transaction stays open: the runner dead-letters the refused rows, then commits.
        return LoadResult(written=data.num_rows, rejected=rejected)

    def commit(self, batch: Batch) -> None:
        """Commit the transaction ``load`` left open (data and ledger rows together)."""
        con = self._connection()
        with self._errors("commit a batch"):
            try:
                con.commit()
            except BaseException:
                _rollback(con)
                raise

    def abort(self, batch: Batch) -> None:
        if self._con is not None:
            _rollback(self._con)

    def finish(self) -> None:
        """In ``replace`` mode, swap the staging table in, in one transaction.

        A run that staged nothing leaves the table as it was.
        """
        if self.mode != "replace":
            return
        con = self._connection()
        staging = self.table.staging()
        with self._errors("swap the staging table in"):
            if self._columns(staging) is None:
                return
            con.begin()
            try:
                self._sql(f"DROP TABLE IF EXISTS {self.table.sql}")
                self._sql(f"ALTER TABLE {staging.sql} RENAME TO {_quote(self.table.name)}")
                self._sql(
                    f'UPDATE main.{_quote(LEDGER_TABLE)} SET "target" = ? '
                    'WHERE "pipeline" = ? AND "target" = ?',
                    [self.table.label, self.context.pipeline, staging.label],
                )
                con.commit()
            except BaseException:
                _rollback(con)
                raise

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with self._errors("close the database"):
                con.close()

    def describe(self) -> Mapping[str, Any]:
        return {
            "type": self.type_name,
            "database": self.database,
            "table": self.config.table,
            "mode": self.mode,
        }

    # -- schema -------------------------------------------------------------------

    def _prepare(self, target: _Table, incoming: list[_Column]) -> list[tuple[str, str]]:
        """Create or evolve ``target`` for these columns (or refuse them when frozen).

        Returns (table column, batch column) pairs to write by name.
        """
        existing = self._columns(target)
        frozen = self.config.schema_mode == "freeze"
        if existing is None and frozen and target != self.table and self._columns(self.table):
            # A frozen replace keeps the contract of the table it replaces.
            self._sql(f"CREATE TABLE {target.sql} AS SELECT * FROM {self.table.sql} LIMIT 0")
            existing = self._columns(target)
        if existing is None:
            self._create(target, incoming)
            return [(c.name, c.name) for c in incoming]
        by_name = {c.name.lower(): c for c in existing}
        extra = [c for c in incoming if c.name.lower() not in by_name]
        if frozen:
            self._check_frozen(target, existing, incoming, extra)
        for column in extra:
            self._sql(
                f"ALTER TABLE {target.sql} ADD COLUMN {_quote(column.name)} {_ddl_type(column)}"
            )
        return [
            (by_name[c.name.lower()].name if c not in extra else c.name, c.name) for c in incoming
        ]

    def _create(self, target: _Table, incoming: list[_Column]) -> None:
        if not self.config.create and target == self.table:
            raise SinkError(f"table {self.config.table!r} does not exist and create is false")
        self._sql(f"CREATE SCHEMA IF NOT EXISTS {_quote(target.schema)}")
        select = ", ".join(
            f"CAST({_quote(c.name)} AS VARCHAR) AS {_quote(c.name)}"
            if c.type == _NULL_TYPE
            else _quote(c.name)
            for c in incoming
        )
        self._sql(f"CREATE TABLE {target.sql} AS SELECT {select} FROM {_quote(_INCOMING)} LIMIT 0")
        if self.mode == "merge":
            names = {c.name.lower(): c.name for c in incoming}
            keys = ", ".join(_quote(names[k.lower()]) for k in self.config.keys)
            self._sql(f"ALTER TABLE {target.sql} ADD PRIMARY KEY ({keys})")

    def _check_frozen(
        self,
        target: _Table,
        existing: list[_Column],
        incoming: list[_Column],
        extra: list[_Column],
    ) -> None:
        seen = {c.name.lower() for c in incoming}
        missing = [c.name for c in existing if c.name.lower() not in seen]
        by_name = {c.name.lower(): c for c in existing}
        mismatched: list[str] = []
        common = [c for c in incoming if c not in extra]
        differing = [c for c in common if c.type != by_name[c.name.lower()].type]
        if differing:
            checks = ", ".join(
                f"can_cast_implicitly((SELECT {_quote(c.name)} FROM {_quote(_INCOMING)} LIMIT 0), "
                f"(SELECT {_quote(by_name[c.name.lower()].name)} FROM {target.sql} LIMIT 0))"
                for c in differing
            )
            (row,) = self._connection().execute(f"SELECT {checks}").fetchall()
            mismatched = [
                f"{c.name!r} (batch {c.type}, table {by_name[c.name.lower()].type})"
                for c, ok in zip(differing, row, strict=True)
                if not ok
            ]
        if not (extra or missing or mismatched):
            return
        problems = []
        if extra:
            problems.append("extra column(s) " + ", ".join(repr(c.name) for c in extra))
        if missing:
            problems.append("missing column(s) " + ", ".join(repr(name) for name in missing))
        if mismatched:
            problems.append("mismatched type(s) " + ", ".join(mismatched))
        raise DataError(
            f"batch does not match the frozen schema of table {self.config.table!r}: "
            + "; ".join(problems)
        )

    def _columns(self, table: _Table) -> list[_Column] | None:
        rows = (
            self._connection()
            .execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE database_name = current_database() "
                "AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?) "
                "ORDER BY column_index",
                [table.schema, table.name],
            )
            .fetchall()
        )
        return [_Column(str(name), str(type_)) for name, type_ in rows] or None

    def _incoming_columns(self) -> list[_Column]:
        rows = self._connection().execute(f"DESCRIBE SELECT * FROM {_quote(_INCOMING)}").fetchall()
        return [_Column(str(row[0]), str(row[1])) for row in rows if row[0] != _ORDINAL]

    # -- writes -------------------------------------------------------------------

    def _insert(self, columns: list[tuple[str, str]]) -> None:
        into = ", ".join(_quote(t) for t, _ in columns)
        select = ", ".join(_quote(s) for _, s in columns)
        self._sql(
            f"INSERT INTO {self._target.sql} ({into}) SELECT {select} FROM {_quote(_INCOMING)}"
        )

    def _merge(self, columns: list[tuple[str, str]]) -> None:
        by_target = {t.lower(): s for t, s in columns}
        keys = [by_target[k.lower()] for k in self.config.keys]
        order = []
        guard = ""
        if self.config.order_by is not None:
            ob = _quote(by_target[self.config.order_by.lower()])
            order.append(f"{ob} DESC NULLS LAST")
            guard = f" AND (t.{ob} IS NULL OR s.{ob} >= t.{ob})"
        order.append(f"{_quote(_ORDINAL)} DESC")
        latest = (
            f"SELECT {', '.join(_quote(s) for _, s in columns)} FROM {_quote(_INCOMING)} "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(_quote(k) for k in keys)} "
            f"ORDER BY {', '.join(order)}) = 1"
        )
        on = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
        # The incoming row replaces the whole target row: columns it lacks become NULL.
        existing = self._columns(self._target) or []
        key_names = {k.lower() for k in self.config.keys}
        assignments = [
            f"{_quote(c.name)} = "
            + (f"s.{_quote(by_target[c.name.lower()])}" if c.name.lower() in by_target else "NULL")
            for c in existing
            if c.name.lower() not in key_names
        ]
        matched = (
            f" WHEN MATCHED{guard} THEN UPDATE SET {', '.join(assignments)}" if assignments else ""
        )
        into = ", ".join(_quote(t) for t, _ in columns)
        values = ", ".join(f"s.{_quote(s)}" for _, s in columns)
        self._sql(
            f"MERGE INTO {self._target.sql} AS t USING ({latest}) AS s ON ({on}){matched} "
            f"WHEN NOT MATCHED THEN INSERT ({into}) VALUES ({values})"
        )

    def _record(self, batch: Batch) -> None:
        context = self.context
        rows = _ledger_rows(batch, context.pipeline, self._target.label, context.run_id)
        with self._registered(_LEDGER_ROWS, rows):
            self._sql(
                f"INSERT INTO main.{_quote(LEDGER_TABLE)} "
                '("pipeline", "target", "partition", "start_pos", "end_pos", "seq", "run_id", '
                '"loaded_at") SELECT "pipeline", "target", "partition", "start_pos", "end_pos", '
                f'"seq", "run_id", current_timestamp FROM {_quote(_LEDGER_ROWS)}'
            )

    def _refuse_null_keys(self, data: pa.Table) -> tuple[pa.Table, list[RowRejection]]:
        names = {name.lower(): name for name in data.column_names}
        absent = [k for k in self.config.keys if k.lower() not in names]
        if self.config.order_by is not None and self.config.order_by.lower() not in names:
            absent.append(self.config.order_by)
        if absent:
            raise DataError(
                f"batch lacks merge column(s) {', '.join(repr(a) for a in absent)} "
                f"needed for table {self.config.table!r}"
            )
        null_key: pa.ChunkedArray | pa.Array | None = None
        for key in self.config.keys:
            is_null = pc.is_null(data.column(names[key.lower()]))
            null_key = is_null if null_key is None else pc.or_(null_key, is_null)
        assert null_key is not None
        if not pc.any(null_key).as_py():
            return data, []
        indices = pc.indices_nonzero(null_key).to_pylist()
        keys = ", ".join(self.config.keys)
        rejected = [
            RowRejection(i, f"merge key ({keys}) is null", error_type="NullMergeKey")
            for i in indices
        ]
        return data.filter(pc.invert(null_key)), rejected

    # -- plumbing -----------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise SinkError(f"DuckDB sink {self.config.table!r} is not open")
        return self._con

    def _sql(self, statement: str, params: Sequence[Any] | None = None) -> None:
        # Read the (count) result to its end: DuckDB refuses other work meanwhile.
        self._connection().execute(statement, params).fetchall()

    @contextlib.contextmanager
    def _registered(self, name: str, table: pa.Table) -> Iterator[None]:
        con = self._connection()
        con.register(name, table)
        try:
            yield
        finally:
            con.unregister(name)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate DuckDB's exceptions into sluiceway's, once, at the boundary."""
        import duckdb

        try:
            yield
        except duckdb.Error as exc:
            raise _translate(exc, f"{action} into {self.config.table!r}") from exc


def _translate(exc: Exception, action: str) -> SluicewayError:
    import duckdb

    message = _message(exc)
    if isinstance(
        exc,
        duckdb.ConversionException
        | duckdb.ConstraintException
        | duckdb.InvalidInputException
        | duckdb.OutOfRangeException
        | duckdb.TypeMismatchException,
    ):
        return DataError(message)
    if isinstance(exc, duckdb.IOException | duckdb.TransactionException):
        return TransientError(f"DuckDB could not {action}: {message}")
    return SinkError(f"DuckDB could not {action}: {message}")


def _message(exc: Exception) -> str:
    """DuckDB's message without the echoed SQL that follows it."""
    text = str(exc).split("\n\nLINE ", 1)[0].strip()
    return text or type(exc).__name__


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    import duckdb

    # The transaction may already be gone (DuckDB aborts some failed ones itself).
    with contextlib.suppress(duckdb.Error):
        con.rollback()


def _with_ordinal(data: pa.Table) -> pa.Table:
    """The rows plus their batch order, which breaks ties in a merge (no Python loop)."""
    import polars as pl

    ordinal = pl.int_range(0, data.num_rows, eager=True, dtype=pl.Int64).to_arrow()
    return data.append_column(_ORDINAL, ordinal)


def _ddl_type(column: _Column) -> str:
    # DuckDB renders its own types (quoting nested field names); a column of Arrow's
    # null type has no type to keep, so it becomes VARCHAR.
    return "VARCHAR" if column.type == _NULL_TYPE else column.type


def _position_json(value: Position) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _int_position(value: Position) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ledger_rows(batch: Batch, pipeline: str, target: str, run_id: str) -> pa.Table:
    """One row per source partition of ``batch``; positions as canonical JSON."""
    spans = list(batch.positions.items())
    columns: dict[str, tuple[list[Any], pa.DataType]] = {
        "pipeline": ([pipeline] * len(spans), pa.string()),
        "target": ([target] * len(spans), pa.string()),
        "partition": ([name for name, _ in spans], pa.string()),
        "start_pos": ([_position_json(span.start) for _, span in spans], pa.string()),
        "end_pos": ([_position_json(span.end) for _, span in spans], pa.string()),
        "end_int": ([_int_position(span.end) for _, span in spans], pa.int64()),
        "seq": ([batch.seq] * len(spans), pa.int64()),
        "run_id": ([run_id] * len(spans), pa.string()),
    }
    return pa.table({name: pa.array(values, type_) for name, (values, type_) in columns.items()})


def _build(config: DuckDBSinkConfig, ctx: BuildContext) -> DuckDBLoader:
    return DuckDBLoader.from_config(config, ctx)


DUCKDB_SINK = Plugin(
    kind="sink",
    type="duckdb",
    config=DuckDBSinkConfig,
    build=_build,
    summary="DuckDB table (append, replace, merge), idempotent through a batch ledger",
)
