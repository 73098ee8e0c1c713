"""The plain-file S3 sink against moto: deterministic keys, overwriting replays, manifests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.integration.s3.support import MotoServer, get, keys

from sluiceway.connectors.s3 import S3Loader, S3SinkConfig
from sluiceway.core import Pipeline, RunFailedError, SinkError
from sluiceway.testing import SequenceExtractor, check_delivery, expected_rows


def test_one_object_per_batch_and_a_manifest_of_the_run(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    loader = S3Loader(f"s3://{bucket}/out/rows", options=moto.options())
    metrics = Pipeline(
        "files",
        SequenceExtractor(partitions=2, rows=100, batch_size=80),
        loader=loader,
        home=tmp_path,
    ).run()

    client = moto.client()
    parts = [k for k in keys(client, bucket, "out/rows/") if "/part-" in k]
    assert parts == [f"out/rows/part-{seq:012d}.parquet" for seq in range(3)]
    tables = [pq.read_table(pa.BufferReader(get(client, bucket, k))) for k in parts]
    report = check_delivery(expected_rows(2, 100), pa.concat_tables(tables), pa.table({"row": []}))
    assert report.ok, report.summary()

    (manifest_key,) = keys(client, bucket, "out/rows/_manifests/")
    manifest = json.loads(get(client, bucket, manifest_key))
    assert manifest["run_id"] == metrics.run_id and manifest["rows"] == 200
    assert [o["key"] for o in manifest["objects"]] == parts
    assert sum(o["rows"] for o in manifest["objects"]) == 200


def test_a_replayed_batch_overwrites_its_own_object(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/out"
    extractor = SequenceExtractor(partitions=1, rows=30, batch_size=10)
    Pipeline("files", extractor, loader=S3Loader(uri, options=moto.options()), home=tmp_path).run()
    # The state is lost: the same batches (same seqs) are written again.
    Pipeline(
        "files",
        SequenceExtractor(partitions=1, rows=30, batch_size=10),
        loader=S3Loader(uri, options=moto.options()),
        home=tmp_path / "fresh",
    ).run()

    client = moto.client()
    parts = [k for k in keys(client, bucket, "out/") if "/part-" in k]
    assert len(parts) == 3
    rows = sum(pq.read_table(pa.BufferReader(get(client, bucket, k))).num_rows for k in parts)
    assert rows == 30


def test_gzip_json_lines_objects(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    config = S3SinkConfig.model_validate(
        {"type": "s3", "uri": f"s3://{bucket}/j", "format": "jsonl", "compression": "gzip"}
    )
    loader = S3Loader(
        config.uri, options=moto.options(), format=config.format, compression=config.compression
    )
    Pipeline(
        "files", SequenceExtractor(partitions=1, rows=5, batch_size=5), loader=loader, home=tmp_path
    ).run()

    (part,) = [k for k in keys(moto.client(), bucket, "j/") if "/part-" in k]
    assert part == "j/part-000000000000.jsonl.gz"
    lines = gzip.decompress(get(moto.client(), bucket, part)).decode().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(5))


def test_a_missing_bucket_is_reported_when_the_sink_opens(moto: MotoServer, tmp_path: Path) -> None:
    loader = S3Loader("s3://no-such-bucket-zz/out", options=moto.options())
    with pytest.raises(RunFailedError) as caught:
        Pipeline("files", SequenceExtractor(rows=1), loader=loader, home=tmp_path).run()
    assert isinstance(caught.value.cause, SinkError)
    assert "no-such-bucket-zz" in str(caught.value.cause)
