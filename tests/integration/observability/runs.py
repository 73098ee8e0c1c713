"""Pipelines the observability tests run in-process (no tests in this module)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.integration.observability.plugins import (
    Explode,
    ExplodeConfig,
    Flaky,
    FlakyConfig,
    ObsRows,
    ObsRowsConfig,
    Positive,
)

from sluiceway.core.events import Hook
from sluiceway.core.pipeline import Pipeline
from sluiceway.core.retry import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, jitter=0.0)


def eventful_pipeline(
    tmp_path: Path,
    hooks: Sequence[Hook],
    *,
    name: str = "obs-demo",
    rows: int = 12,
    explode: Sequence[int] = (2,),
    negative: Sequence[int] = (9,),
    transient_failures: int = 1,
    fail_after: int | None = None,
) -> Pipeline:
    """12 rows in batches of 4: id 2 fails the transform (batch 0, bisected to one row),
    id 9 fails validation (batch 2), the first load is retried once."""
    return Pipeline(
        name,
        ObsRows(
            ObsRowsConfig(
                type="obs-rows",
                rows=rows,
                batch_size=4,
                negative=list(negative),
                fail_after=fail_after,
            )
        ),
        [Explode(ExplodeConfig(type="obs-explode", ids=list(explode)))],
        [Positive()],
        Flaky(
            FlakyConfig(type="obs-flaky", path="out.jsonl", transient_failures=transient_failures),
            str(tmp_path / "out.jsonl"),
        ),
        hooks=hooks,
        retry=FAST_RETRY,
        home=tmp_path / ".sluiceway",
    )
