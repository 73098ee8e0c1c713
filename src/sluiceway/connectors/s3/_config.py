"""Spec models of the S3 plugins: source, sink, state store and dead-letter queue."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from sluiceway.connectors.files import Compression
from sluiceway.connectors.s3._options import S3Connection, is_s3_uri
from sluiceway.core.errors import ConfigError
from sluiceway.engines.types import parse_type

__all__ = [
    "CSV_OPTIONS",
    "FileSourceConfig",
    "ObjectFormat",
    "S3DLQConfig",
    "S3SinkConfig",
    "S3SourceConfig",
    "S3StateConfig",
    "infer_format",
]

ObjectFormat = Literal["parquet", "csv", "jsonl"]

#: Options that only CSV objects take.
CSV_OPTIONS = ("delimiter", "quote_char", "header", "null_values", "encoding")

_SUFFIXES: tuple[tuple[str, ObjectFormat], ...] = (
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".csv", "csv"),
    (".tsv", "csv"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "jsonl"),
)
_COMPRESSED = (".gz", ".gzip", ".zst", ".zstd", ".bz2")


def infer_format(path: str) -> ObjectFormat | None:
    """The format a path's suffix names (``*.csv.gz`` is csv), or None."""
    lowered = path.lower()
    for suffix in _COMPRESSED:
        lowered = lowered.removesuffix(suffix)
    for suffix, fmt in _SUFFIXES:
        if lowered.endswith(suffix):
            return fmt
    return None


class S3SourceConfig(S3Connection):
    """``source: {type: s3, path: s3://bucket/prefix/ or a glob, format: …}``.

    ``format`` defaults to the one the path's suffix names. ``columns`` reads a
    subset of a Parquet object's columns, or names (renames) a CSV object's
    columns. CSV-only options are an error with another format.
    """

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["s3"] = "s3"
    path: str = Field(
        min_length=1,
        validation_alias=AliasChoices("path", "uri"),
        description="s3://bucket/prefix/, a glob (s3://bucket/raw/**/*.parquet) or a local path",
    )
    format: ObjectFormat | None = Field(None, description="default: from the path's suffix")
    batch_size: int = Field(50_000, gt=0, description="records per batch, at most")
    schema_: dict[str, str] | None = Field(
        None,
        alias="schema",
        description="declared column types (partition columns too), e.g. {id: int64, date: date}",
    )
    incremental: bool = Field(
        True,
        description="read only new or changed objects (key + ETag), resuming a partly read one",
    )
    hive_partitioning: bool = Field(True, description="name=value directories become columns")
    concurrency: int = Field(4, ge=1, le=64, description="objects read at once")
    read_retries: int = Field(3, ge=0, description="retries of a read that failed on the network")
    reader: Literal["arrow", "s3fs"] = Field(
        "arrow", description="client that reads objects: pyarrow's C++ S3 client, or s3fs"
    )
    compression: Compression = "infer"
    columns: list[str] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str | None = Field('"', min_length=1, max_length=1)
    header: bool = True
    null_values: list[str] = Field(default_factory=lambda: [""])
    encoding: str = "utf-8"

    @field_validator("schema_")
    @classmethod
    def _known_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, name in (value or {}).items():
            try:
                parse_type(name)
            except ConfigError as exc:
                raise ValueError(f"column {column!r}: {exc}") from exc
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _format_options(self) -> S3SourceConfig:
        fmt = self.resolved_format()
        if fmt != "csv":
            given = [name for name in CSV_OPTIONS if name in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to format 'csv', not {fmt!r}")
        if fmt == "parquet" and "compression" in self.model_fields_set:
            raise ValueError("Parquet objects carry their own compression; drop 'compression'")
        return self

    def resolved_format(self) -> ObjectFormat:
        fmt = self.format or infer_format(self.path)
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of {self.path!r} from its name: "
                "set format: parquet, csv or jsonl"
            )
        return fmt


class FileSourceConfig(S3SourceConfig):
    """``source: {type: file, …}`` — the same source for any path (local, s3://, …)."""

    type: Literal["file"] = "file"  # type: ignore[assignment]


class S3SinkConfig(S3Connection):
    """``sink: {type: s3, uri: s3://bucket/prefix, format: parquet | jsonl | csv}``."""

    type: Literal["s3"] = "s3"
    uri: str = Field(min_length=1, description="s3://bucket/prefix; one object per batch")
    format: Literal["parquet", "jsonl", "csv"] = "parquet"
    compression: Literal["zstd", "snappy", "gzip", "lz4", "none"] | None = Field(
        None, description="default: zstd inside Parquet, none for jsonl and csv"
    )
    row_group_size: int | None = Field(None, gt=0)
    manifest: bool = Field(True, description="write _manifests/<run_id>.json when a run succeeds")

    @field_validator("uri")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not is_s3_uri(value):
            raise ValueError(f"uri must be s3://bucket/prefix, got {value!r}")
        return value

    @model_validator(mode="after")
    def _codec(self) -> S3SinkConfig:
        if self.format != "parquet" and self.compression in ("snappy", "lz4"):
            raise ValueError(f"{self.format} objects can be compressed with gzip or zstd only")
        if self.format == "parquet" and self.row_group_size is None:
            return self
        if self.format != "parquet" and self.row_group_size is not None:
            raise ValueError("row_group_size only applies to format 'parquet'")
        return self


class S3StateConfig(S3Connection):
    """``state: {uri: s3://bucket/prefix}``: ``<prefix>/<pipeline>.state.json``, a lease lock."""

    type: Literal["s3"] = "s3"
    uri: str = Field(min_length=1, description="s3://bucket/prefix holding <pipeline>.state.json")
    lock_ttl: float = Field(
        60.0,
        ge=1,
        description="seconds a run's lock outlives a run that stopped renewing it (was killed)",
    )

    @field_validator("uri")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not is_s3_uri(value):
            raise ValueError(f"uri must be s3://bucket/prefix, got {value!r}")
        return value


class S3DLQConfig(S3Connection):
    """``dlq: {uri: s3://bucket/prefix}`` — one Parquet object per batch and stage."""

    type: Literal["s3"] = "s3"
    uri: str = Field(min_length=1, description="s3://bucket/prefix of the dead-letter objects")

    @field_validator("uri")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not is_s3_uri(value):
            raise ValueError(f"uri must be s3://bucket/prefix, got {value!r}")
        return value
