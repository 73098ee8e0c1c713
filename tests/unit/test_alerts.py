"""Alerts against a real local HTTP server: Slack and JSON bodies, rate limits, failures."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import structlog
from pytest_httpserver import HTTPServer
from tests.support import ListLoader
from tests.unit.test_cli_plugins import ENV_PLUGINS
from tests.unit.test_pipeline_core import IdBelow, RangeExtractor
from typer.testing import CliRunner
from werkzeug.wrappers import Request, Response

from sluiceway.cli import ExitCode, app
from sluiceway.core import BaseExtractor, Pipeline, RunFailedError, Thresholds
from sluiceway.core.events import EventKind, StageEvent
from sluiceway.observability.alerts import (
    Alert,
    AlertSubscriber,
    LogChannel,
    WebhookChannel,
)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bodies(server: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(request.get_data()) for request, _ in server.log]


def hook(server: HTTPServer, fmt: str = "json", **kw: Any) -> AlertSubscriber:
    channel = WebhookChannel(server.url_for("/hook/T000/SECRET"), format=fmt, backoff=0.01)  # type: ignore[arg-type]
    return AlertSubscriber(channel, **kw)


def pipeline(tmp_path: Path, hooks: list[Any], *, rows: int = 100, batch: int = 10, **kw: Any):
    return Pipeline(
        "alerting",
        RangeExtractor(rows, batch),
        [],
        [IdBelow(rows - 25)],  # the last 25 ids are dead-lettered
        ListLoader(),
        home=tmp_path,
        hooks=hooks,
        **kw,
    )


def test_dead_letters_post_one_slack_message_with_counts_first_error_and_dlq(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook/T000/SECRET", method="POST").respond_with_data("ok")
    metrics = pipeline(tmp_path, [hook(httpserver, "slack")]).run()

    # 25 rows over three batches; one alert at once, the rest held back by the
    # 10-minute default interval and sent as a summary at the end of the run.
    first, summary = bodies(httpserver)
    assert first["text"].startswith("alerting: 5 rows dead-lettered (run " + metrics.run_id)
    blocks = json.dumps(first["blocks"])
    assert "validate.0.id_below:id.below" in blocks and "alerting" in blocks
    assert metrics.run_id in blocks and str(tmp_path / "dlq" / "alerting") in blocks
    assert "First error" in blocks and "id_below" in blocks
    assert [b["type"] for b in first["blocks"]][:2] == ["header", "section"]
    assert summary["text"].startswith("alerting: 20 more rows dead-lettered")
    assert "25 dead-lettered in this run so far" in summary["text"]
    request = httpserver.log[0][0]
    assert request.headers["Content-Type"] == "application/json"


def test_rate_limit_aggregates_counts_and_dedups_a_rule_until_it_grows(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook/T000/SECRET").respond_with_data("ok")
    clock = Clock()
    sub = hook(httpserver, min_interval=60, clock=clock)
    base = {"pipeline": "p", "run_id": "r1"}

    def dead(stage: str, by_rule: dict[Any, int]) -> None:
        sub(
            StageEvent(
                EventKind.ROWS_DEAD_LETTERED,
                stage=stage,
                rows_in=sum(by_rule.values()),
                error="boom",
                attrs={"by_rule": by_rule, "error_type": "E", "dlq": "/dlq"},
                **base,
            )
        )

    def committed() -> None:
        sub(StageEvent(EventKind.BATCH_COMMITTED, **base))

    sub(StageEvent(EventKind.RUN_STARTED, **base))
    dead("validate.0.v", {"a": 2})  # sent at once
    dead("validate.0.v", {"a": 3, "b": 1})  # held: within the interval
    clock.now += 30
    committed()  # still within the interval: nothing
    clock.now += 31
    committed()  # interval passed: the held counts go out, aggregated
    clock.now += 120
    committed()  # nothing new: no alert (the same counts are not re-sent)
    dead("transform.0.t", {None: 4})  # interval long passed: sent at once
    dead("validate.0.v", {"a": 1})  # held
    sub(StageEvent(EventKind.RUN_FINISHED, **base))  # summary of what was held back
    sent = [
        (b["kind"], b["dead_lettered"], b["run_dead_lettered_rows"]) for b in bodies(httpserver)
    ]
    assert sent == [
        ("dead_letters", {"validate.0.v:a": 2}, 2),
        ("dead_letters", {"validate.0.v:a": 3, "validate.0.v:b": 1}, 6),
        ("dead_letters", {"transform.0.t": 4}, 10),
        ("summary", {"validate.0.v:a": 1}, 11),
    ]


def test_run_failure_alerts_with_the_error_and_held_back_counts(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook/T000/SECRET").respond_with_data("ok")

    class Broken(BaseExtractor[dict]):
        def extract(self) -> Iterator[pa.Table]:
            yield pa.table({"id": list(range(95, 100))})
            raise OSError("disk on fire")

    p = pipeline(tmp_path, [hook(httpserver, on=["dead_letters", "run_failed"])])
    p.extractor = Broken(10)
    with pytest.raises(RunFailedError):
        p.run()
    dead, failed = bodies(httpserver)
    assert dead["kind"] == "dead_letters" and dead["dead_lettered_rows"] == 5
    assert failed["kind"] == "run_failed" and "disk on fire" in failed["error"]
    assert failed["summary"] == "alerting: run failed"


def test_a_crossed_threshold_alerts_once_not_again_as_a_run_failure(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook/T000/SECRET").respond_with_data("ok")
    sub = hook(httpserver, on=["threshold", "run_failed"])
    p = pipeline(tmp_path, [sub], thresholds=Thresholds(max_dead_letter_rows=7))
    with pytest.raises(RunFailedError):
        p.run()
    (only,) = bodies(httpserver)
    assert only["kind"] == "threshold"
    assert "more than max_dead_letter_rows 7" in only["error"]
    assert only["run_dead_lettered_rows"] == 15  # 5 + 10: crossed after the second batch


def test_failed_deliveries_are_retried_logged_without_the_url_and_never_fail_the_run(
    httpserver: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sluiceway.observability import configure_logging

    configure_logging("info", "json")
    calls: list[int] = []

    def flaky(request: Request) -> Response:
        calls.append(1)
        return Response("busy", status=503 if len(calls) == 1 else 500)

    httpserver.expect_request("/hook/T000/SECRET").respond_with_handler(flaky)
    channel = WebhookChannel(httpserver.url_for("/hook/T000/SECRET"), attempts=2, backoff=0.01)
    metrics = pipeline(tmp_path, [AlertSubscriber(channel, min_interval=0)], rows=30).run()
    assert metrics.status == "succeeded" and metrics.written == 5

    assert len(calls) >= 2  # the first alert was tried twice
    err = capsys.readouterr().err
    failures = [json.loads(line) for line in err.splitlines() if '"alert_failed"' in line]
    assert failures and failures[0]["error"].startswith("HTTP 500")
    assert failures[0]["channel"] == f"webhook http://localhost:{httpserver.port}/…"
    assert "SECRET" not in err


def test_an_unreachable_endpoint_does_not_fail_the_run(tmp_path: Path) -> None:
    channel = WebhookChannel("http://127.0.0.1:9/hook", attempts=2, timeout=1, backoff=0.01)
    metrics = pipeline(tmp_path, [AlertSubscriber(channel)]).run()
    assert metrics.status == "succeeded" and metrics.dead_lettered == 25


def test_a_dry_run_never_alerts(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/hook/T000/SECRET").respond_with_data("ok")
    metrics = pipeline(tmp_path, [hook(httpserver)], dry_run=True).run()
    assert metrics.dead_lettered == 25
    assert httpserver.log == []


def test_the_log_channel_writes_alert_lines() -> None:
    from structlog.testing import capture_logs

    sub = AlertSubscriber(LogChannel("error"), min_interval=0, background=False)
    base = {"pipeline": "p", "run_id": "r"}
    with capture_logs() as logs:
        sub(StageEvent(EventKind.RUN_STARTED, **base))
        sub(
            StageEvent(
                EventKind.ROWS_DEAD_LETTERED,
                stage="load",
                rows_in=3,
                error="refused",
                attrs={"by_rule": {None: 3}, "error_type": "RowRejected", "dlq": "/d"},
                **base,
            )
        )
    (line,) = [entry for entry in logs if entry["event"] == "alert"]
    assert line["log_level"] == "error"
    assert (line["kind"], line["dead_lettered"], line["dlq"]) == ("dead_letters", {"load": 3}, "/d")
    assert line["first_error"]["message"] == "refused"


def test_webhook_channel_hides_its_secret_url() -> None:
    channel = WebhookChannel("https://hooks.slack.com/services/T0/B0/XYZSECRET")
    assert "XYZSECRET" not in repr(channel) and "XYZSECRET" not in channel.describe()
    with pytest.raises(ValueError, match="http"):
        WebhookChannel("ftp://example.com/x")
    alert = Alert("threshold", "p", "r", error="x" * 3000, min_interval=600)
    slack = WebhookChannel("https://h.example/x").body(alert)
    assert len(slack["blocks"][0]["text"]["text"]) <= 150
    assert "at most one alert per 10m" in json.dumps(slack["blocks"][-1])


SPEC = """\
version: 1
name: cli-alerts
source: {type: test-rows, rows: 10, batch_size: 4, negative: [2, 5]}
validators: [{type: test-positive}]
sink: {type: test-file, path: out.jsonl}
alerts:
  - type: webhook
    url: ${SLACK_WEBHOOK}
    on: [dead_letters, threshold]
    min_interval: 10m
  - {type: log, on: [threshold]}
thresholds: {max_dead_letter_rows: 1}
"""


def test_spec_alerts_post_from_the_cli_and_the_url_stays_secret(
    httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpserver.expect_request("/services/T1/B2/TOPSECRET").respond_with_data("ok")
    url = httpserver.url_for("/services/T1/B2/TOPSECRET")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICEWAY_PLUGINS", ENV_PLUGINS)
    monkeypatch.setenv("SLACK_WEBHOOK", url)
    monkeypatch.setenv("SLUICEWAY_LOG_FORMAT", "json")
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SPEC))

    validated = CliRunner().invoke(app, ["validate", str(path)])
    assert validated.exit_code == 0 and "TOPSECRET" not in validated.output
    out = " ".join(validated.stdout.split())
    assert f"webhook http://localhost:{httpserver.port}/… on dead_letters, threshold" in out
    assert "log on threshold" in out and "max_dead_letter_rows 1" in out

    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == ExitCode.THRESHOLD_EXCEEDED, result.output
    kinds = [b["blocks"][0]["text"]["text"] for b in bodies(httpserver)]
    assert kinds == [
        ":warning: cli-alerts: 1 rows dead-lettered",
        ":rotating_light: cli-alerts: threshold crossed, run stopped",
    ]
    logged = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    assert [x["kind"] for x in logged if x["event"] == "alert"] == ["threshold"]
    assert "TOPSECRET" not in result.output


def test_schema_and_connectors_know_the_new_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_PLUGINS", ENV_PLUGINS)
    schema = json.loads(CliRunner().invoke(app, ["schema"]).stdout)
    assert {"alerts", "thresholds", "load_ahead"} <= set(schema["properties"])
    webhook = schema["$defs"]["WebhookAlertSpec"]["properties"]
    assert webhook["url"]["writeOnly"] is True and webhook["format"]["enum"] == ["slack", "json"]
    listing = CliRunner().invoke(app, ["connectors"]).stdout
    assert "alert types" in listing and "webhook" in listing
    assert "dead_letters, run_failed, threshold" in listing
