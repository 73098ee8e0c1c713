"""Kafka: a consumer-group source (``type: kafka``) and a dead-letter topic.

``dlq: {type: kafka, topic: …}`` produces dead letters to a topic.

The source reads topics (or a pattern) in micro-batches cut by size and time,
decodes values as JSON (vectorised), Avro or Protobuf (with a Schema Registry when
given) or raw bytes, and adds key, headers, topic, partition, offset and timestamp
as columns. Offsets are committed only after the batch is loaded and its dead
letters are durable: at-least-once, effectively-once with an idempotent sink.
``confluent-kafka`` is imported when the stage opens, not when this module is.
"""

from __future__ import annotations

import importlib
from typing import Any

from sluiceway.connectors.kafka._batch import MessageBatcher, parse_partition, partition_name
from sluiceway.connectors.kafka._config import (
    KafkaDLQConfig,
    KafkaSourceConfig,
    SchemaRegistryConfig,
    StopAfter,
)
from sluiceway.connectors.kafka._decode import (
    AvroDecoder,
    Decoded,
    JsonDecoder,
    ProtobufDecoder,
    RawDecoder,
    Rejected,
    TextDecoder,
    ValueDecoder,
    raw_bytes,
    raw_text,
)
from sluiceway.connectors.kafka._dlq import HEADER_PREFIX, KafkaDeadLetterQueue
from sluiceway.connectors.kafka._errors import redact
from sluiceway.connectors.kafka._source import KafkaExtractor
from sluiceway.core.errors import ConfigError, DecodeError, SourceError
from sluiceway.engines.types import parse_type
from sluiceway.plugins import BuildContext, Plugin, require

__all__ = [
    "HEADER_PREFIX",
    "KAFKA_DLQ",
    "KAFKA_SOURCE",
    "AvroDecoder",
    "Decoded",
    "JsonDecoder",
    "KafkaDLQConfig",
    "KafkaDeadLetterQueue",
    "KafkaExtractor",
    "KafkaSourceConfig",
    "MessageBatcher",
    "ProtobufDecoder",
    "RawDecoder",
    "Rejected",
    "SchemaRegistryConfig",
    "StopAfter",
    "TextDecoder",
    "ValueDecoder",
    "decoder_for",
    "parse_partition",
    "partition_name",
    "raw_bytes",
    "raw_text",
]


def _registry_lookup(config: SchemaRegistryConfig) -> Any:
    """A cached ``schema id → Avro schema`` function over a Schema Registry's REST API.

    ``GET /schemas/ids/{id}`` through httpx (confluent-kafka's own registry client
    needs the ``schemaregistry`` extra's authlib, attrs and cachetools; this needs
    none of them). An unknown id is a bad record; an unreachable registry stops the run.
    """
    import json

    httpx = require("httpx", extra="kafka", what="the Schema Registry client")
    auth = None
    if config.basic_auth is not None:
        user, _, password = config.basic_auth.get_secret_value().partition(":")
        auth = (user, password)
    base = config.url.rstrip("/")
    where = redact(base)
    cache: dict[int, Any] = {}

    def lookup(schema_id: int) -> Any:
        if schema_id in cache:
            return cache[schema_id]
        try:
            response = httpx.get(f"{base}/schemas/ids/{schema_id}", auth=auth, timeout=30)
        except httpx.HTTPError as exc:
            raise SourceError(f"Schema Registry {where}: {redact(str(exc))}") from exc
        if response.status_code == 404:
            raise DecodeError(f"schema id {schema_id} is not in {where}")
        if response.status_code != 200:
            raise SourceError(
                f"Schema Registry {where}: HTTP {response.status_code} for schema id {schema_id}"
            )
        try:
            cache[schema_id] = json.loads(response.json()["schema"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"Schema Registry {where}: unreadable schema {schema_id}") from exc
        return cache[schema_id]

    return lookup


def _import_ref(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"protobuf_message {ref!r} is not of the form module:Class")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"protobuf_message {ref!r} cannot be imported: {exc}") from exc
    return obj


def decoder_for(config: KafkaSourceConfig) -> ValueDecoder:
    """The value decoder a source config asks for."""
    if config.format == "json":
        return JsonDecoder({name: parse_type(t) for name, t in (config.schema_ or {}).items()})
    if config.format == "raw":
        return RawDecoder()
    if config.format == "string":
        return TextDecoder()
    if config.format == "avro":
        require("fastavro", extra="kafka", what="Avro decoding")
        if config.schema_registry is not None:
            return AvroDecoder(registry=_registry_lookup(config.schema_registry))
        import json

        assert config.avro_schema is not None
        try:
            schema = json.loads(config.avro_schema)
        except ValueError as exc:
            raise ConfigError(f"avro_schema is not valid JSON: {exc}") from exc
        return AvroDecoder(writer_schema=schema)
    require("google.protobuf", extra="kafka", what="Protobuf decoding")
    assert config.protobuf_message is not None
    return ProtobufDecoder(
        _import_ref(config.protobuf_message), framed=config.schema_registry is not None
    )


def _build_source(config: KafkaSourceConfig, ctx: BuildContext) -> KafkaExtractor:
    if config.format == "protobuf":
        assert config.protobuf_message is not None
        _import_ref(config.protobuf_message)  # fail at build time, not mid-run
    return KafkaExtractor(
        config,
        group_id=config.group_id or ctx.pipeline,
        decoder_factory=lambda: decoder_for(config),
    )


def _build_dlq(config: KafkaDLQConfig, ctx: BuildContext) -> KafkaDeadLetterQueue:
    return KafkaDeadLetterQueue(config)


KAFKA_SOURCE = Plugin(
    kind="source",
    type="kafka",
    config=KafkaSourceConfig,
    build=_build_source,
    summary="Kafka consumer group (JSON, Avro, Protobuf, raw), offsets committed after the load",
    extra="kafka",
)
KAFKA_DLQ = Plugin(
    kind="dlq",
    type="kafka",
    config=KafkaDLQConfig,
    build=_build_dlq,
    summary="Dead letters to a Kafka topic (error in headers), acks=all before returning",
    extra="kafka",
)
