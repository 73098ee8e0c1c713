"""The hand-written way: ``pandas.read_sql(chunksize=…)`` and ``to_parquet`` per chunk.

``python -m benchmarks.postgres.pandas_job URL TABLE OUT``. Rows stream from a
server-side cursor (``stream_results``), so memory is per chunk, as a careful user
would write it.
"""

from __future__ import annotations

import os
import sys

import pandas as pd
import sqlalchemy


def main(url: str, table: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect().execution_options(stream_results=True) as con:
        query = f'SELECT * FROM public."{table}"'
        for i, chunk in enumerate(pd.read_sql_query(query, con, chunksize=100_000)):
            chunk.to_parquet(os.path.join(out, f"part-{i:05d}.parquet"), index=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
