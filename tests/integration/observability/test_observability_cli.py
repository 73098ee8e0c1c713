"""``sluiceway run`` as a real process with ``observability: {datadog: …}`` in the spec.

DogStatsD datagrams go to a real UDP listener, traces to the real APM test agent.
Two runs: one with a failing transform (rows dead-lettered), a validation failure,
a retried load and then a source failure (exit 1); one stopped by SIGTERM (exit
143). Every metric the shipped dashboard and monitors query must be among the
names those datagrams carry (with the tags they group by), and everything a run
counted must have arrived before the process exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.observability.plugins import ENV_PLUGINS, PYTHONPATH
from tests.integration.observability.support import (
    DEPLOY,
    HISTOGRAM_SUFFIXES,
    Datagram,
    StatsdListener,
    TestAgent,
    queried,
    queryable_names,
)

SPEC = """\
version: 1
name: {name}
source: {{type: obs-rows, rows: {rows}, batch_size: 4, negative: [5], lag: true{extra}}}
transforms: [{{type: obs-explode, ids: [2], drop: [3]}}]
validators: [{{type: obs-positive, warn_above: 6}}]
sink: {{type: obs-flaky, path: out.jsonl, transient_failures: {flaky}}}
retry: {{attempts: 3, initial_delay: 10ms, max_delay: 50ms, jitter: 0}}
observability:
  datadog: {{env: ci, tags: {{team: data}}}}
"""


def child_env(agent: TestAgent, statsd: StatsdListener) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLUICEWAY_", "DD_", "OTEL_", "DATADOG_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [PYTHONPATH, env.get("PYTHONPATH")])),
        SLUICEWAY_PLUGINS=ENV_PLUGINS,
        SLUICEWAY_LOG_FORMAT="json",
        DD_TRACE_AGENT_URL=agent.url,
        DD_AGENT_HOST="127.0.0.1",
        DD_DOGSTATSD_PORT=str(statsd.port),
        DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
        DD_REMOTE_CONFIGURATION_ENABLED="false",
    )
    return env


def start(
    tmp: Path, env: dict[str, str], *, name: str, rows: int, flaky: int, extra: str = ""
) -> Any:
    tmp.mkdir(parents=True, exist_ok=True)
    spec = tmp / "pipeline.yaml"
    spec.write_text(textwrap.dedent(SPEC.format(name=name, rows=rows, flaky=flaky, extra=extra)))
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "run", str(spec), "--metrics-json", "m.json"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def of(statsd: StatsdListener, pipeline: str) -> list[Datagram]:
    return [d for d in statsd.datagrams if d.tag("pipeline") == pipeline]


def total(datagrams: list[Datagram], name: str) -> float:
    return sum(float(d.value) for d in datagrams if d.name == name)


@pytest.fixture(scope="module")
def runs(test_agent: TestAgent, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both CLI runs, once for the module's tests: their datagrams, outputs and logs."""
    tmp = tmp_path_factory.mktemp("cli")
    test_agent.start_session()
    statsd = StatsdListener()
    env = child_env(test_agent, statsd)
    try:
        # Batch 0: id 2 fails the transform, id 3 is filtered, the load fails three times
        # (retries spent: ids 0 and 1 dead-lettered); batch 1: id 5 fails validation, id 7
        # warns, the load is retried once; then the source dies.
        failing = start(
            tmp / "failing", env, name="obs-fail", rows=40, flaky=4, extra=", fail_after: 2"
        )
        _, failing_err = failing.communicate(timeout=120)

        stopped = start(
            tmp / "stopped", env, name="obs-term", rows=4000, flaky=1, extra=", sleep: 0.05"
        )
        deadline = time.monotonic() + 60
        while not any(
            d.name == "sluiceway.batch.committed" and d.tag("pipeline") == "obs-term"
            for d in list(statsd.datagrams)
        ):
            if stopped.poll() is not None or time.monotonic() > deadline:
                stopped.kill()
                raise AssertionError(f"no batch committed: {stopped.communicate()[1]}")
            time.sleep(0.02)
        stopped.send_signal(signal.SIGTERM)
        _, stopped_err = stopped.communicate(timeout=120)
        # Whatever the process sent is in the socket buffer by the time it exited.
        statsd.wait_for(lambda ds: any(d.name == "sluiceway.run.succeeded" for d in ds), 2)
        return {
            "agent": test_agent,
            "datagrams": list(statsd.datagrams),
            "failing": (failing.returncode, failing_err, tmp / "failing"),
            "stopped": (stopped.returncode, stopped_err, tmp / "stopped"),
        }
    finally:
        statsd.close()


def test_dashboard_and_monitors_query_only_metrics_the_cli_emits(runs: dict[str, Any]) -> None:
    datagrams: list[Datagram] = runs["datagrams"]
    names = queryable_names(datagrams)
    keys_of: dict[str, set[str]] = {}
    for d in datagrams:
        for name in [d.name] + [f"{d.name}.{s}" for s in HISTOGRAM_SUFFIXES if d.type == "h"]:
            keys_of.setdefault(name, set()).update(t.split(":", 1)[0] for t in d.tags)

    dashboard = json.loads((DEPLOY / "dashboard.json").read_text())
    monitors = json.loads((DEPLOY / "monitors.json").read_text())
    used = queried(dashboard) + queried(monitors)
    assert len(used) >= 25 and len(queried(monitors)) == 5
    for metric, keys in used:
        assert metric in names, f"{metric} is queried but never emitted"
        assert keys <= keys_of[metric], f"{metric} has no tag {keys - keys_of[metric]}"
    # The template variables filter on tags every metric carries.
    variables = {v["prefix"] for v in dashboard["template_variables"]}
    assert all(variables <= keys_of[m] for m, _ in used)


def test_the_failing_run_reported_its_dead_letters_retry_and_failure(
    runs: dict[str, Any],
) -> None:
    code, stderr, where = runs["failing"]
    assert code == 1, stderr
    sent = [d for d in runs["datagrams"] if d.tag("pipeline") == "obs-fail"]
    metrics = json.loads((where / "m.json").read_text())
    assert total(sent, "sluiceway.records.read") == metrics["read"] == 8
    assert total(sent, "sluiceway.records.filtered") == metrics["filtered"] == 1
    assert total(sent, "sluiceway.records.warned") == metrics["warned"] == 1
    assert total(sent, "sluiceway.records.dead_lettered") == metrics["dead_lettered"] == 4
    assert total(sent, "sluiceway.load.retries") == metrics["retries"] == 3
    assert total(sent, "sluiceway.load.failures") == 1
    assert total(sent, "sluiceway.run.failed") == 1
    assert [d for d in sent if d.type == "e" and d.tag("alert") == "run_failed"]
    assert {d.tag("env") for d in sent} == {"ci"} and {d.tag("team") for d in sent} == {"data"}

    spans = runs["agent"].run_spans(metrics["run_id"])
    (root,) = [s for s in spans if s["name"] == "sluiceway.pipeline.run"]
    assert root["error"] == 1 and root["meta"]["error.type"] == "SourceError"
    assert root["meta"]["sluiceway.source"] == "obs-rows"
    assert any(s["name"] == "sluiceway.load.attempt" and s["error"] == 1 for s in spans)
    assert any(s["name"] == "sluiceway.transform" and s["error"] == 1 for s in spans)

    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    run_lines = [line for line in lines if line.get("run_id") == metrics["run_id"]]
    assert {"run_started", "rows_dead_lettered", "load_retried", "run_failed"} <= {
        line["event"] for line in run_lines
    }
    span_ids = {s["span_id"] for s in spans}
    for line in run_lines:
        assert int(line["dd.trace_id"], 16) & (2**64 - 1) == root["trace_id"], line
        assert int(line["dd.span_id"]) in span_ids, line
        assert line["dd.env"] == "ci" and line["dd.service"] == "sluiceway"


def test_a_run_stopped_by_sigterm_flushed_everything_before_exit(runs: dict[str, Any]) -> None:
    code, stderr, where = runs["stopped"]
    assert code == 128 + signal.SIGTERM, stderr
    written = len((where / "out.jsonl").read_text().splitlines())
    metrics = json.loads((where / "m.json").read_text())
    assert 0 < metrics["read"] < 4000 and metrics["written"] == written
    sent = [d for d in runs["datagrams"] if d.tag("pipeline") == "obs-term"]
    assert total(sent, "sluiceway.records.written") == written
    assert total(sent, "sluiceway.records.read") == metrics["read"]
    assert total(sent, "sluiceway.batch.committed") == metrics["batches"]
    assert total(sent, "sluiceway.run.succeeded") == 1
    (last,) = [d for d in sent if d.name == "sluiceway.run.last_success"]
    assert abs(float(last.value) - metrics["finished_at"]) < 1
    assert any(d.name == "sluiceway.consumer.lag" for d in sent)
    spans = runs["agent"].run_spans(metrics["run_id"])
    (root,) = [s for s in spans if s["name"] == "sluiceway.pipeline.run"]
    assert root["metrics"]["sluiceway.rows.written"] == written
