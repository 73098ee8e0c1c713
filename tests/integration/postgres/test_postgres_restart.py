"""Lost connections: a server restart mid-run, a commit whose answer never came back.

Source, sink and state store reconnect; nothing is lost and nothing is written twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from structlog.testing import capture_logs
from tests.integration.postgres.support import FAST_RETRY, Cluster, Pg, TablesExtractor

from sluiceway.connectors.postgres import (
    PostgresConnection,
    PostgresExtractor,
    PostgresLoader,
    PostgresStateStore,
)
from sluiceway.core import (
    BaseTransformer,
    Batch,
    Pipeline,
    RetryPolicy,
    TransientError,
    read_dead_letters,
)


class RestartOnce(BaseTransformer[pa.Table, pa.Table]):
    """Restarts the server while the batch ``at`` is between extraction and load."""

    def __init__(self, cluster: Cluster, at: int) -> None:
        super().__init__("restart")
        self.cluster = cluster
        self.at = at
        self.seen = 0

    def transform(self, data: pa.Table) -> pa.Table:
        self.seen += 1
        if self.seen == self.at:
            self.cluster.restart()
        return data


def test_a_server_restart_mid_run_is_retried(own_cluster: Cluster, tmp_path: Path) -> None:
    with psycopg.connect(own_cluster.dsn, autocommit=True) as con:
        con.execute("CREATE TABLE src (id bigint PRIMARY KEY, pad text)")
        # ~30 MB, so the source is still streaming when the server goes down.
        con.execute(
            "INSERT INTO src SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g"
        )
    connection = PostgresConnection(
        host="127.0.0.1", port=own_cluster.port, user="postgres", dbname="postgres"
    )
    extractor = PostgresExtractor(connection, table="public.src", batch_size=20_000)
    loader = PostgresLoader(connection, "public.dst")
    restart = RestartOnce(own_cluster, at=3)
    policy = RetryPolicy(attempts=8, initial_delay=0.2, max_delay=2.0, jitter=0.0)
    state = PostgresStateStore(connection, "restart")  # checkpoints on the same server
    with capture_logs() as logs:
        metrics = Pipeline(
            "restart", extractor, [restart], loader=loader, state=state, retry=policy
        ).run()

    assert restart.seen >= 10
    events = {entry["event"] for entry in logs}
    # The source lost its stream and read on from its last batch; the sink lost its
    # session and retried (the ledger look-up or the load, whichever came first).
    assert "postgres_source_reconnecting" in events
    assert metrics.retries >= 1 or "postgres_sink_retrying" in events
    assert (metrics.read, metrics.written, metrics.dead_lettered) == (200_000, 200_000, 0)
    with psycopg.connect(own_cluster.dsn) as con:
        row: Any = con.execute(
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM dst"
        ).fetchone()
    assert row == (200_000, 200_000, 1, 200_000)
    # The state store took its lock again after the restart and committed every batch.
    final, _ = state.read()
    assert final.positions["public.src"]["done"] is True and not final.intents


class FailingCommit(PostgresLoader):
    """The real sink, its first commit failing: lost before COMMIT, or after it landed."""

    def __init__(self, *args: Any, landed: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.landed = landed
        self.failed = False

    def commit(self, batch: Batch) -> None:
        if self.failed:
            super().commit(batch)
            return
        self.failed = True
        if self.landed:
            super().commit(batch)  # it landed, but the client never heard back
            self._uncertain = batch.seq
            self._drop()
            raise TransientError("connection lost during COMMIT (injected)")
        assert self._pg is not None
        pid = self._pg.info.backend_pid
        with psycopg.connect(self.connection.conninfo(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        super().commit(batch)


def test_a_commit_lost_with_its_connection_is_retried_exactly_once(pg: Pg, tmp_path: Path) -> None:
    pg.execute("CREATE TABLE out (id bigint PRIMARY KEY, v int CHECK (v > 0))")
    rows = pa.table({"id": [1, 2, 3, 4], "v": [1, -1, 3, 4]})
    for landed in (False, True):
        pg.execute("TRUNCATE out")
        pg.execute("DROP TABLE IF EXISTS _sluiceway_ledger")  # each case starts from scratch
        loader = FailingCommit(pg.connection(), pg.table("out"), landed=landed)
        home = tmp_path / f"landed-{landed}"
        metrics = Pipeline(
            "lost-commit", TablesExtractor([rows]), loader=loader, home=home, retry=FAST_RETRY
        ).run()
        assert metrics.retries == 1
        assert (metrics.written, metrics.dead_lettered) == (3, 1) and metrics.balanced
        assert pg.rows("SELECT id FROM out ORDER BY id") == [(1,), (3,), (4,)]
        dead = read_dead_letters(home / "dlq" / "lost-commit").to_pylist()
        assert [(d["position"], d["error_type"]) for d in dead] == [("1", "RowRefused")]
