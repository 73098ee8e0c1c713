"""Shared pieces of the DuckDB sink tests: an in-memory source and readers of the sink."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sluiceway.core import (
    BaseExtractor,
    Batch,
    Intent,
    PartitionSpan,
    PipelineMetrics,
    RetryPolicy,
)

FAST_RETRY = RetryPolicy(attempts=2, initial_delay=0.001, max_delay=0.002, jitter=0.0)


class TablesExtractor(BaseExtractor[dict[str, Any]]):
    """Serves the given Arrow tables, one batch each, as consecutive row offsets of ``p0``.

    Resumes from the committed position, replays an intent exactly, and raises when
    it reaches batch ``fail_at`` (to break a run midway).
    """

    type_name = "tables"

    def __init__(self, tables: Sequence[pa.Table], *, fail_at: int | None = None) -> None:
        super().__init__(batch_size=max([t.num_rows for t in tables] + [1]))
        self.tables = list(tables)
        self.fail_at = fail_at
        self.starts = [0, *itertools.accumulate(t.num_rows for t in self.tables)][:-1]

    def batch(self, index: int) -> Batch:
        start, table = self.starts[index], self.tables[index]
        end = start + table.num_rows
        return Batch.from_source(table, {"p0": PartitionSpan(start, end, table.num_rows)})

    def extract(self) -> Iterator[Batch]:
        done = int(self.context.positions.get("p0", 0))
        for index, start in enumerate(self.starts):
            if start < done:
                continue
            if index == self.fail_at:
                raise RuntimeError("the source broke midway")
            yield self.batch(index)

    def replay(self, intent: Intent) -> Batch:
        return self.batch(self.starts.index(intent.positions["p0"].start))


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_rows(database: Path, table: str, order: str) -> list[dict[str, Any]]:
    """Rows of ``table`` (``schema.table`` allowed; parts quoted here) ordered by ``order``."""
    qualified = ".".join(quote(part) for part in table.split("."))
    with duckdb.connect(str(database), read_only=True) as con:
        rows: list[dict[str, Any]] = (
            con.sql(f"SELECT * FROM {qualified} ORDER BY {quote(order)}")
            .to_arrow_table()
            .to_pylist()
        )
    return rows


def table_names(database: Path) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    return {str(row[0]) for row in rows}


RunPipeline = Callable[..., PipelineMetrics]
