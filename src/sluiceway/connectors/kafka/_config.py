"""Spec models of the Kafka source (``type: kafka``) and the Kafka dead-letter queue.

Durations take seconds or ``"500ms"``, ``"30s"``, ``"5m"`` like every duration of a
spec. Secrets (``sasl_password``, the Schema Registry's ``basic_auth``) are
``SecretStr``: never printed, never logged.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sluiceway.core.errors import ConfigError
from sluiceway.engines.types import parse_type
from sluiceway.plugins import Duration, StageConfig

__all__ = [
    "METADATA_FIELDS",
    "KafkaClientConfig",
    "KafkaDLQConfig",
    "KafkaSourceConfig",
    "MetadataField",
    "SchemaRegistryConfig",
    "StopAfter",
    "Seconds",
    "ValueFormat",
]


Seconds = Duration
"""Seconds, or a duration such as ``500ms``, ``30s``, ``5m``."""


"""A duration in seconds (numbers or ``"500ms"``, ``"5m"``…)."""

ValueFormat = Literal["json", "avro", "protobuf", "raw", "string"]
MetadataField = Literal["key", "headers", "topic", "partition", "offset", "timestamp"]
METADATA_FIELDS: tuple[MetadataField, ...] = (
    "key",
    "headers",
    "topic",
    "partition",
    "offset",
    "timestamp",
)

_DEFAULT_METADATA: tuple[MetadataField, ...] = ("key", "topic", "partition", "offset", "timestamp")

# Kafka topic names: letters, digits, '.', '_' and '-' (so '/' can separate the partition).
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_FORBIDDEN_CLIENT_KEYS = {
    "enable.auto.commit": "offsets are committed after the load, never automatically",
    "enable.auto.offset.store": "offsets are stored after the load, never automatically",
    "group.id": "use group_id",
    "bootstrap.servers": "use bootstrap_servers",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchemaRegistryConfig(_Model):
    """``schema_registry: {url: …, basic_auth: user:password}`` (Confluent Schema Registry)."""

    url: str = Field(min_length=1, description="e.g. http://registry:8081")
    basic_auth: SecretStr | None = Field(None, description="user:password, kept secret")


class StopAfter(_Model):
    """``stop: {after: 5m}`` — consume for this long, then finish the batch and end."""

    after: Seconds = Field(gt=0)


class KafkaClientConfig(StageConfig):
    """Connection options shared by the Kafka source and the Kafka DLQ."""

    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port…]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 …")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    client_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra librdkafka properties (e.g. ssl.ca.location, fetch.max.bytes)",
    )

    @field_validator("client_config")
    @classmethod
    def _no_managed_keys(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for key in value:
            if key in _FORBIDDEN_CLIENT_KEYS:
                raise ValueError(
                    f"client_config may not set {key!r}: {_FORBIDDEN_CLIENT_KEYS[key]}"
                )
            if "password" in key or "secret" in key:
                raise ValueError(
                    f"client_config key {key!r} holds a secret: use sasl_password "
                    "(kept secret), not a plain option"
                )
        return value

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka properties for this connection (secrets revealed: do not log)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        conf.update(self.client_config)
        return conf


class KafkaSourceConfig(KafkaClientConfig):
    """``source: {type: kafka, …}`` as written in a pipeline spec."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["kafka"] = "kafka"
    topics: list[str] | None = Field(None, description="topics to consume (or give pattern)")
    pattern: str | None = Field(None, description="a regular expression over topic names")
    group_id: str | None = Field(None, description="consumer group; default: the pipeline name")
    batch_size: int = Field(10_000, gt=0, description="messages per batch, at most")
    max_batch_wait: Seconds = Field(1.0, gt=0, description="cut a smaller batch after this long")
    stop: Literal["caught_up", "never"] | StopAfter = Field(
        "caught_up",
        description="caught_up: end once every assigned partition reached the end it had at "
        "start; never: run as a service until SIGTERM; {after: 5m}: run this long",
    )
    format: ValueFormat = Field("json", description="how message values are decoded")
    schema_: dict[str, str] | None = Field(
        None, alias="schema", description="declared value column types (json), checked casts"
    )
    schema_registry: SchemaRegistryConfig | None = None
    avro_schema: str | None = Field(
        None, description="writer schema (JSON text) for Avro without a Schema Registry"
    )
    protobuf_message: str | None = Field(
        None, description="module:Class of the generated Protobuf message"
    )
    key_format: Literal["string", "raw"] = Field("string", description="the key as text or bytes")
    metadata: list[MetadataField] = Field(
        default_factory=lambda: list(_DEFAULT_METADATA),
        description="message metadata to add as columns (also: headers)",
    )
    metadata_prefix: str = Field("kafka_", description="prefix of the metadata column names")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a group without committed offsets starts"
    )
    rebalance_timeout: Seconds = Field(
        60.0,
        gt=0,
        description="on a rebalance, how long to wait for batches in flight to be loaded "
        "and committed before the partitions are given up",
    )
    assignment_timeout: Seconds = Field(
        60.0, gt=0, description="how long to wait for the group to assign partitions"
    )

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, value: list[str] | None) -> list[str] | None:
        for topic in value or []:
            if not _TOPIC.match(topic):
                raise ValueError(
                    f"invalid topic name {topic!r}: use letters, digits, '.', '_' and '-'"
                )
        return value

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid pattern {value!r}: {exc}") from exc
        return value

    @field_validator("schema_")
    @classmethod
    def _known_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, name in (value or {}).items():
            try:
                parse_type(name)
            except ConfigError as exc:
                raise ValueError(f"column {column!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSourceConfig:
        if bool(self.topics) == bool(self.pattern):
            raise ValueError("give either topics (a list) or pattern (a regular expression)")
        if self.format == "protobuf" and not self.protobuf_message:
            raise ValueError("format protobuf needs protobuf_message: module:Class")
        if self.format == "avro" and not (self.schema_registry or self.avro_schema):
            raise ValueError("format avro needs schema_registry or avro_schema")
        if self.schema_ and self.format != "json":
            raise ValueError("schema (declared column types) applies to format json only")
        if len(set(self.metadata)) != len(self.metadata):
            raise ValueError(f"metadata lists a field twice: {self.metadata}")
        return self


class KafkaDLQConfig(KafkaClientConfig):
    """``dlq: {type: kafka, topic: …}`` — dead letters produced to a Kafka topic."""

    type: Literal["kafka"] = "kafka"
    topic: str = Field(description="the dead-letter topic")
    flush_timeout: Seconds = Field(
        30.0, gt=0, description="how long to wait for the broker to acknowledge every letter"
    )

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not _TOPIC.match(value):
            raise ValueError(f"invalid topic name {value!r}: use letters, digits, '.', '_' and '-'")
        return value
