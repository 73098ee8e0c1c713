"""Value formats: Avro through a Schema Registry (its REST API served on 127.0.0.1),
plain Avro, Protobuf (plain and registry-framed), raw bytes with headers, and the
vectorised JSON decoder's isolation of undecodable values."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import fastavro
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from pytest_httpserver import HTTPServer
from tests.integration.kafka.support import KafkaBroker, new_topic, produce
from tests.support import ListLoader

from sluiceway.connectors.kafka import (
    JsonDecoder,
    KafkaExtractor,
    KafkaSourceConfig,
    ProtobufDecoder,
    decoder_for,
    raw_bytes,
    raw_text,
)
from sluiceway.core import Pipeline

ORDER = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
        },
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def avro(record: dict, schema_id: int | None = None) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(ORDER), record)
    body = out.getvalue()
    return body if schema_id is None else b"\x00" + struct.pack(">I", schema_id) + body


def test_avro_through_a_schema_registry(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/schemas/ids/7").respond_with_json({"schema": json.dumps(ORDER)})
    config = KafkaSourceConfig(
        bootstrap_servers="unused:9092",
        topics=["orders"],
        format="avro",
        schema_registry={"url": httpserver.url_for("/")},
    )
    from datetime import UTC, datetime
    from decimal import Decimal

    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    values = [
        avro({"id": 1, "amount": Decimal("12.50"), "at": at, "note": "first"}, 7),
        b"\x01garbage",
        avro({"id": 2, "amount": Decimal("0.99"), "at": at, "note": None}, 7),
    ]
    decoded = decoder_for(config).decode(values)
    assert decoded.kept.to_pylist() == [0, 2]
    assert decoded.table.schema.field("amount").type == pa.decimal128(10, 2)
    assert decoded.table.schema.field("at").type == pa.timestamp("ms", tz="UTC")
    assert decoded.table.column("id").to_pylist() == [1, 2]
    (bad,) = decoded.rejected
    assert bad.index == 1 and "Schema Registry wire format" in bad.message
    assert len(httpserver.log) == 1  # the schema is fetched once and cached


def test_plain_avro_with_an_inline_schema() -> None:
    config = KafkaSourceConfig(
        bootstrap_servers="unused:9092", topics=["o"], format="avro", avro_schema=json.dumps(ORDER)
    )
    from decimal import Decimal

    decoded = decoder_for(config).decode(
        [avro({"id": 5, "amount": Decimal("1.00"), "at": 0, "note": "x"}), None]
    )
    assert decoded.table.column("id").to_pylist() == [5, None]  # a tombstone: null columns


def _protobuf_class() -> type:
    file = descriptor_pb2.FileDescriptorProto(name="sensor.proto", package="test", syntax="proto3")
    message = file.message_type.add(name="Reading")
    message.field.add(name="sensor", number=1, type=9, label=1)  # string
    message.field.add(name="value", number=2, type=1, label=1)  # double
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.Reading"))


def test_protobuf_plain_and_registry_framed() -> None:
    reading = _protobuf_class()
    payload = reading(sensor="s1", value=21.5).SerializeToString()
    plain = ProtobufDecoder(reading, framed=False).decode([payload, b"\xff\xff\xff"])
    assert plain.table.to_pylist() == [{"sensor": "s1", "value": 21.5}]
    assert [r.index for r in plain.rejected] == [1]
    framed = b"\x00" + struct.pack(">I", 3) + b"\x00" + payload  # message index [0]
    assert ProtobufDecoder(reading, framed=True).decode([framed]).table.to_pylist() == [
        {"sensor": "s1", "value": 21.5}
    ]


def test_json_decoder_isolates_undecodable_values_and_unifies_types() -> None:
    good = [json.dumps({"n": i, "v": i * 1.5 if i % 2 else i}).encode() for i in range(1000)]
    values = [*good[:500], b"{oops", b"\xff", *good[500:], b'{"n": 1}\n{"n": 2}']
    decoded = JsonDecoder().decode(values)
    assert decoded.table.num_rows == 1000
    assert decoded.table.schema.field("v").type == pa.float64()
    assert [r.index for r in decoded.rejected] == [500, 501, 1002]


def test_raw_text_round_trips_any_bytes() -> None:
    for value in [b"plain text", b"\xff\x00binary", b"base64:looks encoded", b""]:
        assert raw_bytes(raw_text(value)) == value
    assert raw_text(b"plain") == "plain"


def test_raw_values_with_headers_key_and_timestamp(kafka: KafkaBroker, tmp_path: Path) -> None:
    topic = new_topic()
    produce(
        kafka.bootstrap,
        topic,
        [b"\x00\x01", b"\x02"],
        keys=[b"k1", None],
        headers=[[("trace", b"abc"), ("n", b"1")], None],
        partition=2,
    )
    config = KafkaSourceConfig(
        bootstrap_servers=kafka.bootstrap,
        topics=[topic],
        group_id="raw",
        format="raw",
        metadata=["key", "headers", "topic", "partition", "offset", "timestamp"],
        client_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )
    loader = ListLoader()
    extractor = KafkaExtractor(config, group_id="raw", decoder_factory=lambda: decoder_for(config))
    Pipeline("raw", extractor, loader=loader, home=tmp_path).run()
    rows = loader.rows
    assert [r["value"] for r in rows] == [b"\x00\x01", b"\x02"]
    assert [r["kafka_key"] for r in rows] == ["k1", None]
    assert rows[0]["kafka_headers"] == [("trace", b"abc"), ("n", b"1")]
    assert [(r["kafka_partition"], r["kafka_offset"]) for r in rows] == [(2, 0), (2, 1)]
    assert rows[0]["kafka_timestamp"] is not None
    (batch,) = loader.batches
    assert dict(batch.positions) and list(batch.positions) == [f"{topic}/2"]
    assert batch.positions[f"{topic}/2"].start == 0 and batch.positions[f"{topic}/2"].end == 2
