"""The CLI as a real process: the console script, exit statuses, JSON logs and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO

import pytest
from tests.unit.test_cli_plugins import ENV_PLUGINS, PYTHONPATH, read_rows

from sluiceway.core.state import LocalStateStore

SCRIPT = Path(sys.executable).parent / "sluiceway"

SPEC = """\
version: 1
name: proc-demo
source: {type: test-rows, rows: 10, batch_size: 4, negative: [5]}
validators: [{type: test-positive}]
sink: {type: test-file, path: out.jsonl}
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PYTHONPATH, env.get("PYTHONPATH")]))
    env["SLUICEWAY_PLUGINS"] = ENV_PLUGINS
    env.update(extra)
    return env


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def sluiceway(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluiceway", *map(str, args)],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_console_script_runs_a_pipeline_with_json_logs(tmp_path: Path) -> None:
    path = write_spec(tmp_path)
    done = subprocess.run(
        [str(SCRIPT), "run", str(path), "--metrics-json", str(tmp_path / "m.json")],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(r["id"] for r in read_rows(tmp_path / "out.jsonl")) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert logs and len({line["run_id"] for line in logs}) == 1
    assert {"run_started", "batch_committed", "rows_dead_lettered", "run_finished"} <= {
        line["event"] for line in logs
    }
    assert "books balance" in done.stderr  # the summary follows the logs
    assert json.loads((tmp_path / "m.json").read_text())["written"] == 9


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({}, 0, None),
        ({"rows: 10,": "rows: 10, fail_after: 1,"}, 1, "the test source went away"),
        ({"type: test-file": "type: nope"}, 2, "unknown sink type 'nope'"),
        ({"path: out.jsonl}": "path: out.jsonl, lie: true}"}, 3, "rows unaccounted for"),
        ({"{type: test-positive}": "{type: test-positive, on_fail: fail}"}, 4, "on_fail=fail"),
        ({"__locked__": ""}, 5, "already running"),
    ],
)
def test_exit_statuses_of_the_process(
    tmp_path: Path, change: dict[str, str], code: int, message: str | None
) -> None:
    text = SPEC
    for old, new in change.items():
        if old != "__locked__":
            text = text.replace(old, new)
    path = write_spec(tmp_path, text)
    if "__locked__" in change:
        with LocalStateStore(tmp_path / ".sluiceway" / "state", "proc-demo").lock("holder"):
            done = sluiceway("run", path, cwd=tmp_path)
    else:
        done = sluiceway("run", path, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    if message is None:
        assert errors == []
    else:
        assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in done.stderr


def test_validate_in_a_process(tmp_path: Path) -> None:
    good = sluiceway("validate", write_spec(tmp_path), cwd=tmp_path)
    assert good.returncode == 0 and "is valid" in good.stdout
    bad = sluiceway(
        "validate", write_spec(tmp_path, SPEC.replace("rows: 10", "rows: x")), cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "pipeline.yaml:3:33: source.rows: Input should be a valid integer" in bad.stderr


def _wait_for(stream: IO[str], event: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError("process ended before " + event + ":\n" + "".join(seen))
        seen.append(line)
        if f'"event": "{event}"' in line:
            return
    raise AssertionError(f"no {event} within 60 s")


SLOW = SPEC.replace("rows: 10, batch_size: 4", "rows: 60, batch_size: 5, sleep: {sleep}")


def _start(tmp_path: Path, sleep: float) -> subprocess.Popen[str]:
    path = write_spec(tmp_path, SLOW.replace("{sleep}", str(sleep)))
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "run", str(path), "--metrics-json", "m.json"],
        cwd=tmp_path,
        env=child_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def test_sigterm_finishes_the_batch_commits_and_the_next_run_resumes(tmp_path: Path) -> None:
    proc = _start(tmp_path, 0.2)
    assert proc.stderr is not None
    seen: list[str] = []
    _wait_for(proc.stderr, "batch_committed", seen)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "stopped by SIGTERM" in rest

    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["status"] == "succeeded" and 0 < metrics["read"] < 60
    state = json.loads((tmp_path / ".sluiceway" / "state" / "proc-demo.state.json").read_text())
    assert state["state"]["positions"]["test-rows"] == metrics["read"]
    assert state["state"]["intents"] == []
    assert len(read_rows(tmp_path / "out.jsonl")) == metrics["written"]

    done = sluiceway("run", tmp_path / "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in read_rows(tmp_path / "out.jsonl")]
    assert sorted(ids) == [i for i in range(60) if i != 5]  # nothing lost, nothing twice


def test_a_second_signal_aborts_without_committing_the_batch_in_flight(tmp_path: Path) -> None:
    proc = _start(tmp_path, 2.0)
    assert proc.stderr is not None
    seen: list[str] = []
    _wait_for(proc.stderr, "batch_committed", seen)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "error: aborted by SIGTERM" in rest
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["status"] == "failed" and metrics["error_type"] == "KeyboardInterrupt"
    state = json.loads((tmp_path / ".sluiceway" / "state" / "proc-demo.state.json").read_text())
    assert state["state"]["positions"]["test-rows"] == 5  # only the first batch
