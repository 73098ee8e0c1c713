"""The exporter process: Datadog spans and DogStatsD metrics sent from a child process.

With ``observability.datadog.exporter: process`` (what ``auto``, the default, picks
when ddtrace is not imported already), the run's process never imports ddtrace or
``datadog``. It starts ``python -P …/_ddexport.py`` when the hooks are built and
hands it, through a pipe, what it would have done to spans and to the DogStatsD
client; the child imports the vendor package on the other core while the run
starts, and makes the real spans and datagrams.

Why: on a run of a few seconds, importing ddtrace in a loader thread cost ~0.12 s
of CPU holding the GIL, and ddtrace's span calls and the client's formatting
another ~0.08 s on the thread that runs the hooks (measured on a 5M-row file
pipeline). Here the run's process only picks span ids (so log lines carry them at
once), copies the calls into a queue, and a writer thread pickles them to the pipe.

Delivery: :meth:`ExporterProcess.flush` returns once the child has sent everything
it was given (or ``timeout`` passed); :meth:`ExporterProcess.close` flushes, stops
the child and waits for it. The child ignores SIGINT and SIGTERM (a signal to the
whole process group must not cut off the last flush) and exits when the run's
process closes the pipe — or dies: what it was given is still sent. If the child
cannot start or dies, tracing and metrics stop with one warning: observability
never fails a run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from sluiceway.observability.spans import new_span_id, new_trace_id

__all__ = [
    "EXPORTER_SCRIPT",
    "ExporterProcess",
    "ProcessStatsd",
    "ProcessTraceBackend",
    "shared_exporter",
]

_log = structlog.get_logger("sluiceway.observability")

#: The child's program, run by path so that it does not import the sluiceway package.
EXPORTER_SCRIPT = Path(__file__).with_name("_ddexport.py")

#: Messages pickled per frame at most.
_FRAME = 4096

#: How long the writer lets calls gather before it pipes them, unless a flush or a
#: close is waiting: one wake-up, one pickle and one write per interval, instead of
#: one per call taking the GIL from the run's threads.
GATHER_SECONDS = 0.05


class ExporterProcess:
    """The child process and the pipe to it; shared by the span backend and the client.

    ``traces`` and ``statsd`` are the keyword arguments of
    :class:`~sluiceway.observability._ddexport.DatadogTracer` and of
    :func:`~sluiceway.observability._ddexport.make_statsd` (plus ``module``, the
    DogStatsD module to import), or None. ``environ`` is the child's environment.
    """

    def __init__(
        self,
        *,
        traces: Mapping[str, Any] | None,
        statsd: Mapping[str, Any] | None,
        environ: Mapping[str, str],
        timeout: float = 30.0,
    ) -> None:
        self.timeout = timeout
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.RLock()  # re-entered by a SIGTERM close on this thread
        self._waiting: dict[int, threading.Event] = {}
        self._tokens = itertools.count(1)
        self._gone = threading.Event()
        self._closing = False
        self._closed = threading.Event()
        self._urgent = threading.Event()  # a flush or a close is queued
        self._users = 0  # see shared_exporter / release
        # A forked copy of this process has neither the pipe's threads nor the child:
        # there every call is a no-op (see _forked).
        self._pid = os.getpid()
        self.unavailable: dict[str, str] = {}
        self._queue.put(("init", {"traces": traces, "statsd": statsd}))
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-P", str(EXPORTER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=dict(environ),
                close_fds=True,
            )
        except OSError as exc:
            self._proc = None
            self._gone.set()
            _log.warning("observability_exporter_unavailable", error=repr(exc))
            return
        threading.Thread(target=self._write, name="sluiceway-exporter-out", daemon=True).start()
        threading.Thread(target=self._read, name="sluiceway-exporter-in", daemon=True).start()

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        state = "gone" if self._gone.is_set() else "closing" if self._closing else "running"
        return f"ExporterProcess(pid={pid}, {state})"

    @property
    def alive(self) -> bool:
        return not (self._gone.is_set() or self._closing or self._forked())

    def _forked(self) -> bool:
        return os.getpid() != self._pid

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue ``message`` for the child (never blocks; dropped once it is gone)."""
        if not self._gone.is_set() and not self._forked():
            self._queue.put(message)

    def flush(self) -> bool:
        """Wait until the child has sent everything queued so far; False if it could not."""
        with self._lock:
            if self._gone.is_set() or self._closing or self._forked():
                return False
            token = next(self._tokens)
            done = self._waiting[token] = threading.Event()
            self._queue.put(("flush", token))
            self._urgent.set()
        if not done.wait(self.timeout):
            _log.warning("observability_flush_timed_out", seconds=self.timeout)
            return False
        return not self._gone.is_set()

    def release(self) -> None:
        """One user is done with this exporter (see :func:`shared_exporter`); the last
        one closes it."""
        with _shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            for key, exporter in list(_shared.items()):
                if exporter is self:
                    del _shared[key]
        self.close()

    def close(self) -> None:
        """Flush, stop the child and wait for it (up to ``timeout``). Idempotent."""
        with self._lock:
            if self._closing or self._forked():
                return
            self._closing = True
            self._queue.put(("close",))
            self._queue.put(None)
            self._urgent.set()
        proc = self._proc
        if proc is None:
            return
        if not self._closed.wait(self.timeout) and not self._gone.is_set():
            _log.warning("observability_flush_timed_out", seconds=self.timeout)
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)

    # -- threads -----------------------------------------------------------------------

    def _write(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        out = proc.stdin
        while True:
            first = self._queue.get()
            if first is not None and self._urgent.wait(GATHER_SECONDS):
                self._urgent.clear()
            frame = [first]
            while first is not None and len(frame) < _FRAME:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                frame.append(item)
                if item is None:
                    break
            stop = frame[-1] is None
            messages = [m for m in frame if m is not None]
            try:
                if messages:
                    out.write(pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL))
                    out.flush()
                if stop:
                    out.close()
                    return
            except (OSError, ValueError):
                self._lost("write")
                return

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        source = proc.stdout
        while True:
            try:
                message = pickle.load(source)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            kind = message[0]
            if kind == "flushed":
                with self._lock:
                    done = self._waiting.pop(message[1], None)
                if done is not None:
                    done.set()
            elif kind == "ready":
                for what, error in message[1].items():
                    if error:
                        self.unavailable[what] = error
                        event = "tracing_unavailable" if what == "traces" else "metrics_unavailable"
                        _log.warning(event, error=error, where="exporter process")
            elif kind == "closed":
                self._closed.set()
        self._lost("read")

    def _lost(self, where: str) -> None:
        """The pipe broke: release every waiter, and say so unless we were closing it."""
        with self._lock:
            if self._gone.is_set():
                return
            self._gone.set()
            waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            done.set()
        self._closed.set()
        if not self._closing:
            code = self._proc.poll() if self._proc is not None else None
            _log.warning("observability_exporter_exited", returncode=code, where=where)


_shared_lock = threading.Lock()
_shared: dict[Any, ExporterProcess] = {}


def shared_exporter(
    *,
    traces: Mapping[str, Any] | None,
    statsd: Mapping[str, Any] | None,
    environ: Mapping[str, str],
    users: int = 1,
) -> ExporterProcess:
    """An exporter process for these settings, shared with the other users of the same.

    A process that builds many pipelines (an Airflow worker, a notebook) gets one
    exporter per distinct setting, not one per pipeline: what differs between
    pipelines (their tags) travels with each call. The caller takes ``users``
    references (one per object that will call :meth:`ExporterProcess.release`); the
    last release closes it.
    """
    key = (_frozen(traces), _frozen(statsd), environ.get("DD_INSTRUMENTATION_TELEMETRY_ENABLED"))
    with _shared_lock:
        exporter = _shared.get(key)
        if exporter is None or not exporter.alive:
            exporter = _shared[key] = ExporterProcess(traces=traces, statsd=statsd, environ=environ)
        exporter._users += users
    return exporter


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


class _Span:
    """A span as the run's process knows it: its ids."""

    __slots__ = ("span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id

    def __repr__(self) -> str:
        return f"_Span(trace_id={self.trace_id:x}, span_id={self.span_id})"


class ProcessTraceBackend:
    """A :class:`~sluiceway.observability.spans.SpanBackend` whose spans the exporter
    process makes. Ids are chosen here, so ``correlation`` needs no answer from it."""

    def __init__(
        self, exporter: ExporterProcess, fields: Any, *, description: str = "datadog"
    ) -> None:
        self.exporter = exporter
        self._fields = fields
        self.description = description
        self._closed = False

    def __repr__(self) -> str:
        return f"ProcessTraceBackend({self.description}, {self.exporter!r})"

    def start_span(
        self,
        name: str,
        *,
        parent: Any | None,
        start: float,
        resource: str,
        tags: Mapping[str, str],
        ids: tuple[int, int] | None = None,
    ) -> _Span:
        if ids is not None:
            span = _Span(*ids)
        else:
            trace_id = parent.trace_id if parent is not None else new_trace_id()
            span = _Span(trace_id, new_span_id())
        parent_id = parent.span_id if parent is not None else None
        self.exporter.send(
            ("start", span.span_id, span.trace_id, parent_id, name, start, resource, dict(tags))
        )
        return span

    def set_tags(self, span: _Span, tags: Mapping[str, str]) -> None:
        self.exporter.send(("tags", span.span_id, dict(tags)))

    def set_metrics(self, span: _Span, metrics: Mapping[str, float]) -> None:
        self.exporter.send(("metrics", span.span_id, dict(metrics)))

    def set_error(self, span: _Span, error_type: str | None, message: str | None) -> None:
        self.exporter.send(("error", span.span_id, error_type, message))

    def finish(self, span: _Span, end: float) -> None:
        self.exporter.send(("finish", span.span_id, end))

    def correlation(self, span: _Span) -> dict[str, str]:
        fields: dict[str, str] = self._fields(span.trace_id, span.span_id)
        return fields

    def flush(self) -> None:
        self.exporter.flush()

    def close(self) -> None:
        """Flush; the exporter stops once its last user is done (see :func:`shared_exporter`)."""
        if not self._closed:
            self._closed = True
            self.exporter.flush()
            self.exporter.release()


class ProcessStatsd:
    """A :class:`~sluiceway.observability.statsd.StatsdClient` whose datagrams the
    exporter process sends (thread-safe: alert channels post from their own thread).

    ``constant_tags`` go with every metric and event (the exporter may serve several
    pipelines, each with its own).
    """

    def __init__(self, exporter: ExporterProcess, constant_tags: Sequence[str] = ()) -> None:
        self.exporter = exporter
        self.constant_tags = list(dict.fromkeys(constant_tags))
        self._closed = False

    def __repr__(self) -> str:
        return f"ProcessStatsd({self.exporter!r})"

    def _tags(self, tags: list[str] | None) -> list[str] | None:
        return [*self.constant_tags, *tags] if tags else list(self.constant_tags) or None

    def increment(self, metric: str, value: float = 1, tags: list[str] | None = None) -> None:
        self.exporter.send(("statsd", "increment", (metric, value), {"tags": self._tags(tags)}))

    def gauge(self, metric: str, value: float, tags: list[str] | None = None) -> None:
        self.exporter.send(("statsd", "gauge", (metric, value), {"tags": self._tags(tags)}))

    def histogram(self, metric: str, value: float, tags: list[str] | None = None) -> None:
        self.exporter.send(("statsd", "histogram", (metric, value), {"tags": self._tags(tags)}))

    def event(
        self,
        title: str,
        message: str,
        alert_type: str | None = None,
        aggregation_key: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        kwargs = {
            "alert_type": alert_type,
            "aggregation_key": aggregation_key,
            "tags": self._tags(tags),
        }
        self.exporter.send(("statsd", "event", (title, message), kwargs))

    def flush(self) -> bool:
        return self.exporter.flush()

    def close(self) -> None:
        """Flush; the exporter stops once its last user is done (see :func:`shared_exporter`)."""
        if not self._closed:
            self._closed = True
            self.exporter.flush()
            self.exporter.release()
