"""The floor: pyarrow reads the Parquet objects, one ``write_deltalake`` writes the table."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import write_deltalake

from benchmarks.s3_delta.common import BUCKET, delta_options, transform


def main(endpoint: str, target: str) -> None:
    host = urlsplit(endpoint).netloc
    fs = pafs.S3FileSystem(
        endpoint_override=host,
        scheme="http",
        region="us-east-1",
        access_key="bench",
        secret_key="bench",
    )
    dataset = ds.dataset(f"{BUCKET}/raw/", format="parquet", filesystem=fs)
    schema = transform(dataset.schema.empty_table()).schema
    batches = (transform(b) for b in dataset.to_batches(batch_size=100_000))
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    write_deltalake(target, reader, mode="append", storage_options=delta_options(endpoint))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
