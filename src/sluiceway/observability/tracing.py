"""Traces of pipeline runs, built from stage events, and trace ids in every log line.

:class:`RunTracer` is an event hook that turns a run's events into a span tree::

    sluiceway.pipeline.run            one per run (resource: the pipeline)
      sluiceway.batch                 one per batch, extraction start to commit
        sluiceway.extract             one per stage and batch (resource: the stage,
        sluiceway.transform           e.g. ``transform.0.sql``), with rows in/out
        sluiceway.validate
        sluiceway.dlq                 rows written to the dead-letter queue
        sluiceway.load
          sluiceway.load.attempt      one per attempt, when a load was retried

Events carry the wall-clock start and duration of each stage, so stage spans are
created after the fact with exact times; the batch span is live while the batch
is processed. Where spans go is a :class:`~sluiceway.observability.spans.SpanBackend`
(Datadog APM through ddtrace, or OTLP). Neither vendor is imported by this module.

Log correlation: while a run is traced, :func:`add_trace_context` (a structlog
processor) adds ``dd.trace_id``, ``dd.span_id``, ``dd.service``, ``dd.env`` and
``dd.version`` to each log line: the ids of the stage span a line is about (the
log line of a stage event) or of the batch or run span it was emitted under.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.observability.spans import SpanBackend

__all__ = ["ROOT_SPAN", "RunTracer", "add_trace_context", "current_correlation"]

ROOT_SPAN = "sluiceway.pipeline.run"

# -- log correlation --------------------------------------------------------------------

_CURRENT: ContextVar[Mapping[str, str] | None] = ContextVar(
    "sluiceway_trace_correlation", default=None
)
# Root-span correlation per traced run, for lines logged by other threads (the
# prefetching extractor): used when exactly one run is being traced.
_RUNS: dict[str, Mapping[str, str]] = {}


def current_correlation() -> Mapping[str, str] | None:
    """The log correlation fields of the span current in this thread (None when untraced)."""
    current = _CURRENT.get()
    if current is not None:
        return current
    if len(_RUNS) == 1:
        with contextlib.suppress(RuntimeError, StopIteration):
            return next(iter(_RUNS.values()))
    return None


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the current span's ``dd.trace_id``, ``dd.span_id`` … on the line.

    Costs one context-variable lookup when no run is traced. Keys the event
    already has are left alone.
    """
    fields = current_correlation()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


# -- the span tree ----------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    stage: str | None
    seq: int | None
    span: Any
    end: float


@dataclass(slots=True)
class _RunSpans:
    root: Any
    root_fields: Mapping[str, str]
    outer: Mapping[str, str] | None
    batches: dict[int, tuple[Any, Mapping[str, str]]] = field(default_factory=dict)
    open_batch: int | None = None
    pending: _Pending | None = None
    retries: dict[int, list[StageEvent]] = field(default_factory=dict)
    warned: dict[tuple[int | None, str | None], int] = field(default_factory=dict)


def _seq(event: StageEvent) -> int:
    return -1 if event.seq is None else event.seq


class RunTracer:
    """An event hook building each run's span tree on a :class:`SpanBackend`.

    Register it before the hooks whose log lines should carry the span ids, and
    :meth:`after` behind them (``build_hooks`` does both): the log line of a stage
    event then carries that stage span's ids, other lines the batch's or the run's.
    """

    def __init__(
        self,
        backend: SpanBackend,
        *,
        source_type: str | None = None,
        sink_type: str | None = None,
        engine: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.source_type = source_type
        self.sink_type = sink_type
        self.engine = engine
        self.tags = dict(tags or {})
        self._runs: dict[str, _RunSpans] = {}

    def __repr__(self) -> str:
        return f"RunTracer({self.backend!r})"

    # -- hook entry points --------------------------------------------------------

    def __call__(self, event: StageEvent) -> None:
        if event.kind is EventKind.RUN_STARTED:
            self._start_run(event)
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return
        self._settle(run, event)
        batch = run.batches.get(event.seq) if event.seq is not None else None
        if batch is not None:  # a line about a batch belongs to its span
            _CURRENT.set(batch[1])
        handler = getattr(self, f"_on_{event.kind.value}", None)
        if handler is not None:
            handler(run, event)

    def after(self, event: StageEvent) -> None:
        """Second hook: after the other hooks saw an event, the batch or run span is current."""
        run = self._runs.get(event.run_id)
        if run is None:
            return
        if event.kind in (EventKind.RUN_FINISHED, EventKind.RUN_FAILED):
            del self._runs[event.run_id]
            _RUNS.pop(event.run_id, None)
            _CURRENT.set(run.outer)
            return
        batch = run.batches.get(run.open_batch) if run.open_batch is not None else None
        _CURRENT.set(batch[1] if batch else run.root_fields)

    # -- helpers ------------------------------------------------------------------

    def _base(self, event: StageEvent) -> dict[str, str]:
        return {"sluiceway.pipeline": event.pipeline, "sluiceway.run_id": event.run_id}

    def _stage_span(
        self,
        run: _RunSpans,
        e: StageEvent,
        kind: str,
        *,
        resource: str | None = None,
        parent: Any | None = None,
    ) -> Any:
        """A span for a stage of a batch from the event's start and duration (not finished)."""
        if parent is None:
            batch = run.batches.get(_seq(e))
            parent = batch[0] if batch else run.root
        span = self.backend.start_span(
            f"sluiceway.{kind}",
            parent=parent,
            start=e.started,
            resource=resource or e.stage or kind,
            tags={**self._base(e), "sluiceway.stage": e.stage or kind},
        )
        metrics = {"sluiceway.rows_in": float(e.rows_in), "sluiceway.rows_out": float(e.rows_out)}
        if e.seq is not None:
            metrics["sluiceway.seq"] = float(e.seq)
        self.backend.set_metrics(span, metrics)
        _CURRENT.set(self.backend.correlation(span))
        return span

    def _finish_stage(self, span: Any, e: StageEvent) -> None:
        self.backend.finish(span, e.started + e.seconds)

    def _settle(self, run: _RunSpans, e: StageEvent) -> None:
        """Finish a span held open for the dead-letter event that may follow it."""
        pending = run.pending
        if pending is None:
            return
        if (
            e.kind is EventKind.ROWS_DEAD_LETTERED
            and e.stage == pending.stage
            and e.seq == pending.seq
        ):
            return
        self.backend.finish(pending.span, pending.end)
        run.pending = None

    # -- run ----------------------------------------------------------------------

    def _start_run(self, e: StageEvent) -> None:
        tags = {
            **self._base(e),
            "sluiceway.source": str(self.source_type or e.attrs.get("source") or ""),
            "sluiceway.sink": str(self.sink_type or e.attrs.get("sink") or ""),
            "sluiceway.engine": str(self.engine or ""),
            "sluiceway.mode": str(e.attrs.get("mode") or "run"),
            **self.tags,
        }
        if e.attrs.get("dry_run"):
            tags["sluiceway.dry_run"] = "true"
        root = self.backend.start_span(
            ROOT_SPAN, parent=None, start=e.started, resource=e.pipeline, tags=tags
        )
        fields = self.backend.correlation(root)
        self._runs[e.run_id] = _RunSpans(root=root, root_fields=fields, outer=_CURRENT.get())
        _RUNS[e.run_id] = fields
        _CURRENT.set(fields)

    def _end_run(self, run: _RunSpans, e: StageEvent, *, failed: bool) -> None:
        error_type = str(e.attrs.get("error_type") or "") or None
        for seq, (span, _) in list(run.batches.items()):
            if failed:
                self.backend.set_error(span, error_type, e.error)
            self.backend.finish(span, e.started)
            del run.batches[seq]
        metrics = e.attrs.get("metrics")
        if isinstance(metrics, PipelineMetrics):
            self.backend.set_metrics(
                run.root,
                {
                    f"sluiceway.rows.{name}": float(getattr(metrics, name))
                    for name in (
                        "read",
                        "written",
                        "dead_lettered",
                        "filtered",
                        "expanded",
                        "skipped_committed",
                        "warned",
                    )
                }
                | {
                    "sluiceway.retries": float(metrics.retries),
                    "sluiceway.batches": float(metrics.batches),
                    "sluiceway.replayed_batches": float(metrics.replayed_batches),
                },
            )
        self.backend.set_tags(run.root, {"sluiceway.status": "failed" if failed else "succeeded"})
        if failed:
            self.backend.set_error(run.root, error_type, e.error)
        self.backend.finish(run.root, e.started)
        _CURRENT.set(run.root_fields)
        self.backend.flush()

    def _on_run_finished(self, run: _RunSpans, e: StageEvent) -> None:
        self._end_run(run, e, failed=False)

    def _on_run_failed(self, run: _RunSpans, e: StageEvent) -> None:
        self._end_run(run, e, failed=True)

    # -- batch --------------------------------------------------------------------

    def _open_batch(self, run: _RunSpans, e: StageEvent, rows: int) -> None:
        batch = self.backend.start_span(
            "sluiceway.batch",
            parent=run.root,
            start=e.started,
            resource=e.pipeline,
            tags=self._base(e),
        )
        self.backend.set_metrics(
            batch, {"sluiceway.seq": float(_seq(e)), "sluiceway.rows_in": float(rows)}
        )
        run.batches[_seq(e)] = (batch, self.backend.correlation(batch))
        run.open_batch = _seq(e)

    def _on_batch_extracted(self, run: _RunSpans, e: StageEvent) -> None:
        self._open_batch(run, e, e.rows_out)
        if e.attrs.get("replay"):
            self.backend.set_tags(run.batches[_seq(e)][0], {"sluiceway.replay": "true"})
        span = self._stage_span(run, e, "extract", resource="extract")
        lag = e.attrs.get("consumer_lag")  # statsd.CONSUMER_LAG_ATTR (not imported: cycle)
        if isinstance(lag, Mapping):
            lag = sum(float(v) for v in lag.values())
        if isinstance(lag, int | float):
            self.backend.set_metrics(span, {"sluiceway.consumer_lag": float(lag)})
        self._finish_stage(span, e)

    def _on_rows_replayed(self, run: _RunSpans, e: StageEvent) -> None:
        """A DLQ replay batch: its rows re-enter at ``e.stage``."""
        self._open_batch(run, e, e.rows_out)
        self.backend.set_tags(
            run.batches[_seq(e)][0],
            {"sluiceway.dlq_replay": "true", "sluiceway.replay_stage": e.stage or ""},
        )

    def _on_batch_committed(self, run: _RunSpans, e: StageEvent) -> None:
        entry = run.batches.pop(_seq(e), None)
        if run.open_batch == _seq(e):
            run.open_batch = None
        if entry is not None:
            self.backend.finish(entry[0], e.started)

    # -- stages -------------------------------------------------------------------

    def _on_batch_transformed(self, run: _RunSpans, e: StageEvent) -> None:
        span = self._stage_span(run, e, "transform")
        self.backend.set_metrics(
            span,
            {
                f"sluiceway.{key}": float(e.attrs.get(key, 0))
                for key in ("filtered", "expanded", "dead_lettered", "calls")
            },
        )
        if e.error is None:
            self._finish_stage(span, e)
            return
        # The dead-letter event that follows names the error type: finish then.
        self.backend.set_error(span, None, e.error)
        run.pending = _Pending(e.stage, e.seq, span, e.started + e.seconds)

    def _on_validation_warned(self, run: _RunSpans, e: StageEvent) -> None:
        key = (e.seq, e.stage)
        run.warned[key] = run.warned.get(key, 0) + e.rows_in

    def _on_batch_validated(self, run: _RunSpans, e: StageEvent) -> None:
        span = self._stage_span(run, e, "validate")
        self.backend.set_metrics(
            span,
            {
                "sluiceway.dead_lettered": float(e.rows_in - e.rows_out),
                "sluiceway.warned": float(run.warned.pop((e.seq, e.stage), 0)),
                "sluiceway.rules": float(e.attrs.get("rules", 0)),
            },
        )
        self._finish_stage(span, e)

    def _on_rows_dead_lettered(self, run: _RunSpans, e: StageEvent) -> None:
        error_type = str(e.attrs.get("error_type") or "") or None
        pending = run.pending
        if pending is not None:
            self.backend.set_error(pending.span, error_type, None)
            self.backend.finish(pending.span, pending.end)
            run.pending = None
        span = self._stage_span(run, e, "dlq")
        rules = [str(rule) for rule in dict(e.attrs.get("by_rule") or {}) if rule]
        tags = {"sluiceway.dlq.stage": e.stage or "", "sluiceway.dlq.error_type": error_type or ""}
        if rules:
            tags["sluiceway.dlq.rules"] = ",".join(rules)
        self.backend.set_tags(span, tags)
        self.backend.set_metrics(span, {"sluiceway.dead_lettered": float(e.rows_in)})
        self._finish_stage(span, e)

    def _on_load_retried(self, run: _RunSpans, e: StageEvent) -> None:
        run.retries.setdefault(_seq(e), []).append(e)

    def _on_batch_loaded(self, run: _RunSpans, e: StageEvent) -> None:
        span = self._stage_span(run, e, "load", resource="load")
        retries = run.retries.pop(_seq(e), [])
        self.backend.set_metrics(
            span,
            {
                "sluiceway.attempts": float(e.attrs.get("attempts") or len(retries) + 1),
                "sluiceway.retries": float(len(retries)),
                "sluiceway.rejected": float(e.attrs.get("rejected") or 0),
            },
        )
        error_type = str(e.attrs.get("error_type") or "") or None
        if e.error is not None:
            self.backend.set_error(span, error_type, e.error)
        if retries:
            self._attempts(span, e, retries, error_type)
        self._finish_stage(span, e)

    def _attempts(
        self, load: Any, e: StageEvent, retries: list[StageEvent], error_type: str | None
    ) -> None:
        """One child span per attempt: each failed one ends when its retry was announced,
        the next starts after the announced delay.

        When the retries were announced after the load (a load run ahead on another
        thread reports them at the end), their times say nothing: the load's time less
        the delays is split evenly between the attempts, and the spans say so
        (``sluiceway.attempt_times: estimated``).
        """
        begin = e.started
        end = e.started + e.seconds
        delays = [float(r.attrs.get("delay") or 0.0) for r in retries]
        timed = all(begin <= r.started <= end for r in retries)
        share = max(0.0, e.seconds - sum(delays)) / (len(retries) + 1)
        for number, retry in enumerate([*retries, None], start=1):
            if retry is None:
                stop = end
            elif timed:
                stop = min(max(begin, retry.started), end)
            else:
                stop = min(begin + share, end)
            span = self.backend.start_span(
                "sluiceway.load.attempt",
                parent=load,
                start=begin,
                resource="load",
                tags={**self._base(e), "sluiceway.stage": "load"},
            )
            self.backend.set_metrics(span, {"sluiceway.attempt": float(number)})
            if not timed:
                self.backend.set_tags(span, {"sluiceway.attempt_times": "estimated"})
            if retry is not None:
                delay = float(retry.attrs.get("delay") or 0.0)
                self.backend.set_metrics(span, {"sluiceway.retry_delay": delay})
                self.backend.set_error(span, str(retry.attrs.get("error_type") or ""), retry.error)
                begin = min(stop + delay, end)
            elif e.error is not None:
                self.backend.set_error(span, error_type, e.error)
            self.backend.finish(span, stop)

    def _on_batch_skipped(self, run: _RunSpans, e: StageEvent) -> None:
        span = self._stage_span(run, e, "load", resource="load")
        self.backend.set_tags(span, {"sluiceway.skipped": "true"})
        self._finish_stage(span, e)
