"""Produce N JSON messages of about 300 bytes over T topics (4 partitions each).

    python -m benchmarks.kafka.produce BOOTSTRAP PREFIX TOPICS N

The mock cluster keeps about 5 MB per partition, so a million messages are spread
over topics ``PREFIX-0`` … ``PREFIX-<T-1>`` (20 topics: 80 partitions of 12,500).
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import Producer

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def message(n: int) -> bytes:
    return json.dumps(
        {
            "id": n,
            "user": f"user-{n % 50_000:05d}",
            "email": f"user{n % 50_000}@example.com",
            "amount_cents": (n * 7919) % 1_000_000,
            "currency": ("EUR", "USD", "GBP")[n % 3],
            "status": ("new", "paid", "shipped", "refunded")[n % 4],
            "created_at": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z",
            "tags": [WORDS[n % 12], WORDS[(n * 5) % 12]],
            "note": " ".join(WORDS[(n + k) % 12] for k in range(19)),
        },
        separators=(",", ":"),
    ).encode()


def main() -> None:
    bootstrap, prefix, topics, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000}
    )
    for n in range(count):
        while True:
            try:
                producer.produce(f"{prefix}-{n % topics}", message(n), partition=(n // topics) % 4)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0
    print(f"produced {count} messages of ~{len(message(count // 2))} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
