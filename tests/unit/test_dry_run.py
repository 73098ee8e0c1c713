"""Dry runs: extract, transform and validate, write nothing, say what would have happened."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from tests.support import ListLoader
from tests.unit.test_cli_plugins import ENV_PLUGINS
from tests.unit.test_pipeline_core import FAST_RETRY, IdBelow, RaiseOn, RangeExtractor
from typer.testing import CliRunner

from sluiceway.cli import app
from sluiceway.core import (
    BaseLoader,
    Batch,
    Intent,
    LocalStateStore,
    PartitionSpan,
    Pipeline,
    PipelineState,
)


class Untouchable(BaseLoader[dict]):
    """A sink a dry run must not even open."""

    type_name = "untouchable"

    def open(self, context: object) -> None:  # type: ignore[override]
        raise AssertionError("a dry run opened the sink")

    def load(self, batch: Batch) -> None:
        raise AssertionError("a dry run loaded a batch")


def test_a_dry_run_counts_what_would_happen_and_writes_nothing(tmp_path: Path) -> None:
    acked: list[int] = []
    source = RangeExtractor(50, 10)
    source.acknowledge = lambda batch: acked.append(batch.seq)  # type: ignore[method-assign]
    p = Pipeline(
        "rehearsal",
        source,
        [RaiseOn({3})],
        [IdBelow(45)],
        Untouchable(),
        home=tmp_path,
        retry=FAST_RETRY,
        dry_run=True,
    )
    m = p.run()
    assert m.dry_run and m.status == "succeeded" and m.balanced
    assert (m.read, m.written, m.dead_lettered) == (50, 44, 6)
    assert m.dead_lettered_by == {"transform.0.raise_on": 1, "validate.0.id_below:id.below": 5}
    assert list(tmp_path.iterdir()) == []  # no DLQ folder, no state, no lock file
    assert acked == []  # nothing acknowledged to the source (e.g. no Kafka offsets)

    # The real run afterwards starts from the beginning: the dry run committed nothing.
    loader = ListLoader()
    real = Pipeline(
        "rehearsal", RangeExtractor(50, 10), [RaiseOn({3})], [IdBelow(45)], loader, home=tmp_path
    )
    assert real.run().written == 44 and len(loader.rows) == 44


def test_a_dry_run_replays_pending_intents_but_leaves_them_pending(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state", "rehearsal")
    state = PipelineState("rehearsal", next_seq=3, positions={"r": 20})
    state.intents.append(Intent(2, {"r": PartitionSpan(20, 30, 10)}, None, "crashed"))
    version = store.commit(state, 0)
    p = Pipeline(
        "rehearsal", RangeExtractor(40, 10), [], [], Untouchable(), home=tmp_path, dry_run=True
    )
    m = p.run()
    assert (m.read, m.written, m.replayed_batches) == (20, 20, 1)  # the intent, then 30..39
    after, after_version = store.read()
    assert after_version == version and after.to_json() == state.to_json()


SPEC = """\
version: 1
name: cli-dry
source: {type: test-rows, rows: 10, batch_size: 4, negative: [5]}
transforms: [{type: test-label}]
validators: [{type: test-positive}]
sink: {type: test-file, path: out.jsonl}
"""


@pytest.fixture
def spec_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICEWAY_PLUGINS", ENV_PLUGINS)
    for name in ("SLUICEWAY_HOME", "SLUICEWAY_LOG_LEVEL", "SLUICEWAY_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SPEC))
    yield path
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_cli_dry_run_composes_with_limit_and_is_labelled(spec_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", str(spec_path), "--dry-run", "--limit", "8", "--metrics-json", "m.json"]
    )
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "DRY RUN (nothing written)" in err
    assert "would be written" in err and "would be dead-lettered" in err
    assert "none written (would go to" in err and "not committed (dry run)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "pipeline.yaml"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["dry_run"] is True
    assert (metrics["read"], metrics["written"], metrics["dead_lettered"]) == (8, 7, 1)
    logs = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert logs[0]["event"] == "run_started" and logs[0]["dry_run"] is True

    real = CliRunner().invoke(app, ["run", str(spec_path), "--quiet"])
    assert real.exit_code == 0
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 9  # the whole source: the dry run moved no position
