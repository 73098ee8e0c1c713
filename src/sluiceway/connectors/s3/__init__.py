"""S3 (and any S3-compatible store): a source, a plain-file sink, a state store and a DLQ.

- ``source: {type: s3}`` reads Parquet, CSV or JSON Lines objects (gzip/zstd/bz2)
  under a prefix or glob, in streaming batches, several objects at once; only new
  or changed objects (by key and ETag) on later runs; Hive ``name=value``
  directories become columns; a corrupt object is dead-lettered with its key.
- ``sink: {type: s3}`` writes one object per batch under a deterministic key and a
  manifest per run.
- ``state: {uri: s3://…}`` keeps the checkpoint with compare-and-swap by conditional
  writes and a lease run lock; ``dlq: {uri: s3://…}`` keeps dead letters as Parquet
  objects — for runs in stateless containers.

``s3fs`` and ``boto3`` (the ``s3`` extra) are imported when a stage opens, not here.
"""

from __future__ import annotations

from typing import Any

from sluiceway.connectors.s3._config import (
    FileSourceConfig,
    S3DLQConfig,
    S3SinkConfig,
    S3SourceConfig,
    S3StateConfig,
)
from sluiceway.connectors.s3._dlq import S3DeadLetterQueue, read_s3_dead_letters
from sluiceway.connectors.s3._options import S3Connection, S3Options, is_s3_uri, split_uri
from sluiceway.connectors.s3._sink import S3Loader
from sluiceway.connectors.s3._source import (
    ObjectSource,
    S3CsvExtractor,
    S3JsonlExtractor,
    S3ParquetExtractor,
)
from sluiceway.connectors.s3._state import S3StateStore
from sluiceway.plugins import BuildContext, Plugin

__all__ = [
    "FILE_SOURCE",
    "S3_DLQ",
    "S3_SINK",
    "S3_SOURCE",
    "S3_STATE",
    "FileSourceConfig",
    "ObjectSource",
    "S3Connection",
    "S3CsvExtractor",
    "S3DLQConfig",
    "S3DeadLetterQueue",
    "S3JsonlExtractor",
    "S3Loader",
    "S3Options",
    "S3ParquetExtractor",
    "S3SinkConfig",
    "S3SourceConfig",
    "S3StateConfig",
    "S3StateStore",
    "build_source",
    "is_s3_uri",
    "read_s3_dead_letters",
    "split_uri",
]


def build_source(config: S3SourceConfig, ctx: BuildContext) -> ObjectSource:
    """The extractor of ``config``'s format; a relative path is relative to the spec file."""
    common: dict[str, Any] = {
        "label": config.type,
        "options": config.s3_options(),
        "concurrency": config.concurrency,
        "hive_partitioning": config.hive_partitioning,
        "read_retries": config.read_retries,
        "reader": config.reader,
        "batch_size": config.batch_size,
        "schema": dict(config.schema_ or {}),
        "incremental": config.incremental,
    }
    path = ctx.path(config.path)
    fmt = config.resolved_format()
    if fmt == "parquet":
        return S3ParquetExtractor(path, columns=config.columns, **common)
    if fmt == "csv":
        return S3CsvExtractor(
            path,
            compression=config.compression,
            delimiter=config.delimiter,
            quote_char=config.quote_char,
            header=config.header,
            columns=config.columns,
            null_values=config.null_values,
            encoding=config.encoding,
            **common,
        )
    return S3JsonlExtractor(path, compression=config.compression, **common)


def _build_sink(config: S3SinkConfig, ctx: BuildContext) -> S3Loader:
    compression = None if config.compression == "none" else config.compression
    return S3Loader(
        config.uri,
        options=config.s3_options(),
        format=config.format,
        compression=compression,
        row_group_size=config.row_group_size,
        manifest=config.manifest,
    )


def _build_state(config: S3StateConfig, ctx: BuildContext) -> S3StateStore:
    return S3StateStore(
        config.uri, ctx.pipeline, options=config.s3_options(), lock_ttl=config.lock_ttl
    )


def _build_dlq(config: S3DLQConfig, ctx: BuildContext) -> S3DeadLetterQueue:
    return S3DeadLetterQueue(config.uri, options=config.s3_options())


S3_SOURCE = Plugin(
    kind="source",
    type="s3",
    config=S3SourceConfig,
    build=build_source,
    summary="Parquet/CSV/JSONL objects under an s3:// prefix or glob; new or changed objects "
    "only (key + ETag), read in parallel, Hive partitions as columns",
    extra="s3",
)
FILE_SOURCE = Plugin(
    kind="source",
    type="file",
    config=FileSourceConfig,
    build=build_source,
    summary="The s3 source for any path (local folder, s3://, any fsspec URL), format by option",
    extra="s3",
)
S3_SINK = Plugin(
    kind="sink",
    type="s3",
    config=S3SinkConfig,
    build=_build_sink,
    summary="Parquet/JSONL/CSV objects on S3, one per batch (deterministic keys), run manifests",
    extra="s3",
)
S3_STATE = Plugin(
    kind="state",
    type="s3",
    config=S3StateConfig,
    build=_build_state,
    summary="Checkpoint on S3: compare-and-swap by conditional writes, lease run lock",
    extra="s3",
)
S3_DLQ = Plugin(
    kind="dlq",
    type="s3",
    config=S3DLQConfig,
    build=_build_dlq,
    summary="Dead letters on S3: one Parquet object per batch and stage",
    extra="s3",
)
