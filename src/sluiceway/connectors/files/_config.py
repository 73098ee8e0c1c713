"""Spec models of the file sources and sinks (``type: csv | jsonl | parquet``)."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from sluiceway.connectors.files._fs import Compression
from sluiceway.core.errors import ConfigError
from sluiceway.engines.types import parse_type
from sluiceway.plugins import StageConfig

__all__ = [
    "CsvExtractorConfig",
    "CsvLoaderConfig",
    "FileExtractorConfig",
    "FileLoaderConfig",
    "JsonlExtractorConfig",
    "JsonlLoaderConfig",
    "ParquetExtractorConfig",
    "ParquetLoaderConfig",
]


class FileExtractorConfig(StageConfig):
    """What every file source takes."""

    model_config = ConfigDict(populate_by_name=True)

    path: str = Field(min_length=1, description="A file, a directory or a glob; any fsspec URL.")
    batch_size: int = Field(50_000, gt=0, description="Records per batch, at most.")
    schema_: dict[str, str] | None = Field(
        None,
        alias="schema",
        description="Declared column types, e.g. {id: int64, at: timestamp[us, UTC]}.",
    )
    incremental: bool = Field(
        True, description="Read only new or changed files, resuming a partly read one."
    )

    @field_validator("schema_")
    @classmethod
    def _known_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, name in (value or {}).items():
            try:
                parse_type(name)
            except ConfigError as exc:
                raise ValueError(f"column {column!r}: {exc}") from exc
        return value


class CsvExtractorConfig(FileExtractorConfig):
    type: Literal["csv"] = "csv"
    compression: Compression = "infer"
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str | None = Field('"', min_length=1, max_length=1)
    header: bool = True
    columns: list[str] | None = Field(
        None, description="Column names: required names without a header, renames with one."
    )
    null_values: list[str] = Field(default_factory=lambda: [""])
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value


class JsonlExtractorConfig(FileExtractorConfig):
    type: Literal["jsonl"] = "jsonl"
    compression: Compression = "infer"


class ParquetExtractorConfig(FileExtractorConfig):
    type: Literal["parquet"] = "parquet"
    columns: list[str] | None = Field(None, description="Read only these columns.")


class FileLoaderConfig(StageConfig):
    """What every file sink takes."""

    path: str = Field(min_length=1, description="A local directory; one file per batch.")
    mode: Literal["append", "replace"] = "append"


class ParquetLoaderConfig(FileLoaderConfig):
    type: Literal["parquet"] = "parquet"
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"
    row_group_size: int | None = Field(None, gt=0)


class CsvLoaderConfig(FileLoaderConfig):
    type: Literal["csv"] = "csv"


class JsonlLoaderConfig(FileLoaderConfig):
    type: Literal["jsonl"] = "jsonl"
