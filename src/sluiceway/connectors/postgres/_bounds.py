"""The fixed points of a run: the cursor's upper bound and the partition split.

**Upper bound.** An incremental run reads rows whose cursor is at most a bound
fixed when the run starts, and recorded in every batch (and so in its intent, for
an exact replay). For a ``timestamp``/``timestamptz``/``date`` cursor the bound is

    min(now() − lag, start of the oldest transaction still open) − 1 µs

The second term matters because a row is visible only once its transaction
commits, while its cursor (typically ``now()``, the transaction's start) may be
older than rows already read: a long transaction's rows would be passed over if
the bound went past its start. Open transactions are taken from
``pg_stat_activity`` (client backends of the same database, other than this
session); without the ``pg_read_all_stats`` role other users' sessions are not
visible, and ``lag`` is the only guard. A ``date`` cursor only reads whole days
(up to yesterday of that bound). For any other cursor type (a sequence number,
say) the bound is the cursor's maximum when the run starts: a row committed later
with a smaller value is not seen.

**Partition split.** ``partitions: N`` splits the source on one column into N
ranges at quantiles of a sample (``TABLESAMPLE SYSTEM`` on large tables). The
split is kept in every partition's position, so later runs read the same ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from sluiceway.connectors.postgres._catalog import SourceColumn, row_estimate
from sluiceway.connectors.postgres._positions import KeyRange

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["partition_range", "split_points", "upper_bound"]

_log = structlog.get_logger("sluiceway.connectors.postgres")

_SAMPLE_ROWS = 200_000
_LARGE_TABLE = 2_000_000
_OPEN_TRANSACTIONS = (
    "SELECT min(a.xact_start) FROM pg_catalog.pg_stat_activity AS a "
    "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
    "AND a.xact_start IS NOT NULL AND a.backend_type = 'client backend'"
)


def upper_bound(
    con: psycopg.Connection[Any], source: sql.Composable, cursor: SourceColumn, lag: float
) -> str | None:
    """The run's upper bound on ``cursor`` as text (None: no row has a cursor value yet)."""
    from psycopg import sql

    if cursor.temporal:
        bound = sql.SQL(
            "LEAST(now() - make_interval(secs => {}), ({}) - interval '1 microsecond')"
        ).format(sql.Literal(float(lag)), sql.SQL(_OPEN_TRANSACTIONS))
        if cursor.base == "date":
            value = sql.SQL("(({})::date - 1)::text").format(bound)
        else:
            value = sql.SQL("({})::{}::text").format(bound, sql.SQL(cursor.pg_type))
        row = con.execute(
            sql.SQL("SELECT {}, ({}), now() - make_interval(secs => {})").format(
                value, sql.SQL(_OPEN_TRANSACTIONS), sql.Literal(float(lag))
            )
        ).fetchone()
        assert row is not None
        text, oldest, lagged = row
        if oldest is not None and oldest <= lagged:
            _log.info(
                "postgres_upper_bound_held_back",
                cursor=cursor.name,
                upper_bound=text,
                oldest_open_transaction=str(oldest),
                detail="rows of transactions still open are read by a later run",
            )
        return str(text) if text is not None else None
    row = con.execute(
        sql.SQL("SELECT max(s.{})::text FROM {} AS s").format(sql.Identifier(cursor.name), source)
    ).fetchone()
    return str(row[0]) if row is not None and row[0] is not None else None


def split_points(
    con: psycopg.Connection[Any],
    source: sql.Composable,
    column: SourceColumn,
    partitions: int,
    *,
    sample_from: sql.Composable | None = None,
) -> tuple[str, ...]:
    """N − 1 boundaries splitting ``column``'s values into N ranges of similar size.

    ``sample_from`` (a table) allows sampling pages when the table is large. An
    empty source gives no boundaries (then one partition reads everything).
    """
    from psycopg import sql

    fractions = [i / partitions for i in range(1, partitions)]
    ref = sql.Identifier(column.name)
    sampled: sql.Composable = source
    if sample_from is not None:
        estimate = row_estimate(con, sample_from)
        if estimate > _LARGE_TABLE:
            percent = max(100.0 * _SAMPLE_ROWS / estimate, 0.01)
            sampled = sql.SQL("{} AS s TABLESAMPLE SYSTEM ({})").format(
                sample_from, sql.Literal(percent)
            )
    statement = (
        "SELECT (percentile_disc({}::float8[]) WITHIN GROUP (ORDER BY s.{}))::text[] FROM {}"
    )
    for candidate in (sampled, source):
        origin = candidate if candidate is not source else sql.SQL("{} AS s").format(source)
        row = con.execute(
            sql.SQL(statement + " WHERE s.{} IS NOT NULL").format(
                sql.Literal(fractions), ref, origin, ref
            )
        ).fetchone()
        points = row[0] if row is not None else None
        if points:
            return tuple(str(p) for p in points)
        if candidate is source:
            break
    return ()


def partition_range(points: Sequence[str], index: int, partitions: int) -> KeyRange:
    """Partition ``index``'s ``[low, high)`` given the split points (empty when there are none)."""
    if not points:
        return (None, None) if index == 0 else ("", "")
    low = points[index - 1] if index > 0 else None
    high = points[index] if index < partitions - 1 else None
    return low, high
