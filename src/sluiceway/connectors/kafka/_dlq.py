"""Dead letters produced to a Kafka topic (``dlq: {type: kafka, topic: …}``).

Each envelope becomes one message: the key is the stable ``dlq_id``; the value is
the original message bytes when the record could not be decoded (``raw``), else
the row as JSON; every other envelope field travels in a header named
``sluiceway.<field>`` (``sluiceway.error_type``, ``sluiceway.error_message``,
``sluiceway.partition``, ``sluiceway.position`` …), and ``sluiceway.value`` says
whether the value is ``raw`` or ``row``.

Durable means acknowledged by all in-sync replicas: the producer uses
``acks=all`` with idempotence, and ``write`` returns only after ``flush`` saw
every delivery succeed. A topic cannot overwrite, so a replayed batch produces its
letters again: the key (``dlq_id``) is the same, and a compacted DLQ topic (or a
reader keyed on it) keeps one per failure.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pyarrow as pa
import structlog

from sluiceway.connectors.kafka._config import KafkaDLQConfig
from sluiceway.connectors.kafka._decode import raw_bytes, raw_text
from sluiceway.connectors.kafka._errors import describe_servers, dlq_error
from sluiceway.core.crash import crash_point
from sluiceway.core.dlq import ENVELOPE_SCHEMA
from sluiceway.core.errors import FatalError
from sluiceway.plugins import require

__all__ = ["HEADER_PREFIX", "KafkaDeadLetterQueue"]

_log = structlog.get_logger("sluiceway.connectors.kafka")

HEADER_PREFIX = "sluiceway."
_IN_VALUE = ("row", "raw")
_STRING_FIELDS = [name for name in ENVELOPE_SCHEMA.names if name not in _IN_VALUE]


class KafkaDeadLetterQueue:
    """The :class:`~sluiceway.core.dlq.DeadLetterQueue` protocol on a Kafka topic."""

    def __init__(self, config: KafkaDLQConfig) -> None:
        self.config = config
        self.topic = config.topic
        self._producer: Any = None
        self._kafka: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"kafka://{describe_servers(self.config.bootstrap_servers)}/{self.topic}"

    def _client(self) -> Any:
        if self._producer is None:
            self._kafka = require("confluent_kafka", extra="kafka", what="the kafka DLQ")
            conf = {
                **self.config.librdkafka(),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
            try:
                self._producer = self._kafka.Producer(conf)
            except self._kafka.KafkaException as exc:
                raise dlq_error(exc, f"cannot create a producer for {self.describe()}") from exc
        return self._producer

    def write(self, seq: int, stage: str, entries: pa.Table) -> None:
        """Produce one message per envelope and wait until the broker has them all."""
        if entries.num_rows == 0:
            return
        with self._lock:
            producer = self._client()
            kafka = self._kafka
            failures: list[str] = []

            def delivered(error: Any, _message: Any) -> None:
                if error is not None:
                    failures.append(str(error.str()))

            columns = {name: entries.column(name).to_pylist() for name in entries.column_names}
            try:
                for i in range(entries.num_rows):
                    raw = columns["raw"][i]
                    value = raw_bytes(raw) if raw is not None else _encode(columns["row"][i])
                    headers = [
                        (HEADER_PREFIX + name, _encode(columns[name][i]))
                        for name in _STRING_FIELDS
                        if columns[name][i] is not None
                    ]
                    headers.append((HEADER_PREFIX + "value", b"raw" if raw is not None else b"row"))
                    _produce(
                        producer,
                        self.topic,
                        columns["dlq_id"][i],
                        value,
                        headers=headers,
                        callback=delivered,
                    )
                deadline = time.monotonic() + self.config.flush_timeout
                remaining = producer.flush(self.config.flush_timeout)
                while remaining and time.monotonic() < deadline:
                    remaining = producer.flush(max(0.0, deadline - time.monotonic()))
            except kafka.KafkaException as exc:
                raise dlq_error(exc, f"cannot write dead letters to {self.describe()}") from exc
            if remaining:
                raise FatalError(
                    f"{remaining} dead letter(s) not acknowledged by {self.describe()} within "
                    f"{self.config.flush_timeout:g}s"
                )
            if failures:
                raise FatalError(
                    f"{len(failures)} dead letter(s) refused by {self.describe()}: {failures[0]}"
                )
        _log.debug(
            "kafka_dead_letters_written",
            topic=self.topic,
            seq=seq,
            stage=stage,
            rows=entries.num_rows,
        )
        crash_point("after_dlq_write")

    def read(self, timeout: float = 30.0) -> pa.Table:
        """Every envelope on the topic (from the beginning), as :data:`ENVELOPE_SCHEMA` rows.

        Reads with a throw-away consumer that joins no group and commits nothing.
        """
        kafka = require("confluent_kafka", extra="kafka", what="the kafka DLQ")
        conf = {
            **self.config.librdkafka(),
            "group.id": "sluiceway-dlq-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
        consumer = kafka.Consumer(conf)
        rows: list[dict[str, Any]] = []
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None:
                return ENVELOPE_SCHEMA.empty_table()
            parts = [
                kafka.TopicPartition(self.topic, p, kafka.OFFSET_BEGINNING)
                for p in topic.partitions
            ]
            consumer.assign(parts)
            open_parts = {p.partition for p in parts}
            deadline = time.monotonic() + timeout
            while open_parts and time.monotonic() < deadline:
                for m in consumer.consume(num_messages=10_000, timeout=0.5):
                    error = m.error()
                    if error is not None:
                        if error.code() == kafka.KafkaError._PARTITION_EOF:
                            open_parts.discard(m.partition())
                        continue
                    rows.append(_envelope(m))
        except kafka.KafkaException as exc:
            raise dlq_error(exc, f"cannot read dead letters from {self.describe()}") from exc
        finally:
            consumer.close()
        if not rows:
            return ENVELOPE_SCHEMA.empty_table()
        return pa.Table.from_pylist(rows, schema=ENVELOPE_SCHEMA)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self.config.flush_timeout)


def _encode(value: Any) -> bytes:
    if value is None:
        return b""
    if hasattr(value, "isoformat"):
        return str(value.isoformat()).encode()
    return str(value).encode("utf-8")


def _produce(
    producer: Any,
    topic: str,
    key: str,
    value: bytes | None,
    *,
    headers: list[Any],
    callback: Any,
) -> None:
    while True:
        try:
            producer.produce(
                topic, value=value, key=key.encode(), headers=headers, on_delivery=callback
            )
            return
        except BufferError:
            producer.poll(0.1)  # the local queue is full: let deliveries drain


def _envelope(message: Any) -> dict[str, Any]:
    """An envelope dict from a DLQ message's headers and value."""
    from datetime import datetime

    fields: dict[str, Any] = {}
    for name, value in message.headers() or []:
        if name.startswith(HEADER_PREFIX) and value is not None:
            fields[name[len(HEADER_PREFIX) :]] = value.decode("utf-8", "replace")
    kind = fields.pop("value", "row")
    payload = message.value()
    row: dict[str, Any] = {}
    for f in ENVELOPE_SCHEMA:
        text = fields.get(f.name)
        if text is None or f.name in _IN_VALUE:
            row[f.name] = None
        elif pa.types.is_integer(f.type):
            row[f.name] = int(text)
        elif pa.types.is_timestamp(f.type):
            row[f.name] = datetime.fromisoformat(text)
        else:
            row[f.name] = text
    if kind == "raw":
        row["raw"] = raw_text(payload)
    else:
        row["row"] = payload.decode("utf-8", "replace") if payload else None
    return row
