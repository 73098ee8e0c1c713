"""Killed at a crash point, then rerun: every CSV record lands once, in the sink or the DLQ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sluiceway.core import read_dead_letters

SCRIPT = """
import sys
from sluiceway.connectors.files import CsvExtractor, ParquetLoader
from sluiceway.core import Pipeline

data, home, out = sys.argv[1:4]
Pipeline(
    "crash",
    CsvExtractor(data, batch_size=3, schema={"v": "int64"}),
    loader=ParquetLoader(out),
    home=home,
    prefetch=1,
).run()
"""


def run(tmp_path: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEWAY_CRASH_AT"}
    if crash_at:
        env["SLUICEWAY_CRASH_AT"] = crash_at
    args = [str(tmp_path / "in" / "*.csv"), str(tmp_path / "home"), str(tmp_path / "out")]
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("point", ["mid_load:2", "after_sink_commit:2"])
def test_rerun_after_a_kill_loses_and_duplicates_nothing(tmp_path: Path, point: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(
        "id,v\n1,1\n2,x\n3,3\n4,4\n5\n6,6\n7,7\n", encoding="utf-8"
    )
    (tmp_path / "in" / "b.csv").write_text("id,v\n8,8\n9,9\n", encoding="utf-8")

    crashed = run(tmp_path, point)
    assert crashed.returncode == -9, crashed.stderr
    rerun = run(tmp_path, None)
    assert rerun.returncode == 0, rerun.stderr

    ids = sorted(pq.read_table(tmp_path / "out").column("id").to_pylist())
    assert ids == [1, 3, 4, 6, 7, 8, 9]
    dead = read_dead_letters(tmp_path / "home" / "dlq" / "crash").to_pylist()
    assert sorted((d["line"], d["error_type"]) for d in dead) == [
        (3, "CastError"),
        (6, "DecodeError"),
    ]
    assert not list((tmp_path / "out").glob(".*.tmp"))
