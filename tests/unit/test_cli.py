"""The ``sluiceway`` CLI: every exit code provoked for real, outputs a user reads or parses."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from rich.console import Console
from tests.unit.test_cli_plugins import ENV_PLUGINS, read_rows
from typer.testing import CliRunner, Result

from sluiceway.cli import ExitCode, app
from sluiceway.cli.render import RunProgress
from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.state import LocalStateStore

BASE = """\
version: 1
name: cli-demo
source: {type: test-rows, rows: 10, batch_size: 4, negative: [5]}
transforms: [{type: test-label}]
validators: [{type: test-positive}]
sink: {type: test-file, path: out.jsonl}
retry: {initial_delay: 1ms, jitter: 0}
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("SLUICEWAY_HOME", "SLUICEWAY_LOG_LEVEL", "SLUICEWAY_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLUICEWAY_PLUGINS", ENV_PLUGINS)
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def spec(tmp_path: Path, text: str = BASE, **replace: str) -> Path:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def log_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


# -- run --------------------------------------------------------------------------------


def test_run_succeeds_prints_a_summary_and_writes_metrics(tmp_path: Path) -> None:
    result = invoke("run", spec(tmp_path), "--metrics-json", tmp_path / "m" / "metrics.json")
    assert result.exit_code == ExitCode.OK, result.output
    rows = read_rows(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 3, 4, 6, 7, 8, 9]

    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["balanced"] is True
    assert (metrics["read"], metrics["written"], metrics["dead_lettered"]) == (10, 9, 1)
    assert metrics["dead_lettered_by"] == {"validate.0.test-positive:positive(value)": 1}

    err = result.stderr
    assert "cli-demo" in err and "succeeded" in err
    assert "validate.0.test-positive:positive(value)" in err
    assert str(tmp_path / ".sluiceway" / "dlq" / "cli-demo") in err
    assert "books balance" in err
    assert result.stdout == ""  # stdout stays free for machine output
    events = [line["event"] for line in log_lines(result)]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert events.count("batch_committed") == 3


def test_limit_and_quiet(tmp_path: Path) -> None:
    result = invoke("run", spec(tmp_path), "--limit", "4", "--quiet")
    assert result.exit_code == 0
    assert len(read_rows(tmp_path / "out.jsonl")) == 4
    assert result.stderr == ""  # no summary, no info lines


def test_exit_1_when_the_run_fails_with_metrics_and_no_traceback(tmp_path: Path) -> None:
    path = spec(tmp_path, **{"negative: [5]": "negative: [5], fail_after: 1"})
    result = invoke("run", path, "--metrics-json", tmp_path / "m.json")
    assert result.exit_code == ExitCode.RUN_FAILED == 1
    assert error_lines(result) == ["error: the test source went away"]
    assert "Traceback" not in result.output
    assert "failed" in result.stderr and "read" in result.stderr  # the summary of what ran
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (metrics["status"], metrics["error_type"], metrics["read"]) == (
        "failed",
        "SourceError",
        4,
    )

    debug = invoke("run", path, "--log-level", "debug")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


def test_exit_2_for_a_bad_spec_with_located_messages(tmp_path: Path) -> None:
    path = spec(
        tmp_path,
        **{
            "path: out.jsonl": "path: out.jsonl, mode: upsert",
            "name: cli-demo": "name: cli-demo\ncolour: blue",
        },
    )
    result = invoke("run", path, "--metrics-json", tmp_path / "m.json")
    assert result.exit_code == ExitCode.CONFIG_ERROR == 2
    assert error_lines(result) == [
        f"error: {path}:3:1: colour: unknown key (allowed: alerts, dlq, engine, home, load_ahead,"
        " name, observability, prefetch, retry, sink, source, state, thresholds, transforms,"
        " validators,"
        " version)",
        f"error: {path}:7:48: sink.mode: Input should be 'append' or 'replace' (got 'upsert')",
    ]
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.json").exists()  # nothing ran


def test_exit_2_for_unknown_types_bad_yaml_missing_files_and_missing_extras(tmp_path: Path) -> None:
    unknown = invoke("run", spec(tmp_path, **{"type: test-file": "type: test-fil"}))
    assert unknown.exit_code == 2
    (line,) = error_lines(unknown)
    assert "sink.type: unknown sink type 'test-fil'" in line and "did you mean 'test-file'" in line

    bad_yaml = invoke("run", spec(tmp_path, text="version: 1\nname: [x\n"))
    assert bad_yaml.exit_code == 2
    assert error_lines(bad_yaml)[0].startswith(
        f"error: {tmp_path / 'pipeline.yaml'}:3:1: invalid YAML"
    )

    missing = invoke("run", tmp_path / "nope.yaml")
    assert missing.exit_code == 2
    assert error_lines(missing) == [f"error: {tmp_path / 'nope.yaml'}: no such file"]

    extra = invoke(
        "run", spec(tmp_path, **{"{type: test-file, path: out.jsonl}": "{type: test-needs-extra}"})
    )
    assert extra.exit_code == 2
    (line,) = error_lines(extra)
    assert "pip install 'sluiceway[nothing]'" in line


def test_exit_2_for_a_missing_environment_variable(tmp_path: Path) -> None:
    quoted = spec(tmp_path, **{"path: out.jsonl": 'path: "${OUT_DIR_UNSET}/out.jsonl"'})
    result = invoke("run", quoted)
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"error: {quoted}:6:31: sink.path: environment variable OUT_DIR_UNSET is not set (set"
        " it, or give a default: ${OUT_DIR_UNSET:-default})"
    ]
    # Unquoted inside a flow mapping it is not even YAML: the message says what to do.
    unquoted = invoke("run", spec(tmp_path, **{"path: out.jsonl": "path: ${OUT}/out.jsonl"}))
    assert unquoted.exit_code == 2
    (line,) = error_lines(unquoted)
    assert "invalid YAML" in line and 'quote values that use ${VAR}: "${VAR}"' in line


def test_exit_3_when_the_books_do_not_balance(tmp_path: Path) -> None:
    path = spec(tmp_path, **{"path: out.jsonl": "path: out.jsonl, lie: true"})
    result = invoke("run", path, "--metrics-json", tmp_path / "m.json")
    assert result.exit_code == ExitCode.ACCOUNTING_ERROR == 3
    (line,) = error_lines(result)
    assert "rows unaccounted for" in line
    assert "books do NOT balance" in result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["balanced"] is False


def test_exit_4_when_a_fail_rule_fails(tmp_path: Path) -> None:
    path = spec(tmp_path, **{"{type: test-positive}": "{type: test-positive, on_fail: fail}"})
    result = invoke("run", path, "--metrics-json", tmp_path / "m.json")
    assert result.exit_code == ExitCode.VALIDATION_FAILED == 4
    (line,) = error_lines(result)
    assert "rule 'positive(value)' failed on 1 row(s)" in line and "on_fail=fail" in line
    assert json.loads((tmp_path / "m.json").read_text())["error_type"] == "ValidationFailedError"


def test_exit_5_when_another_run_holds_the_lock(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / ".sluiceway" / "state", "cli-demo")
    with store.lock("someone-else"):
        result = invoke("run", spec(tmp_path))
    assert result.exit_code == ExitCode.LOCKED == 5
    (line,) = error_lines(result)
    assert "already running" in line and "someone-else" in line
    assert not (tmp_path / "out.jsonl").exists()


# -- validate ---------------------------------------------------------------------------


def test_validate_a_good_spec_prints_a_summary_without_running(tmp_path: Path) -> None:
    path = spec(tmp_path, **{"rows: 10,": 'rows: 10, dsn: "${SECRET_DSN}",'})
    result = CliRunner().invoke(
        app, ["validate", str(path)], env={"SECRET_DSN": "postgres://u:sekrit@h/db"}
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{path} is valid" in out
    for expected in ("cli-demo", "test-rows", "test-label", "test-positive", "test-file", "polars"):
        assert expected in out
    assert "sekrit" not in result.output
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / ".sluiceway").exists()


def test_validate_a_bad_spec_lists_every_problem(tmp_path: Path) -> None:
    path = spec(
        tmp_path,
        **{
            "version: 1": "version: 2",
            "rows: 10,": 'rows: many, dsn: "${SECRET_DSN}",',
            "{type: test-label}": "{type: test-label, drop_multiples_of: x}",
        },
    )
    result = CliRunner().invoke(app, ["validate", str(path)], env={"SECRET_DSN": "sekrit"})
    assert result.exit_code == 2
    lines = error_lines(result)
    assert [line.split(": ", 3)[2] for line in lines] == [
        "version",
        "source.rows",
        "transforms[0].drop_multiples_of",
    ]
    assert all(line.startswith(f"error: {path}:") for line in lines)
    assert "sekrit" not in result.output and result.stdout == ""


# -- connectors, schema -----------------------------------------------------------------


def test_connectors_lists_types_summaries_extras_and_broken_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "site" / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sluiceway.sinks]\nbroken = no_such_module_xyz:SINK\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = CliRunner().invoke(app, ["connectors"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "test-rows" in out and "numbered test rows" in out
    assert "test-needs-extra" in out and "pip install 'sluiceway[nothing]'" in out
    assert "failed to load" in out and "broken" in out and "no_such_module_xyz" in out


def test_schema_prints_the_json_schema_with_registered_types() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "test-rows" in schema["properties"]["source"]["discriminator"]["mapping"]
    assert "test-file" in schema["properties"]["sink"]["discriminator"]["mapping"]
    assert schema["properties"]["version"]["const"] == 1


# -- state ------------------------------------------------------------------------------


def test_state_show_and_reset(tmp_path: Path) -> None:
    path = spec(tmp_path)
    assert invoke("run", path).exit_code == 0

    shown = invoke("state", "show", path, "--json")
    assert shown.exit_code == 0
    doc = json.loads(shown.stdout)
    assert doc["state"]["positions"] == {"test-rows": 10}
    assert doc["state"]["next_seq"] == 3 and doc["state"]["intents"] == []
    assert doc["state"]["last_run"]["written"] == 9

    table = CliRunner().invoke(app, ["state", "show", str(path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert "committed positions" in table.stdout and "test-rows" in table.stdout
    assert "next seq" in table.stdout

    refused = invoke("state", "reset", path)
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    state_file = Path(doc["path"])
    assert state_file.exists()

    reset = invoke("state", "reset", path, "--yes")
    assert reset.exit_code == 0
    after = json.loads(invoke("state", "show", path, "--json").stdout)["state"]
    # Positions and intents are gone; the batch counter is kept so seqs never repeat.
    assert after["positions"] == {} and after["intents"] == [] and after["next_seq"] == 3
    # The next run starts from the beginning again.
    assert invoke("run", path).exit_code == 0
    assert len(read_rows(tmp_path / "out.jsonl")) == 18


def test_state_reset_refuses_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    path = spec(tmp_path)
    store = LocalStateStore(tmp_path / ".sluiceway" / "state", "cli-demo")
    with store.lock("running"):
        result = invoke("state", "reset", path, "--yes")
    assert result.exit_code == 5


# -- progress ---------------------------------------------------------------------------


def test_the_progress_display_counts_rows_read_written_and_dead_lettered() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    with RunProgress(console, "demo") as progress:
        for kind, rows_in, rows_out in [
            (EventKind.BATCH_EXTRACTED, 0, 1000),
            (EventKind.ROWS_DEAD_LETTERED, 3, 0),
            (EventKind.BATCH_LOADED, 997, 997),
            (EventKind.BATCH_EXTRACTED, 0, 500),
        ]:
            progress(StageEvent(kind, "demo", "r", seq=0, rows_in=rows_in, rows_out=rows_out))
    text = stream.getvalue()
    assert "1,500 read" in text and "997 written" in text and "3 dead-lettered" in text
    assert "rows/s" in text


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("sluiceway ")
