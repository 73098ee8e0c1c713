"""The floor: a bare pyarrow read + write of the same data.

``python -m benchmarks.files.floor SOURCE OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq


def main(source: str, target: str) -> None:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.read_table(source), out / "data.parquet", compression="zstd")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
