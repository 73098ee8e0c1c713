"""Support for the file connector tests: run a pipeline into a Parquet sink, read it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.connectors.files import FileExtractor, ParquetLoader
from sluiceway.core import Pipeline, PipelineMetrics, read_dead_letters


def balanced(m: PipelineMetrics) -> bool:
    return m.read + m.expanded == m.written + m.dead_lettered + m.filtered + m.skipped_committed


class Harness:
    """One pipeline name, its home (state + DLQ) and its Parquet sink under tmp_path."""

    def __init__(self, tmp_path: Path, name: str = "files") -> None:
        self.tmp = tmp_path
        self.name = name
        self.home = tmp_path / "home"
        self.out = tmp_path / "out"

    def run(self, extractor: FileExtractor, **kwargs: Any) -> PipelineMetrics:
        pipeline = Pipeline(
            self.name, extractor, loader=ParquetLoader(self.out), home=self.home, **kwargs
        )
        metrics = pipeline.run()
        assert balanced(metrics), metrics.balance_message()
        return metrics

    def written(self) -> pa.Table:
        parts = sorted(self.out.glob("part-*.parquet"))
        if not parts:
            return pa.table({})
        return pa.concat_tables([pq.read_table(p) for p in parts])

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.written().to_pylist()
        return rows

    def dead_letters(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = read_dead_letters(self.home / "dlq" / self.name).to_pylist()
        return rows
