"""Kill ``sluiceway run`` at every crash point with a Delta table, state and DLQ on S3.

A stateless container's pipeline: moto's S3 server holds the Delta table, the
checkpoint (conditional writes, lease lock) and the dead letters. Each case
SIGKILLs the run at one point, reruns it, and checks the table (read back without
delta-rs) and the DLQ against every row the source emitted: nothing lost, and —
the sink being idempotent through its Delta ``txn`` actions — nothing duplicated,
even in ``append`` mode where no key would hide a duplicate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.delta.support import read_delta_log
from tests.integration.s3.support import MotoServer, keys, running_moto

from sluiceway.connectors.s3 import read_s3_dead_letters
from sluiceway.testing import CRASH_POINTS, check_delivery, expected_rows

PARTITIONS, ROWS = 3, 300
SLUICEWAY = str(Path(sys.executable).parent / "sluiceway")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


def write_project(tmp_path: Path, moto: MotoServer, bucket: str, mode: str) -> Path:
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
    merge = ", keys: [partition, n]" if mode == "merge" else ""
    table = f"s3://{bucket}/lake/rows"
    sink = f'{{type: delta, uri: "{table}", endpoint_url: "{moto.url}", mode: {mode}{merge}}}'

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
            sink: {sink}
            state: {{uri: "s3://{bucket}/state", endpoint_url: "{moto.url}"}}
            dlq: {{uri: "s3://{bucket}/dlq", endpoint_url: "{moto.url}"}}
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


def assert_exactly_once(moto: MotoServer, bucket: str) -> None:
    table = read_delta_log(f"s3://{bucket}/lake/rows", {"endpoint_url": moto.url})
    dead = read_s3_dead_letters(f"s3://{bucket}/dlq", options=moto.options())
    report = check_delivery(expected_rows(PARTITIONS, ROWS), table, dead)
    assert report.ok, report.summary()
    # rows n % 53 == 0 fail the transform, every 17th row fails validation
    assert report.dead_lettered == len(
        {(p, n) for p in range(PARTITIONS) for n in range(ROWS) if n % 53 == 0 or (n + 1) % 17 == 0}
    )


CASES = [(point, "append") for point in CRASH_POINTS] + [("mid_load", "merge")]


@pytest.mark.parametrize(("point", "mode"), CASES)
def test_kill_at_crash_point_then_rerun_loses_and_duplicates_nothing(
    tmp_path: Path, moto: MotoServer, point: str, mode: str
) -> None:
    bucket = moto.bucket("crash")
    spec = write_project(tmp_path, moto, bucket, mode)
    crashed = run_cli(spec, crash_at=f"{point}:3")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert f"crash point {point}:3" in crashed.stderr

    rerun = run_cli(spec)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_exactly_once(moto, bucket)
    assert keys(moto.client(), bucket, "state/") == ["state/crash.state.json"]  # lock released
