"""The benchmark's broker: librdkafka's mock cluster in its own process (prints bootstrap).

The same broker the Kafka tests use (see tests/integration/kafka/mock_broker.py):
in memory, 4 partitions per topic, serving until stdin closes.
"""

from __future__ import annotations

import sys
import threading

from confluent_kafka import Producer


def main() -> None:
    producer = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", "log_level": 3})
    metadata = producer.list_topics(timeout=30)
    print(",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values()), flush=True)
    done = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    while not done.is_set():
        producer.poll(0.5)


if __name__ == "__main__":
    main()
