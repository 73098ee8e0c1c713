"""Kill the CLI at every crash point, rerun, and prove nothing was lost or duplicated.

Each case runs ``sluiceway run`` in a subprocess with ``SLUICEWAY_CRASH_AT`` so the
process SIGKILLs itself at that point, then reruns without it and checks sink + DLQ
against every row the source emitted (``sluiceway.testing.check_delivery``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluiceway.core import read_dead_letters
from sluiceway.testing import CRASH_POINTS, check_delivery, expected_rows

PARTITIONS, ROWS = 3, 400
SLUICEWAY = str(Path(sys.executable).parent / "sluiceway")

SINKS = {
    "duckdb-append": "{type: duckdb, database: sink.duckdb, table: rows, mode: append}",
    "duckdb-merge": (
        "{type: duckdb, database: sink.duckdb, table: rows, mode: merge, keys: [partition, n]}"
    ),
    "parquet": "{type: parquet, path: out}",
}


def write_project(tmp_path: Path, sink: str) -> Path:
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
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: crash
            source:
              type: sequence
              partitions: {PARTITIONS}
              rows: {ROWS}
              batch_size: 150
              bad_every: 17
            transforms:
              - {{type: python, name: fail_some, function: "crashfns:fail_some"}}
            validators:
              - type: expectations
                name: amounts
                rules:
                  - {{column: amount, between: [0, null]}}
            sink: {SINKS[sink]}
            retry: {{attempts: 2, initial_delay: 0.01, max_delay: 0.02}}
            """
        )
    )
    return spec


def run_cli(spec: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEWAY_CRASH_AT"}
    env["SLUICEWAY_LOG_FORMAT"] = "json"
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


def sink_rows(tmp_path: Path, sink: str) -> pa.Table:
    if sink == "parquet":
        files = sorted((tmp_path / "out").glob("*.parquet"))
        return pa.concat_tables([pq.read_table(f) for f in files])
    with duckdb.connect(str(tmp_path / "sink.duckdb"), read_only=True) as con:
        return con.sql("SELECT partition, n, payload_hash FROM rows").to_arrow_table()


def assert_exactly_once(tmp_path: Path, sink: str) -> None:
    dead = read_dead_letters(tmp_path / ".sluiceway" / "dlq" / "crash")
    report = check_delivery(expected_rows(PARTITIONS, ROWS), sink_rows(tmp_path, sink), dead)
    assert report.ok, report.summary()
    # rows n % 53 == 0 fail the transform, every 17th row fails validation
    assert report.dead_lettered == len(
        {(p, n) for p in range(PARTITIONS) for n in range(ROWS) if n % 53 == 0 or (n + 1) % 17 == 0}
    )


@pytest.mark.parametrize("sink", list(SINKS))
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_crash_point_then_rerun_loses_and_duplicates_nothing(
    tmp_path: Path, point: str, sink: str
) -> None:
    spec = write_project(tmp_path, sink)
    crashed = run_cli(spec, crash_at=f"{point}:3")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert f"crash point {point}:3" in crashed.stderr

    rerun = run_cli(spec)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_exactly_once(tmp_path, sink)


def test_repeated_crashes_then_rerun(tmp_path: Path) -> None:
    spec = write_project(tmp_path, "duckdb-append")
    for point in ("after_sink_commit:2", "mid_load:1", "after_dlq_write:2", "mid_state_write:4"):
        assert run_cli(spec, crash_at=point).returncode == -9
    final = run_cli(spec)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_exactly_once(tmp_path, "duckdb-append")


def test_rerun_after_success_reads_nothing(tmp_path: Path) -> None:
    spec = write_project(tmp_path, "duckdb-append")
    assert run_cli(spec).returncode == 0
    assert run_cli(spec).returncode == 0
    assert_exactly_once(tmp_path, "duckdb-append")
