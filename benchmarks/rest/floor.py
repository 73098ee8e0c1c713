"""The floor: a plain sequential httpx loop, page after page, into one Parquet file.

python -m benchmarks.rest.floor BASE_URL OUT_FILE
"""

from __future__ import annotations

import sys

import httpx
import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    base, out = sys.argv[1], sys.argv[2]
    records: list[dict] = []
    with httpx.Client(base_url=base) as client:
        page = 1
        while True:
            items = client.get("/items", params={"page": page}).json()["items"]
            if not items:
                break
            records.extend(items)
            page += 1
    pq.write_table(pa.Table.from_pylist(records), out)


if __name__ == "__main__":
    main()
