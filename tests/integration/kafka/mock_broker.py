"""A Kafka-compatible broker for the tests: librdkafka's mock cluster in its own process.

Run as a script, it starts the mock cluster built into librdkafka (through a
confluent-kafka producer configured with ``test.mock.num.brokers``), prints the
cluster's bootstrap servers on one line, and serves until its stdin closes (the
test process ended) or it gets SIGTERM. A pipeline under test can be SIGKILLed
while the broker, its topics, messages and group offsets live on.

The mock cluster implements the protocol a consumer group needs (metadata,
produce, fetch, group join/sync/heartbeat, offset commit/fetch, idempotent
producer); it auto-creates topics on first use with 4 partitions and keeps
everything in memory. It is not a full broker: no admin API to create topics,
no transactions across restarts, no persistence.
"""

from __future__ import annotations

import signal
import sys
import threading

from confluent_kafka import Producer


def main() -> None:
    producer = Producer(
        {
            "test.mock.num.brokers": 1,
            "bootstrap.servers": "",
            "log_level": 3,
        }
    )
    metadata = producer.list_topics(timeout=30)
    servers = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    print(servers, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not done.is_set():
        producer.poll(0.5)


if __name__ == "__main__":
    main()
