"""ddtrace and the DogStatsD client, usable without the rest of sluiceway.

Two users:

- in the run's own process, :class:`~sluiceway.observability.spans.DatadogTraceBackend`
  and :func:`~sluiceway.observability.statsd.statsd_client` are built on
  :class:`DatadogTracer` and :func:`make_statsd`;
- the **exporter process** (:class:`~sluiceway.observability.exporter.ExporterProcess`)
  runs this file by path, ``python -P …/_ddexport.py``: run that way it imports no
  part of the ``sluiceway`` package (about 0.7 s of imports), only the standard
  library and then ddtrace or ``datadog``. :func:`serve` reads the run's span and
  metric calls from stdin and replays them here, so importing ddtrace (a few tenths
  of a second of CPU holding the GIL) and encoding spans happen outside the run.

Only the standard library is imported at module level; nothing here imports
sluiceway.

The pipe protocol (pickle frames; each parent → child frame is a list of messages):

- ``("init", {"traces": {...} | None, "statsd": {...} | None})``: what to make;
  the child answers ``("ready", {"traces": error | None, "statsd": error | None})``;
- ``("start", span_id, trace_id, parent_span_id | None, name, start, resource, tags)``,
  ``("tags", span_id, tags)``, ``("metrics", span_id, metrics)``,
  ``("error", span_id, error_type, message)``, ``("finish", span_id, end)``;
- ``("statsd", method, args, kwargs)``: a call on the DogStatsD client;
- ``("flush", token)``: send what is buffered; answered ``("flushed", token)``;
- ``("close",)``: flush, stop, answer ``("closed",)`` and exit. End of input
  (the run's process died) does the same without the answer.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

#: ddtrace's own copy of the DogStatsD client (same wire format as ``datadog``'s).
DDTRACE_DOGSTATSD = "ddtrace.vendor.dogstatsd.base"


class DatadogTracer:
    """Spans to the Datadog agent through ddtrace's global tracer (imported here).

    ``agent_url`` points the tracer at an agent; when ddtrace is already imported
    (e.g. under ``ddtrace-run``) its own configuration is kept unless they differ.
    A span started without a parent and without ``ids`` joins the caller's active
    trace (an Airflow task traced by the user).
    """

    def __init__(
        self,
        *,
        service: str,
        env: str | None = None,
        version: str | None = None,
        agent_url: str | None = None,
    ) -> None:
        if agent_url and "ddtrace" not in sys.modules:
            os.environ["DD_TRACE_AGENT_URL"] = agent_url
        module = importlib.import_module("ddtrace.trace")
        self._tracer: Any = module.tracer
        self._context: Any = module.Context
        if agent_url and getattr(self._tracer, "_agent_url", agent_url) != agent_url:
            # ddtrace was imported before (ddtrace-run, its pytest plugin): re-point its
            # writer. Internal API, hence guarded; the env variable covers the usual case.
            with contextlib.suppress(Exception):
                self._tracer._agent_url = agent_url
                self._tracer._recreate()
        self.service = service
        self.env = env
        self.version = version

    def __repr__(self) -> str:
        return f"{type(self).__name__}(service={self.service!r}, env={self.env!r})"

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
        if parent is None:
            if ids is None:
                parent = self._tracer.context_provider.active()
            else:
                parent = self._context(trace_id=ids[0])
        span = self._tracer.start_span(
            name, child_of=parent, service=self.service, resource=resource, span_type="worker"
        )
        if ids is not None:
            span.span_id = ids[1]
        span.start = start
        if self.env:
            span.set_tag("env", self.env)
        if self.version:
            span.set_tag("version", self.version)
        span.set_tag("component", "sluiceway")
        span.set_tags(dict(tags))
        return span

    def set_tags(self, span: Any, tags: Mapping[str, str]) -> None:
        span.set_tags(dict(tags))

    def set_metrics(self, span: Any, metrics: Mapping[str, float]) -> None:
        span.set_metrics(dict(metrics))

    def set_error(self, span: Any, error_type: str | None, message: str | None) -> None:
        span.error = 1
        if error_type:
            span.set_tag("error.type", error_type)
        if message:
            span.set_tag("error.message", message)

    def finish(self, span: Any, end: float) -> None:
        span.finish(finish_time=max(end, span.start))

    def flush(self) -> None:
        self._tracer.flush()

    def close(self) -> None:
        # The tracer is process-wide (ddtrace shuts it down at exit): flush only.
        self.flush()


def make_statsd(
    base: Any,
    *,
    host: str | None,
    port: int | None,
    socket_path: str | None = None,
    constant_tags: Sequence[str] = (),
    replaced_keys: Sequence[str] = (),
    flush_interval: float = 0.3,
    telemetry: bool = True,
) -> Any:
    """A buffered ``DogStatsd`` from module ``base``; ``constant_tags`` win over env tags.

    ``base`` is ``datadog.dogstatsd.base`` or ddtrace's copy (:data:`DDTRACE_DOGSTATSD`).
    The tags the client adds itself from ``DD_*`` variables are dropped where
    ``constant_tags`` or ``replaced_keys`` (tag keys a caller sends with each call)
    name the same key.
    """
    client = base.DogStatsd(
        host=(None if base.__name__ != DDTRACE_DOGSTATSD else "localhost") if socket_path else host,
        port=None if socket_path else port,
        socket_path=socket_path,
        disable_buffering=False,
        flush_interval=flush_interval,
        disable_telemetry=not telemetry,
    )
    # The client adds env:/service:/version: from DD_* variables itself; the
    # configured values (which default to those variables) replace them.
    ours = list(dict.fromkeys(constant_tags))
    keys = {t.split(":", 1)[0] for t in ours} | set(replaced_keys)
    inherited = [t for t in client.constant_tags if t.split(":", 1)[0] not in keys]
    client.constant_tags = inherited + ours
    return client


def stop_statsd(client: Any) -> None:
    """Flush, stop the client's flush thread and close its socket."""
    client.flush()
    stop = getattr(client, "stop", None)
    if stop is not None:
        stop(timeout=2.0)
    else:
        # ddtrace's copy has no public stop, and its private one joins a thread
        # that sleeps out its interval: flushed above, just tell the (daemon)
        # thread to end.
        stopping = getattr(client, "_flush_thread_stop", None)
        if stopping is not None:
            stopping.set()
    client.close_socket()


class _Replayer:
    """The exporter process's side: the real tracer and client, and the open spans."""

    def __init__(self) -> None:
        self.tracer: DatadogTracer | None = None
        self.statsd: Any = None
        self.spans: dict[int, Any] = {}
        self.errors = 0

    def init(self, traces: Mapping[str, Any] | None, statsd: Mapping[str, Any] | None) -> Any:
        failed: dict[str, str | None] = {"traces": None, "statsd": None}
        if traces is not None:
            try:
                self.tracer = DatadogTracer(**traces)
            except Exception as exc:
                failed["traces"] = repr(exc)
        if statsd is not None:
            try:
                options = dict(statsd)
                base = importlib.import_module(options.pop("module"))
                self.statsd = make_statsd(base, **options)
            except Exception as exc:
                failed["statsd"] = repr(exc)
        return ("ready", failed)

    def apply(self, message: tuple[Any, ...]) -> Any:
        """Do what ``message`` says; returns the answer to send, if any."""
        kind = message[0]
        tracer = self.tracer
        if kind == "start":
            _, span_id, trace_id, parent_id, name, start, resource, tags = message
            if tracer is not None:
                parent = self.spans.get(parent_id) if parent_id is not None else None
                self.spans[span_id] = tracer.start_span(
                    name,
                    parent=parent,
                    start=start,
                    resource=resource,
                    tags=tags,
                    ids=(trace_id, span_id),
                )
        elif kind in ("tags", "metrics", "error", "finish"):
            span = self.spans.get(message[1])
            if tracer is not None and span is not None:
                if kind == "tags":
                    tracer.set_tags(span, message[2])
                elif kind == "metrics":
                    tracer.set_metrics(span, message[2])
                elif kind == "error":
                    tracer.set_error(span, message[2], message[3])
                else:
                    del self.spans[message[1]]
                    tracer.finish(span, message[2])
        elif kind == "statsd":
            if self.statsd is not None:
                _, method, args, kwargs = message
                getattr(self.statsd, method)(*args, **kwargs)
        elif kind == "flush":
            self.flush()
            return ("flushed", message[1])
        elif kind == "init":
            return self.init(message[1].get("traces"), message[1].get("statsd"))
        return None

    def flush(self) -> None:
        for flush in (
            self.tracer.flush if self.tracer is not None else None,
            self.statsd.flush if self.statsd is not None else None,
        ):
            if flush is not None:
                try:
                    flush()
                except Exception:
                    self.errors += 1

    def close(self) -> None:
        self.flush()
        if self.statsd is not None:
            with contextlib.suppress(Exception):
                stop_statsd(self.statsd)


def serve(source: IO[bytes], replies: IO[bytes]) -> int:
    """The exporter process's loop: replay frames from ``source`` until close or its end."""
    replayer = _Replayer()

    def answer(message: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            pickle.dump(message, replies, protocol=pickle.HIGHEST_PROTOCOL)
            replies.flush()

    while True:
        try:
            frame = pickle.load(source)
        except (EOFError, OSError, pickle.UnpicklingError):
            replayer.close()  # the run's process is gone: send what it left
            return 0
        for message in frame:
            if message[0] == "close":
                replayer.close()
                answer(("closed", replayer.errors))
                return 0
            try:
                reply = replayer.apply(message)
            except Exception:
                replayer.errors += 1
                continue
            if reply is not None:
                answer(reply)


def main() -> None:
    # Lowest priority: the run's threads get the cores whenever they want them; this
    # process works in the gaps (and keeps a small share when there are none).
    with contextlib.suppress(OSError):
        os.nice(19)
    # The run's process decides when this one ends (it closes stdin): a Ctrl-C or a
    # SIGTERM sent to the whole process group must not cut off the last flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers get a private copy of stdout; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    code = serve(sys.stdin.buffer, replies)
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything was flushed above: skip tearing down ddtrace at exit.
    os._exit(code)


if __name__ == "__main__":
    main()
