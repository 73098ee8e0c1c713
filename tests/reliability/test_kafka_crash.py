"""Kill ``sluiceway run`` reading Kafka at every crash point, rerun, and prove nothing
was lost or duplicated in an idempotent sink (DuckDB, append + batch ledger).

The broker (librdkafka's mock cluster) lives in its own process, so the pipeline
dies with SIGKILL while the topic and the group's committed offsets survive. The
rerun replays the pending intent by re-reading its exact offsets; the sink's ledger
recognises the batch; the group then resumes from the committed offsets, floored
by the pipeline's own committed positions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.kafka.support import (
    KafkaBroker,
    committed,
    high_watermarks,
    new_topic,
    produce,
    run_cli,
    sink_rows,
    start_broker,
    write_spec,
)

from sluiceway.core import read_dead_letters
from sluiceway.testing import CRASH_POINTS

MESSAGES = 600
BAD_EVERY = 37  # every 37th message is not JSON: dead-lettered at extraction


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaBroker]:
    broker = start_broker()
    yield broker
    broker.stop()


def messages() -> list[bytes]:
    return [
        b"{broken %d" % n if n % BAD_EVERY == 0 else json.dumps({"n": n}).encode()
        for n in range(MESSAGES)
    ]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_crash_point_then_rerun_delivers_every_message_once(
    kafka: KafkaBroker, tmp_path: Path, point: str
) -> None:
    topic = new_topic("crash")
    produce(kafka.bootstrap, topic, messages())
    spec = write_spec(
        tmp_path,
        kafka.bootstrap,
        topic,
        name="kcrash",
        batch_size=60,
        transforms='[{type: sql, query: "SELECT * FROM batch WHERE n >= 0"}]',
    )

    crashed = run_cli(spec, crash_at=f"{point}:3")
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    assert f"crash point {point}:3" in crashed.stderr

    rerun = run_cli(spec)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    loaded = [r[0] for r in sink_rows(tmp_path / "sink.duckdb")]
    good = [n for n in range(MESSAGES) if n % BAD_EVERY]
    assert len(loaded) == len(set(loaded)), "a message was loaded twice"
    assert sorted(loaded) == good, "a message was lost"
    dead = read_dead_letters(tmp_path / ".sluiceway" / "dlq" / "kcrash")
    assert sorted(set(dead.column("raw").to_pylist())) == sorted(
        f"{{broken {n}" for n in range(0, MESSAGES, BAD_EVERY)
    )
    assert committed(kafka.bootstrap, "kcrash", topic) == high_watermarks(kafka.bootstrap, topic)
