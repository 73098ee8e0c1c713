"""Thresholds: a run that dead-letters too much fails (exit 6), keeping what it committed."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from tests.support import ListLoader
from tests.unit.test_cli_plugins import ENV_PLUGINS, read_rows, registry
from tests.unit.test_pipeline_core import IdBelow, RangeExtractor
from typer.testing import CliRunner

from sluiceway.cli import ExitCode, app
from sluiceway.config import SpecError, parse_spec
from sluiceway.core import (
    EventKind,
    LocalStateStore,
    Pipeline,
    RunFailedError,
    StageEvent,
    ThresholdExceededError,
    Thresholds,
)


def run(tmp_path: Path, thresholds: Thresholds, events: list[StageEvent] | None = None):
    loader = ListLoader()
    p = Pipeline(
        "limits",
        RangeExtractor(100, 10),
        [],
        [IdBelow(60)],  # ids 60..99 are dead-lettered: 6 clean batches, then 4 all bad
        loader,
        home=tmp_path,
        thresholds=thresholds,
        hooks=[events.append] if events is not None else [],
    )
    return p, loader


def test_max_rows_fails_after_the_batch_that_crossed_it_and_keeps_committed_work(
    tmp_path: Path,
) -> None:
    events: list[StageEvent] = []
    p, _ = run(tmp_path, Thresholds(max_dead_letter_rows=15), events)
    with pytest.raises(RunFailedError) as info:
        p.run()
    error = info.value.cause
    assert isinstance(error, ThresholdExceededError)
    assert (error.threshold, error.limit, error.value) == ("max_dead_letter_rows", 15, 20)
    assert str(error) == (
        "threshold crossed: dead-lettered 20 rows, more than max_dead_letter_rows 15"
    )
    m = info.value.metrics
    assert (m.read, m.written, m.dead_lettered) == (80, 60, 20)
    assert m.threshold_crossed == str(error) and m.thresholds == {"max_dead_letter_rows": 15}

    # Batches up to the crossing one are committed; the next run resumes after them.
    state, _ = LocalStateStore(tmp_path / "state", "limits").read()
    assert state.positions == {"r": 80} and state.intents == []
    crossed = [e for e in events if e.kind is EventKind.THRESHOLD_CROSSED]
    assert len(crossed) == 1 and crossed[0].seq == 7
    assert crossed[0].attrs["dead_lettered_by"] == {"validate.0.id_below:id.below": 20}
    assert [e.kind for e in events][-1] is EventKind.RUN_FAILED


def test_ratio_waits_for_min_rows_but_always_applies_at_the_end(tmp_path: Path) -> None:
    # 40% of all rows are dead-lettered; batch by batch the ratio climbs from 0 to 40%.
    p, _ = run(tmp_path / "a", Thresholds(max_dead_letter_ratio=0.2))
    with pytest.raises(RunFailedError) as info:
        p.run()
    assert info.value.metrics.read == 80  # 20 of 80 = 25% > 20% after the 8th batch
    assert "(25.00%), more than max_dead_letter_ratio 20.00%" in str(info.value)

    p, _ = run(tmp_path / "b", Thresholds(max_dead_letter_ratio=0.2, min_rows=1000))
    with pytest.raises(RunFailedError) as info:
        p.run()
    assert info.value.metrics.read == 100  # never judged mid-run; the end check fails it
    assert info.value.metrics.written == 60

    p, loader = run(tmp_path / "c", Thresholds(max_dead_letter_ratio=0.5))
    assert p.run().status == "succeeded" and len(loader.rows) == 60


SPEC = """\
version: 1
name: cli-limits
source: {type: test-rows, rows: 12, batch_size: 4, negative: [1, 2, 9]}
validators: [{type: test-positive}]
sink: {type: test-file, path: out.jsonl}
thresholds: {max_dead_letter_ratio: 0.1}
"""


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICEWAY_PLUGINS", ENV_PLUGINS)
    for name in ("SLUICEWAY_HOME", "SLUICEWAY_LOG_LEVEL", "SLUICEWAY_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SPEC))
    yield path
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_cli_exits_6_with_the_thresholds_in_the_summary(cli_env: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(cli_env), "--metrics-json", "m.json"])
    assert result.exit_code == ExitCode.THRESHOLD_EXCEEDED == 6
    err = result.stderr
    # Judged when batch 0 commits, i.e. once batch 1 went through the stages too (the
    # sink writes batch 0 while batch 1 is transformed): 2 of 8 rows.
    assert "thresholds CROSSED: dead-letter ratio 25.00% (max 10.00%)" in err
    assert "error: threshold crossed: dead-lettered 2 of 8 rows (25.00%)" in err
    assert len(read_rows(tmp_path / "out.jsonl")) == 2  # the first batch is kept
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["status"] == "failed" and metrics["error_type"] == "ThresholdExceededError"
    assert metrics["dead_letter_ratio"] == 0.25

    relaxed = cli_env.read_text().replace("max_dead_letter_ratio: 0.1", "max_dead_letter_rows: 5")
    cli_env.write_text(relaxed)
    ok = CliRunner().invoke(app, ["run", str(cli_env)])
    assert ok.exit_code == 0, ok.output
    assert "thresholds ok: dead-lettered rows 1 (max 5)" in ok.stderr  # resumed after batch 0


def test_threshold_spec_errors_are_located() -> None:
    text = SPEC.replace("max_dead_letter_ratio: 0.1", "max_dead_letter_ratio: 5, max_rows: 1")
    with pytest.raises(SpecError) as info:
        parse_spec(text, file="p.yaml", registry=registry())
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:6:37: thresholds.max_dead_letter_ratio: Input should be less than or equal to 1"
        " (got 5)",
        "p.yaml:6:40: thresholds.max_rows: unknown key (did you mean 'min_rows'? allowed:"
        " max_dead_letter_ratio, max_dead_letter_rows, min_rows)",
    ]
