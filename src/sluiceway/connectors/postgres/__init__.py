"""PostgreSQL: a bulk source, an idempotent sink, and the core's state store.

- ``source: {type: postgres}`` streams a table or a query into Arrow batches
  (``COPY … (FORMAT binary)`` decoded by the ADBC driver), fully or incrementally on
  ``(cursor, key)``, optionally split into partitions read concurrently.
- ``sink: {type: postgres}`` bulk-copies each batch and appends, replaces or
  merges it in one transaction with a ledger row, isolating refused rows.
- ``state: {uri: postgresql://…}`` keeps checkpoints in a table (compare-and-swap
  on a version) under an advisory run lock.

This module stays light: psycopg and the ADBC driver (``pip install
'sluiceway[postgres]'``) are imported when a connection opens.
"""

from __future__ import annotations

from sluiceway.connectors.postgres._config import (
    IncrementalConfig,
    PostgresConnectionConfig,
    PostgresSinkConfig,
    PostgresSourceConfig,
    PostgresStateConfig,
)
from sluiceway.connectors.postgres._connection import PostgresConnection
from sluiceway.connectors.postgres._sink import PostgresLoader
from sluiceway.connectors.postgres._source import PostgresExtractor
from sluiceway.connectors.postgres._state import PostgresStateStore
from sluiceway.connectors.postgres._tables import LEDGER_TABLE, STAGING_SUFFIX
from sluiceway.core.retry import RetryPolicy
from sluiceway.plugins import BuildContext, Plugin

__all__ = [
    "LEDGER_TABLE",
    "POSTGRES_SINK",
    "POSTGRES_SOURCE",
    "POSTGRES_STATE",
    "STAGING_SUFFIX",
    "IncrementalConfig",
    "PostgresConnection",
    "PostgresConnectionConfig",
    "PostgresExtractor",
    "PostgresLoader",
    "PostgresSinkConfig",
    "PostgresSourceConfig",
    "PostgresStateConfig",
    "PostgresStateStore",
]


def _build_source(config: PostgresSourceConfig, ctx: BuildContext) -> PostgresExtractor:
    incremental = config.incremental
    return PostgresExtractor(
        config.connection(ctx),
        table=config.table,
        query=config.query,
        columns=config.columns,
        key=config.key,
        cursor=incremental.cursor if incremental is not None else None,
        lag=incremental.lag if incremental is not None else 0.0,
        batch_size=config.batch_size,
        partitions=config.partitions,
        partition_by=config.partition_by,
        numeric_precision=config.numeric_precision,
        numeric_scale=config.numeric_scale,
        types=config.types,
        reconnect=RetryPolicy(
            attempts=config.reconnect_attempts, initial_delay=0.5, max_delay=30.0
        ),
    )


def _build_sink(config: PostgresSinkConfig, ctx: BuildContext) -> PostgresLoader:
    return PostgresLoader(
        config.connection(ctx),
        config.table,
        mode=config.mode,
        keys=config.keys,
        order_by=config.order_by,
        schema_mode=config.schema_mode,
        create=config.create,
        column_types=config.column_types,
        isolation_budget=config.isolation_budget,
    )


def _build_state(config: PostgresStateConfig, ctx: BuildContext) -> PostgresStateStore:
    return PostgresStateStore(config.connection(ctx), ctx.pipeline, table=config.table)


POSTGRES_SOURCE = Plugin(
    kind="source",
    type="postgres",
    config=PostgresSourceConfig,
    build=_build_source,
    summary="PostgreSQL table or query via binary COPY into Arrow; incremental, partitioned",
    extra="postgres",
)
POSTGRES_SINK = Plugin(
    kind="sink",
    type="postgres",
    config=PostgresSinkConfig,
    build=_build_sink,
    summary="PostgreSQL table (append, replace, merge) via binary COPY; ledger, refused rows",
    extra="postgres",
)
POSTGRES_STATE = Plugin(
    kind="state",
    type="postgres",
    config=PostgresStateConfig,
    build=_build_state,
    summary="Checkpoints in a PostgreSQL table, compare-and-swap, advisory run lock",
    extra="postgres",
)
