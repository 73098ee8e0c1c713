"""Kill ``sluiceway run`` at every crash point with PostgreSQL as sink, source and state store.

Each case SIGKILLs the CLI at a crash point (``SLUICEWAY_CRASH_AT``), reruns it, and
checks the sink table plus the dead-letter queue against every row the source holds:
nothing lost, nothing duplicated (``sluiceway.testing.check_delivery``).

- ``seq-merge``: the crash harness's sequence source (integer positions, batches
  spanning three partitions) merged into a PostgreSQL table;
- ``pg-pg``: an incremental PostgreSQL source (rows tying on the cursor across
  batch boundaries, ordered by the primary key) appended to a PostgreSQL table —
  the ledger makes even ``append`` effectively-once — with the checkpoints in
  PostgreSQL too: a replayed intent must re-read exactly its rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from tests.integration.postgres import conftest as postgres_fixtures
from tests.integration.postgres.support import Pg

from sluiceway.core import read_dead_letters
from sluiceway.testing import CRASH_POINTS, check_delivery, expected_rows, payload_hash

# The PostgreSQL fixtures (a reachable server, a schema per test) of the integration tests.
pg_server = postgres_fixtures.pg_server
pg = postgres_fixtures.pg

PARTITIONS, ROWS = 3, 400
SLUICEWAY = str(Path(sys.executable).parent / "sluiceway")

SINKS = {
    "seq-merge": "mode: merge, keys: [partition, n]",
    "pg-pg": "mode: append",
}


def seed_source(pg: Pg) -> None:
    """The sequence source's rows as a table; each n ties across the three partitions."""
    pg.execute(
        "CREATE TABLE src (partition text, n bigint, payload text, payload_hash text, "
        "amount bigint, updated_at timestamptz NOT NULL, PRIMARY KEY (partition, n))"
    )
    rows = [
        (
            f"p{p}",
            n,
            f"p{p}-{n}",
            payload_hash(f"p{p}", n, f"p{p}-{n}"),
            -1 if (n + 1) % 17 == 0 else n % 1000,
            n // 7,
        )
        for p in range(PARTITIONS)
        for n in range(ROWS)
    ]
    with psycopg.connect(pg.dsn) as con, con.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {pg.schema}.src VALUES (%s, %s, %s, %s, %s, "
            "timestamptz '2024-01-01' + %s * interval '1 minute')",
            rows,
        )


def write_project(tmp_path: Path, pg: Pg, case: str) -> Path:
    (tmp_path / "crashfns.py").write_text(
        textwrap.dedent(
            """
            import polars as pl

            def fail_some(df: pl.DataFrame) -> pl.DataFrame:
                if (df["n"] % 53 == 0).any():
                    raise ValueError("unlucky row")
                return df.with_columns(tag=pl.lit("ok"))
            """
        )
    )
    if case == "pg-pg":
        seed_source(pg)
        source = (
            f'{{type: postgres, dsn: "${{PG_DSN}}", table: {pg.schema}.src, '
            "incremental: {cursor: updated_at}, batch_size: 150}"
        )
        state = f'state: {{type: postgres, dsn: "${{PG_DSN}}", table: {pg.schema}.state}}'
    else:
        source = (
            f"{{type: sequence, partitions: {PARTITIONS}, rows: {ROWS}, "
            "batch_size: 150, bad_every: 17}"
        )
        state = ""
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: crash
            source: {source}
            transforms:
              - {{type: python, name: fail_some, function: "crashfns:fail_some"}}
            validators:
              - type: expectations
                name: amounts
                rules:
                  - {{column: amount, between: [0, null]}}
            sink: {{type: postgres, dsn: "${{PG_DSN}}", table: {pg.schema}.rows, {SINKS[case]}}}
            retry: {{attempts: 2, initial_delay: 0.01, max_delay: 0.02}}
            {state}
            """
        )
    )
    return spec


def run_cli(spec: Path, pg: Pg, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEWAY_CRASH_AT"}
    env["SLUICEWAY_LOG_FORMAT"] = "json"
    env["PG_DSN"] = pg.dsn
    if crash_at:
        env["SLUICEWAY_CRASH_AT"] = crash_at
    return subprocess.run(
        [SLUICEWAY, "run", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def assert_exactly_once(tmp_path: Path, pg: Pg) -> None:
    rows = pg.rows("SELECT partition, n, payload_hash FROM rows")
    delivered = pa.table(
        {
            "partition": [r[0] for r in rows],
            "n": [r[1] for r in rows],
            "payload_hash": [r[2] for r in rows],
        }
    )
    dead = read_dead_letters(tmp_path / ".sluiceway" / "dlq" / "crash")
    report = check_delivery(expected_rows(PARTITIONS, ROWS), delivered, dead)
    assert report.ok, report.summary()
    # rows n % 53 == 0 fail the transform, every 17th row fails validation
    assert report.dead_lettered == len(
        {(p, n) for p in range(PARTITIONS) for n in range(ROWS) if n % 53 == 0 or (n + 1) % 17 == 0}
    )


@pytest.mark.parametrize("case", list(SINKS))
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_crash_point_then_rerun_loses_and_duplicates_nothing(
    tmp_path: Path,
    pg: Pg,
    point: str,
    case: str,
) -> None:
    spec = write_project(tmp_path, pg, case)
    crashed = run_cli(spec, pg, crash_at=f"{point}:3")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert f"crash point {point}:3" in crashed.stderr

    rerun = run_cli(spec, pg)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_exactly_once(tmp_path, pg)


def test_repeated_crashes_then_rerun(tmp_path: Path, pg: Pg) -> None:
    spec = write_project(tmp_path, pg, "pg-pg")
    for point in ("after_sink_commit:2", "mid_load:1", "after_dlq_write:2", "mid_state_write:4"):
        assert run_cli(spec, pg, crash_at=point).returncode == -9
    final = run_cli(spec, pg)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_exactly_once(tmp_path, pg)
    # A run with nothing new reads nothing and writes nothing.
    again = run_cli(spec, pg)
    assert again.returncode == 0
    assert_exactly_once(tmp_path, pg)
