"""Structured logging: JSON lines, console rendering, context binding, redaction, run events."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from structlog.contextvars import bound_contextvars
from tests.unit.test_cli_plugins import registry

from sluiceway.config import build_pipeline, parse_spec
from sluiceway.core.pipeline import RunFailedError
from sluiceway.observability import REDACTED, LogSubscriber, configure_logging, looks_secret, redact


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_timestamp_level_logger_event_and_context() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = structlog.get_logger("sluiceway.test")
    with bound_contextvars(run_id="r-1", seq=7):
        log.info("hello", rows=3)
    log.debug("hidden at info")
    log.warning("after")
    first, second = json_lines(out)
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert (first["level"], first["logger"], first["event"], first["rows"]) == (
        "info",
        "sluiceway.test",
        "hello",
        3,
    )
    assert (first["run_id"], first["seq"]) == ("r-1", 7)
    stamp = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert second["event"] == "after" and "run_id" not in second


def test_auto_format_is_json_off_a_terminal_and_console_is_readable() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", stream=out)
    structlog.get_logger("x").info("as_json", n=1)
    assert json.loads(out.getvalue())["event"] == "as_json"

    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    structlog.get_logger("x").info("for_people", n=1)
    line = out.getvalue()
    assert "for_people" in line and "n=1" in line and not line.startswith("{")


def test_secrets_are_redacted_by_key_type_and_inside_strings() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    structlog.get_logger("x").info(
        "connect",
        password="pw-1",
        api_key="key-2",
        dsn="postgres://u:pw-3@host/db",
        config={"auth_token": "tok-4", "host": "h"},
        value=SecretStr("pw-5"),
        error="connection to postgres://bob:pw-6@db failed",
        detail="host=db password=pw-7 port=5432",
        max_tokens=10,
    )
    text = out.getvalue()
    for secret in ("pw-1", "key-2", "pw-3", "tok-4", "pw-5", "pw-6", "pw-7"):
        assert secret not in text
    (line,) = json_lines(out)
    assert line["password"] == REDACTED and line["value"] == REDACTED
    assert line["config"]["host"] == "h"
    assert line["error"] == f"connection to postgres://bob:{REDACTED}@db failed"
    assert line["max_tokens"] == 10


def test_secret_key_detection() -> None:
    assert all(
        map(looks_secret, ["password", "DB_PASSWORD", "apiKey", "api-key", "dsn", "Authorization"])
    )
    assert not any(map(looks_secret, ["tokens_read", "passes", "description", "host"]))
    assert redact({"nested": [{"secret": 1}]}) == {"nested": [{"secret": REDACTED}]}


SPEC = """\
    version: 1
    name: logged
    source: {type: test-rows, rows: 10, batch_size: 4, negative: [5]}
    validators: [{type: test-positive}]
    sink: {type: test-file, path: out.jsonl, transient_failures: 1}
    retry: {initial_delay: 1ms, jitter: 0}
    """


def run_logged(tmp_path: Path, text: str) -> tuple[list[dict[str, Any]], Any]:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    spec = parse_spec(textwrap.dedent(text), registry=registry(), env={})
    pipeline = build_pipeline(spec, base_dir=tmp_path, registry=registry(), hooks=[LogSubscriber()])
    try:
        result: Any = pipeline.run()
    except RunFailedError as exc:
        result = exc
    return json_lines(out), result


def test_a_run_logs_batches_dead_letters_retries_and_its_summary(tmp_path: Path) -> None:
    lines, metrics = run_logged(tmp_path, SPEC)
    events = [line["event"] for line in lines]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    run_id = lines[0]["run_id"]
    assert all(line.get("run_id") == run_id for line in lines)

    committed = [line for line in lines if line["event"] == "batch_committed"]
    assert [(c["seq"], c["rows"], c["written"], c["dead_lettered"]) for c in committed] == [
        (0, 4, 4, 0),
        (1, 4, 3, 1),
        (2, 2, 2, 0),
    ]
    assert committed[0]["retries"] == 1

    (dead,) = [line for line in lines if line["event"] == "rows_dead_lettered"]
    assert dead["level"] == "warning" and dead["seq"] == 1 and dead["rows"] == 1
    assert dead["stage"] == "validate.0.test-positive"
    assert dead["error"] == "value must be >= 0"
    assert dead["by_rule"] == {"positive(value)": 1}

    (retried,) = [line for line in lines if line["event"] == "load_retried"]
    assert retried["level"] == "warning" and retried["seq"] == 0 and retried["attempt"] == 1

    finished = lines[-1]
    assert (finished["read"], finished["written"], finished["dead_lettered"]) == (10, 9, 1)
    assert finished["balanced"] is True and finished["retries"] == metrics.retries == 1


def test_validation_warnings_and_failures_are_logged(tmp_path: Path) -> None:
    warned, _ = run_logged(
        tmp_path / "a", SPEC.replace("test-positive}", "test-positive, on_fail: warn}")
    )
    (warning,) = [line for line in warned if line["event"] == "validation_warned"]
    assert (warning["rule"], warning["rows"], warning["seq"]) == ("positive(value)", 1, 1)

    failed, error = run_logged(
        tmp_path / "b", SPEC.replace("test-positive}", "test-positive, on_fail: fail}")
    )
    assert isinstance(error, RunFailedError)
    last = failed[-1]
    assert last["event"] == "run_failed" and last["level"] == "error"
    assert last["error_type"] == "ValidationFailedError"
    assert "positive(value)" in last["error"] and last["read"] == 8
