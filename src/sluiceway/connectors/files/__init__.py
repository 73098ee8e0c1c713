"""Local and fsspec files: CSV, JSON Lines and Parquet sources; Parquet, CSV, JSON Lines sinks.

Sources read a file, a directory or a glob, each file one partition resumed where
the last run stopped; malformed records and values that do not fit the declared
types go to the dead-letter queue with file, line, column and value. Sinks write
one file per batch, named by its sequence number, so replays overwrite instead of
duplicating.
"""

from __future__ import annotations

from sluiceway.connectors.files._config import (
    CsvExtractorConfig,
    CsvLoaderConfig,
    FileExtractorConfig,
    FileLoaderConfig,
    JsonlExtractorConfig,
    JsonlLoaderConfig,
    ParquetExtractorConfig,
    ParquetLoaderConfig,
)
from sluiceway.connectors.files._csv import CsvExtractor
from sluiceway.connectors.files._fs import Compression, FileSet, SourceFile, codec_for
from sluiceway.connectors.files._jsonl import JsonlExtractor
from sluiceway.connectors.files._parquet import ParquetExtractor
from sluiceway.connectors.files._sinks import (
    CsvLoader,
    FileLoader,
    JsonlLoader,
    LoadMode,
    ParquetLoader,
    part_name,
)
from sluiceway.connectors.files._source import FileExtractor, FileReader, file_position
from sluiceway.plugins import BuildContext, Plugin

__all__ = [
    "CSV_SINK",
    "CSV_SOURCE",
    "JSONL_SINK",
    "JSONL_SOURCE",
    "PARQUET_SINK",
    "PARQUET_SOURCE",
    "Compression",
    "CsvExtractor",
    "CsvExtractorConfig",
    "CsvLoader",
    "CsvLoaderConfig",
    "FileExtractor",
    "FileExtractorConfig",
    "FileLoader",
    "FileLoaderConfig",
    "FileReader",
    "FileSet",
    "JsonlExtractor",
    "JsonlExtractorConfig",
    "JsonlLoader",
    "JsonlLoaderConfig",
    "LoadMode",
    "ParquetExtractor",
    "ParquetExtractorConfig",
    "ParquetLoader",
    "ParquetLoaderConfig",
    "SourceFile",
    "codec_for",
    "file_position",
    "part_name",
]


def _build_csv_source(config: CsvExtractorConfig, ctx: BuildContext) -> CsvExtractor:
    return CsvExtractor(
        ctx.path(config.path),
        batch_size=config.batch_size,
        schema=dict(config.schema_ or {}),
        incremental=config.incremental,
        compression=config.compression,
        delimiter=config.delimiter,
        quote_char=config.quote_char,
        header=config.header,
        columns=config.columns,
        null_values=config.null_values,
        encoding=config.encoding,
    )


def _build_jsonl_source(config: JsonlExtractorConfig, ctx: BuildContext) -> JsonlExtractor:
    return JsonlExtractor(
        ctx.path(config.path),
        batch_size=config.batch_size,
        schema=dict(config.schema_ or {}),
        incremental=config.incremental,
        compression=config.compression,
    )


def _build_parquet_source(config: ParquetExtractorConfig, ctx: BuildContext) -> ParquetExtractor:
    return ParquetExtractor(
        ctx.path(config.path),
        batch_size=config.batch_size,
        schema=dict(config.schema_ or {}),
        incremental=config.incremental,
        columns=config.columns,
    )


def _build_parquet_sink(config: ParquetLoaderConfig, ctx: BuildContext) -> ParquetLoader:
    return ParquetLoader(
        ctx.path(config.path),
        mode=config.mode,
        compression=config.compression,
        row_group_size=config.row_group_size,
    )


def _build_csv_sink(config: CsvLoaderConfig, ctx: BuildContext) -> CsvLoader:
    return CsvLoader(ctx.path(config.path), mode=config.mode)


def _build_jsonl_sink(config: JsonlLoaderConfig, ctx: BuildContext) -> JsonlLoader:
    return JsonlLoader(ctx.path(config.path), mode=config.mode)


CSV_SOURCE = Plugin(
    kind="source",
    type="csv",
    config=CsvExtractorConfig,
    build=_build_csv_source,
    summary="CSV files (a file, directory or glob; gzip/zstd/bz2), streamed in blocks",
)
JSONL_SOURCE = Plugin(
    kind="source",
    type="jsonl",
    config=JsonlExtractorConfig,
    build=_build_jsonl_source,
    summary="JSON Lines files, one object per line, malformed lines dead-lettered",
)
PARQUET_SOURCE = Plugin(
    kind="source",
    type="parquet",
    config=ParquetExtractorConfig,
    build=_build_parquet_source,
    summary="Parquet files, read by row group",
)
PARQUET_SINK = Plugin(
    kind="sink",
    type="parquet",
    config=ParquetLoaderConfig,
    build=_build_parquet_sink,
    summary="A directory of Parquet files, one per batch (append or replace)",
)
CSV_SINK = Plugin(
    kind="sink",
    type="csv",
    config=CsvLoaderConfig,
    build=_build_csv_sink,
    summary="A directory of CSV files, one per batch (append or replace)",
)
JSONL_SINK = Plugin(
    kind="sink",
    type="jsonl",
    config=JsonlLoaderConfig,
    build=_build_jsonl_sink,
    summary="A directory of JSON Lines files, one per batch (append or replace)",
)
