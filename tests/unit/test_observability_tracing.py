"""RunTracer on a recording backend: span tree, timings, errors and log correlation."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import structlog

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.observability.spans import LazyTraceBackend, datadog_fields, format_trace_id
from sluiceway.observability.statsd import LazyStatsd
from sluiceway.observability.tracing import RunTracer, add_trace_context, current_correlation


@dataclass
class Span:
    name: str
    parent: Span | None
    start: float
    resource: str
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    error: tuple[str | None, str | None] | None = None
    end: float | None = None
    id: int = 0
    trace: int = 0


class Recorder:
    """A SpanBackend keeping spans in memory."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.flushed = 0

    def start_span(
        self,
        name: str,
        *,
        parent: Any,
        start: float,
        resource: str,
        tags: Mapping[str, str],
        ids: tuple[int, int] | None = None,
    ) -> Span:
        span = Span(
            name, parent, start, resource, dict(tags), id=ids[1] if ids else len(self.spans) + 1
        )
        span.trace = ids[0] if ids else 1
        self.spans.append(span)
        return span

    def set_tags(self, span: Span, tags: Mapping[str, str]) -> None:
        span.tags.update(tags)

    def set_metrics(self, span: Span, metrics: Mapping[str, float]) -> None:
        span.metrics.update(metrics)

    def set_error(self, span: Span, error_type: str | None, message: str | None) -> None:
        old_type, old_message = span.error or (None, None)
        span.error = (error_type or old_type, message or old_message)

    def finish(self, span: Span, end: float) -> None:
        assert span.end is None, f"{span.name} finished twice"
        span.end = end

    def correlation(self, span: Span) -> dict[str, str]:
        return {"dd.trace_id": "1", "dd.span_id": str(span.id)}

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        pass

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]


def ev(kind: EventKind, t: float, **kw: Any) -> StageEvent:
    return StageEvent(kind=kind, pipeline="p", run_id="r", started=t, **kw)


def test_spans_errors_attempts_and_which_span_a_log_line_belongs_to() -> None:
    backend = Recorder()
    tracer = RunTracer(backend, source_type="csv", sink_type="duckdb", engine="polars")
    seen: list[tuple[str, str | None]] = []

    def log_hook(event: StageEvent) -> None:  # what LogSubscriber's lines would carry
        fields = current_correlation()
        seen.append((event.kind.value, fields["dd.span_id"] if fields else None))

    metrics = PipelineMetrics(pipeline="p", run_id="r", read=4, written=2, dead_lettered=1)
    events = [
        ev(EventKind.RUN_STARTED, 0.0, attrs={"source": "x", "mode": "run"}),
        ev(EventKind.BATCH_EXTRACTED, 1.0, seq=0, stage="extract", rows_out=4, seconds=0.5),
        ev(
            EventKind.BATCH_TRANSFORMED,
            2.0,
            seq=0,
            stage="transform.0.sql",
            rows_in=4,
            rows_out=3,
            seconds=0.25,
            error="boom",
            attrs={"dead_lettered": 1},
        ),
        ev(
            EventKind.ROWS_DEAD_LETTERED,
            2.3,
            seq=0,
            stage="transform.0.sql",
            rows_in=1,
            seconds=0.1,
            attrs={"by_rule": {None: 1}, "error_type": "ZeroDivisionError"},
        ),
        ev(EventKind.LOAD_RETRIED, 3.2, seq=0, stage="load", attrs={"delay": 0.3}, error="busy"),
        ev(EventKind.LOAD_RETRIED, 3.7, seq=0, stage="load", attrs={"delay": 0.2}, error="busy"),
        ev(EventKind.BATCH_LOADED, 3.0, seq=0, stage="load", rows_in=3, rows_out=2, seconds=1.5),
        ev(EventKind.BATCH_COMMITTED, 4.6, seq=0, stage="state", rows_in=4),
        ev(EventKind.RUN_FINISHED, 5.0, seconds=5.0, attrs={"metrics": metrics}),
    ]
    for event in events:
        tracer(event)
        log_hook(event)
        tracer.after(event)

    (root,) = backend.named("sluiceway.pipeline.run")
    (batch,) = backend.named("sluiceway.batch")
    (transform,) = backend.named("sluiceway.transform")
    (dlq,) = backend.named("sluiceway.dlq")
    (load,) = backend.named("sluiceway.load")
    attempts = backend.named("sluiceway.load.attempt")
    assert root.tags["sluiceway.source"] == "csv" and root.tags["sluiceway.engine"] == "polars"
    assert (root.start, root.end, root.parent) == (0.0, 5.0, None)
    assert root.metrics["sluiceway.rows.dead_lettered"] == 1
    assert root.tags["sluiceway.status"] == "succeeded" and root.error is None
    assert (batch.parent, batch.start, batch.end) == (root, 1.0, 4.6)
    assert all(s.parent is batch for s in (transform, dlq, load))
    assert (transform.start, transform.end) == (2.0, 2.25)
    assert transform.error == ("ZeroDivisionError", "boom")
    assert dlq.tags["sluiceway.dlq.stage"] == "transform.0.sql" and dlq.error is None
    # Two failed attempts end when their retry was announced; each next one starts after the
    # announced delay; the last ends with the load.
    times = [t for a in attempts for t in (a.start, a.end)]
    assert times == pytest.approx([3.0, 3.2, 3.5, 3.7, 3.9, 4.5])
    assert [a.error is not None for a in attempts] == [True, True, False]
    assert all(s.end is not None for s in backend.spans)
    assert backend.flushed == 1

    ids = {s.name: str(s.id) for s in backend.spans}
    assert seen == [
        ("run_started", ids["sluiceway.pipeline.run"]),
        ("batch_extracted", ids["sluiceway.extract"]),
        ("batch_transformed", ids["sluiceway.transform"]),
        ("rows_dead_lettered", ids["sluiceway.dlq"]),
        ("load_retried", ids["sluiceway.batch"]),
        ("load_retried", ids["sluiceway.batch"]),
        ("batch_loaded", ids["sluiceway.load"]),
        ("batch_committed", ids["sluiceway.batch"]),
        ("run_finished", ids["sluiceway.pipeline.run"]),
    ]
    assert current_correlation() is None


def test_a_failed_run_flags_the_root_and_the_batch_in_flight() -> None:
    backend = Recorder()
    tracer = RunTracer(backend)
    for event in [
        ev(EventKind.RUN_STARTED, 0.0),
        ev(EventKind.BATCH_EXTRACTED, 1.0, seq=7, stage="extract", rows_out=2, seconds=0.1),
        ev(EventKind.RUN_FAILED, 2.0, error="disk full", attrs={"error_type": "SinkError"}),
    ]:
        tracer(event)
        tracer.after(event)
    (root,) = backend.named("sluiceway.pipeline.run")
    (batch,) = backend.named("sluiceway.batch")
    assert root.error == ("SinkError", "disk full") and root.tags["sluiceway.status"] == "failed"
    assert batch.error == ("SinkError", "disk full") and batch.end == 2.0


def test_the_processor_adds_nothing_when_no_run_is_traced() -> None:
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    structlog.reset_defaults()


def test_a_lazy_backend_queues_until_the_real_one_is_ready_and_keeps_its_ids() -> None:
    future: Future[Recorder] = Future()
    fields = partial(datadog_fields, service="s", env="e", version=None)
    lazy = LazyTraceBackend(future, fields)  # type: ignore[arg-type]
    tracer = RunTracer(lazy)
    lines: list[dict[str, str]] = []
    events = [
        ev(EventKind.RUN_STARTED, 0.0),
        ev(EventKind.BATCH_EXTRACTED, 1.0, seq=0, stage="extract", rows_out=4, seconds=0.5),
    ]
    for event in events:
        tracer(event)
        lines.append(dict(current_correlation() or {}))
        tracer.after(event)
    root_line, extract_line = lines
    assert root_line["dd.trace_id"] == extract_line["dd.trace_id"]
    assert len(root_line["dd.trace_id"]) == 32 and root_line["dd.service"] == "s"

    real = Recorder()
    future.set_result(real)  # the loader thread finished
    last = ev(EventKind.RUN_FINISHED, 2.0, seconds=2.0)
    tracer(last)
    tracer.after(last)
    assert [s.name for s in real.spans] == [
        "sluiceway.pipeline.run",
        "sluiceway.batch",
        "sluiceway.extract",
    ]
    root, batch, extract = real.spans
    assert format_trace_id(root.trace) == root_line["dd.trace_id"]
    assert str(root.id) == root_line["dd.span_id"] and str(extract.id) == extract_line["dd.span_id"]
    assert {s.trace for s in real.spans} == {root.trace} and extract.parent is batch
    assert all(s.end is not None for s in real.spans) and real.flushed == 1


def test_a_backend_that_cannot_load_drops_spans_without_failing() -> None:
    future: Future[Recorder] = Future()
    future.set_exception(ImportError("no ddtrace"))
    lazy = LazyTraceBackend(future, partial(datadog_fields, service="s", env=None, version=None))  # type: ignore[arg-type]
    tracer = RunTracer(lazy)
    for event in (ev(EventKind.RUN_STARTED, 0.0), ev(EventKind.RUN_FINISHED, 1.0)):
        tracer(event)
        tracer.after(event)
    assert "failed" in repr(lazy)


class Client:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def increment(self, metric: str, value: float = 1, tags: Any = None) -> None:
        self.calls.append(("increment", metric, value))

    def gauge(self, metric: str, value: float, tags: Any = None) -> None:
        self.calls.append(("gauge", metric, value))

    def flush(self) -> None:
        self.calls.append(("flush",))


def test_lazy_statsd_replays_in_order_then_goes_straight_through() -> None:
    future: Future[Client] = Future()
    client = LazyStatsd(future)
    client.increment("a", 1)
    client.gauge("b", 2.0)
    real = Client()
    future.set_result(real)
    assert real.calls == []
    client.increment("c", 3)
    assert real.calls == [("increment", "a", 1), ("gauge", "b", 2.0), ("increment", "c", 3)]
    client.flush()
    assert real.calls[-1] == ("flush",)


def test_a_dlq_replay_batch_is_a_batch_span_tagged_as_such() -> None:
    backend = Recorder()
    tracer = RunTracer(backend)
    stage = "validate.0.positive"
    for event in [
        ev(EventKind.RUN_STARTED, 0.0, attrs={"mode": "dlq_replay", "dry_run": True}),
        ev(EventKind("rows_replayed"), 1.0, seq=4, stage=stage, rows_out=5),
        ev(EventKind.BATCH_VALIDATED, 1.5, seq=4, stage=stage, rows_in=5, rows_out=5),
        ev(EventKind.BATCH_COMMITTED, 2.0, seq=4, stage="state", rows_in=5),
        ev(EventKind.RUN_FINISHED, 3.0),
    ]:
        tracer(event)
        tracer.after(event)
    (root,) = backend.named("sluiceway.pipeline.run")
    (batch,) = backend.named("sluiceway.batch")
    (validate,) = backend.named("sluiceway.validate")
    assert root.tags["sluiceway.mode"] == "dlq_replay" and root.tags["sluiceway.dry_run"] == "true"
    assert batch.tags["sluiceway.dlq_replay"] == "true"
    assert batch.tags["sluiceway.replay_stage"] == stage
    assert (batch.start, batch.end) == (1.0, 2.0) and validate.parent is batch


def test_retries_reported_after_the_load_give_estimated_attempt_times() -> None:
    """A load run ahead on a worker thread reports its retries when it is done."""
    backend = Recorder()
    tracer = RunTracer(backend)
    for event in [
        ev(EventKind.RUN_STARTED, 0.0),
        ev(EventKind.BATCH_EXTRACTED, 1.0, seq=0, stage="extract", rows_out=4, seconds=0.5),
        ev(EventKind.LOAD_RETRIED, 9.0, seq=0, stage="load", attrs={"delay": 1.0}, error="busy"),
        ev(EventKind.BATCH_LOADED, 2.0, seq=0, stage="load", rows_in=4, rows_out=4, seconds=3.0),
        ev(EventKind.BATCH_COMMITTED, 9.1, seq=0, stage="state", rows_in=4),
        ev(EventKind.RUN_FINISHED, 9.2),
    ]:
        tracer(event)
        tracer.after(event)
    first, second = backend.named("sluiceway.load.attempt")
    times = [first.start, first.end, second.start, second.end]
    assert times == pytest.approx([2.0, 3.0, 4.0, 5.0])  # (3 s - 1 s delay) / 2 attempts
    assert first.tags["sluiceway.attempt_times"] == "estimated" and first.error is not None
