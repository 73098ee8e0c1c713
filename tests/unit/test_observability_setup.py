"""The ``observability:`` config, build_hooks, flushing at exit and on SIGTERM, no cost when off."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.support import python_child

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.observability.setup import (
    DatadogConfig,
    ObservabilityConfig,
    ObservabilityHooks,
    OpenTelemetryConfig,
    _Gate,
    _load,
    build_hooks,
)
from sluiceway.observability.statsd import METRICS, LazyStatsd, tag

ROOT = Path(__file__).resolve().parents[2]
VENDORS = ("ddtrace", "datadog", "opentelemetry")


def test_off_by_default_and_shorthands() -> None:
    assert not ObservabilityConfig().enabled
    on = ObservabilityConfig.model_validate({"datadog": True})
    assert on.enabled and on.datadog_config == DatadogConfig()
    assert ObservabilityConfig.model_validate({"datadog": False}).datadog_config is None
    custom = ObservabilityConfig.model_validate({"datadog": {"metrics": False, "env": "prod"}})
    assert custom.datadog_config is not None and custom.datadog_config.env == "prod"
    with pytest.raises(ValidationError, match=r"unknown|Extra inputs"):
        ObservabilityConfig.model_validate({"datadog": {"trace": True}})


def test_traces_go_to_one_exporter() -> None:
    with pytest.raises(ValidationError, match="traces go to one exporter"):
        ObservabilityConfig.model_validate({"datadog": True, "opentelemetry": True})
    both = ObservabilityConfig.model_validate(
        {"datadog": {"traces": False}, "opentelemetry": {"endpoint": "http://c:4318/v1/traces"}}
    )
    assert both.datadog_config is not None and both.opentelemetry_config is not None


@pytest.mark.parametrize(
    ("executable", "frozen", "exporter", "traces_imported", "in_process"),
    [
        ("/venv/bin/python3.12", False, "auto", False, False),  # the exporter process
        ("/venv/bin/python3.12", False, "auto", True, True),  # ddtrace-run: join its trace
        ("/venv/bin/python3.12", False, "process", True, False),
        ("/venv/bin/python3.12", False, "thread", False, True),
        ("/usr/bin/uwsgi", False, "auto", False, True),  # an embedding server
        ("/usr/bin/uwsgi", False, "process", False, True),  # cannot: warns, in process
        ("/app/dist/pipeline", True, "auto", False, True),  # a frozen application
    ],
)
def test_where_the_datadog_clients_run(
    monkeypatch: pytest.MonkeyPatch,
    executable: str,
    frozen: bool,
    exporter: str,
    traces_imported: bool,
    in_process: bool,
) -> None:
    import structlog

    monkeypatch.setattr(sys, "executable", executable)
    if frozen:
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    if traces_imported:
        monkeypatch.setitem(sys.modules, "ddtrace", sys.modules.get("ddtrace") or object())
    else:
        monkeypatch.delitem(sys.modules, "ddtrace", raising=False)
    settings = DatadogConfig(exporter=exporter).resolve({})  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        assert settings.in_process(traces=True) is in_process
    warned = [entry["event"] for entry in logs]
    if exporter == "process" and executable.endswith("uwsgi"):
        assert warned == ["observability_exporter_in_process"]
    else:
        assert warned == []


def test_datadog_settings_come_from_the_standard_environment() -> None:
    env = {
        "DD_SERVICE": "orders",
        "DD_ENV": "staging",
        "DD_VERSION": "3.1",
        "DD_TAGS": "team:data,tier:1",
        "DD_AGENT_HOST": "dd-agent",
        "DD_DOGSTATSD_PORT": "9125",
    }
    s = DatadogConfig().resolve(env)
    assert (s.service, s.env, s.version) == ("orders", "staging", "3.1")
    assert dict(s.tags) == {"team": "data", "tier": "1"}
    assert s.agent_url == "http://dd-agent:8126"
    assert (s.statsd_host, s.statsd_port) == ("dd-agent", 9125)
    socket_url = "unix:///var/run/apm.sock"
    assert DatadogConfig().resolve({"DD_TRACE_AGENT_URL": socket_url}).agent_url == socket_url
    spec = DatadogConfig(service="x", env="prod", tags=["team:core"], statsd_port=8200)
    s = spec.resolve(env)
    assert (s.service, s.env, s.statsd_port) == ("x", "prod", 8200)
    assert dict(s.tags) == {"team": "core", "tier": "1"}
    s = DatadogConfig().resolve({"DD_DOGSTATSD_URL": "udp://stats:9000", "DD_AGENT_HOST": "a"})
    assert (s.statsd_host, s.statsd_port, s.agent_url) == ("stats", 9000, "http://a:8126")
    s = DatadogConfig().resolve({"DD_DOGSTATSD_URL": "unix:///var/run/datadog/dsd.socket"})
    assert s.statsd_socket == "/var/run/datadog/dsd.socket"
    s = DatadogConfig(statsd_port=1234).resolve({"DD_DOGSTATSD_URL": "udp://stats:9000"})
    assert (s.statsd_host, s.statsd_port) == ("localhost", 1234)
    bare = DatadogConfig().resolve({})
    assert (bare.service, bare.env, bare.agent_url) == ("sluiceway", None, "http://localhost:8126")
    assert not bare.instrumentation_telemetry
    assert DatadogConfig(instrumentation_telemetry=True).resolve({}).instrumentation_telemetry
    on = {"DD_INSTRUMENTATION_TELEMETRY_ENABLED": "true"}
    assert DatadogConfig().resolve(on).instrumentation_telemetry
    off = {"DD_INSTRUMENTATION_TELEMETRY_ENABLED": "0"}
    assert not DatadogConfig(instrumentation_telemetry=True).resolve(off).instrumentation_telemetry
    assert (bare.statsd_host, bare.statsd_port) == ("localhost", 8125)


def test_opentelemetry_settings_and_secret_headers() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=from-env",
        "OTEL_SERVICE_NAME": "svc",
    }
    s = OpenTelemetryConfig().resolve(env)
    assert s.endpoint == "http://collector:4318/v1/traces"
    assert s.service == "svc" and dict(s.headers) == {"api-key": "from-env"}
    s = OpenTelemetryConfig(headers={"api-key": "s3cret"}).resolve(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otlp.example/v1/traces"}
    )
    assert s.endpoint == "https://otlp.example/v1/traces" and s.headers["api-key"] == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in repr(OpenTelemetryConfig(headers="a=s3cret"))
    assert OpenTelemetryConfig().resolve({}).endpoint == "http://localhost:4318/v1/traces"


def test_disabled_build_hooks_returns_only_the_given_hooks() -> None:
    def mine(event: object) -> None:
        return None

    hooks = build_hooks(None, pipeline="p", around=[mine])
    assert list(hooks) == [mine] and not hooks.enabled
    hooks.close()
    hooks.close()


def test_tags_are_normalised_like_datadog_stores_them() -> None:
    assert tag("rule", "positive(value)") == "rule:positive_value_"
    assert tag("error_type", "TransientError") == "error_type:transienterror"
    assert tag("stage_name", "transform.0.sql") == "stage_name:transform.0.sql"
    assert tag("rule", None) == "rule:none"
    assert len(tag("k", "x" * 500)) == 200


def test_the_documented_metric_table_is_what_the_code_emits() -> None:
    text = (ROOT / "docs" / "observability.md").read_text()
    rows = re.findall(r"^\| `(sluiceway\.[a-z_.]+)` \| (\w+) \|", text, re.MULTILINE)
    assert rows == [(m.name, m.type) for m in METRICS]


_CHILD = textwrap.dedent(
    """
    import json, sys
    import pyarrow as pa
    from sluiceway.cli.app import app
    from sluiceway.core import BaseExtractor, BaseLoader, Pipeline
    from sluiceway.observability.logging import configure_logging, LogSubscriber
    import sluiceway.observability.setup as setup
    import sluiceway.observability.tracing, sluiceway.observability.statsd
    import sluiceway.observability.otel, sluiceway.observability.spans

    class Source(BaseExtractor):
        def extract(self):
            yield pa.table({"x": [1, 2, 3]})

    class Sink(BaseLoader):
        def load(self, batch):
            return None

    configure_logging("info", "json")
    hooks = setup.build_hooks(setup.ObservabilityConfig(), pipeline="p", around=[LogSubscriber()])
    metrics = Pipeline("p", Source(), [], [], Sink(), hooks=hooks, home=sys.argv[1]).run()
    hooks.close()
    try:  # the CLI, through spec loading, the registry and build_pipeline
        app(["run", sys.argv[2], "--quiet"], standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code
    loaded = {m.split(".")[0] for m in sys.modules}
    vendors = sorted(loaded & {"ddtrace", "datadog", "opentelemetry"})
    print(json.dumps({"written": metrics.written, "vendors": vendors}))
    """
)


def test_observability_off_imports_no_vendor_package(tmp_path: Path) -> None:
    from tests.integration.observability.plugins import ENV_PLUGINS, PYTHONPATH

    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "version: 1\nname: quiet\nsource: {type: obs-rows}\n"
        "sink: {type: obs-flaky, path: out.jsonl}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "SLUICEWAY_"))}
    path = os.pathsep.join(filter(None, [PYTHONPATH, env.get("PYTHONPATH")]))
    env |= {"PYTHONPATH": path, "SLUICEWAY_PLUGINS": ENV_PLUGINS}
    out = python_child(_CHILD, str(tmp_path), str(spec), env=env)
    result = json.loads(out.splitlines()[-1])
    assert result == {"written": 3, "vendors": []}
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 12


_TELEMETRY_CHILD = textwrap.dedent(
    """
    import json, sys
    from sluiceway.observability.setup import DatadogConfig, ObservabilityConfig, build_hooks

    section = json.loads(sys.argv[1])
    config = ObservabilityConfig(
        datadog=DatadogConfig(metrics=False, events=False, exporter="thread", **section)
    )
    with build_hooks(config, pipeline="t") as hooks:
        hooks.flush()  # waits for the tracer, i.e. for ddtrace's import
    import ddtrace.internal.telemetry as telemetry

    print(type(telemetry.telemetry_writer).__name__)
    """
)


@pytest.mark.parametrize(
    ("section", "variable", "writer"),
    [
        ({}, None, "NoOpTelemetryWriter"),
        ({"instrumentation_telemetry": True}, None, "TelemetryWriter"),
        ({}, "true", "TelemetryWriter"),
        ({"instrumentation_telemetry": True}, "false", "NoOpTelemetryWriter"),
    ],
)
def test_ddtrace_instrumentation_telemetry_is_off_unless_asked_for(
    section: dict[str, bool], variable: str | None, writer: str
) -> None:
    """ddtrace's telemetry polls sys.modules for a package list: off unless configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    env["DD_TRACE_AGENT_URL"] = "http://127.0.0.1:9"  # nothing is sent: flush only queues
    if variable is not None:
        env["DD_INSTRUMENTATION_TELEMETRY_ENABLED"] = variable
    assert python_child(_TELEMETRY_CHILD, json.dumps(section), env=env).split()[-1] == writer


_ORIGINS_CHILD = textwrap.dedent(
    """
    import json, pathlib, sys
    sys.path[:0] = sys.argv[1:3]
    import pyarrow.parquet, real_pkg.mod, linked_pkg.mod, linked_file  # noqa: F401
    from sluiceway.observability.setup import DatadogConfig, ObservabilityConfig, build_hooks

    before = {m.__name__: m.__file__ for m in list(sys.modules.values())
              if isinstance(getattr(m, "__file__", None), str)}
    resolved = set()
    plain = pathlib.Path.resolve

    def counting(self, strict=False):
        resolved.add(str(self))
        return plain(self, strict)

    pathlib.Path.resolve = counting
    config = ObservabilityConfig(
        datadog=DatadogConfig(metrics=False, events=False, exporter="thread")
    )
    with build_hooks(config, pipeline="t") as hooks:
        hooks.flush()  # waits for the tracer, i.e. for ddtrace's import
    pathlib.Path.resolve = plain
    from ddtrace.internal.module import origin

    wrong = [name for name, file in before.items()
             if origin(sys.modules[name]) != pathlib.Path(file).resolve()]
    print(json.dumps({
        "modules": len(before),
        "wrong": wrong,
        "resolved_again": sorted(set(before.values()) & resolved),
        "linked": [str(origin(sys.modules[n])) for n in ("linked_pkg.mod", "linked_file")],
    }))
    """
)


def test_module_origins_are_seeded_before_ddtrace_scans_them(tmp_path: Path) -> None:
    """ddtrace's watchdog finds each loaded module's resolved file already there, the same
    path it would compute (symlinked folders and files included), and resolves none."""
    real = tmp_path / "real"
    (real / "real_pkg").mkdir(parents=True)
    (real / "real_pkg" / "__init__.py").write_text("")
    (real / "real_pkg" / "mod.py").write_text("X = 1\n")
    (real / "target.py").write_text("Y = 2\n")
    links = tmp_path / "links"
    links.mkdir()
    (links / "linked_pkg").symlink_to(real / "real_pkg")
    (links / "linked_file.py").symlink_to(real / "target.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    env["DD_TRACE_AGENT_URL"] = "http://127.0.0.1:9"  # nothing is sent: flush only queues
    out = python_child(_ORIGINS_CHILD, str(real), str(links), env=env)
    result = json.loads(out.splitlines()[-1])
    assert result["modules"] > 100  # pyarrow's and sluiceway's own
    assert result["wrong"] == []
    assert result["resolved_again"] == []
    assert result["linked"] == [str(real / "real_pkg" / "mod.py"), str(real / "target.py")]


_SIGTERM_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from sluiceway.observability.setup import ObservabilityHooks, _install_exit_flush

    marker = Path(sys.argv[1])
    hooks = ObservabilityHooks(
        flushers=[lambda: marker.write_text("flushed")], closers=[lambda: None]
    )
    _install_exit_flush()
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_sigterm_flushes_then_dies_of_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _SIGTERM_CHILD, str(marker)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
    assert marker.read_text() == "flushed"


def test_closed_hooks_leave_the_exit_list() -> None:
    closed: list[str] = []
    hooks = ObservabilityHooks(closers=[lambda: closed.append("x")])
    with hooks:
        assert hooks.enabled
    hooks.close()
    assert closed == ["x"] and hooks.closed


def test_public_names_are_pinned() -> None:
    import sluiceway.observability.exporter as exporter
    import sluiceway.observability.otel as otel
    import sluiceway.observability.setup as setup
    import sluiceway.observability.spans as spans
    import sluiceway.observability.statsd as statsd
    import sluiceway.observability.tracing as tracing

    expected = {
        setup: [
            "DatadogConfig",
            "DatadogSettings",
            "ObservabilityConfig",
            "ObservabilityHooks",
            "OpenTelemetryConfig",
            "OpenTelemetrySettings",
            "build_hooks",
            "close_all",
        ],
        tracing: ["ROOT_SPAN", "RunTracer", "add_trace_context", "current_correlation"],
        spans: [
            "DatadogTraceBackend",
            "LazyTraceBackend",
            "SpanBackend",
            "datadog_fields",
            "format_trace_id",
            "new_span_id",
            "new_trace_id",
        ],
        statsd: [
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
        ],
        otel: ["OtelTraceBackend", "otel_fields"],
        exporter: [
            "EXPORTER_SCRIPT",
            "ExporterProcess",
            "ProcessStatsd",
            "ProcessTraceBackend",
            "shared_exporter",
        ],
    }
    for module, names in expected.items():
        assert sorted(module.__all__) == sorted(names), module.__name__
        assert all(getattr(module, name) is not None for name in names)


# -- loading the vendor clients ----------------------------------------------------


def _event(kind: EventKind) -> StageEvent:
    return StageEvent(kind=kind, pipeline="p", run_id="r", started=0.0)


def test_vendor_import_waits_until_a_batch_is_committed() -> None:
    """The loader thread imports only once the run is past its start-up (the first
    commit), or when the run ends, so the import does not compete with it."""
    made = threading.Event()

    def factory() -> str:
        made.set()
        return "client"

    gate = _Gate()
    future = _load("sluiceway_test_not_imported_module", factory, gate)
    for kind in (EventKind.RUN_STARTED, EventKind.BATCH_EXTRACTED, EventKind.BATCH_LOADED):
        gate(_event(kind))
    assert not made.wait(0.3)
    gate(_event(EventKind.BATCH_COMMITTED))
    assert future.result(timeout=5) == "client"

    ended = _Gate()
    second = _load("sluiceway_test_not_imported_module", lambda: "again", ended)
    ended(_event(EventKind.RUN_FAILED))
    assert second.result(timeout=5) == "again"


def test_a_waiting_flush_does_not_block_the_runs_own_calls() -> None:
    """An alert thread's flush waits for the client; meanwhile the run's thread only
    queues its metrics, and they are sent in order once the client is there."""
    sent: list[tuple[str, object]] = []

    class Client:
        def increment(self, name: str, value: float = 1, tags: object = None) -> None:
            sent.append(("increment", name))

        def flush(self) -> None:
            sent.append(("flush", None))

    future: Future[Client] = Future()
    lazy = LazyStatsd(future, timeout=10)
    flusher = threading.Thread(target=lazy.flush)
    flusher.start()
    time.sleep(0.1)
    began = time.monotonic()
    lazy.increment("sluiceway.records.read", 5)
    assert time.monotonic() - began < 0.05
    future.set_result(Client())
    flusher.join(5)
    lazy.increment("sluiceway.records.written", 5)
    assert sent == [
        ("increment", "sluiceway.records.read"),
        ("flush", None),
        ("increment", "sluiceway.records.written"),
    ]
