"""A dataset with known bad rows, and a pipeline that runs one validator over it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from tests.support import ListLoader

from sluiceway.core import (
    BaseExtractor,
    BaseValidator,
    Pipeline,
    PipelineMetrics,
    read_dead_letters,
)

#: Eight orders; the email tells them apart. Good: a, b, h. Bad (one reason each):
#: c amount < 0; d id null; no-at-sign email; f status unknown; g repeats b's id.
ORDERS = pa.table(
    {
        "id": pa.array([1, 2, 3, None, 5, 6, 2, 8], pa.int64()),
        "amount": [10.0, 20.0, -5.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        "email": [
            "a@x.io",
            "b@x.io",
            "c@x.io",
            "d@x.io",
            "no-at-sign",
            "f@x.io",
            "g@x.io",
            "h@x.io",
        ],
        "status": ["new", "paid", "new", "paid", "new", "lost", "shipped", "new"],
    }
)
STATUSES = ["new", "paid", "shipped"]
EMAIL = r"^[^@]+@[^@]+$"


class TableSource(BaseExtractor[Any]):
    """Yields a table in slices of ``batch_size`` rows."""

    def __init__(self, table: pa.Table, batch_size: int) -> None:
        super().__init__(batch_size)
        self.table = table

    def extract(self) -> Iterator[pa.Table]:
        for i in range(0, self.table.num_rows, self.batch_size):
            yield self.table.slice(i, self.batch_size)


def run(
    tmp_path: Path,
    validator: BaseValidator[Any],
    table: pa.Table = ORDERS,
    batch_size: int = 100,
) -> tuple[PipelineMetrics, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run source → validator → list sink; (metrics, loaded rows, DLQ entries)."""
    sink = ListLoader()
    pipeline = Pipeline(
        "orders", TableSource(table, batch_size), [], [validator], sink, home=tmp_path
    )
    metrics = pipeline.run()
    assert metrics.balanced, metrics.balance_message()
    return metrics, sink.rows, dead_letters(tmp_path)


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    folder = tmp_path / "dlq" / "orders"
    return read_dead_letters(folder).to_pylist() if folder.exists() else []


def routed(dlq: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str | None]]:
    """(email of the row, rule, column, value) per DLQ entry, sorted."""
    return sorted((json.loads(e["row"])["email"], e["rule"], e["column"], e["value"]) for e in dlq)


def emails(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["email"] for r in rows)
