"""The spec's ``observability:`` section and the event hooks it turns into.

::

    observability:
      datadog: true                  # traces, metrics and events with the defaults below
      # or
      datadog:
        traces: true                 # APM spans through ddtrace
        metrics: true                # DogStatsD metrics
        events: true                 # Datadog events on dead letters and run failure
        service: orders              # DD_SERVICE, else "sluiceway"
        env: prod                    # DD_ENV
        version: "1.4"               # DD_VERSION
        tags: {team: data}           # DD_TAGS ("team:data,tier:1") plus these
        agent_url: http://dd-agent:8126   # DD_TRACE_AGENT_URL, else http://$DD_AGENT_HOST:8126
        statsd_host: dd-agent        # DD_DOGSTATSD_URL / DD_DOGSTATSD_HOST / DD_AGENT_HOST
        statsd_port: 8125            # DD_DOGSTATSD_PORT
        exporter: auto               # process | thread: where ddtrace / datadog run
      opentelemetry:                 # traces over OTLP/HTTP instead of ddtrace
        endpoint: http://collector:4318/v1/traces   # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT …

Nothing is on by default, and then nothing is imported: :func:`build_hooks` returns
only the hooks it was given. Enabled, it checks that ddtrace / datadog /
OpenTelemetry (the ``datadog`` and ``otel`` extras) are installed, and either
starts the exporter process that imports ddtrace / ``datadog`` and sends what the
run hands it (:mod:`sluiceway.observability.exporter`; Datadog's default), or
imports them in loader threads overlapping the start of the run; it returns
:class:`ObservabilityHooks`, a list of hooks with a
:meth:`~ObservabilityHooks.close` that flushes metrics and traces. Close is also
run at interpreter exit and, when SIGTERM would otherwise kill the process
outright, from a SIGTERM handler that flushes and then dies of SIGTERM as before.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from sluiceway.core.errors import MissingExtraError
from sluiceway.core.events import EventKind, Hook, StageEvent

if TYPE_CHECKING:
    from sluiceway.observability.spans import SpanBackend

T = TypeVar("T")

_log = structlog.get_logger("sluiceway.observability")

#: What ``exporter: auto`` looks for in ``sys.modules``: for traces, and for metrics alone.
DDTRACE_MODULE = "ddtrace"
DATADOG_DOGSTATSD = "datadog.dogstatsd.base"

__all__ = [
    "DatadogConfig",
    "DatadogSettings",
    "ObservabilityConfig",
    "ObservabilityHooks",
    "OpenTelemetryConfig",
    "OpenTelemetrySettings",
    "build_hooks",
    "close_all",
]


def _pairs(value: Any, sep: str) -> Any:
    """``"a:1,b:2"`` or ``["a:1"]`` → ``{"a": "1"}``; mappings pass through."""
    if isinstance(value, str):
        value = [part for part in value.replace(" ", ",").split(",") if part]
    if isinstance(value, list | tuple):
        out: dict[str, str] = {}
        for item in value:
            key, _, val = str(item).partition(sep)
            out[key.strip()] = val.strip()
        return out
    return value


def _dogstatsd_url(url: str | None) -> tuple[str | None, int | None, str | None]:
    """``udp://host:port`` or ``unix:///path`` (``DD_DOGSTATSD_URL``) → host, port, socket."""
    if not url:
        return None, None, None
    parsed = urlsplit(url)
    if parsed.scheme in ("unix", "unixgram", "unixstream"):
        return None, None, parsed.path or None
    return parsed.hostname, parsed.port, None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatadogConfig(_Section):
    """``observability.datadog``: unset fields come from the standard ``DD_*`` variables."""

    traces: bool = Field(default=True, description="APM spans through ddtrace")
    metrics: bool = Field(default=True, description="DogStatsD metrics")
    events: bool = Field(
        default=True, description="Datadog events on dead-lettered rows and run failure"
    )
    service: str | None = Field(default=None, description="DD_SERVICE, else 'sluiceway'")
    env: str | None = Field(default=None, description="DD_ENV")
    version: str | None = Field(default=None, description="DD_VERSION")
    tags: dict[str, str] = Field(
        default_factory=dict, description="extra tags on every metric, event and run span"
    )
    agent_url: str | None = Field(
        default=None, description="trace agent; DD_TRACE_AGENT_URL, else DD_AGENT_HOST:8126"
    )
    statsd_host: str | None = Field(
        default=None,
        description="DD_DOGSTATSD_URL, else DD_DOGSTATSD_HOST, else DD_AGENT_HOST, else localhost",
    )
    statsd_port: int | None = Field(default=None, ge=1, le=65535, description="DD_DOGSTATSD_PORT")
    statsd_socket: str | None = Field(
        default=None,
        description="a DogStatsD unix socket instead of UDP (DD_DOGSTATSD_URL=unix:///…)",
    )
    events_min_interval: float = Field(
        default=600.0, ge=0, description="seconds between two dead-letter events of a run"
    )
    exporter: Literal["auto", "process", "thread"] = Field(
        default="auto",
        description="where ddtrace and the DogStatsD client run: 'process', a child "
        "process fed through a pipe (the run never imports them); 'thread', in the run's "
        "process, imported by a loader thread; 'auto', 'process' unless the run's "
        "process has imported them already (ddtrace-run, an Airflow worker tracing its "
        "tasks: spans then join its active trace)",
    )
    instrumentation_telemetry: bool = Field(
        default=False,
        description="ddtrace's own telemetry about itself (its settings and the process's "
        "package list, polled from sys.modules); DD_INSTRUMENTATION_TELEMETRY_ENABLED wins",
    )

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        return _pairs(value, ":")

    def resolve(self, environ: Mapping[str, str] | None = None) -> DatadogSettings:
        """The effective settings: this section over the ``DD_*`` variables over defaults."""
        env = os.environ if environ is None else environ
        agent_host = env.get("DD_AGENT_HOST") or "localhost"
        agent_url = (
            self.agent_url
            or env.get("DD_TRACE_AGENT_URL")
            or f"http://{agent_host}:{env.get('DD_TRACE_AGENT_PORT') or 8126}"
        )
        url_host, url_port, url_socket = _dogstatsd_url(env.get("DD_DOGSTATSD_URL"))
        explicit = self.statsd_host or self.statsd_port or self.statsd_socket
        if explicit:
            url_host = url_port = url_socket = None
        host = self.statsd_host or url_host or env.get("DD_DOGSTATSD_HOST") or agent_host
        port = self.statsd_port or url_port or int(env.get("DD_DOGSTATSD_PORT") or 8125)
        socket_path = self.statsd_socket or url_socket or env.get("DD_DOGSTATSD_SOCKET") or None
        tags = {**_pairs(env.get("DD_TAGS", ""), ":"), **self.tags}
        return DatadogSettings(
            traces=self.traces,
            metrics=self.metrics,
            events=self.events,
            service=self.service or env.get("DD_SERVICE") or "sluiceway",
            env=self.env or env.get("DD_ENV") or None,
            version=self.version or env.get("DD_VERSION") or None,
            tags=tags,
            agent_url=agent_url,
            statsd_host=host,
            statsd_port=port,
            statsd_socket=socket_path,
            events_min_interval=self.events_min_interval,
            exporter=self.exporter,
            instrumentation_telemetry=_flag(
                env.get("DD_INSTRUMENTATION_TELEMETRY_ENABLED"), self.instrumentation_telemetry
            ),
        )


@dataclass(frozen=True, slots=True)
class DatadogSettings:
    """Resolved Datadog settings (see :meth:`DatadogConfig.resolve`)."""

    traces: bool
    metrics: bool
    events: bool
    service: str
    env: str | None
    version: str | None
    tags: Mapping[str, str]
    agent_url: str
    statsd_host: str
    statsd_port: int
    statsd_socket: str | None
    events_min_interval: float
    exporter: Literal["auto", "process", "thread"] = "auto"
    instrumentation_telemetry: bool = False

    def in_process(self, *, traces: bool) -> bool:
        """Whether ddtrace / ``datadog`` run in this process (``exporter``, and for
        ``auto`` whether the module the run needs is imported already, or whether
        this process can start a Python interpreter at all)."""
        if self.exporter == "thread":
            return True
        if not can_start_python():
            if self.exporter == "process":
                _log.warning(
                    "observability_exporter_in_process",
                    reason=f"sys.executable ({sys.executable!r}) cannot run the exporter",
                )
            return True
        if self.exporter == "process":
            return False
        return (DDTRACE_MODULE if traces else DATADOG_DOGSTATSD) in sys.modules


def can_start_python() -> bool:
    """Whether ``sys.executable`` can run the exporter process: not a frozen application,
    not an embedding server (uWSGI, mod_wsgi) whose executable is not Python's, and the
    exporter's program is a file on disk (not inside a zip)."""
    from sluiceway.observability.exporter import EXPORTER_SCRIPT

    name = os.path.basename(sys.executable or "").lower()
    return (
        not getattr(sys, "frozen", False)
        and name.startswith(("python", "pypy"))
        and EXPORTER_SCRIPT.is_file()
    )


class OpenTelemetryConfig(_Section):
    """``observability.opentelemetry``: OTLP/HTTP traces; unset fields from ``OTEL_*``."""

    endpoint: str | None = Field(
        default=None,
        description="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT "
        "+ /v1/traces, else http://localhost:4318/v1/traces",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="request headers (OTEL_EXPORTER_OTLP_HEADERS)"
    )
    service: str | None = Field(default=None, description="OTEL_SERVICE_NAME, else 'sluiceway'")
    env: str | None = Field(default=None, description="deployment.environment (DD_ENV)")
    version: str | None = Field(default=None, description="service.version")
    resource_attributes: dict[str, str] = Field(
        default_factory=dict, description="merged over OTEL_RESOURCE_ATTRIBUTES"
    )
    timeout: float | None = Field(default=None, gt=0, description="export timeout, seconds")

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        return _pairs(value, "=")

    def resolve(self, environ: Mapping[str, str] | None = None) -> OpenTelemetrySettings:
        env = os.environ if environ is None else environ
        endpoint = self.endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint:
            base = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318").rstrip("/")
            endpoint = base + "/v1/traces"
        headers = {
            **_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""), "="),
            **{k: v.get_secret_value() for k, v in self.headers.items()},
        }
        return OpenTelemetrySettings(
            endpoint=endpoint,
            headers=headers,
            service=self.service or env.get("OTEL_SERVICE_NAME") or "sluiceway",
            env=self.env or env.get("DD_ENV") or None,
            version=self.version or None,
            resource_attributes=dict(self.resource_attributes),
            timeout=self.timeout,
        )


@dataclass(frozen=True, slots=True)
class OpenTelemetrySettings:
    """Resolved OpenTelemetry settings; ``headers`` are hidden from the repr."""

    endpoint: str
    headers: Mapping[str, str]
    service: str
    env: str | None
    version: str | None
    resource_attributes: Mapping[str, str]
    timeout: float | None

    def __repr__(self) -> str:
        return (
            f"OpenTelemetrySettings(endpoint={self.endpoint!r}, service={self.service!r}, "
            f"env={self.env!r}, headers=[{', '.join(sorted(self.headers))}])"
        )


class ObservabilityConfig(_Section):
    """``observability:`` — off unless ``datadog`` or ``opentelemetry`` is set.

    Each accepts ``true`` (all defaults), ``false`` or a mapping. Traces go to one
    exporter: with ``opentelemetry`` set, set ``datadog.traces: false`` (Datadog
    metrics and events still work alongside).
    """

    datadog: DatadogConfig | bool = Field(
        default=False, description="true, false, or Datadog settings"
    )
    opentelemetry: OpenTelemetryConfig | bool = Field(
        default=False, description="true, false, or OTLP trace exporter settings"
    )

    @property
    def datadog_config(self) -> DatadogConfig | None:
        if self.datadog is True:
            return DatadogConfig()
        return self.datadog or None

    @property
    def opentelemetry_config(self) -> OpenTelemetryConfig | None:
        if self.opentelemetry is True:
            return OpenTelemetryConfig()
        return self.opentelemetry or None

    @property
    def enabled(self) -> bool:
        return self.datadog_config is not None or self.opentelemetry_config is not None

    @model_validator(mode="after")
    def _one_tracer(self) -> ObservabilityConfig:
        dd = self.datadog_config
        if dd is not None and dd.traces and self.opentelemetry_config is not None:
            raise ValueError(
                "traces go to one exporter: with opentelemetry set, set datadog.traces: false"
            )
        return self


# -- hooks ------------------------------------------------------------------------------

# Hooks not closed yet, by id: closed at exit or on SIGTERM.
_OPEN: dict[int, ObservabilityHooks] = {}
_lock = threading.Lock()
_installed = False


class ObservabilityHooks(list[Hook]):
    """The hooks to pass to a pipeline, plus :meth:`flush` and :meth:`close`.

    Also a context manager (``with build_hooks(...) as hooks:``). Closing twice is
    harmless; hooks still called after closing send nothing further.
    """

    def __init__(
        self,
        hooks: Iterable[Hook] = (),
        *,
        flushers: Sequence[Callable[[], Any]] = (),
        closers: Sequence[Callable[[], Any]] = (),
        description: str = "off",
    ) -> None:
        super().__init__(hooks)
        self._flushers = list(flushers)
        self._closers = list(closers)
        self.description = description
        self.closed = False
        if self._closers:
            _OPEN[id(self)] = self

    def __repr__(self) -> str:
        return f"ObservabilityHooks({self.description}, hooks={len(self)})"

    @property
    def enabled(self) -> bool:
        return bool(self._closers)

    def flush(self) -> None:
        """Send buffered metrics and finished spans now."""
        for flush in self._flushers:
            with contextlib.suppress(Exception):
                flush()

    def close(self) -> None:
        """Flush, then release clients (sockets, exporter threads)."""
        if self.closed:
            return
        self.closed = True
        self.flush()
        for close in self._closers:
            with contextlib.suppress(Exception):
                close()
        _OPEN.pop(id(self), None)

    def __enter__(self) -> ObservabilityHooks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def close_all() -> None:
    """Close every open :class:`ObservabilityHooks` (run at exit and on SIGTERM)."""
    for hooks in list(_OPEN.values()):
        hooks.close()


def _on_sigterm(signum: int, _: FrameType | None) -> None:
    close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_exit_flush() -> None:
    """atexit always; a SIGTERM handler only where SIGTERM would kill without cleanup."""
    global _installed  # noqa: PLW0603 - once per process
    with _lock:
        if _installed:
            return
        _installed = True
        atexit.register(close_all)
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    signal.signal(signal.SIGTERM, _on_sigterm)


def _flag(value: str | None, default: bool) -> bool:
    """A ``DD_*`` boolean variable as ddtrace reads it (``true``/``1``), else ``default``."""
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _ddtrace_environment(dd: DatadogSettings, environ: dict[str, str] | None = None) -> None:
    """Settings ddtrace reads once, at import: written to the environment before it loads.

    Only ``DD_INSTRUMENTATION_TELEMETRY_ENABLED``. ``environ`` is the exporter process's
    environment; without it, this process's, and only while ddtrace is not imported
    (under ``ddtrace-run`` its configuration stands). With it on, ddtrace polls
    ``sys.modules`` for the package list it reports, a measurable cost in a short run.
    """
    value = str(dd.instrumentation_telemetry).lower()
    if environ is not None:
        environ["DD_INSTRUMENTATION_TELEMETRY_ENABLED"] = value
    elif "ddtrace" not in sys.modules:
        os.environ["DD_INSTRUMENTATION_TELEMETRY_ENABLED"] = value


#: Where ddtrace's module watchdog caches a module's resolved file
#: (``ddtrace.internal.module.origin`` reads it before computing it).
_DD_ORIGIN = "__dd_origin__"


def _seed_module_origins() -> int:
    """Give each loaded module the resolved file ddtrace's module watchdog would compute.

    Importing ddtrace installs that watchdog, and its first import hook resolves the
    file of every module already loaded, ``Path(__file__).resolve()`` each: a
    pure-Python realpath, one ``lstat`` per path component. With ~900 modules loaded
    the import took 0.12-0.17 s longer for it (measured), holding the GIL while the
    run goes on; the same paths resolved once per folder took 0.01-0.03 s. Where the
    attribute is set already, or a module has no file, ddtrace computes it itself; if
    a ddtrace release stops reading the attribute, this only costs its own few
    milliseconds.
    Returns how many modules were given their path.
    """
    resolved: dict[str, str] = {}
    seeded = 0
    for module in list(sys.modules.values()):
        try:
            namespace = object.__getattribute__(module, "__dict__")
            file = namespace.get("__file__")
            if not isinstance(file, str) or _DD_ORIGIN in namespace:
                continue
            folder, name = os.path.split(file)
            real = resolved.get(folder)
            if real is None:
                real = resolved[folder] = os.path.realpath(folder)
            path = os.path.join(real, name)
            if os.path.islink(path):
                path = os.path.realpath(path)
            namespace[_DD_ORIGIN] = Path(path)
        except (AttributeError, TypeError, ValueError, OSError):
            continue
        seeded += 1
    return seeded


def _need(module: str, *, extra: str, what: str) -> None:
    """Fail now, naming the extra, when an optional package is missing (without importing it)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(what, extra, module)


_loading = threading.Lock()

#: Longest a loader thread waits for the run to start flowing before importing anyway.
GATE_TIMEOUT = 5.0


#: Events after which a run is past its start-up: a batch went all the way through,
#: or the run is over.
_FLOWING = frozenset(
    {
        EventKind.BATCH_COMMITTED,
        EventKind.BATCH_SKIPPED,
        EventKind.RUN_FINISHED,
        EventKind.RUN_FAILED,
    }
)


class _Gate:
    """A hook that opens once the run's first batch is committed (or the run ends).

    Loader threads wait for it before importing a vendor package: during the run's
    own start-up (imports, spec, state) the main thread holds the GIL and an import
    beside it only adds up; once batches flow, the main thread spends its time in
    Arrow, Parquet and DuckDB code that releases the GIL, and the import runs on the
    other core. Measured: a 5M-row file pipeline's extra time with tracing and
    metrics on fell from ~0.7 s to ~0.35 s when the import started a second in.
    """

    def __init__(self) -> None:
        self.opened = threading.Event()

    def __call__(self, event: StageEvent) -> None:
        if event.kind in _FLOWING:
            self.opened.set()


def _load(module: str, factory: Callable[[], T], gate: _Gate | None = None) -> Future[T]:
    """``factory()`` as a future: made now if ``module`` is imported already, else in a
    loader thread (after ``gate`` opens), so importing a vendor package (up to a
    second) overlaps the run."""
    future: Future[T] = Future()

    def make(wait: bool) -> None:
        if wait and gate is not None:
            gate.opened.wait(GATE_TIMEOUT)
        try:
            # One loader at a time: the tracer and the DogStatsD client may both
            # import ddtrace, and two threads importing one package's modules in
            # different orders trip Python's import deadlock detection.
            with _loading:
                if module.partition(".")[0] == "ddtrace" and "ddtrace" not in sys.modules:
                    _seed_module_origins()
                made = factory()
            future.set_result(made)
        except BaseException as exc:
            future.set_exception(exc)

    if module in sys.modules:
        make(False)
    else:
        threading.Thread(
            target=make, args=(True,), name=f"sluiceway-load-{module}", daemon=True
        ).start()
    return future


def _maybe_lazy(
    module: str,
    factory: Callable[[], SpanBackend],
    fields: Callable[[int, int], dict[str, str]],
    gate: _Gate,
) -> SpanBackend:
    """The backend itself when its vendor module is loaded (a run then joins the caller's
    active trace); otherwise a :class:`LazyTraceBackend` over a loader thread."""
    from sluiceway.observability.spans import LazyTraceBackend

    if module in sys.modules:
        return factory()
    return LazyTraceBackend(_load(module, factory, gate), fields)


def _statsd_module(*, traces: bool) -> str:
    """The DogStatsD module: with Datadog tracing on, ddtrace is imported anyway and
    carries the same client; importing ``datadog`` too would cost ~0.2 s more."""
    from sluiceway.observability._ddexport import DDTRACE_DOGSTATSD

    return DDTRACE_DOGSTATSD if traces else DATADOG_DOGSTATSD


def _constant_tags(
    dd: DatadogSettings, pipeline: str, source_type: str | None, sink_type: str | None
) -> list[str]:
    """The tags every metric and event of the run carries."""
    from sluiceway.observability.statsd import tag

    common = {"pipeline": pipeline, "source": source_type, "sink": sink_type}
    common |= {"env": dd.env, "service": dd.service, "version": dd.version}
    return [tag(k, v) for k, v in {**common, **dd.tags}.items() if v]


def _start_exporter(dd: DatadogSettings, *, traces: bool, statsd: bool) -> Any:
    """The exporter process for ``dd``'s traces and/or DogStatsD client, started now
    (it imports the vendor package on the other core while the run starts), or the
    one already serving the same settings in this process."""
    from sluiceway.observability.exporter import shared_exporter

    environ = dict(os.environ)
    _ddtrace_environment(dd, environ)
    trace_options = None
    if traces:
        trace_options = {
            "service": dd.service,
            "env": dd.env,
            "version": dd.version,
            "agent_url": dd.agent_url,
        }
    statsd_options = None
    if statsd:
        statsd_options = {
            "module": _statsd_module(traces=traces),
            "host": dd.statsd_host,
            "port": dd.statsd_port,
            "socket_path": dd.statsd_socket,
            # The pipeline's tags go with each call (ProcessStatsd): the client
            # drops its own DD_*-derived tags of the keys they carry.
            "replaced_keys": sorted({"env", "service", "version", *dd.tags}),
        }
    return shared_exporter(
        traces=trace_options,
        statsd=statsd_options,
        environ=environ,
        users=int(traces) + int(statsd),  # the span backend and the client each release
    )


def build_hooks(
    config: ObservabilityConfig | None,
    *,
    pipeline: str,
    source_type: str | None = None,
    sink_type: str | None = None,
    engine: str | None = None,
    around: Sequence[Hook] = (),
    environ: Mapping[str, str] | None = None,
) -> ObservabilityHooks:
    """The event hooks for ``config``, wrapped around ``around`` (e.g. the log subscriber).

    Order: tracer, metrics, Datadog events, then ``around``, then the tracer's
    :meth:`~sluiceway.observability.tracing.RunTracer.after` — so log lines written
    by ``around`` hooks carry the ids of the span their event made. Disabled, this
    is ``ObservabilityHooks(around)`` and imports nothing.
    """
    config = config or ObservabilityConfig()
    if not config.enabled:
        return ObservabilityHooks(around)

    gate = _Gate()
    first: list[Hook] = [gate]
    last: list[Hook] = []
    flushers: list[Callable[[], Any]] = [gate.opened.set]
    closers: list[Callable[[], Any]] = []
    parts: list[str] = []
    dd = config.datadog_config.resolve(environ) if config.datadog_config else None
    otel = config.opentelemetry_config.resolve(environ) if config.opentelemetry_config else None
    user_tags = dict(dd.tags) if dd else {}
    dd_traces = dd is not None and dd.traces and otel is None
    dd_statsd = dd is not None and (dd.metrics or dd.events)
    # The exporter process, when Datadog's packages are to run outside this one.
    exporter: Any = None
    if dd is not None and (dd_traces or dd_statsd):
        if dd_traces:
            _need("ddtrace", extra="datadog", what="Datadog tracing")
        elif dd_statsd:
            _need("datadog", extra="datadog", what="DogStatsD metrics")
        if dd.in_process(traces=dd_traces):
            _ddtrace_environment(dd)
        else:
            exporter = _start_exporter(dd, traces=dd_traces, statsd=dd_statsd)

    backend: Any = None
    if otel is not None:
        from sluiceway.observability.otel import OtelTraceBackend, otel_fields

        _need("opentelemetry.sdk", extra="otel", what="OpenTelemetry tracing")
        o = otel
        backend = _maybe_lazy(
            "opentelemetry.sdk.trace",
            lambda: OtelTraceBackend(
                endpoint=o.endpoint,
                headers=o.headers,
                service=o.service,
                env=o.env,
                version=o.version,
                resource_attributes=o.resource_attributes,
                timeout=o.timeout,
            ),
            partial(otel_fields, service=o.service, env=o.env, version=o.version),
            gate,
        )
        parts.append(f"otlp traces to {otel.endpoint}")
    elif dd is not None and dd.traces:
        from sluiceway.observability.spans import DatadogTraceBackend, datadog_fields

        d = dd
        fields = partial(datadog_fields, service=d.service, env=d.env, version=d.version)
        if exporter is not None:
            from sluiceway.observability.exporter import ProcessTraceBackend

            backend = ProcessTraceBackend(exporter, fields)
        else:
            backend = _maybe_lazy(
                "ddtrace.trace",
                lambda: DatadogTraceBackend(
                    service=d.service, env=d.env, version=d.version, agent_url=d.agent_url
                ),
                fields,
                gate,
            )
        parts.append(f"datadog traces to {dd.agent_url}")
    if backend is not None:
        from sluiceway.observability.tracing import RunTracer

        tracer = RunTracer(
            backend,
            source_type=source_type,
            sink_type=sink_type,
            engine=engine,
            tags=user_tags,
        )
        first.append(tracer)
        last.append(tracer.after)
        flushers.append(backend.flush)
        closers.append(backend.close)

    if dd is not None and dd_statsd:
        from sluiceway.observability.statsd import (
            LazyStatsd,
            StatsdClient,
            StatsdSubscriber,
            statsd_client,
        )

        client: StatsdClient
        if exporter is not None:
            from sluiceway.observability.exporter import ProcessStatsd

            client = ProcessStatsd(
                exporter, constant_tags=_constant_tags(dd, pipeline, source_type, sink_type)
            )
        else:
            module = _statsd_module(traces=dd_traces)
            constant = _constant_tags(dd, pipeline, source_type, sink_type)
            d = dd
            client = LazyStatsd(
                _load(
                    module,
                    lambda: statsd_client(
                        host=d.statsd_host,
                        port=d.statsd_port,
                        socket_path=d.statsd_socket,
                        constant_tags=constant,
                        module=module,
                    ),
                    gate,
                )
            )
        if dd.metrics:
            first.append(StatsdSubscriber(client))
        if dd.events:
            from sluiceway.observability.alerts import AlertSubscriber
            from sluiceway.observability.statsd import DatadogEventChannel

            first.append(
                AlertSubscriber(DatadogEventChannel(client), min_interval=dd.events_min_interval)
            )
        flushers.append(client.flush)
        closers.append(client.close)
        where = dd.statsd_socket or f"{dd.statsd_host}:{dd.statsd_port}"
        parts.append(f"dogstatsd to {where}")
    if exporter is not None:
        parts.append("from an exporter process")

    hooks = ObservabilityHooks(
        [*first, *around, *last],
        flushers=flushers,
        closers=closers,
        description="; ".join(parts),
    )
    _install_exit_flush()
    return hooks
