"""dlt's ``sql_table`` source into its filesystem destination as Parquet.

``python -m benchmarks.postgres.dlt_job URL TABLE OUT BACKEND`` — BACKEND is
``connectorx`` or ``pyarrow`` (dlt's fast backends) or ``sqlalchemy`` (its default).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt
from dlt.sources.sql_database import sql_table


def main(url: str, table: str, out: str, backend: str) -> None:
    resource = sql_table(
        credentials=url, table=table, schema="public", backend=backend, chunk_size=100_000
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_dlt_{backend}",
        destination=dlt.destinations.filesystem(bucket_url=os.path.join(out, "data")),
        dataset_name="bench",
        pipelines_dir=os.path.join(out, "pipelines"),
    )
    pipeline.run(resource, loader_file_format="parquet")


if __name__ == "__main__":
    main(*sys.argv[1:5])
