"""The pandas script a user would write for the same job.

``python -m benchmarks.files.pandas_job SOURCE OUT_DIR``.

Read the Parquet file, compute the same two columns, apply the same four checks,
write the rows that pass and, separately, the rows that fail (the user's DLQ).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmarks.files.job import CURRENCIES, STATUSES


def main(source: str, target: str) -> None:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.read_parquet(source)
    df["amount"] = df["amount_cents"] / 100.0
    df["total"] = df["unit_price"] * df["quantity"]
    ok = (
        df["amount"].between(0, 100_000)
        & df["quantity"].between(1, 100)
        & df["status"].isin(STATUSES)
        & df["currency"].isin(CURRENCIES)
    )
    df[ok].to_parquet(out / "valid.parquet", index=False, compression="zstd")
    df[~ok].to_parquet(out / "rejected.parquet", index=False, compression="zstd")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
