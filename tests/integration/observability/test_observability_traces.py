"""Traces of real runs, sent by ddtrace to the real Datadog APM test agent and read back.

The run: a transform failing on one row (bisected into the DLQ), a validation rule
dead-lettering one row, a load retried once; and a run that fails.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
from tests.integration.observability.runs import eventful_pipeline
from tests.integration.observability.support import TestAgent, by_name, children

from sluiceway.core.pipeline import RunFailedError
from sluiceway.observability.logging import LogSubscriber, configure_logging
from sluiceway.observability.setup import DatadogConfig, ObservabilityConfig, build_hooks
from sluiceway.observability.tracing import add_trace_context


def traced(agent: TestAgent, **kw: object):
    config = ObservabilityConfig(
        datadog=DatadogConfig(
            agent_url=agent.url, metrics=False, events=False, env="ci", version="1.2", **kw
        )
    )
    return build_hooks(
        config,
        pipeline="obs-demo",
        source_type="obs-rows",
        sink_type="obs-flaky",
        engine="polars",
        around=[LogSubscriber()],
    )


#: Both places ddtrace can run: a child process fed through a pipe (the default, unless
#: ddtrace is imported already, as in this test process), or a loader thread in this one.
EXPORTERS = pytest.mark.parametrize("exporter", ["process", "thread"])


@EXPORTERS
def test_span_tree_of_a_run_with_dead_letters_and_a_retried_load(
    agent: TestAgent, tmp_path: Path, exporter: str
) -> None:
    with traced(agent, tags={"team": "data"}, exporter=exporter) as hooks:
        metrics = eventful_pipeline(tmp_path, hooks).run()
    assert (metrics.written, metrics.dead_lettered, metrics.retries) == (10, 2, 1)

    spans = agent.run_spans(metrics.run_id)
    (root,) = by_name(spans, "sluiceway.pipeline.run")
    assert root["parent_id"] == 0 and root["error"] == 0
    assert root["service"] == "sluiceway" and root["resource"] == "obs-demo"
    assert (
        root["meta"]
        | {
            "sluiceway.pipeline": "obs-demo",
            "sluiceway.run_id": metrics.run_id,
            "sluiceway.source": "obs-rows",
            "sluiceway.sink": "obs-flaky",
            "sluiceway.engine": "polars",
            "sluiceway.status": "succeeded",
            "env": "ci",
            "version": "1.2",
            "team": "data",
        }
        == root["meta"]
    )
    assert root["metrics"]["sluiceway.rows.read"] == 12
    assert root["metrics"]["sluiceway.rows.dead_lettered"] == 2
    assert root["metrics"]["sluiceway.retries"] == 1
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}

    batches = children(spans, root)
    assert [b["name"] for b in batches] == ["sluiceway.batch"] * 3
    assert [b["metrics"]["sluiceway.seq"] for b in batches] == [0, 1, 2]

    first = [s["name"] for s in children(spans, batches[0])]
    assert first == [
        "sluiceway.extract",
        "sluiceway.transform",
        "sluiceway.dlq",
        "sluiceway.validate",
        "sluiceway.load",
    ]
    extract, transform, dlq, validate, load = children(spans, batches[0])
    assert extract["metrics"]["sluiceway.rows_out"] == 4
    # The transform raised on id 2: one row dead-lettered, the span flagged with the error.
    assert transform["resource"] == "transform.0.explode"
    assert transform["error"] == 1
    assert transform["meta"]["error.type"] == "ValueError"
    assert transform["meta"]["error.message"] == "cannot explode id 2"
    assert (
        transform["metrics"]["sluiceway.rows_in"],
        transform["metrics"]["sluiceway.rows_out"],
    ) == (
        4,
        3,
    )
    assert dlq["meta"]["sluiceway.dlq.stage"] == "transform.0.explode"
    assert dlq["metrics"]["sluiceway.dead_lettered"] == 1 and dlq["error"] == 0
    assert validate["error"] == 0
    # The load failed once (TransientError) and succeeded on the second attempt.
    assert load["error"] == 0 and load["metrics"]["sluiceway.retries"] == 1
    attempts = children(spans, load)
    assert [a["name"] for a in attempts] == ["sluiceway.load.attempt"] * 2
    assert [a["error"] for a in attempts] == [1, 0]
    assert attempts[0]["meta"]["error.type"] == "TransientError"
    assert attempts[0]["start"] + attempts[0]["duration"] <= attempts[1]["start"]
    for span in [*children(spans, batches[0]), *attempts]:  # children lie inside their parent
        parent = next(s for s in spans if s["span_id"] == span["parent_id"])
        assert parent["start"] <= span["start"]
        assert span["start"] + span["duration"] <= parent["start"] + parent["duration"]

    # Batch 2: the validation rule dead-lettered id 9 (a dlq span naming the rule).
    last = children(spans, batches[2])
    (rule_dlq,) = [s for s in last if s["name"] == "sluiceway.dlq"]
    assert rule_dlq["meta"]["sluiceway.dlq.rules"] == "positive(value)"
    assert rule_dlq["meta"]["sluiceway.dlq.stage"] == "validate.0.positive"
    (validated,) = [s for s in last if s["name"] == "sluiceway.validate"]
    assert validated["metrics"]["sluiceway.dead_lettered"] == 1


@EXPORTERS
def test_a_failed_run_is_an_error_span(agent: TestAgent, tmp_path: Path, exporter: str) -> None:
    with traced(agent, exporter=exporter) as hooks, pytest.raises(RunFailedError) as failed:
        eventful_pipeline(tmp_path, hooks, fail_after=1, transient_failures=0).run()
    spans = agent.run_spans(failed.value.metrics.run_id)
    (root,) = by_name(spans, "sluiceway.pipeline.run")
    assert root["error"] == 1
    assert root["meta"]["error.type"] == "SourceError"
    assert root["meta"]["error.message"] == "the test source went away"
    assert root["meta"]["sluiceway.status"] == "failed"
    assert [b["error"] for b in by_name(spans, "sluiceway.batch")] == [0]


@EXPORTERS
def test_log_lines_carry_the_trace_and_span_they_were_emitted_under(
    agent: TestAgent, tmp_path: Path, exporter: str
) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    # What the logging configuration does once it registers the processor.
    processors = list(structlog.get_config()["processors"])
    processors.insert(1, add_trace_context)
    structlog.configure(processors=processors)
    with traced(agent, exporter=exporter) as hooks:
        metrics = eventful_pipeline(tmp_path, hooks).run()
    structlog.get_logger("after").info("after_the_run")

    spans = {s["span_id"]: s for s in agent.run_spans(metrics.run_id)}
    root = next(s for s in spans.values() if s["name"] == "sluiceway.pipeline.run")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    run_lines = [line for line in lines if line.get("run_id") == metrics.run_id]
    assert len(run_lines) >= 10
    for line in run_lines:
        # 128-bit trace ids are logged in hex; the agent reports the low 64 bits.
        assert int(line["dd.trace_id"], 16) & (2**64 - 1) == root["trace_id"]
        assert line["dd.service"] == "sluiceway" and line["dd.env"] == "ci"
        assert line["dd.version"] == "1.2"
        span = spans[int(line["dd.span_id"])]
        event = line["event"]
        if event in ("run_started", "run_finished"):
            assert span is root
        elif event == "batch_committed":
            assert span["name"] == "sluiceway.batch"
            assert span["metrics"]["sluiceway.seq"] == line["seq"]
        elif event == "rows_dead_lettered":
            assert span["name"] == "sluiceway.dlq" and span["resource"] == line["stage"]
        elif event in ("batch_transformed", "batch_validated"):
            assert span["resource"] == line["stage"]
        elif event == "batch_loaded":
            assert span["name"] == "sluiceway.load"
        elif event == "load_retried":
            assert span["name"] == "sluiceway.batch"
            assert span["metrics"]["sluiceway.seq"] == line["seq"]
    assert {"run_started", "rows_dead_lettered", "load_retried", "batch_committed"} <= {
        line["event"] for line in run_lines
    }
    (after,) = [line for line in lines if line["event"] == "after_the_run"]
    assert "dd.trace_id" not in after
