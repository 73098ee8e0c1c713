"""The state store on PostgreSQL: compare-and-swap, the advisory run lock, specs that use it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tests.integration.postgres.support import Pg

from sluiceway.config import build_pipeline, load_spec
from sluiceway.connectors.postgres import PostgresStateStore
from sluiceway.core import PartitionSpan, PipelineState
from sluiceway.core.errors import RunLockedError, StateConflictError
from sluiceway.core.state import Intent


def store(pg: Pg, pipeline: str = "orders") -> PostgresStateStore:
    return PostgresStateStore(pg.connection(), pipeline, table=pg.table("sluiceway_state"))


def test_commit_is_a_compare_and_swap_on_the_version(pg: Pg) -> None:
    first, second = store(pg), store(pg)
    assert first.read() == (PipelineState(pipeline="orders"), 0)
    state = PipelineState(
        pipeline="orders",
        next_seq=3,
        positions={"public.orders": {"after": ["2024-01-01 00:00:00+00", "7"], "gen": 0}},
        intents=[Intent(2, {"p": PartitionSpan({"after": None}, {"after": ["1"]}, 5)}, "ub", "r1")],
    )
    assert first.commit(state, 0) == 1
    with pytest.raises(StateConflictError, match="moved from version 0 to 1"):
        second.commit(PipelineState(pipeline="orders"), 0)
    assert first.commit(state, 1) == 2
    with pytest.raises(StateConflictError, match="moved from version 1 to 2"):
        second.commit(state, 1)
    read, version = second.read()
    assert version == 2
    assert read.to_json() == state.to_json()
    assert store(pg, "other").read()[1] == 0  # one row per pipeline
    assert first.reset() is True
    assert first.read()[1] == 0 and first.reset() is False


def test_the_run_lock_admits_one_run_at_a_time(pg: Pg) -> None:
    first, second = store(pg), store(pg)
    with first.lock("run-1"):
        with (
            pytest.raises(RunLockedError, match=r"sluiceway orders run run-1 \(pid \d+\)"),
            second.lock("run-2"),
        ):
            pass
        # The holder commits through its locked session.
        assert first.commit(PipelineState(pipeline="orders"), 0) == 1
    with second.lock("run-2"):
        assert second.read()[1] == 1
    with store(pg, "other").lock("run-3"), second.lock("run-4"):
        pass  # pipelines do not share a lock


def test_a_killed_process_releases_the_lock(pg: Pg, tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from pydantic import SecretStr
            from sluiceway.connectors.postgres import PostgresConnection, PostgresStateStore
            s = PostgresStateStore(PostgresConnection(dsn=SecretStr({pg.dsn!r})), "orders",
                                   table={pg.table("sluiceway_state")!r})
            with s.lock("holder"):
                print("locked", flush=True)
                time.sleep(60)
            """
        )
    )
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError), store(pg).lock("mine"):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 10
        while True:
            try:
                with store(pg).lock("mine"):
                    break
            except RunLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait(10)


def test_a_spec_with_a_postgresql_uri_keeps_its_state_there(pg: Pg, tmp_path: Path) -> None:
    pg.execute("CREATE TABLE src (id bigint PRIMARY KEY, v text)")
    pg.execute("INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 5) g")
    uri = pg.dsn.replace("user=postgres", "user=postgres password=s3cret-pass")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: pgstate
            source: {{type: postgres, dsn: "${{PG_DSN}}", table: {pg.table("src")}}}
            sink: {{type: parquet, path: out}}
            state: {{type: postgres, dsn: "${{PG_DSN}}", table: {pg.table("sluiceway_state")}}}
            """
        )
    )
    os.environ["PG_DSN"] = uri
    try:
        loaded, base = load_spec(spec)
        pipeline = build_pipeline(loaded, base_dir=base)
    finally:
        del os.environ["PG_DSN"]
    assert isinstance(pipeline.state, PostgresStateStore)
    assert "s3cret" not in pipeline.state.describe()
    assert "s3cret" not in repr(loaded)
    metrics = pipeline.run()
    assert metrics.written == 5
    assert pq.read_table(tmp_path / "out").num_rows == 5
    state, version = pipeline.state.read()
    assert version >= 2 and state.positions[pg.table("src")]["done"] is True


def test_the_uri_form_infers_the_postgres_store(pg: Pg, tmp_path: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict

    keys = conninfo_to_dict(pg.dsn)
    uri = f"postgresql://{keys['user']}@{keys['host']}:{keys.get('port', 5432)}/{keys['dbname']}"
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: pguri
            source: {{type: sequence, partitions: 1, rows: 10, batch_size: 4}}
            sink: {{type: parquet, path: out}}
            state: {{uri: "{uri}", table: {pg.table("sluiceway_state")}}}
            """
        )
    )
    loaded, base = load_spec(spec)
    pipeline = build_pipeline(loaded, base_dir=base)
    assert isinstance(pipeline.state, PostgresStateStore)
    assert pipeline.run().written == 10
    assert pipeline.state.read()[0].positions == {"p0": 10}
