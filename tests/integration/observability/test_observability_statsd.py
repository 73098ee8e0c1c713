"""DogStatsD metrics and Datadog events of real runs, received by a real UDP listener."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.integration.observability.runs import eventful_pipeline
from tests.integration.observability.support import StatsdListener

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.core.pipeline import RunFailedError
from sluiceway.observability.setup import DatadogConfig, ObservabilityConfig, build_hooks
from sluiceway.observability.statsd import CONSUMER_LAG_ATTR, METRICS, StatsdSubscriber

TYPES = {"count": "c", "gauge": "g", "histogram": "h"}
COMMON = {"pipeline": "obs-demo", "source": "obs-rows", "sink": "obs-flaky", "env": "ci"}


def metered(statsd: StatsdListener, *, traces: bool = False, **kw: object):
    config = ObservabilityConfig(
        datadog=DatadogConfig(
            traces=traces, statsd_host="127.0.0.1", statsd_port=statsd.port, env="ci", **kw
        )
    )
    return build_hooks(
        config, pipeline="obs-demo", source_type="obs-rows", sink_type="obs-flaky", engine="polars"
    )


#: Where the DogStatsD client runs: the exporter process (the default unless the
#: package is imported already, as in this test process) or this one.
EXPORTERS = pytest.mark.parametrize("exporter", ["process", "thread"])


@EXPORTERS
def test_a_run_s_metrics_names_types_and_tags(
    statsd: StatsdListener, tmp_path: Path, exporter: str
) -> None:
    with metered(statsd, tags={"team": "data"}, events=False, exporter=exporter) as hooks:
        metrics = eventful_pipeline(tmp_path, hooks).run()
        # Flushed at the end of the run, before close(): nothing waits for the buffer thread.
        statsd.wait_for(lambda ds: any(d.name == "sluiceway.run.succeeded" for d in ds), 2)

    # Every datagram has the documented type and the common tags.
    specs = {m.name: m for m in METRICS}
    sent = [d for d in statsd.datagrams if d.name.startswith("sluiceway.")]
    for d in sent:
        assert d.type == TYPES[specs[d.name].type], d
        assert {f"{k}:{v}" for k, v in COMMON.items()} | {"team:data", "service:sluiceway"} <= set(
            d.tags
        ), d
        extra = {t.split(":", 1)[0] for t in d.tags} - {*COMMON, "team", "service"}
        assert extra <= set(specs[d.name].tags), d

    assert statsd.total("sluiceway.records.read") == metrics.read == 12
    assert statsd.total("sluiceway.records.written") == metrics.written == 10
    assert statsd.total("sluiceway.records.dead_lettered") == 2
    assert (
        statsd.total(
            "sluiceway.records.dead_lettered",
            stage="transform",
            stage_name="transform.0.explode",
            rule="none",
            error_type="valueerror",
        )
        == 1
    )
    assert (
        statsd.total(
            "sluiceway.records.dead_lettered",
            stage="validate",
            stage_name="validate.0.positive",
            rule="positive_value_",
        )
        == 1
    )
    assert statsd.total("sluiceway.load.retries", error_type="transienterror") == 1
    assert statsd.total("sluiceway.records.retried") == 3
    assert statsd.total("sluiceway.batch.committed") == 3
    assert statsd.total("sluiceway.run.started", mode="run") == 1
    assert statsd.total("sluiceway.run.succeeded", mode="run") == 1
    stages = {d.tag("stage") for d in statsd.metrics("sluiceway.stage.duration")}
    assert stages == {"extract", "transform", "validate", "load", "dlq"}
    per_stage = [d for d in statsd.metrics("sluiceway.stage.duration") if d.tag("stage") == "load"]
    assert len(per_stage) == 3 and all(float(d.value) >= 0 for d in per_stage)
    (last,) = statsd.metrics("sluiceway.run.last_success")
    assert abs(float(last.value) - metrics.finished_at) < 1
    assert len(statsd.metrics("sluiceway.batch.duration")) == 3
    assert float(statsd.metrics("sluiceway.throughput")[-1].value) > 0


def test_a_failed_run_counts_as_failed_with_its_error_type(
    statsd: StatsdListener, tmp_path: Path
) -> None:
    with metered(statsd, events=False) as hooks, pytest.raises(RunFailedError):
        eventful_pipeline(tmp_path, hooks, fail_after=1).run()
    statsd.wait_for(lambda ds: any(d.name == "sluiceway.run.failed" for d in ds), 2)
    assert statsd.total("sluiceway.run.failed", error_type="sourceerror", mode="run") == 1
    assert statsd.metrics("sluiceway.run.succeeded") == []
    assert statsd.metrics("sluiceway.run.last_success") == []
    (duration,) = statsd.metrics("sluiceway.run.duration")
    assert duration.tag("status") == "failed"


@EXPORTERS
def test_datadog_events_on_dead_letters_and_failure(
    statsd: StatsdListener, tmp_path: Path, exporter: str
) -> None:
    with metered(statsd, metrics=False, events_min_interval=3600, exporter=exporter) as hooks:
        eventful_pipeline(tmp_path / "a", hooks).run()
        with pytest.raises(RunFailedError):
            eventful_pipeline(tmp_path / "b", hooks, fail_after=1, transient_failures=0).run()
    statsd.wait_for(lambda ds: sum(d.type == "e" for d in ds) >= 4, 5)
    events = statsd.events()
    assert statsd.names() == set()  # metrics: false
    first, summary, dead, failed = events
    # Rate limit: one dead-letter event, then the rest of the run in one summary.
    assert first.fields["t"] == "warning" and "1 rows dead-lettered" in first.name
    assert first.tag("alert") == "dead_letters"
    assert first.tag("stage_name") == "transform.0.explode"
    assert "cannot explode id 2" in first.fields["text"]
    assert summary.tag("alert") == "summary" and "1 more rows" in summary.name
    assert "validate.0.positive:positive(value): 1" in summary.fields["text"]
    assert first.fields["k"] == summary.fields["k"] != dead.fields["k"]  # grouped per run
    assert failed.fields["t"] == "error" and failed.tag("alert") == "run_failed"
    assert "the test source went away" in failed.fields["text"]
    assert failed.fields["k"] == dead.fields["k"]
    for event in events:
        assert {"pipeline:obs-demo", "env:ci", "source:obs-rows"} <= set(event.tags)


def _event(kind: EventKind, run_id: str = "r", **kw: object) -> StageEvent:
    return StageEvent(kind=kind, pipeline="p", run_id=run_id, **kw)  # type: ignore[arg-type]


def test_consumer_lag_and_dry_runs(statsd: StatsdListener) -> None:
    """Sources report lag as ``attrs["consumer_lag"]`` on batch_extracted (int or per partition)."""
    with metered(statsd, events=False) as hooks:
        (subscriber,) = [h for h in hooks if isinstance(h, StatsdSubscriber)]
        now = time.time()
        metrics = PipelineMetrics(pipeline="p", run_id="r", started_at=now, finished_at=now + 1)
        for attrs in ({CONSUMER_LAG_ATTR: 250}, {CONSUMER_LAG_ATTR: {"t-0": 100, "t-1": 5}}):
            subscriber(_event(EventKind.RUN_STARTED, attrs={"mode": "run"}))
            subscriber(_event(EventKind.BATCH_EXTRACTED, seq=0, rows_out=10, attrs=attrs))
            subscriber(_event(EventKind.RUN_FINISHED, attrs={"metrics": metrics}))
        # A dry run writes nothing and reports nothing.
        subscriber(_event(EventKind.RUN_STARTED, run_id="dry", attrs={"dry_run": True}))
        subscriber(_event(EventKind.BATCH_EXTRACTED, run_id="dry", seq=0, rows_out=7))
        subscriber(_event(EventKind.RUN_FINISHED, run_id="dry", attrs={"metrics": metrics}))
    statsd.wait_for(lambda ds: len([d for d in ds if d.name == "sluiceway.run.succeeded"]) == 2)
    time.sleep(0.2)
    assert [float(d.value) for d in statsd.metrics("sluiceway.consumer.lag")] == [250, 105]
    assert statsd.total("sluiceway.records.read") == 20
    assert statsd.total("sluiceway.run.succeeded") == 2


def test_replays_skips_thresholds_and_warnings(statsd: StatsdListener) -> None:
    with metered(statsd, events=False) as hooks:
        (subscriber,) = [h for h in hooks if isinstance(h, StatsdSubscriber)]
        metrics = PipelineMetrics(pipeline="p", run_id="r")
        for event in [
            _event(EventKind.RUN_STARTED, attrs={"mode": "dlq_replay"}),
            _event(EventKind("rows_replayed"), seq=3, stage="validate.0.positive", rows_out=5),
            _event(
                EventKind.VALIDATION_WARNED,
                seq=3,
                stage="validate.0.positive",
                rows_in=2,
                attrs={"rule": "small(value)"},
            ),
            _event(EventKind.BATCH_SKIPPED, seq=3, stage="load", rows_in=3),
            _event(EventKind.BATCH_COMMITTED, seq=3, stage="state", rows_in=5),
            _event(EventKind("threshold_crossed"), attrs={"threshold": "max_dead_letter_ratio"}),
            _event(EventKind.RUN_FAILED, attrs={"metrics": metrics, "error_type": "X"}),
        ]:
            subscriber(event)
    statsd.wait_for(lambda ds: any(d.name == "sluiceway.run.failed" for d in ds))
    assert statsd.total("sluiceway.records.replayed", stage_name="validate.0.positive") == 5
    assert statsd.total("sluiceway.records.warned", rule="small_value_") == 2
    assert statsd.total("sluiceway.records.skipped") == 3
    assert statsd.total("sluiceway.run.threshold_crossed", threshold="max_dead_letter_ratio") == 1
    assert statsd.total("sluiceway.run.started", mode="dlq_replay") == 1
    assert statsd.total("sluiceway.run.failed", mode="dlq_replay", error_type="x") == 1
    assert len(statsd.metrics("sluiceway.batch.duration")) == 1
