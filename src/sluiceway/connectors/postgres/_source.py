"""PostgreSQL source (``type: postgres``): a table or a query, streamed into Arrow batches.

Rows travel as ``COPY (SELECT …) TO STDOUT (FORMAT binary)`` and are decoded into
Arrow record batches in C++ by the ADBC PostgreSQL driver; the stream is cut into
batches of ``batch_size`` rows without copying. Memory is bounded by the batch
size and the number of partitions, never by the table.

- **Full read** (no ``incremental``): every run reads the whole table, in key
  order when the table has a primary key (or ``key`` is given), so a run that
  stopped half-way resumes where it stopped and a pending batch replays exactly.
- **Incremental** (``incremental: {cursor: updated_at, lag: 5m}``): rows are read
  in ``(cursor, key)`` order after the committed position and up to an upper bound
  fixed when the run starts (see :mod:`._bounds`).
- **Partitions** (``partitions: N``): the table is split into N ranges of
  ``partition_by`` (default: the first key column), each read concurrently as its
  own source partition with its own position.

Connection failures while reading are retried: the partition reconnects and reads
on after the last batch it delivered.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import structlog

from sluiceway.connectors.postgres._bounds import partition_range, split_points, upper_bound
from sluiceway.connectors.postgres._catalog import (
    SourceColumn,
    describe_columns,
    primary_key,
)
from sluiceway.connectors.postgres._connection import (
    PostgresConnection,
    connect_adbc,
    connect_psycopg,
    translate_stream,
    translating,
)
from sluiceway.connectors.postgres._convert import Converter, key_json
from sluiceway.connectors.postgres._parallel import interleave
from sluiceway.connectors.postgres._positions import (
    KeyRange,
    PartitionPosition,
    Where,
    key_texts,
)
from sluiceway.core.batch import Batch, PartitionSpan
from sluiceway.core.errors import ConfigError, SourceError, TransientError
from sluiceway.core.retry import RetryExhaustedError, RetryPolicy, call_with_retry
from sluiceway.core.stages import BaseExtractor, SourceContext
from sluiceway.core.state import Intent
from sluiceway.engines.types import parse_type

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["PostgresExtractor"]

_log = structlog.get_logger("sluiceway.connectors.postgres")

_WHAT = "the postgres source"
_FETCH_HINT_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class _Partition:
    name: str
    start: PartitionPosition
    key_range: KeyRange | None = None


@dataclass(slots=True)
class _Plan:
    """What ``open()`` learnt from the catalogue and the committed positions."""

    columns: list[SourceColumn]
    converter: Converter
    where: Where
    keyed: bool
    upper_bound: str | None
    gen: int = 0
    split: tuple[str, ...] | None = None


class PostgresExtractor(BaseExtractor[dict[str, Any]]):
    """Reads a table (``table``) or a query (``query``) from PostgreSQL.

    ``key`` orders the rows (default: the table's primary key); ``cursor`` with
    ``lag`` (seconds) makes the read incremental; ``partitions`` > 1 splits it on
    ``partition_by``. ``numeric_precision``/``numeric_scale`` give unconstrained
    ``numeric`` columns a decimal type; ``types`` declares column types (checked
    casts, misfits dead-lettered). ``reconnect`` is the retry policy for a lost
    connection.
    """

    type_name = "postgres"

    def __init__(
        self,
        connection: PostgresConnection,
        *,
        table: str | None = None,
        query: str | None = None,
        columns: Sequence[str] | None = None,
        key: Sequence[str] | None = None,
        cursor: str | None = None,
        lag: float = 0.0,
        batch_size: int = 100_000,
        partitions: int = 1,
        partition_by: str | None = None,
        numeric_precision: int = 38,
        numeric_scale: int = 9,
        types: Mapping[str, str | pa.DataType] | None = None,
        reconnect: RetryPolicy | None = None,
    ) -> None:
        super().__init__(batch_size)
        if (table is None) == (query is None):
            raise ConfigError("a postgres source needs exactly one of table or query")
        if columns is not None and table is None:
            raise ConfigError("columns applies to a table source; select them in the query")
        if partitions < 1:
            raise ConfigError("partitions must be at least 1")
        self.connection = connection
        self.table = table
        self.query = query.strip().rstrip(";") if query is not None else None
        self.columns = list(columns) if columns is not None else None
        self.key = list(key) if key is not None else None
        self.cursor = cursor
        self.lag = lag
        self.partitions = partitions
        self.partition_by = partition_by
        self.numeric_precision = numeric_precision
        self.numeric_scale = numeric_scale
        self.types: dict[str, pa.DataType] = {
            name: parse_type(t) if isinstance(t, str) else t for name, t in (types or {}).items()
        }
        self.reconnect = reconnect or RetryPolicy(attempts=5, initial_delay=0.5, max_delay=30.0)
        self.label = table if table is not None else "query"
        self._plan: _Plan | None = None

    @property
    def incremental(self) -> bool:
        return self.cursor is not None

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "server": self.connection.describe(),
            "table" if self.table is not None else "query": self.label,
            "incremental": self.cursor,
            "partitions": self.partitions,
        }

    # -- SQL of the source ----------------------------------------------------------

    def relation(self) -> sql.Composable:
        """The table as a quoted identifier (``schema.table`` or ``table``)."""
        from psycopg import sql

        assert self.table is not None
        return sql.Identifier(*self.table.split(".", 1))

    def source_sql(self) -> sql.Composable:
        """What the reads select from: the table (or its columns) or the query."""
        from psycopg import sql

        if self.query is not None:
            return sql.SQL("({})").format(sql.SQL(self.query))  # the user's own SQL
        if self.columns is None:
            return self.relation()
        return sql.SQL("(SELECT {} FROM {})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in self.columns), self.relation()
        )

    # -- lifecycle ------------------------------------------------------------------

    def open(self, context: SourceContext) -> None:
        """Read the catalogue, fix the run's upper bound and the partitions (retried)."""
        super().open(context)
        try:
            self._plan, _ = call_with_retry(self._inspect, self.reconnect)
        except RetryExhaustedError as exc:
            raise SourceError(f"postgres source {self.label!r}: {exc.last}") from exc.last

    def _inspect(self) -> _Plan:
        con = connect_psycopg(self.connection, autocommit=True, error=SourceError, what=_WHAT)
        try:
            with translating(f"inspect {self.label!r}", SourceError), con:
                return self._plan_with(con)
        finally:
            con.close()

    def _plan_with(self, con: psycopg.Connection[Any]) -> _Plan:
        source = self.source_sql()
        columns = describe_columns(
            con,
            source,
            numeric_precision=self.numeric_precision,
            numeric_scale=self.numeric_scale,
        )
        by_name = {c.name: c for c in columns}
        unknown = [t for t in self.types if t not in by_name]
        if unknown:
            raise ConfigError(f"types names unknown column(s) {unknown}; columns: {list(by_name)}")
        key = self.key
        if key is None:
            key = primary_key(con, self.relation()) if self.table is not None else []
        order = self._order(key, by_name)
        cursor = by_name[self.cursor] if self.cursor is not None else None
        split = None
        if self.partitions > 1:
            split_name = self.partition_by or (key[0] if key else None)
            if split_name is None:
                raise ConfigError("partitions need partition_by or a key to split on")
            split = self._column(split_name, by_name, "partition_by")
        where = Where(order=order, cursor=cursor, split=split)
        # Numeric columns that no position is read from travel as unscaled bigints.
        positional = {c.name for c in order} | {c.name for c in (cursor, split) if c is not None}
        columns = [
            c if c.name in positional or c.name in self.types else c.scaled() for c in columns
        ]
        bound = upper_bound(con, source, cursor, self.lag) if cursor is not None else None
        plan = _Plan(
            columns=columns,
            converter=Converter(columns, self.types),
            where=where,
            keyed=bool(order),
            upper_bound=bound,
        )
        self._generation(con, plan)
        _log.info(
            "postgres_source_opened",
            source=self.label,
            key=[c.name for c in order],
            upper_bound=bound,
            partitions=self.partition_names(),
            generation=plan.gen if not self.incremental else None,
        )
        return plan

    def _column(self, name: str, by_name: Mapping[str, SourceColumn], role: str) -> SourceColumn:
        column = by_name.get(name)
        if column is None:
            raise ConfigError(f"{role} {name!r} is not a column of {self.label!r}")
        if not column.keyable:
            raise ConfigError(f"{role} {name!r} has type {column.pg_type}, which cannot order rows")
        return column

    def _order(self, key: Sequence[str], by_name: Mapping[str, SourceColumn]) -> list[SourceColumn]:
        names = list(key)
        if self.cursor is not None:
            if not names:
                raise ConfigError(
                    f"an incremental read of {self.label!r} needs a unique key to break ties on "
                    "the cursor: the table has no primary key, give key: [...]"
                )
            names = [self.cursor, *[k for k in names if k != self.cursor]]
        return [self._column(n, by_name, "key" if n != self.cursor else "cursor") for n in names]

    def _generation(self, con: psycopg.Connection[Any], plan: _Plan) -> None:
        """Fix the run's generation and the partition split from the committed positions.

        Decided before pending intents are replayed: a full read whose generation is
        unfinished finishes it (and stops); a finished one starts the next.
        """
        names = self.partition_names()
        mine = self._committed()
        stale = sorted(n for n in mine if n not in names)
        if stale:
            raise SourceError(
                f"the state holds positions of partitions {stale} of {self.label!r}, but the "
                f"source now reads {names}; keep partitions as they were or reset the state"
            )
        gen = max((p.gen for p in mine.values()), default=0)
        unfinished = bool(mine) and (
            len(mine) < len(names) or not all(p.done for p in mine.values())
        )
        if not plan.keyed:
            if unfinished:
                _log.warning(
                    "postgres_restart_unkeyed",
                    source=self.label,
                    detail="a read without a key cannot resume; reading everything again",
                )
            plan.gen = gen + 1
            return
        plan.gen = gen if self.incremental or unfinished else gen + 1
        if len(names) == 1:
            return
        plan.split = next(
            (p.split for p in mine.values() if p.split is not None and p.gen == plan.gen), None
        )
        if plan.split is None:
            assert plan.where.split is not None
            plan.split = split_points(
                con,
                self.source_sql(),
                plan.where.split,
                self.partitions,
                sample_from=self.relation() if self.table is not None else None,
            )

    def _committed(self) -> dict[str, PartitionPosition]:
        """This source's committed positions, by partition name."""
        out: dict[str, PartitionPosition] = {}
        for name, value in self.context.positions.items():
            if name == self.label or name.startswith(self.label + "["):
                position = PartitionPosition.from_json(value)
                if position is not None:
                    out[name] = position
        return out

    def _starts(self, plan: _Plan) -> list[_Partition]:
        """Where each partition starts reading, from the positions committed so far.

        Asked when extraction begins, after the runner replayed pending intents and
        committed their positions.
        """
        if not plan.keyed:
            return [_Partition(self.label, PartitionPosition(row=0, gen=plan.gen))]
        committed = self._committed()
        names = self.partition_names()
        parts = []
        for index, name in enumerate(names):
            start = committed.get(name)
            if start is None or start.gen != plan.gen:
                start = PartitionPosition(gen=plan.gen, split=plan.split)
            key_range = None
            if len(names) > 1:
                start = replace(start, split=plan.split)
                key_range = partition_range(plan.split or (), index, len(names))
            parts.append(_Partition(name, start, key_range))
        return parts

    def partition_names(self) -> list[str]:
        """The source partitions this configuration reads (their names key the state)."""
        if self.partitions == 1:
            return [self.label]
        return [f"{self.label}[{i}/{self.partitions}]" for i in range(self.partitions)]

    def close(self) -> None:
        self._plan = None

    # -- reading --------------------------------------------------------------------

    def extract(self) -> Iterator[Batch]:
        plan = self._require_plan()
        todo = [p for p in self._starts(plan) if not (p.start.done and not self.incremental)]
        if self.incremental and plan.upper_bound is None:
            return  # the table has no rows with a cursor value yet
        if len(todo) <= 1:
            for part in todo:
                yield from self._read(part)
            return
        yield from interleave(
            todo, self._read, stop=self.context.stop, depth=1, name="sluiceway-pg-read"
        )

    def _read(self, part: _Partition) -> Iterator[Batch]:
        """One partition's batches; a lost connection reconnects and reads on."""
        plan = self._require_plan()
        position = part.start
        failures = 0
        while True:
            try:
                for batch in self._stream(part, position):
                    yield batch
                    span = batch.positions[part.name]
                    position = PartitionPosition.from_json(span.end) or position
                    failures = 0
                return
            except TransientError as exc:
                failures += 1
                if not plan.keyed or failures >= self.reconnect.attempts:
                    raise SourceError(
                        f"postgres source {part.name!r}: reading failed "
                        f"after {failures} attempt(s): {exc}"
                    ) from exc
                delay = min(
                    self.reconnect.initial_delay * 2 ** (failures - 1), self.reconnect.max_delay
                )
                _log.warning(
                    "postgres_source_reconnecting",
                    partition=part.name,
                    attempt=failures,
                    delay=delay,
                    error=str(exc),
                )
                if self.context.stop.wait(delay):
                    return

    def _stream(self, part: _Partition, start: PartitionPosition) -> Iterator[Batch]:
        query = self._select(part, after=start.after)
        position = start
        pending: list[pa.RecordBatch] = []
        rows = 0
        size = self.batch_size
        with self._reader(query, part.name) as reader:
            while True:
                if self.context.stop.is_set():
                    return
                try:
                    chunk = reader.read_next_batch()
                except StopIteration:
                    break
                except (OSError, pa.ArrowException) as exc:
                    raise translate_stream(exc, f"read {part.name!r}", SourceError) from exc
                if chunk.num_rows == 0:
                    continue
                pending.append(chunk)
                rows += chunk.num_rows
                while rows > size:  # more rows follow this cut, so it is not the last batch
                    table = pa.Table.from_batches(pending)
                    batch = self._batch(part, position, table.slice(0, size), done=False)
                    pending = table.slice(size).to_batches()
                    rows -= size
                    position = (
                        PartitionPosition.from_json(batch.positions[part.name].end) or position
                    )
                    yield batch
            # The rest; a full read marks its generation done (an empty batch if need be).
            finished = not self.incremental
            if rows or finished:
                table = pa.Table.from_batches(pending, schema=reader.schema)
                yield self._batch(part, position, table, done=finished)

    def _batch(
        self, part: _Partition, start: PartitionPosition, raw: pa.Table, *, done: bool
    ) -> Batch:
        plan = self._require_plan()
        order = [c.name for c in plan.where.order]
        n = raw.num_rows
        after = key_texts(raw, order, n - 1) if order and n else None
        end = start.advanced(after=after, rows=n, done=done)

        def position_of(table: pa.Table, row: int) -> str:
            if order:
                return key_json(key_texts(table, order, row))
            return str((start.row or 0) + row)

        converted = plan.converter.convert(raw, part.name, position_of)
        return Batch.from_source(
            converted.table,
            {part.name: PartitionSpan(start.to_json(), end.to_json(), converted.table.num_rows)},
            upper_bound=plan.upper_bound,
            rejected=converted.rejected,
        )

    def _select(
        self,
        part: _Partition,
        *,
        after: Sequence[str] | None,
        upto: Sequence[str] | None = None,
        bound: str | None = None,
    ) -> str:
        from psycopg import sql

        plan = self._require_plan()
        where = plan.where.clause(
            after=after,
            upto=upto,
            upper_bound=bound if bound is not None else plan.upper_bound,
            key_range=part.key_range,
        )
        statement = sql.SQL("SELECT {} FROM {} AS s{}{}").format(
            sql.SQL(", ").join(c.select() for c in plan.columns),
            self.source_sql(),
            where,
            plan.where.order_by(),
        )
        return statement.as_string(None)

    @contextlib.contextmanager
    def _reader(self, query: str, partition: str) -> Iterator[Any]:
        """An Arrow record batch reader over ``query``'s rows (closed on exit)."""
        database, connection = connect_adbc(self.connection, error=SourceError, what=_WHAT)
        statement: Any = None
        reader: Any = None
        try:
            with translating(f"read {partition!r}", SourceError):
                import adbc_driver_manager

                statement = adbc_driver_manager.AdbcStatement(connection)
                statement.set_options(
                    **{"adbc.postgresql.batch_size_hint_bytes": str(_FETCH_HINT_BYTES)}
                )
                statement.set_sql_query(query)
                handle, _ = statement.execute_query()
                reader = pa.RecordBatchReader._import_from_c(handle.address)
            yield reader
        finally:
            for resource in (reader, statement, connection, database):
                if resource is not None:
                    with contextlib.suppress(Exception):
                        resource.close()

    # -- replay ---------------------------------------------------------------------

    def replay(self, intent: Intent) -> Batch | None:
        """Re-read exactly the rows of an unfinished batch: keys in (start, end], same bound.

        None when the batch is not one of this source's keyed partitions (a keyless
        query cannot replay; the runner then re-reads from the committed positions).
        """
        plan = self._require_plan()
        if len(intent.positions) != 1 or not plan.keyed:
            return None
        ((name, span),) = intent.positions.items()
        if name not in self.partition_names():
            return None
        start = PartitionPosition.from_json(span.start)
        end = PartitionPosition.from_json(span.end)
        if start is None or end is None or start.row is not None:
            return None
        index = self.partition_names().index(name)
        key_range = partition_range(start.split or (), index, self.partitions)
        part = _Partition(name, start, key_range if self.partitions > 1 else None)
        bound = intent.upper_bound if isinstance(intent.upper_bound, str) else None
        if end.after is None or end.after == start.after:
            table = plan.converter.empty()
            rejected = None
        else:
            query = self._select(part, after=start.after, upto=end.after, bound=bound)
            for attempt in range(1, self.reconnect.attempts + 1):
                try:
                    with (
                        self._reader(query, name) as reader,
                        translating(f"replay {name!r}", SourceError),
                    ):
                        try:
                            raw = reader.read_all()
                        except (OSError, pa.ArrowException) as exc:
                            raise translate_stream(exc, f"replay {name!r}", SourceError) from exc
                    break
                except TransientError:
                    if attempt == self.reconnect.attempts:
                        raise
                    time.sleep(min(self.reconnect.initial_delay * 2**attempt, 5.0))
            converted = plan.converter.convert(
                raw,
                name,
                lambda t, r: key_json(key_texts(t, [c.name for c in plan.where.order], r)),
            )
            table, rejected = converted.table, converted.rejected
        if table.num_rows != span.rows:
            _log.info(
                "postgres_replay_rows_changed",
                partition=name,
                expected=span.rows,
                read=table.num_rows,
                detail="rows were updated or deleted since the batch was first read",
            )
        return Batch.from_source(
            table,
            {name: PartitionSpan(span.start, span.end, table.num_rows)},
            upper_bound=intent.upper_bound,
            rejected=rejected,
        )

    def _require_plan(self) -> _Plan:
        if self._plan is None:
            raise SourceError(f"postgres source {self.label!r} is not open")
        return self._plan
