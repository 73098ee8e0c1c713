"""The DuckDB sink after crashes and against an unusable database: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pytest
from tests.integration.duckdb.support import RunPipeline, TablesExtractor, read_rows

from sluiceway.connectors.duckdb import LEDGER_TABLE, DuckDBLoader
from sluiceway.core import (
    RunFailedError,
    SinkContext,
    SinkError,
    TransientError,
    read_dead_letters,
)
from sluiceway.testing import SequenceExtractor, check_delivery, expected_rows

Mode = Literal["append", "merge", "replace"]
PARTITIONS, ROWS, BATCH = 3, 200, 150  # four batches of 50 rows from each partition

# Runs the same pipeline as `_sequence_pipeline` in a process that SLUICEWAY_CRASH_AT kills.
CRASHING_RUN = """
import sys
from sluiceway.connectors.duckdb import DuckDBLoader
from sluiceway.core import Pipeline
from sluiceway.testing import SequenceExtractor

home, db, mode = sys.argv[1:4]
keys = ["partition", "n"] if mode == "merge" else []
Pipeline(
    "seq",
    SequenceExtractor(partitions=3, rows=200, batch_size=150),
    loader=DuckDBLoader(db, "rows", mode=mode, keys=keys),
    home=home,
).run()
"""


def _loader(db: Path, mode: Mode) -> DuckDBLoader:
    keys = ["partition", "n"] if mode == "merge" else []
    return DuckDBLoader(db, "rows", mode=mode, keys=keys)


def _sink_table(db: Path, table: str) -> pa.Table:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(f'SELECT * FROM "{table}"').to_arrow_table()


@pytest.mark.parametrize("mode", ["append", "merge", "replace"])
@pytest.mark.parametrize("point", ["mid_load", "after_sink_commit"])
def test_a_killed_run_then_a_rerun_delivers_every_row_exactly_once(
    tmp_path: Path,
    run_pipeline: RunPipeline,
    monkeypatch: pytest.MonkeyPatch,
    mode: Mode,
    point: str,
) -> None:
    db = tmp_path / "w.duckdb"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, str(tmp_path), str(db), mode],
        env={**os.environ, "SLUICEWAY_CRASH_AT": f"{point}:2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    # The first batch is in; the second is in only if the kill came after its commit.
    staged = "rows__sluiceway_staging" if mode == "replace" else "rows"
    assert _sink_table(db, staged).num_rows == (BATCH if point == "mid_load" else 2 * BATCH)

    monkeypatch.delenv("SLUICEWAY_CRASH_AT", raising=False)
    source = SequenceExtractor(partitions=PARTITIONS, rows=ROWS, batch_size=BATCH)
    metrics = run_pipeline("seq", source, _loader(db, mode))

    assert metrics.replayed_batches == 1
    assert metrics.skipped_committed == (0 if point == "mid_load" else BATCH)
    report = check_delivery(
        expected_rows(PARTITIONS, ROWS),
        _sink_table(db, "rows"),
        read_dead_letters(tmp_path / "dlq" / "seq"),
    )
    assert report.ok, report.summary()
    assert report.delivered == PARTITIONS * ROWS


def test_append_skips_a_batch_the_sink_committed_before_the_state_did(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    tables = [pa.table({"id": [1, 2, 3]}), pa.table({"id": [4, 5]})]
    # The sink took the first batch, then the process died before the state commit.
    earlier = DuckDBLoader(db, "events")
    earlier.open(SinkContext(pipeline="events", run_id="crashed-run"))
    try:
        first = TablesExtractor(tables).batch(0)
        assert not earlier.committed(first)
        earlier.load(first)
        earlier.commit(first)
        assert earlier.committed(first)
    finally:
        earlier.close()

    metrics = run_pipeline("events", TablesExtractor(tables), DuckDBLoader(db, "events"))

    assert metrics.skipped_committed == 3
    assert metrics.written == 2
    assert [r["id"] for r in read_rows(db, "events", "id")] == [1, 2, 3, 4, 5]
    assert len(read_rows(db, LEDGER_TABLE, "seq")) == 2


def test_a_batch_of_another_pipeline_or_table_is_not_taken_for_committed(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    batch = TablesExtractor([pa.table({"id": [1]})]).batch(0)
    loader = DuckDBLoader(db, "a")
    loader.open(SinkContext(pipeline="one", run_id="r1"))
    try:
        loader.load(batch)
        loader.commit(batch)
    finally:
        loader.close()

    for pipeline, table in [("two", "a"), ("one", "b")]:
        other = DuckDBLoader(db, table)
        other.open(SinkContext(pipeline=pipeline, run_id="r2"))
        try:
            assert not other.committed(batch)
        finally:
            other.close()


@pytest.mark.parametrize("blocker", ["file", "directory"])
def test_an_unwritable_database_path_fails_the_run_with_a_sink_error(
    tmp_path: Path, run_pipeline: RunPipeline, blocker: str
) -> None:
    if blocker == "file":
        (tmp_path / "plain-file").write_text("not a folder")
        db = tmp_path / "plain-file" / "w.duckdb"  # its parent cannot be a folder
    else:
        db = tmp_path / "a-folder"
        db.mkdir()

    with pytest.raises(RunFailedError) as failed:
        run_pipeline("nowhere", TablesExtractor([pa.table({"id": [1]})]), DuckDBLoader(db, "t"))

    assert isinstance(failed.value.cause, SinkError)
    assert str(db) in str(failed.value.cause)
    assert failed.value.metrics.written == 0


def test_a_database_locked_by_another_process_is_a_transient_error(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            "con = duckdb.connect(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(TransientError, match="locked by another process"):
            DuckDBLoader(db, "t").open(SinkContext(pipeline="p", run_id="r"))
    finally:
        holder.kill()
        holder.wait()

    # Once the other process is gone, the same sink opens.
    loader = DuckDBLoader(db, "t")
    loader.open(SinkContext(pipeline="p", run_id="r"))
    loader.close()
