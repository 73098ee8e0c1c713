"""``sluiceway dlq show`` and ``sluiceway dlq replay`` as a user runs them."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from tests.unit.test_cli_plugins import ENV_PLUGINS, read_rows
from typer.testing import CliRunner, Result

from sluiceway.cli import ExitCode, app

SPEC = """\
version: 1
name: cli-dlq
source: {type: test-rows, rows: 12, batch_size: 4, negative: [1, 5, 6, 9]}
transforms: [{type: test-label}]
validators: [{type: test-positive}]
sink: {type: test-file, path: out.jsonl}
"""


@pytest.fixture
def spec_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICEWAY_PLUGINS", ENV_PLUGINS)
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("SLUICEWAY_HOME", "SLUICEWAY_LOG_LEVEL", "SLUICEWAY_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SPEC))
    assert invoke("run", path, "--quiet").exit_code == 0  # ids 1, 5, 6, 9 dead-lettered
    yield path
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_show_lists_entries_as_a_table_and_as_json_lines(spec_path: Path, tmp_path: Path) -> None:
    table = invoke("dlq", "show", spec_path)
    assert table.exit_code == 0, table.output
    out = table.stdout
    assert f"dead letters in {tmp_path / '.sluiceway' / 'dlq' / 'cli-dlq'}" in out
    assert "validate.0.test-positive" in out and "positive(value)" in out
    assert "value must be >= 0 (value '-5')" in out
    assert "4 entries shown; by stage:rule: validate.0.test-positive:positive(value) 4" in out

    entries = json_lines(invoke("dlq", "show", spec_path, "--json"))
    assert [e["value"] for e in entries] == ["-1", "-5", "-6", "-9"]
    assert json.loads(entries[0]["row"]) == {"id": 1, "value": -1, "label": "row-1"}
    assert entries[0]["replayed"] is False and entries[0]["ts"].endswith("+00:00")

    # The folder works too (no spec: no replay column).
    folder = invoke("dlq", "show", tmp_path / ".sluiceway" / "dlq" / "cli-dlq", "--json")
    assert [e["dlq_id"] for e in json_lines(folder)] == [e["dlq_id"] for e in entries]
    assert "replayed" not in json_lines(folder)[0]


def test_show_filters_and_limits(spec_path: Path) -> None:
    def values(*args: str) -> list[str]:
        result = invoke("dlq", "show", spec_path, "--json", *args)
        assert result.exit_code == 0, result.output
        return [e["value"] for e in json_lines(result)]

    assert values("--seq", "1") == ["-5", "-6"]
    assert values("--stage", "validate") == ["-1", "-5", "-6", "-9"]
    assert values("--stage", "validate.0.test-positive") == ["-1", "-5", "-6", "-9"]
    assert values("--stage", "transform") == []
    assert values("--rule", "positive(value)", "--limit", "2") == ["-6", "-9"]  # the newest
    run_id = json_lines(invoke("dlq", "show", spec_path, "--json"))[0]["run_id"]
    assert values("--run", run_id[:17]) == ["-1", "-5", "-6", "-9"]
    assert values("--run", "19990101") == []

    limited = invoke("dlq", "show", spec_path, "--limit", "1")
    assert "1 of 4 (the newest) entries shown" in limited.stdout
    missing = invoke("dlq", "show", spec_path.parent / "nope")
    assert missing.exit_code == ExitCode.CONFIG_ERROR


def test_replay_after_a_fix_dry_run_first_then_once(spec_path: Path, tmp_path: Path) -> None:
    # The fix: negative values are accepted with a warning from now on.
    spec_path.write_text(
        spec_path.read_text().replace(
            "{type: test-positive}", "{type: test-positive, on_fail: warn}"
        )
    )
    before = read_rows(tmp_path / "out.jsonl")

    rehearsal = invoke("dlq", "replay", spec_path, "--dry-run", "--seq", "1")
    assert rehearsal.exit_code == 0, rehearsal.output
    assert "DRY RUN" in rehearsal.stderr and "replayed from the DLQ" in rehearsal.stderr
    assert "replayed 2 rows" in rehearsal.stderr
    assert read_rows(tmp_path / "out.jsonl") == before

    done = invoke("dlq", "replay", spec_path, "--metrics-json", "m.json")
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (metrics["read"], metrics["replayed"], metrics["written"]) == (0, 4, 4)
    assert metrics["balanced"] is True
    assert "books balance: read + replayed + expanded" in done.stderr
    added = read_rows(tmp_path / "out.jsonl")[len(before) :]
    # Validated again, not transformed again: the label is the one from the first run.
    assert sorted((r["id"], r["label"]) for r in added) == [
        (1, "row-1"),
        (5, "row-5"),
        (6, "row-6"),
        (9, "row-9"),
    ]

    shown = json_lines(invoke("dlq", "show", spec_path, "--json"))
    assert all(e["replayed"] for e in shown)
    assert "yes" in invoke("dlq", "show", spec_path).stdout

    again = invoke("dlq", "replay", spec_path, "--metrics-json", "m2.json")
    assert again.exit_code == 0
    metrics = json.loads((tmp_path / "m2.json").read_text())
    assert metrics["replayed"] == 0 and metrics["replay_skipped"] == {"already_replayed": 4}
    assert "not replayed: already replayed" in again.stderr
    assert len(read_rows(tmp_path / "out.jsonl")) == len(before) + 4


def test_rows_failing_again_show_up_as_new_entries(spec_path: Path) -> None:
    result = invoke("dlq", "replay", spec_path, "--stage", "validate", "--seq", "2")
    assert result.exit_code == 0, result.output
    entries = json_lines(invoke("dlq", "show", spec_path, "--json"))
    assert [(e["seq"], e["value"], e["replayed"], e["refailed"]) for e in entries] == [
        (0, "-1", False, False),
        (1, "-5", False, False),
        (1, "-6", False, False),
        (2, "-9", True, False),
        (3, "-9", False, True),  # the replay's batch 3 dead-lettered it again
    ]
    assert "failed again" in invoke("dlq", "show", spec_path).stdout
