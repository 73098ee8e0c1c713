"""The benchmark's input: a ~10-column orders table, generated once per row count.

Vectorised (numpy), deterministic (seeded), zstd, row groups of ``ROW_GROUP``
rows (see ``job.py``). About 0.1% of the rows break a validation rule (a
negative amount or an unknown status) so the dead-letter path runs too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.files.job import CURRENCIES, ROW_GROUP, STATUSES

__all__ = ["BAD_EVERY", "generate"]

#: Every BAD_EVERY-th row has a negative amount; every BAD_EVERY-th (shifted) an unknown status.
BAD_EVERY = 2000
_CHUNK = ROW_GROUP * 4


def _chunk(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    amount = rng.integers(100, 500_000, n, dtype=np.int64)
    amount[ids % BAD_EVERY == 7] *= -1
    status_idx = rng.integers(0, len(STATUSES), n)
    status = np.array([*STATUSES, "lost"], dtype=object)[
        np.where(ids % BAD_EVERY == 1001, len(STATUSES), status_idx)
    ]
    created = np.datetime64("2024-01-01T00:00:00", "us") + (ids * 1_000_003).astype(
        "timedelta64[us]"
    )
    customer = rng.integers(1, 200_000, n, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "customer_id": customer,
            "email": pa.array(
                np.char.add("customer", customer.astype(str)).astype(object) + "@example.com"
            ),
            "amount_cents": amount,
            "quantity": rng.integers(1, 20, n, dtype=np.int32),
            "unit_price": np.round(rng.random(n) * 100, 2),
            "currency": pa.array(np.array(CURRENCIES, dtype=object)[rng.integers(0, 3, n)]),
            "status": pa.array(status),
            "is_gift": rng.random(n) < 0.1,
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        }
    )


def generate(path: Path, rows: int, *, seed: int = 42) -> Path:
    """Write ``rows`` rows to ``path`` (skipped when a file of that row count is there)."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, rows, _CHUNK):
            table = _chunk(start, min(_CHUNK, rows - start), rng)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    return path


if __name__ == "__main__":
    generate(Path(sys.argv[1]), int(sys.argv[2]))
