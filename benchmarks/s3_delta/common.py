"""What the contenders share: the transform, the moto server, the data, the read-back."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
BUCKET = "bench"
SOURCE = f"s3://{BUCKET}/raw"
FILES = 10
COLUMNS = ["id", "customer", "amount_cents", "status", "created_at", "amount"]


def transform(batch: pa.RecordBatch | pa.Table) -> Any:
    """The one transform every contender applies: amount = amount_cents / 100 (double)."""
    amount = pc.divide(pc.cast(batch.column("amount_cents"), pa.float64()), 100.0)
    return batch.append_column("amount", amount)


def delta_options(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "conditional_put": "etag",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
        env={**os.environ, **CREDENTIALS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def make_source(endpoint: str, rows: int) -> None:
    """``rows`` orders as ``FILES`` Parquet objects (100k-row groups) under ``SOURCE``."""
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(7)
    per_file = -(-rows // FILES)
    statuses = pa.array(["new", "paid", "shipped", "cancelled"])
    for index in range(FILES):
        start = index * per_file
        n = max(0, min(per_file, rows - start))
        ids = np.arange(start, start + n, dtype=np.int64)
        table = pa.table(
            {
                "id": ids,
                "customer": pc.binary_join_element_wise(
                    "customer-", pc.cast(pa.array(ids % 50_000), pa.string()), ""
                ),
                "amount_cents": rng.integers(0, 1_000_000, n),
                "status": statuses.take(pa.array(rng.integers(0, 4, n))),
                "created_at": pa.array(
                    1_790_000_000_000_000 + ids * 1_000, pa.timestamp("us", tz="UTC")
                ),
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=100_000, compression="snappy")
        s3.put_object(
            Bucket=BUCKET, Key=f"raw/part-{index:03d}.parquet", Body=sink.getvalue().to_pybytes()
        )


def delete_prefix(endpoint: str, prefix: str) -> None:
    s3 = client(endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        items = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if items:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": items})


def read_back(uri: str, endpoint: str) -> dict[str, float]:
    """Row count and column checksums of a Delta table (via delta-rs)."""
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=delta_options(endpoint)).to_pyarrow_table(
        columns=["id", "amount_cents", "amount"]
    )
    return {
        "rows": float(table.num_rows),
        "distinct_ids": float(pc.count_distinct(table.column("id")).as_py()),
        "sum_id": float(pc.sum(table.column("id")).as_py() or 0),
        "sum_cents": float(pc.sum(table.column("amount_cents")).as_py() or 0),
        "sum_amount": round(float(pc.sum(table.column("amount")).as_py() or 0), 2),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(read_back(sys.argv[1], sys.argv[2])))
