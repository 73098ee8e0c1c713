"""Check a contender's Parquet output: every message id exactly once (run in a subprocess).

python -m benchmarks.kafka.verify OUT_DIR N
"""

from __future__ import annotations

import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq


def main() -> None:
    out, expected = sys.argv[1], int(sys.argv[2])
    ids = pq.read_table(out, columns=["id"]).column("id")
    distinct = pc.count_distinct(ids).as_py()
    if len(ids) != expected or distinct != expected:
        sys.exit(f"{out}: {len(ids)} rows, {distinct} distinct ids, expected {expected}")


if __name__ == "__main__":
    main()
