"""Read a contender's output back and compare it with the source table (a subprocess).

``python -m benchmarks.postgres.verify ROWS KIND PATH`` — KIND ``parquet`` (PATH: a
folder searched recursively for Parquet files) or ``postgres`` (PATH: a table).
Compares row count and checksums (sums of id, qty and amount, non-null counts,
first and last timestamp, total name length) with the source table's; exits
non-zero with the difference on failure.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql

from benchmarks.postgres.job import CHECKSUM_COLUMNS, DSN, source_table


def _normal(values: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(CHECKSUM_COLUMNS, values, strict=True):
        if value is None:
            out[name] = None
        elif name == "sum_amount":
            out[name] = Decimal(value).quantize(Decimal("0.01"))
        else:
            out[name] = int(value)
    return out


def postgres_checksum(table: str) -> dict[str, Any]:
    epoch = "round(1000000 * extract(epoch FROM {}))::int8"
    statement = sql.SQL(
        "SELECT count(*), sum(id), sum(qty), sum(amount), count(note), "
        "sum(CASE WHEN flag THEN 1 ELSE 0 END), "
        + epoch.format("min(updated_at)")
        + ", "
        + epoch.format("max(updated_at)")
        + ", sum(length(name)), count(attrs) FROM {}"
    ).format(sql.Identifier(table))
    with psycopg.connect(DSN) as con:
        row = con.execute(statement).fetchone()
    assert row is not None
    return _normal(tuple(row))


def parquet_checksum(folder: Path) -> dict[str, Any]:
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    if not files:
        raise AssertionError(f"no Parquet files under {folder}")
    con = duckdb.connect()
    row = con.execute(
        "SELECT count(*), sum(id), sum(qty), sum(CAST(amount AS DECIMAL(18, 2))), count(note), "
        "sum(CASE WHEN flag THEN 1 ELSE 0 END), epoch_us(min(updated_at)), "
        "epoch_us(max(updated_at)), sum(length(name)), count(attrs) "
        "FROM read_parquet(?, union_by_name = true)",
        [files],
    ).fetchone()
    assert row is not None
    return _normal(tuple(row))


def main(rows: int, kind: str, path: str) -> None:
    want = postgres_checksum(source_table(rows))
    got = parquet_checksum(Path(path)) if kind == "parquet" else postgres_checksum(path)
    if got != want:
        diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        raise SystemExit(f"output differs from the source (got, expected): {diff}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
