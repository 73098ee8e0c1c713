"""Helpers of the Kafka tests: the mock broker process, producing, reading offsets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

PARTITIONS = 4  # the mock cluster auto-creates every topic with 4 partitions
SLUICEWAY = str(Path(sys.executable).parent / "sluiceway")


@dataclass
class KafkaBroker:
    bootstrap: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_broker(timeout: float = 60) -> KafkaBroker:
    """Start the mock cluster in its own process; fail (never skip) if it does not come up."""
    script = Path(__file__).with_name("mock_broker.py")
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line:
        process.kill()
        raise RuntimeError("the mock Kafka broker did not start")
    broker = KafkaBroker(line, process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            Producer({"bootstrap.servers": line}).list_topics(timeout=5)
            return broker
        except Exception:
            if time.monotonic() > deadline:
                broker.stop()
                raise


def new_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[list[tuple[str, bytes]] | None] | None = None,
    partition: int | None = None,
) -> int:
    """Produce values (round-robin over partitions unless keyed or given); return the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    count = 0
    for i, value in enumerate(values):
        kwargs: dict[str, Any] = {"value": value}
        if keys is not None:
            kwargs["key"] = keys[i]
        if headers is not None and headers[i] is not None:
            kwargs["headers"] = headers[i]
        kwargs["partition"] = partition if partition is not None else i % PARTITIONS
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(60) == 0
    return count


def produce_json(bootstrap: str, topic: str, rows: Iterable[dict[str, Any]]) -> int:
    return produce(bootstrap, topic, (json.dumps(r).encode() for r in rows))


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30
        )
        return {tp.partition: tp.offset for tp in parts}
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 30) -> list[Any]:
    """Every message of a topic, read from the beginning without a group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-" + uuid.uuid4().hex[:6],
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        open_parts = set(range(PARTITIONS))
        deadline = time.monotonic() + timeout
        while open_parts and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(m.partition())
                    continue
                out.append(m)
        return out
    finally:
        consumer.close()


def run_cli(
    spec: Path,
    *,
    crash_at: str | None = None,
    timeout: float = 180,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEWAY_CRASH_AT"}
    env["SLUICEWAY_LOG_FORMAT"] = "json"
    env.update(extra_env or {})
    if crash_at:
        env["SLUICEWAY_CRASH_AT"] = crash_at
    return subprocess.run(
        [SLUICEWAY, "run", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(
    spec: Path, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``sluiceway run`` in the background, its stderr (JSON logs) going to ``log``."""
    env = dict(os.environ)
    env.pop("SLUICEWAY_CRASH_AT", None)
    env["SLUICEWAY_LOG_FORMAT"] = "json"
    env.update(extra_env or {})
    with log.open("w") as err:
        return subprocess.Popen(
            [SLUICEWAY, "run", str(spec)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )


def committed_rows(log: Path) -> int:
    """Rows read by the batches a running pipeline committed so far (from its JSON log)."""
    total = 0
    if not log.exists():
        return 0
    for line in log.read_text().splitlines():
        if '"batch_committed"' in line:
            try:
                total += int(json.loads(line).get("rows", 0))
            except ValueError:
                continue
    return total


#: Client settings for tests: the mock broker keeps a closed or killed member in its
#: group until the session times out, so a short session keeps reruns quick.
FAST_GROUP = "{session.timeout.ms: 6000, heartbeat.interval.ms: 500}"


def write_spec(
    folder: Path,
    bootstrap: str,
    topic: str,
    *,
    name: str = "kafka-test",
    group: str | None = None,
    stop: str = "caught_up",
    batch_size: int = 100,
    max_batch_wait: str = "300ms",
    sink: str = "{type: duckdb, database: sink.duckdb, table: rows, mode: append}",
    dlq: str | None = None,
    source_extra: str = "",
    transforms: str | None = None,
    top_level: str = "",
) -> Path:
    """A pipeline spec reading ``topic`` into a DuckDB table (or the given sink)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "version: 1",
        f"name: {name}",
        "source:",
        "  type: kafka",
        f'  bootstrap_servers: "{bootstrap}"',
        f"  topics: [{topic}]",
        f"  group_id: {group or name}",
        f"  batch_size: {batch_size}",
        f"  max_batch_wait: {max_batch_wait}",
        f"  stop: {stop}",
        f"  client_config: {FAST_GROUP}",
    ]
    lines += [f"  {line}" for line in source_extra.splitlines() if line.strip()]
    if transforms:
        lines.append(f"transforms: {transforms}")
    lines.append(f"sink: {sink}")
    if dlq:
        lines.append(f"dlq: {dlq}")
    lines.append("retry: {attempts: 2, initial_delay: 0.01, max_delay: 0.02}")
    lines += [line for line in top_level.splitlines() if line.strip()]
    spec = folder / "pipeline.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def sink_rows(database: Path, columns: str = "n") -> list[tuple[Any, ...]]:
    import duckdb

    if not database.exists():
        return []
    with duckdb.connect(str(database), read_only=True) as con:
        tables = {
            r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()
        }
        if "rows" not in tables:
            return []
        return con.sql(f"SELECT {columns} FROM rows").fetchall()
