"""dlt: its filesystem source (Arrow batches, its fastest reader) to its delta destination."""

from __future__ import annotations

import sys
import tempfile

import dlt
from dlt.sources.filesystem import filesystem, read_parquet

from benchmarks.s3_delta.common import BUCKET, transform


def main(endpoint: str, target: str) -> None:
    credentials = {
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
        "region_name": "us-east-1",
        "endpoint_url": endpoint,
    }
    files = filesystem(
        bucket_url=f"s3://{BUCKET}/raw", file_glob="*.parquet", credentials=credentials
    )
    orders = (files | read_parquet(use_pyarrow=True, chunksize=100_000)).add_map(transform)
    bucket_url, _, table = target.rpartition("/")
    pipeline = dlt.pipeline(
        pipeline_name="bench_s3_delta",
        destination=dlt.destinations.filesystem(bucket_url=bucket_url, credentials=credentials),
        dataset_name="out",
        pipelines_dir=tempfile.mkdtemp(),
    )
    pipeline.run(orders.with_name(table), table_format="delta", loader_file_format="parquet")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
