"""Span backends: where the spans of :class:`~sluiceway.observability.tracing.RunTracer` go.

- :class:`DatadogTraceBackend` — Datadog APM through ddtrace's global tracer;
- :class:`~sluiceway.observability.otel.OtelTraceBackend` — OTLP/HTTP;
- :class:`LazyTraceBackend` — either of them while it is still being imported in a
  loader thread: span ids are chosen here at once (log lines carry them), the work
  is queued and replayed on the real backend when it is ready.

Ids follow Datadog's scheme (128-bit trace ids with Unix seconds in the top 32
bits, 64-bit span ids) and are valid OpenTelemetry ids too.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

import structlog

from sluiceway.observability._ddexport import DatadogTracer
from sluiceway.plugins import require

__all__ = [
    "DatadogTraceBackend",
    "LazyTraceBackend",
    "SpanBackend",
    "datadog_fields",
    "format_trace_id",
    "new_span_id",
    "new_trace_id",
]

_log = structlog.get_logger("sluiceway.observability")

# -- backends ---------------------------------------------------------------------------

_MAX64 = (1 << 64) - 1
_ids = random.Random()


def new_trace_id() -> int:
    """A 128-bit trace id as Datadog makes them: Unix seconds in the top 32 bits."""
    return ((int(time.time()) & 0xFFFFFFFF) << 96) | (_ids.getrandbits(64) or 1)


def new_span_id() -> int:
    return _ids.getrandbits(64) or 1


def format_trace_id(trace_id: int) -> str:
    """As ddtrace logs it: 32 hex digits for a 128-bit id, decimal for a 64-bit one."""
    return f"{trace_id:032x}" if trace_id > _MAX64 else str(trace_id)


def datadog_fields(
    trace_id: int, span_id: int, *, service: str, env: str | None, version: str | None
) -> dict[str, str]:
    """The Datadog log correlation fields of a span."""
    return {
        "dd.trace_id": format_trace_id(trace_id),
        "dd.span_id": str(span_id),
        "dd.service": service,
        "dd.env": env or "",
        "dd.version": version or "",
    }


class SpanBackend(Protocol):
    """Where spans go. Times are wall-clock epoch seconds; span handles are opaque."""

    def start_span(
        self,
        name: str,
        *,
        parent: Any | None,
        start: float,
        resource: str,
        tags: Mapping[str, str],
        ids: tuple[int, int] | None = None,
    ) -> Any:
        """Open a span (``parent`` None: a new trace, or the caller's active trace).

        ``ids`` (trace id, span id) are the ids to give the span, when chosen before.
        """
        ...

    def set_tags(self, span: Any, tags: Mapping[str, str]) -> None: ...

    def set_metrics(self, span: Any, metrics: Mapping[str, float]) -> None: ...

    def set_error(self, span: Any, error_type: str | None, message: str | None) -> None:
        """Flag the span as an error; None leaves that field as it is."""
        ...

    def finish(self, span: Any, end: float) -> None: ...

    def correlation(self, span: Any) -> dict[str, str]:
        """Fields a log line emitted under ``span`` carries."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class DatadogTraceBackend(DatadogTracer):
    """Spans to the Datadog agent through ddtrace's global tracer, in this process.

    ``agent_url`` points the tracer at an agent; when ddtrace is already imported
    (e.g. under ``ddtrace-run``) its own configuration is kept unless they differ.
    A run started while a ddtrace span is active (an Airflow task traced by the
    user) joins that trace, unless the run's ids were chosen beforehand.
    """

    def __init__(
        self,
        *,
        service: str,
        env: str | None = None,
        version: str | None = None,
        agent_url: str | None = None,
    ) -> None:
        require("ddtrace.trace", extra="datadog", what="Datadog tracing")
        super().__init__(service=service, env=env, version=version, agent_url=agent_url)

    def correlation(self, span: Any) -> dict[str, str]:
        return datadog_fields(
            span.trace_id, span.span_id, service=self.service, env=self.env, version=self.version
        )


class _Handle:
    """A span whose ids are known before the vendor's span exists."""

    __slots__ = ("real", "span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.real: Any = None


class LazyTraceBackend:
    """A :class:`SpanBackend` whose real backend is still being made (imported) elsewhere.

    Importing ddtrace takes about a second; a short run should not wait for it. This
    backend hands out span handles with ids it chose itself (so log lines carry them
    at once) and queues what is done to the spans; once ``backend`` (a future, filled
    by a loader thread) is ready, the queue is replayed on the real backend with the
    same ids, and later calls go straight through. :meth:`flush` waits for the real
    backend (up to ``timeout`` seconds). If it cannot be made, spans are dropped with
    one warning: tracing never fails a run.
    """

    def __init__(
        self,
        backend: Future[SpanBackend],
        fields: Callable[[int, int], dict[str, str]],
        *,
        timeout: float = 30.0,
    ) -> None:
        self._future = backend
        self._fields = fields
        self._timeout = timeout
        self._real: SpanBackend | None = None
        self._failed = False
        self._backlog: list[Callable[[SpanBackend], None]] = []
        self._lock = threading.RLock()  # re-entered by a SIGTERM flush on this thread

    def __repr__(self) -> str:
        state = "ready" if self._real else "failed" if self._failed else "loading"
        return f"LazyTraceBackend({state})"

    def _resolve(self, wait: bool) -> SpanBackend | None:
        if self._real is None and not self._failed:
            if not (wait or self._future.done()):
                return None
            try:
                self._real = self._future.result(timeout=0)
            except Exception as exc:
                self._failed = True
                self._backlog.clear()
                _log.warning("tracing_unavailable", error=repr(exc))
        return self._real

    def _do(self, op: Callable[[SpanBackend], None], *, wait: bool = False) -> None:
        if wait and self._real is None and not self._failed:
            # Wait outside the lock: the run's own thread must never queue behind a
            # flush from another thread that is waiting for the import.
            with contextlib.suppress(Exception):
                self._future.result(timeout=self._timeout)
        with self._lock:
            real = self._resolve(wait)
            if real is None:
                if not self._failed:
                    self._backlog.append(op)
                return
            backlog, self._backlog = self._backlog, []
            for queued in backlog:
                queued(real)
            op(real)

    def start_span(
        self,
        name: str,
        *,
        parent: Any | None,
        start: float,
        resource: str,
        tags: Mapping[str, str],
        ids: tuple[int, int] | None = None,
    ) -> _Handle:
        trace_id = parent.trace_id if parent is not None else new_trace_id()
        handle = _Handle(trace_id, new_span_id())
        frozen = dict(tags)

        def op(real: SpanBackend) -> None:
            handle.real = real.start_span(
                name,
                parent=parent.real if parent is not None else None,
                start=start,
                resource=resource,
                tags=frozen,
                ids=(handle.trace_id, handle.span_id),
            )

        self._do(op)
        return handle

    def set_tags(self, span: _Handle, tags: Mapping[str, str]) -> None:
        frozen = dict(tags)
        self._do(lambda real: real.set_tags(span.real, frozen))

    def set_metrics(self, span: _Handle, metrics: Mapping[str, float]) -> None:
        frozen = dict(metrics)
        self._do(lambda real: real.set_metrics(span.real, frozen))

    def set_error(self, span: _Handle, error_type: str | None, message: str | None) -> None:
        self._do(lambda real: real.set_error(span.real, error_type, message))

    def finish(self, span: _Handle, end: float) -> None:
        self._do(lambda real: real.finish(span.real, end))

    def correlation(self, span: _Handle) -> dict[str, str]:
        return self._fields(span.trace_id, span.span_id)

    def flush(self) -> None:
        self._do(lambda real: real.flush(), wait=True)

    def close(self) -> None:
        self._do(lambda real: real.close(), wait=True)
