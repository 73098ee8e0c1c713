"""DogStatsD metrics and Datadog events from stage events.

:class:`StatsdSubscriber` is an event hook that turns a run's stage events into
DogStatsD metrics (counters, histograms, gauges); :class:`DatadogEventChannel` is
an alert channel (for :class:`~sluiceway.observability.alerts.AlertSubscriber`)
posting alerts as Datadog events. Both send through a DogStatsD client made by
:func:`statsd_client`, which imports the ``datadog`` package only when called —
or through :class:`LazyStatsd` while that client is made in a loader thread.

Every metric the code emits is listed in :data:`METRICS` (name, type, unit, tags),
the single source for the documentation table, the shipped dashboard and monitors
(``deploy/datadog/``) and the tests that compare them with real datagrams. Tag
values are normalised the way Datadog stores them (:func:`tag`): lowercase, and
anything but letters, digits and ``_ - : . /`` becomes ``_``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.observability._ddexport import make_statsd, stop_statsd
from sluiceway.observability.logging import redact
from sluiceway.plugins import require

_log = structlog.get_logger("sluiceway.observability")

__all__ = [
    "COMMON_TAGS",
    "CONSUMER_LAG_ATTR",
    "METRICS",
    "DatadogEventChannel",
    "LazyStatsd",
    "MetricSpec",
    "StatsdClient",
    "StatsdSubscriber",
    "stage_kind",
    "statsd_client",
    "tag",
]

#: ``batch_extracted`` attr a source sets to report how far behind it reads, in records:
#: an int, or a mapping partition → records (summed). Kafka sources set it.
CONSUMER_LAG_ATTR = "consumer_lag"

MetricType = Literal["count", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric the subscriber emits (besides the common tags every metric carries)."""

    name: str
    type: MetricType
    unit: str
    description: str
    tags: tuple[str, ...] = ()


#: Tags on every metric and event: ``pipeline``, ``source`` and ``sink`` types, and
#: ``env``/``service`` (``version`` and user tags when configured).
COMMON_TAGS = ("pipeline", "source", "sink", "env", "service")

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("sluiceway.run.started", "count", "runs", "a run started", ("mode",)),
    MetricSpec(
        "sluiceway.run.succeeded",
        "count",
        "runs",
        "a run finished, including one stopped cleanly by SIGTERM",
        ("mode",),
    ),
    MetricSpec("sluiceway.run.failed", "count", "runs", "a run failed", ("mode", "error_type")),
    MetricSpec(
        "sluiceway.run.last_success",
        "gauge",
        "epoch seconds",
        "when the last successful run (mode `run`) finished, Unix time",
    ),
    MetricSpec(
        "sluiceway.run.duration", "gauge", "seconds", "wall time of the run", ("status", "mode")
    ),
    MetricSpec(
        "sluiceway.run.threshold_crossed",
        "count",
        "runs",
        "a run limit (e.g. `max_dead_letter_ratio`) was crossed; the run fails",
        ("threshold",),
    ),
    MetricSpec("sluiceway.records.read", "count", "records", "records read by the source"),
    MetricSpec("sluiceway.records.written", "count", "records", "records the sink acknowledged"),
    MetricSpec(
        "sluiceway.records.dead_lettered",
        "count",
        "records",
        "records durably in the DLQ",
        ("stage", "stage_name", "rule", "error_type"),
    ),
    MetricSpec(
        "sluiceway.records.filtered",
        "count",
        "records",
        "records a transform dropped on purpose",
        ("stage", "stage_name"),
    ),
    MetricSpec(
        "sluiceway.records.expanded",
        "count",
        "records",
        "records a transform added",
        ("stage", "stage_name"),
    ),
    MetricSpec(
        "sluiceway.records.replayed",
        "count",
        "records",
        "dead letters put back into the pipeline by `sluiceway dlq replay`",
        ("stage", "stage_name"),
    ),
    MetricSpec(
        "sluiceway.records.skipped",
        "count",
        "records",
        "records of replayed batches the sink already held (skipped)",
    ),
    MetricSpec(
        "sluiceway.records.warned",
        "count",
        "records",
        "records failing an `on_fail: warn` rule (kept)",
        ("stage", "stage_name", "rule"),
    ),
    MetricSpec(
        "sluiceway.records.retried",
        "count",
        "records",
        "records in loads that were retried",
        ("error_type",),
    ),
    MetricSpec(
        "sluiceway.load.retries", "count", "attempts", "load attempts retried", ("error_type",)
    ),
    MetricSpec(
        "sluiceway.load.failures",
        "count",
        "batches",
        "loads given up (batch dead-lettered)",
        ("error_type",),
    ),
    MetricSpec("sluiceway.batch.committed", "count", "batches", "batches committed"),
    MetricSpec(
        "sluiceway.batch.duration",
        "histogram",
        "seconds",
        "one batch, from extraction start (prefetch wait included) to commit",
    ),
    MetricSpec(
        "sluiceway.stage.duration",
        "histogram",
        "seconds",
        "one stage on one batch; `stage`: extract, transform, validate, load, dlq",
        ("stage", "stage_name"),
    ),
    MetricSpec(
        "sluiceway.throughput",
        "gauge",
        "records/s",
        "records read per second since the run started",
    ),
    MetricSpec(
        "sluiceway.consumer.lag",
        "gauge",
        "records",
        f"records the source is behind (a source's `{CONSUMER_LAG_ATTR}`, e.g. Kafka)",
    ),
)

_NAMES = frozenset(m.name for m in METRICS)
_BAD_TAG_CHARS = re.compile(r"[^a-z0-9_:./-]")


def tag(key: str, value: object) -> str:
    """``key:value`` as Datadog stores it: lowercase, odd characters as ``_``, ≤ 200 chars."""
    text = "none" if value is None else str(value)
    return _BAD_TAG_CHARS.sub("_", f"{key}:{text}".lower())[:200]


def stage_kind(stage: str | None) -> str:
    """``transform.0.sql`` → ``transform``; ``extract`` → ``extract``."""
    if not stage:
        return "none"
    return stage.split(".", 1)[0]


class StatsdClient(Protocol):
    """The part of ``datadog.dogstatsd.DogStatsd`` the subscribers use."""

    def increment(self, metric: str, value: float = 1, tags: list[str] | None = None) -> None: ...

    def gauge(self, metric: str, value: float, tags: list[str] | None = None) -> None: ...

    def histogram(self, metric: str, value: float, tags: list[str] | None = None) -> None: ...

    def event(
        self,
        title: str,
        message: str,
        alert_type: str | None = None,
        aggregation_key: str | None = None,
        tags: list[str] | None = None,
    ) -> None: ...

    def flush(self) -> Any: ...


def statsd_client(
    *,
    host: str | None,
    port: int | None,
    socket_path: str | None = None,
    constant_tags: Sequence[str] = (),
    flush_interval: float = 0.3,
    telemetry: bool = True,
    module: str = "datadog.dogstatsd.base",
) -> Any:
    """A buffered ``DogStatsd`` client; ``constant_tags`` win over ``DD_ENV``-style env tags.

    The client appends to a buffer on the hot path and a background thread sends
    it every ``flush_interval`` seconds; the subscribers flush at the end of each
    run and :func:`~sluiceway.observability.setup.build_hooks` closes it at exit.

    ``module`` is where ``DogStatsd`` comes from: the ``datadog`` package, or
    :data:`DDTRACE_DOGSTATSD` — the same client as ddtrace ships it, used when
    tracing loads ddtrace anyway, which saves importing ``datadog`` (whose package
    ``__init__`` imports its whole HTTP API client).
    """
    base = require(module, extra="datadog", what="DogStatsD metrics")
    return make_statsd(
        base,
        host=host,
        port=port,
        socket_path=socket_path,
        constant_tags=constant_tags,
        flush_interval=flush_interval,
        telemetry=telemetry,
    )


class LazyStatsd:
    """A :class:`StatsdClient` standing in while the real client is made in a loader thread.

    Importing the ``datadog`` package takes a noticeable part of a second; calls made
    before ``client`` (a future) is ready are queued and replayed in order, later
    calls go straight through. :meth:`flush` waits for the client (up to ``timeout``
    seconds). Thread-safe: alert channels post events from their own thread.
    """

    def __init__(self, client: Future[Any], *, timeout: float = 30.0) -> None:
        self._future = client
        self._timeout = timeout
        self._client: Any = None
        self._failed = False
        self._backlog: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.RLock()  # re-entered by a SIGTERM flush on this thread

    def __repr__(self) -> str:
        state = "ready" if self._client else "failed" if self._failed else "loading"
        return f"LazyStatsd({state})"

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], wait: bool) -> Any:
        if wait and self._client is None and not self._failed:
            # Wait outside the lock: a flush from an alert thread must not hold up
            # the run's own thread, which only queues calls until the client is ready.
            with contextlib.suppress(Exception):
                self._future.result(timeout=self._timeout)
        with self._lock:
            if self._client is None and not self._failed:
                if not (wait or self._future.done()):
                    self._backlog.append((method, args, kwargs))
                    return None
                try:
                    self._client = self._future.result(timeout=0)
                except Exception as exc:
                    self._failed = True
                    _log.warning("metrics_unavailable", error=repr(exc))
            if self._client is None:
                return None
            backlog, self._backlog = self._backlog, []
            for name, a, kw in backlog:
                getattr(self._client, name)(*a, **kw)
            return getattr(self._client, method)(*args, **kwargs)

    def increment(self, metric: str, value: float = 1, tags: list[str] | None = None) -> None:
        self._call("increment", (metric, value), {"tags": tags}, False)

    def gauge(self, metric: str, value: float, tags: list[str] | None = None) -> None:
        self._call("gauge", (metric, value), {"tags": tags}, False)

    def histogram(self, metric: str, value: float, tags: list[str] | None = None) -> None:
        self._call("histogram", (metric, value), {"tags": tags}, False)

    def event(
        self,
        title: str,
        message: str,
        alert_type: str | None = None,
        aggregation_key: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        kwargs = {"alert_type": alert_type, "aggregation_key": aggregation_key, "tags": tags}
        self._call("event", (title, message), kwargs, False)

    def flush(self) -> Any:
        return self._call("flush", (), {}, True)

    def close(self) -> None:
        """Flush, stop the client's flush thread and close its socket."""
        self.flush()
        if self._client is not None:
            stop_statsd(self._client)


# -- metrics ----------------------------------------------------------------------------


@dataclass(slots=True)
class _RunCounters:
    started: float
    mode: str
    read: int = 0
    batch_started: dict[int, float] = field(default_factory=dict)


class StatsdSubscriber:
    """An event hook emitting the metrics in :data:`METRICS` over DogStatsD.

    Per event it sends a handful of datagrams (into the client's buffer): nothing
    per row. At the end of a run (finished or failed) the buffer is flushed, so a
    process that exits right after still delivers the run's metrics. Dry runs
    (``run_started`` with ``attrs["dry_run"]``) emit nothing: they write nothing.
    """

    def __init__(self, client: StatsdClient) -> None:
        self.client = client
        self._runs: dict[str, _RunCounters] = {}

    def __repr__(self) -> str:
        return f"StatsdSubscriber({self.client!r})"

    def __call__(self, event: StageEvent) -> None:
        if event.kind is EventKind.RUN_STARTED:
            self._start(event)
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return
        handler = getattr(self, f"_on_{event.kind.value}", None)
        if handler is not None:
            handler(run, event)

    # -- helpers ------------------------------------------------------------------

    def _count(self, name: str, value: float, tags: list[str] | None = None) -> None:
        assert name in _NAMES, name
        if value:
            self.client.increment(name, value, tags=tags)

    def _duration(self, e: StageEvent, stage: str | None = None) -> None:
        stage = stage or e.stage
        self.client.histogram(
            "sluiceway.stage.duration",
            e.seconds,
            tags=[tag("stage", stage_kind(stage)), tag("stage_name", stage)],
        )

    @staticmethod
    def _stage_tags(e: StageEvent) -> list[str]:
        return [tag("stage", stage_kind(e.stage)), tag("stage_name", e.stage)]

    # -- run ----------------------------------------------------------------------

    def _start(self, e: StageEvent) -> None:
        if e.attrs.get("dry_run"):
            self._runs.pop(e.run_id, None)
            return
        mode = str(e.attrs.get("mode") or "run")
        self._runs[e.run_id] = _RunCounters(started=e.started, mode=mode)
        self._count("sluiceway.run.started", 1, [tag("mode", mode)])

    def _on_run_finished(self, run: _RunCounters, e: StageEvent) -> None:
        self._end(run, e, succeeded=True)

    def _on_run_failed(self, run: _RunCounters, e: StageEvent) -> None:
        self._end(run, e, succeeded=False)

    def _end(self, run: _RunCounters, e: StageEvent, *, succeeded: bool) -> None:
        del self._runs[e.run_id]
        mode = tag("mode", run.mode)
        status = "succeeded" if succeeded else "failed"
        if succeeded:
            self._count("sluiceway.run.succeeded", 1, [mode])
            if run.mode == "run":
                self.client.gauge("sluiceway.run.last_success", e.started)
        else:
            tags = [mode, tag("error_type", e.attrs.get("error_type"))]
            self._count("sluiceway.run.failed", 1, tags)
        self.client.gauge("sluiceway.run.duration", e.seconds, tags=[tag("status", status), mode])
        metrics = e.attrs.get("metrics")
        if isinstance(metrics, PipelineMetrics) and metrics.duration > 0:
            self.client.gauge("sluiceway.throughput", metrics.rows_per_second)
        self.client.flush()

    def _on_threshold_crossed(self, run: _RunCounters, e: StageEvent) -> None:
        self._count(
            "sluiceway.run.threshold_crossed", 1, [tag("threshold", e.attrs.get("threshold"))]
        )

    # -- batches ------------------------------------------------------------------

    def _on_batch_extracted(self, run: _RunCounters, e: StageEvent) -> None:
        run.read += e.rows_out
        if e.seq is not None:
            run.batch_started[e.seq] = e.started
        self._count("sluiceway.records.read", e.rows_out)
        self._duration(e, "extract")
        lag = e.attrs.get(CONSUMER_LAG_ATTR)
        if isinstance(lag, Mapping):
            lag = sum(float(v) for v in lag.values())
        if isinstance(lag, int | float):
            self.client.gauge("sluiceway.consumer.lag", float(lag))

    def _on_rows_replayed(self, run: _RunCounters, e: StageEvent) -> None:
        if e.seq is not None:
            run.batch_started[e.seq] = e.started
        self._count("sluiceway.records.replayed", e.rows_out, self._stage_tags(e))

    def _on_batch_transformed(self, run: _RunCounters, e: StageEvent) -> None:
        tags = self._stage_tags(e)
        self._count("sluiceway.records.filtered", int(e.attrs.get("filtered", 0)), tags)
        self._count("sluiceway.records.expanded", int(e.attrs.get("expanded", 0)), tags)
        self._duration(e)

    def _on_batch_validated(self, run: _RunCounters, e: StageEvent) -> None:
        self._duration(e)

    def _on_validation_warned(self, run: _RunCounters, e: StageEvent) -> None:
        tags = [*self._stage_tags(e), tag("rule", e.attrs.get("rule"))]
        self._count("sluiceway.records.warned", e.rows_in, tags)

    def _on_rows_dead_lettered(self, run: _RunCounters, e: StageEvent) -> None:
        base = [*self._stage_tags(e), tag("error_type", e.attrs.get("error_type"))]
        by_rule = e.attrs.get("by_rule") or {None: e.rows_in}
        for rule, rows in dict(by_rule).items():
            self._count("sluiceway.records.dead_lettered", int(rows), [*base, tag("rule", rule)])
        self._duration(e, "dlq")

    def _on_load_retried(self, run: _RunCounters, e: StageEvent) -> None:
        tags = [tag("error_type", e.attrs.get("error_type"))]
        self._count("sluiceway.load.retries", 1, tags)
        self._count("sluiceway.records.retried", e.rows_in, tags)

    def _on_batch_loaded(self, run: _RunCounters, e: StageEvent) -> None:
        if e.error is None:
            self._count("sluiceway.records.written", e.rows_out)
        else:
            tags = [tag("error_type", e.attrs.get("error_type"))]
            self._count("sluiceway.load.failures", 1, tags)
        self._duration(e, "load")

    def _on_batch_skipped(self, run: _RunCounters, e: StageEvent) -> None:
        self._count("sluiceway.records.skipped", e.rows_in)

    def _on_batch_committed(self, run: _RunCounters, e: StageEvent) -> None:
        self._count("sluiceway.batch.committed", 1)
        began = run.batch_started.pop(-1 if e.seq is None else e.seq, None)
        if began is not None:
            self.client.histogram("sluiceway.batch.duration", max(0.0, e.started - began))
        elapsed = e.started - run.started
        if elapsed > 0:
            self.client.gauge("sluiceway.throughput", run.read / elapsed)


# -- events (alerts) --------------------------------------------------------------------

_TITLE_MAX = 100
_TEXT_MAX = 3800


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DatadogEventChannel:
    """An alert channel posting each alert as a Datadog event through DogStatsD.

    Plug it into :class:`~sluiceway.observability.alerts.AlertSubscriber`, which
    decides when to alert (dead letters rate-limited and de-duplicated per run, a
    run failure, a crossed threshold; never for dry runs). Dead-letter alerts are
    ``warning`` events, failures and thresholds ``error`` events; the events of a
    run share an ``aggregation_key`` so Datadog groups them, and carry the metric
    tags plus ``alert`` (the alert kind), ``run_id`` and the first failing stage.
    """

    def __init__(self, client: StatsdClient, *, tags: Sequence[str] = ()) -> None:
        self.client = client
        self.tags = list(tags)

    def __repr__(self) -> str:
        return "DatadogEventChannel()"

    def describe(self) -> str:
        return "datadog-events"

    @property
    def max_seconds(self) -> float:
        return 1.0

    def send(self, alert: Any) -> None:
        """Post ``alert`` (an :class:`~sluiceway.observability.alerts.Alert`) as an event."""
        kind = str(alert.kind)
        tags = [*self.tags, tag("alert", kind), tag("run_id", alert.run_id)]
        first = alert.first_error or {}
        if first.get("stage"):
            stage = str(first["stage"])
            tags += [tag("stage", stage_kind(stage)), tag("stage_name", stage)]
        if first.get("error_type"):
            tags.append(tag("error_type", first["error_type"]))
        self.client.event(
            _clip(f"sluiceway: {alert.headline()}", _TITLE_MAX),
            _clip(str(redact(alert.text())), _TEXT_MAX),
            alert_type="error" if kind in ("run_failed", "threshold") else "warning",
            aggregation_key=f"sluiceway-{alert.pipeline}-{alert.run_id}",
            tags=tags,
        )
        self.client.flush()
