"""Fixtures of the DuckDB sink tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.integration.duckdb.support import FAST_RETRY, RunPipeline

from sluiceway.core import BaseExtractor, BaseLoader, Pipeline, PipelineMetrics


@pytest.fixture
def run_pipeline(tmp_path: Path) -> RunPipeline:
    """Run a pipeline named ``name`` with ``home=tmp_path`` and fast retries."""

    def run(name: str, extractor: BaseExtractor[Any], loader: BaseLoader[Any]) -> PipelineMetrics:
        pipeline = Pipeline(name, extractor, loader=loader, home=tmp_path, retry=FAST_RETRY)
        return pipeline.run()

    return run
