"""Plain files on S3 (``sink: {type: s3}``): one object per batch, and a manifest per run.

Batch ``seq`` becomes ``<prefix>/part-<seq>.<ext>``. The key depends on the batch's
sequence number only, so a retried or replayed batch overwrites its own object
instead of adding its rows twice; an S3 PUT is atomic, so a reader never sees half
an object. When a run succeeds, ``<prefix>/_manifests/<run_id>.json`` lists the
objects it wrote (key, rows, bytes, ETag) — the names start with ``_``, so a source
reading the prefix skips them. Keys come from the pipeline's state: reset the state
and the sequence starts over, overwriting the objects of the same numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sluiceway.connectors.files import part_name
from sluiceway.connectors.s3._errors import translate
from sluiceway.connectors.s3._options import S3Options, split_uri
from sluiceway.core.batch import Batch
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import SinkError
from sluiceway.core.stages import BaseLoader, LoadResult, SinkContext

__all__ = ["MANIFESTS", "S3Loader", "serialize"]

#: Folder (under the sink's prefix) of the run manifests.
MANIFESTS = "_manifests"

_EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl", "csv": "csv"}
_CODEC_SUFFIX = {"gzip": ".gz", "zstd": ".zst"}


def serialize(
    table: pa.Table,
    fmt: Literal["parquet", "jsonl", "csv"],
    compression: str | None,
    row_group_size: int | None = None,
) -> bytes:
    """``table`` as the bytes of one object of this format."""
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        pq.write_table(
            table,
            sink,
            compression=compression or "zstd",
            row_group_size=row_group_size,
        )
        return bytes(sink.getvalue())
    stream: Any = (
        pa.CompressedOutputStream(sink, compression)
        if compression and compression != "none"
        else sink
    )
    if fmt == "csv":
        pacsv.write_csv(table, stream)
    else:
        import polars as pl

        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        stream.write(frame.write_ndjson().encode("utf-8"))
    if stream is not sink:
        stream.close()
    return bytes(sink.getvalue())


class S3Loader(BaseLoader[dict[str, Any]]):
    """Writes each batch as one object under ``uri`` (``s3://bucket/prefix``)."""

    type_name = "s3"

    def __init__(
        self,
        uri: str,
        *,
        options: S3Options | None = None,
        format: Literal["parquet", "jsonl", "csv"] = "parquet",
        compression: str | None = None,
        row_group_size: int | None = None,
        manifest: bool = True,
    ) -> None:
        super().__init__()
        self.uri = uri.rstrip("/")
        self.location = split_uri(uri)
        self.options = options or S3Options()
        self.format: Literal["parquet", "jsonl", "csv"] = format
        self.compression = compression
        self.row_group_size = row_group_size
        self.manifest = manifest
        self._client: Any = None
        self._parts: dict[str, dict[str, Any]] = {}

    @property
    def extension(self) -> str:
        ext = _EXTENSIONS[self.format]
        if self.format != "parquet" and self.compression:
            ext += _CODEC_SUFFIX.get(self.compression, "")
        return ext

    def key(self, seq: int) -> str:
        """The object key of batch ``seq``."""
        return self.location.key(part_name(seq, self.extension))

    def describe(self) -> Mapping[str, Any]:
        return {"type": self.type_name, "uri": self.uri, "format": self.format}

    def open(self, context: SinkContext) -> None:
        """Connect and check that the bucket can be reached (a missing bucket is fatal)."""
        super().open(context)
        self._parts.clear()
        self._client = self.options.client(f"sink {self.uri}")
        try:
            self._client.head_bucket(Bucket=self.location.bucket)
        except Exception as exc:
            raise translate(exc, f"cannot reach bucket of sink {self.uri}", SinkError) from exc

    def load(self, batch: Batch) -> LoadResult:
        """PUT the batch's object (the same key on every retry: it is overwritten)."""
        table = batch.to_arrow()
        try:
            body = serialize(table, self.format, self.compression, self.row_group_size)
        except (pa.ArrowException, ValueError) as exc:
            raise SinkError(f"cannot write {self.format} for {self.uri}: {exc}") from exc
        key = self.key(batch.seq)
        crash_point("mid_load")
        try:
            response = self._client.put_object(Bucket=self.location.bucket, Key=key, Body=body)
        except Exception as exc:
            where = f"s3://{self.location.bucket}/{key}"
            raise translate(exc, f"cannot write {where}", SinkError) from exc
        self._parts[key] = {
            "key": key,
            "seq": batch.seq,
            "rows": table.num_rows,
            "bytes": len(body),
            "etag": str(response.get("ETag", "")).strip('"'),
        }
        return LoadResult(written=table.num_rows)

    def finish(self) -> None:
        """Write the run's manifest (the objects this run wrote, replayed ones included)."""
        if not self.manifest:
            return
        parts = [self._parts[k] for k in sorted(self._parts)]
        doc = {
            "pipeline": self.context.pipeline,
            "run_id": self.context.run_id,
            "uri": self.uri,
            "format": self.format,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": sum(p["rows"] for p in parts),
            "objects": parts,
        }
        key = self.location.key(MANIFESTS, f"{self.context.run_id}.json")
        try:
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=json.dumps(doc, indent=1).encode("utf-8"),
                ContentType="application/json",
            )
        except Exception as exc:
            raise translate(exc, f"cannot write the manifest {key}", SinkError) from exc

    def close(self) -> None:
        self._client = None  # shared with other stages of the process: not closed here
