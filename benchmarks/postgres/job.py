"""The PostgreSQL benchmark's constants and specs, in one place (no heavy imports).

The parent process of the benchmark imports only this and the harness: Linux
counts the parent's peak RSS into each child's ``ru_maxrss``, so it stays small.
"""

from __future__ import annotations

import os

__all__ = [
    "BATCH_SIZE",
    "CHECKSUM_COLUMNS",
    "DSN",
    "PARQUET_SPEC",
    "POSTGRES_SPEC",
    "source_table",
    "target_table",
    "url",
]

#: The server and database the benchmark uses (created when missing).
DSN = os.environ.get(
    "SLUICEWAY_BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=sluiceway_bench"
)
BATCH_SIZE = 100_000

#: What the verification compares between the source table and every output.
CHECKSUM_COLUMNS = (
    "rows",
    "sum_id",
    "sum_qty",
    "sum_amount",
    "notes",
    "flags",
    "first_at",
    "last_at",
    "name_chars",
    "attrs",
)


def source_table(rows: int) -> str:
    return f"bench_src_{rows}"


def target_table(rows: int) -> str:
    return f"bench_dst_{rows}"


def url(dsn: str = DSN) -> str:
    """The DSN as a ``postgresql://`` URL (for dlt and SQLAlchemy)."""
    keys = dict(part.split("=", 1) for part in dsn.split())
    user = keys.get("user", "postgres")
    password = f":{keys['password']}" if "password" in keys else ""
    host = keys.get("host", "127.0.0.1")
    return f"postgresql://{user}{password}@{host}:{keys.get('port', '5432')}/{keys['dbname']}"


PARQUET_SPEC = """\
version: 1
name: bench-pg-parquet
source:
  type: postgres
  dsn: "${{BENCH_PG_DSN}}"
  table: public.{table}
  batch_size: {batch_size}
  partitions: {partitions}
sink: {{type: parquet, path: "{target}"}}
home: "{home}"
"""

POSTGRES_SPEC = """\
version: 1
name: bench-pg-pg
source:
  type: postgres
  dsn: "${{BENCH_PG_DSN}}"
  table: public.{table}
  batch_size: {batch_size}
  partitions: {partitions}
sink:
  type: postgres
  dsn: "${{BENCH_PG_DSN}}"
  table: public.{target}
  mode: append
home: "{home}"
"""
