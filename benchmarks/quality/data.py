"""The benchmark's orders: deterministic, with a known number of rows failing each check."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH = 100_000
STATUSES = ["new", "paid", "shipped", "cancelled"]
EMAIL = r"^[^@\s]+@[^@\s]+\.[a-z]+$"
RATE = 0.001  # each kind of bad value on about 0.1% of the rows


@dataclass(frozen=True)
class Expected:
    """How many rows fail each of the five checks (uniqueness two ways)."""

    null_ids: int
    duplicates: int  # later occurrences; every occurrence is twice this
    out_of_range: int
    bad_emails: int
    bad_statuses: int
    bad_rows: int  # rows failing at least one check

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def generate(path: Path, rows: int) -> Expected:
    """Write ``rows`` orders to ``path`` (once) and say how many fail each check.

    Duplicated ids repeat the id of the row just before, never across a batch
    boundary, so uniqueness within a batch and within the run agree.
    """
    rng = np.random.default_rng(11)
    ids = np.arange(rows, dtype=np.int64)
    positions = np.arange(rows)
    inner = positions % BATCH >= 2  # a duplicate's original is in the same batch
    dup = (rng.random(rows) < RATE) & inner
    dup &= ~np.roll(dup, 1)  # an original is never itself a duplicate
    null = (rng.random(rows) < RATE) & ~dup & ~np.roll(dup, -1)
    ids[dup] = ids[np.flatnonzero(dup) - 1]
    amount = rng.random(rows) * 1000
    out_of_range = rng.random(rows) < RATE
    amount[out_of_range] = -1 - amount[out_of_range]
    emails = np.char.add(np.char.add("user", (positions % 50_000).astype(str)), "@example.com")
    bad_email = rng.random(rows) < RATE
    emails[bad_email] = "not-an-email"
    statuses = np.array(STATUSES)[rng.integers(0, len(STATUSES), rows)].astype(object)
    bad_status = rng.random(rows) < RATE
    statuses[bad_status] = "lost"
    expected = Expected(
        null_ids=int(null.sum()),
        duplicates=int(dup.sum()),
        out_of_range=int(out_of_range.sum()),
        bad_emails=int(bad_email.sum()),
        bad_statuses=int(bad_status.sum()),
        bad_rows=int((null | dup | out_of_range | bad_email | bad_status).sum()),
    )
    if not (path.exists() and pq.read_metadata(path).num_rows == rows):
        table = pa.table(
            {
                "id": pa.array(ids, mask=null),
                "customer_id": pa.array(rng.integers(1, 1_000_000, rows)),
                "amount": pa.array(amount),
                "email": pa.array(emails.astype(object)),
                "status": pa.array(statuses),
                "country": pa.array(np.array(["DE", "FR", "US", "JP"])[rng.integers(0, 4, rows)]),
                "created_at": pa.array(
                    (1_700_000_000_000_000 + rng.integers(0, 10**13, rows)).astype("datetime64[us]")
                ),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=BATCH)
    return expected


def main() -> None:
    """``python -m benchmarks.quality.data PATH ROWS``: write the data, print the counts as JSON.

    The benchmark generates data in a child process: a parent holding the data in
    memory would lend its RSS to every contender it forks (``ru_maxrss`` counts the
    pages a child shares with its parent until it execs).
    """
    import json
    import sys

    expected = generate(Path(sys.argv[1]), int(sys.argv[2]))
    print(json.dumps(expected.as_dict()))


if __name__ == "__main__":
    main()
