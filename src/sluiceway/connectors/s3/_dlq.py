"""The dead-letter queue on S3 (``dlq: {uri: s3://bucket/prefix}``).

One Parquet object per batch and stage, named as the local DLQ names its files
(``<seq:012d>.<stage>.parquet``), so a replayed batch overwrites its own entries
instead of duplicating them. The PUT returns once S3 has stored the object
durably; only then does the runner let the checkpoint pass the batch.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.connectors.s3._errors import translate
from sluiceway.connectors.s3._options import S3Options, split_uri
from sluiceway.core.crash import crash_point
from sluiceway.core.dlq import ENVELOPE_SCHEMA, dlq_file_name
from sluiceway.core.errors import FatalError

__all__ = ["S3DeadLetterQueue", "read_s3_dead_letters"]


class S3DeadLetterQueue:
    """Dead letters as Parquet objects under an ``s3://`` prefix."""

    def __init__(self, uri: str, *, options: S3Options | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.location = split_uri(uri)
        self.options = options or S3Options()
        self._client: Any = None

    def describe(self) -> str:
        return self.uri

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.options.client(f"dead-letter queue {self.uri}")
        return self._client

    def read(self) -> pa.Table:
        """Every stored envelope, oldest batch first (``sluiceway dlq show`` and replays)."""
        return read_s3_dead_letters(self.uri, options=self.options)

    def write(self, seq: int, stage: str, entries: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(entries, sink, compression="zstd")
        key = self.location.key(dlq_file_name(seq, stage))
        try:
            body = sink.getvalue().to_pybytes()
            self.client.put_object(Bucket=self.location.bucket, Key=key, Body=body)
        except Exception as exc:
            # The SDK already retried; the runner stops rather than lose dead letters.
            raise translate(
                exc, f"cannot write dead letters to s3://{self.location.bucket}/{key}", FatalError
            ) from exc
        crash_point("after_dlq_write")


def read_s3_dead_letters(uri: str, *, options: S3Options | None = None) -> pa.Table:
    """All envelopes under an S3 DLQ prefix, oldest batch first."""
    location = split_uri(uri)
    client = (options or S3Options()).client(f"dead-letter queue {uri}")
    try:
        keys: list[str] = []
        paginator = client.get_paginator("list_objects_v2")
        prefix = location.key() + "/" if location.prefix else ""
        for page in paginator.paginate(Bucket=location.bucket, Prefix=prefix):
            keys.extend(
                item["Key"]
                for item in page.get("Contents", [])
                if item["Key"].endswith(".parquet") and "/" not in item["Key"][len(prefix) :]
            )
        tables = []
        for key in sorted(keys):
            body = client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
            tables.append(pq.read_table(pa.BufferReader(body)).cast(ENVELOPE_SCHEMA))
    except Exception as exc:
        raise translate(exc, f"cannot read dead letters under {uri}", FatalError) from exc
    return pa.concat_tables(tables) if tables else ENVELOPE_SCHEMA.empty_table()
