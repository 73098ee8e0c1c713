"""The exporter process (``observability.datadog.exporter: process``) under failure.

A real child process, real DogStatsD datagrams on a UDP listener: a signal to the
whole process group does not cut off the last flush, a run's process killed outright
still gets what it handed over sent (and leaves no process behind), an exporter that
cannot load ddtrace or that dies costs one warning and never the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from tests.integration.observability.support import StatsdListener

from sluiceway.observability.exporter import ExporterProcess, ProcessStatsd, ProcessTraceBackend
from sluiceway.observability.setup import (
    DatadogConfig,
    ObservabilityConfig,
    ObservabilityHooks,
    build_hooks,
)

_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from sluiceway.observability.exporter import ExporterProcess, ProcessStatsd, ProcessTraceBackend
    from sluiceway.observability.setup import ObservabilityHooks, _install_exit_flush

    # No periodic flush (30 s): the datagram leaves the exporter only when flushed.
    exporter = ExporterProcess(
        traces=None,
        statsd={"module": "datadog.dogstatsd.base", "host": "127.0.0.1",
                "port": int(sys.argv[1]), "flush_interval": 30.0},
        environ=dict(os.environ),
    )
    hooks = ObservabilityHooks(flushers=[exporter.flush], closers=[exporter.close])
    _install_exit_flush()  # as build_hooks does: SIGTERM flushes, then dies of it
    client = ProcessStatsd(exporter)
    exporter.flush()  # the exporter has made its client
    client.increment("sluiceway.test.handed_over", 7)
    time.sleep(0.3)  # the writer thread has piped it
    print(json.dumps({"exporter": exporter._proc.pid}), flush=True)
    time.sleep(60)
    """
)


def _start(statsd: StatsdListener) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(statsd.port)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, for killpg
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "the child did not start"
    return child, int(json.loads(line)["exporter"])


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (exited, not yet reaped by its parent) is gone too.
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


def test_sigterm_to_the_process_group_still_flushes(statsd: StatsdListener) -> None:
    """``kill -TERM -<pgid>`` reaches the exporter too: it ignores it, the run's process
    flushes through it on its way out, and both are gone."""
    child, exporter = _start(statsd)
    time.sleep(0.2)
    assert statsd.total("sluiceway.test.handed_over") == 0  # buffered in the exporter
    os.killpg(child.pid, signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
    statsd.wait_for(lambda ds: any(d.name == "sluiceway.test.handed_over" for d in ds), 5)
    assert statsd.total("sluiceway.test.handed_over") == 7
    assert _gone(exporter, 10)


def test_a_killed_run_s_metrics_are_still_sent(statsd: StatsdListener) -> None:
    """SIGKILL leaves no flush to the run's process: the exporter sees its pipe close,
    sends what it was handed and exits."""
    child, exporter = _start(statsd)
    time.sleep(0.2)
    assert statsd.total("sluiceway.test.handed_over") == 0  # buffered in the exporter
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL
    statsd.wait_for(lambda ds: any(d.name == "sluiceway.test.handed_over" for d in ds), 5)
    assert statsd.total("sluiceway.test.handed_over") == 7
    assert _gone(exporter, 10)


def test_an_exporter_that_cannot_load_ddtrace_warns_once_and_the_run_goes_on(
    tmp_path: Path, statsd: StatsdListener
) -> None:
    broken = tmp_path / "broken"
    (broken / "ddtrace").mkdir(parents=True)
    (broken / "ddtrace" / "__init__.py").write_text("raise ImportError('no ddtrace here')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(broken), env.get("PYTHONPATH")]))
    exporter = ExporterProcess(
        traces={"service": "s", "agent_url": "http://127.0.0.1:9"},
        statsd={
            "module": "datadog.dogstatsd.base",
            "host": "127.0.0.1",
            "port": statsd.port,
            "constant_tags": ["pipeline:x"],
        },
        environ=env,
        timeout=30,
    )
    with structlog.testing.capture_logs() as logs:
        client = ProcessStatsd(exporter)
        client.increment("sluiceway.test.after_failure", 2)
        assert exporter.flush()  # metrics still work: only tracing failed
        exporter.close()
    warnings = [entry for entry in logs if entry["event"] == "tracing_unavailable"]
    assert len(warnings) == 1
    assert "no ddtrace here" in warnings[0]["error"]
    assert exporter.unavailable.keys() == {"traces"}
    statsd.wait_for(lambda ds: any(d.name == "sluiceway.test.after_failure" for d in ds), 5)
    assert statsd.metrics("sluiceway.test.after_failure")[0].tag("pipeline") == "x"


def _metrics_only(statsd: StatsdListener, **settings: Any) -> ObservabilityConfig:
    return ObservabilityConfig(
        datadog=DatadogConfig(
            traces=False,
            events=False,
            statsd_host="127.0.0.1",
            statsd_port=statsd.port,
            exporter="process",
            **settings,
        )
    )


def _client(hooks: ObservabilityHooks) -> ProcessStatsd:
    owners = {getattr(close, "__self__", None) for close in hooks._closers}
    (client,) = [owner for owner in owners if isinstance(owner, ProcessStatsd)]
    return client


def test_a_dead_exporter_fails_a_flush_at_once_and_drops_what_follows(
    statsd: StatsdListener,
) -> None:
    config = _metrics_only(statsd)
    with structlog.testing.capture_logs() as logs:
        hooks = build_hooks(config, pipeline="dies")
        client = _client(hooks)
        exporter = client.exporter
        assert exporter.flush()
        assert exporter._proc is not None
        exporter._proc.kill()
        exporter._proc.wait(timeout=10)
        began = time.monotonic()
        deadline = began + 5
        while exporter.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not exporter.flush()
        client.increment("sluiceway.test.dropped")  # dropped, no error
        hooks.close()
        assert time.monotonic() - began < 5
    assert [entry["event"] for entry in logs].count("observability_exporter_exited") == 1
    assert statsd.metrics("sluiceway.test.dropped") == []


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_exporter_runs_ddtrace_without_its_telemetry_unless_asked_for(
    statsd: StatsdListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ddtrace reads the variable at import, in the exporter: it is set there, and the
    run's own environment is left alone."""
    monkeypatch.delenv("DD_INSTRUMENTATION_TELEMETRY_ENABLED", raising=False)
    seen = []
    sections: list[dict[str, Any]] = [{}, {"instrumentation_telemetry": True}]
    for section in sections:
        config = ObservabilityConfig(
            datadog=DatadogConfig(
                agent_url="http://127.0.0.1:9",
                metrics=False,
                events=False,
                exporter="process",
                **section,
            )
        )
        with build_hooks(config, pipeline="t") as hooks:
            (backend,) = {getattr(close, "__self__", None) for close in hooks._closers}
            assert isinstance(backend, ProcessTraceBackend)
            assert backend.exporter._proc is not None
            seen.append(
                _environ(backend.exporter._proc.pid)["DD_INSTRUMENTATION_TELEMETRY_ENABLED"]
            )
    assert seen == ["false", "true"]
    assert "DD_INSTRUMENTATION_TELEMETRY_ENABLED" not in os.environ


def test_pipelines_with_the_same_settings_share_one_exporter(statsd: StatsdListener) -> None:
    """A process that builds many pipelines starts one exporter, not one per pipeline;
    each pipeline's metrics keep its own tags, and the last one closed stops it."""
    config = _metrics_only(statsd, env="ci")
    first = build_hooks(config, pipeline="first", source_type="obs-rows", sink_type="s")
    second = build_hooks(config, pipeline="second", source_type="obs-rows", sink_type="s")
    a, b = _client(first), _client(second)
    assert a.exporter is b.exporter
    a.increment("sluiceway.test.shared", 1)
    b.increment("sluiceway.test.shared", 2)
    first.close()
    assert b.exporter.alive  # still serving the second pipeline
    b.increment("sluiceway.test.shared", 4)
    second.close()
    assert not b.exporter.alive
    assert b.exporter._proc is not None
    assert b.exporter._proc.poll() == 0
    statsd.wait_for(lambda ds: sum(d.name == "sluiceway.test.shared" for d in ds) >= 3, 5)
    assert statsd.total("sluiceway.test.shared", pipeline="first") == 1
    assert statsd.total("sluiceway.test.shared", pipeline="second") == 6
    for datagram in statsd.metrics("sluiceway.test.shared"):
        assert [t for t in datagram.tags if t.startswith("env:")] == ["env:ci"]
    # A new build after the last close starts a new exporter.
    third = build_hooks(config, pipeline="third")
    try:
        assert _client(third).exporter is not a.exporter
    finally:
        third.close()


def test_a_forked_copy_of_the_run_s_process_leaves_the_exporter_alone(
    statsd: StatsdListener,
) -> None:
    """A fork (multiprocessing) has neither the pipe's threads nor the child: its calls
    and its close return at once and touch nothing; the parent's exporter goes on."""
    hooks = build_hooks(_metrics_only(statsd), pipeline="forked")
    client = _client(hooks)
    assert client.exporter.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked copy
        code = 1
        try:
            began = time.monotonic()
            client.increment("sluiceway.test.from_fork")
            refused = client.exporter.flush() is False and not client.exporter.alive
            hooks.close()
            code = 0 if refused and time.monotonic() - began < 2 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.exporter.alive
    client.increment("sluiceway.test.after_fork", 3)
    hooks.close()
    statsd.wait_for(lambda ds: any(d.name == "sluiceway.test.after_fork" for d in ds), 5)
    assert statsd.total("sluiceway.test.after_fork") == 3
    assert statsd.metrics("sluiceway.test.from_fork") == []
