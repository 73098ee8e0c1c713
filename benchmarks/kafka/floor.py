"""The floor: a plain confluent-kafka consume loop writing the same Parquet.

No framework: assign every partition from the beginning, consume in 100k-message
chunks, join the values into NDJSON, parse them with ``pyarrow.json`` in one
call, add partition and offset columns and write one Parquet file per chunk.
It stops at the high watermarks it saw at start. No offsets, no state, no DLQ.

    python -m benchmarks.kafka.floor BOOTSTRAP PREFIX TOPICS OUT_DIR [naive]

With ``naive`` it decodes message by message (``json.loads`` + ``from_pylist``),
as a hand-written consumer often does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

CHUNK = 100_000


def main() -> None:
    bootstrap, prefix, topics, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    naive = len(sys.argv) > 5 and sys.argv[5] == "naive"
    out.mkdir(parents=True, exist_ok=True)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "floor", "enable.auto.commit": False}
    )
    ends: dict[tuple[str, int], int] = {}
    for topic in (f"{prefix}-{t}" for t in range(topics)):
        for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            tp = TopicPartition(topic, p)
            ends[(topic, p)] = consumer.get_watermark_offsets(tp, timeout=30)[1]
    consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
    open_parts = {tp for tp, end in ends.items() if end > 0}
    buffer: list = []
    n_file = 0

    def flush() -> None:
        nonlocal n_file, buffer
        if not buffer:
            return
        values = [m.value() for m in buffer]
        if naive:
            table = pa.Table.from_pylist([json.loads(v) for v in values])
        else:
            data = b"\n".join(values)
            table = pajson.read_json(
                pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=1 << 24)
            )
        table = (
            table.append_column("kafka_topic", pa.array([m.topic() for m in buffer], pa.string()))
            .append_column("kafka_partition", pa.array([m.partition() for m in buffer], pa.int32()))
            .append_column("kafka_offset", pa.array([m.offset() for m in buffer], pa.int64()))
        )
        pq.write_table(table, out / f"part-{n_file:06d}.parquet", compression="zstd")
        n_file += 1
        buffer = []

    while open_parts:
        for m in consumer.consume(10_000, 1.0):
            if m.error() is not None:
                continue
            buffer.append(m)
            if m.offset() >= ends[(m.topic(), m.partition())] - 1:
                open_parts.discard((m.topic(), m.partition()))
        if len(buffer) >= CHUNK:
            flush()
    flush()
    consumer.close()


if __name__ == "__main__":
    main()
