"""Real receivers for the observability tests: a DogStatsD UDP listener and the APM test agent.

:class:`StatsdListener` binds a UDP socket on 127.0.0.1 and parses every datagram
(metrics and events, several lines per packet as a buffered client sends them).
:class:`TestAgent` runs ``ddapm-test-agent`` on a free port and reads traces back
through its session API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HISTOGRAM_SUFFIXES = ("avg", "count", "max", "median", "95percentile")
DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "datadog"


@dataclass(frozen=True)
class Datagram:
    """One DogStatsD line: a metric (``type`` c, g, h, d, ms, s) or an event (``type`` e)."""

    name: str
    value: str
    type: str
    tags: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def tag(self, key: str) -> str | None:
        for item in self.tags:
            k, _, v = item.partition(":")
            if k == key:
                return v
        return None


_EVENT = re.compile(r"^_e\{(\d+),(\d+)\}:")


def parse_line(line: str) -> Datagram | None:
    if not line or line.startswith("_sc|"):
        return None
    event = _EVENT.match(line)
    if event:
        title_len, text_len = int(event.group(1)), int(event.group(2))
        rest = line[event.end() :]
        title, text = rest[:title_len], rest[title_len + 1 : title_len + 1 + text_len]
        fields: dict[str, str] = {"text": text}
        tags: tuple[str, ...] = ()
        for part in rest[title_len + 1 + text_len :].split("|")[1:]:
            if part.startswith("#"):
                tags = tuple(part[1:].split(","))
            elif ":" in part:
                key, _, value = part.partition(":")
                fields[key] = value
        return Datagram(title, text, "e", tags, fields)
    name, _, rest = line.partition(":")
    parts = rest.split("|")
    tags = ()
    for part in parts[2:]:
        if part.startswith("#"):
            tags = tuple(part[1:].split(","))
    return Datagram(name, parts[0], parts[1] if len(parts) > 1 else "", tags)


class StatsdListener:
    """A DogStatsD server in a thread: every datagram received, parsed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[Datagram] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in packet.decode("utf-8", "replace").split("\n"):
                parsed = parse_line(line)
                if parsed is not None:
                    self.datagrams.append(parsed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def clear(self) -> None:
        self.datagrams.clear()

    def wait_for(self, predicate: Callable[[list[Datagram]], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.datagrams)):
                return
            time.sleep(0.02)
        raise AssertionError(f"datagrams never matched; got {sorted(self.names())}")

    def names(self, prefix: str = "sluiceway.") -> set[str]:
        return {d.name for d in self.datagrams if d.type != "e" and d.name.startswith(prefix)}

    def metrics(self, name: str) -> list[Datagram]:
        return [d for d in self.datagrams if d.name == name and d.type != "e"]

    def events(self) -> list[Datagram]:
        return [d for d in self.datagrams if d.type == "e"]

    def total(self, name: str, **tags: str) -> float:
        """Sum of a counter's values over datagrams carrying all ``tags``."""
        return sum(
            float(d.value)
            for d in self.metrics(name)
            if all(d.tag(k) == v for k, v in tags.items())
        )


def queryable_names(datagrams: Iterable[Datagram]) -> set[str]:
    """Metric names Datadog makes queryable from these datagrams (histograms fan out)."""
    names: set[str] = set()
    for d in datagrams:
        if d.type == "e":
            continue
        names.add(d.name)
        if d.type == "h":
            names.update(f"{d.name}.{suffix}" for suffix in HISTOGRAM_SUFFIXES)
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TestAgent:
    """``ddapm-test-agent`` on 127.0.0.1; traces read back through ``/test/session/traces``."""

    __test__ = False

    def __init__(self, tmp: Path) -> None:
        command = shutil.which("ddapm-test-agent") or str(
            Path(sys.executable).parent / "ddapm-test-agent"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "test-agent.log").open("w")
        self.proc = subprocess.Popen(
            [command, "--port", str(self.port), "--snapshot-dir", str(tmp)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ENABLED_CHECKS": ""},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self._get("/info")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"ddapm-test-agent did not start: {(tmp / 'test-agent.log').read_text()}"
                    ) from None
                time.sleep(0.1)

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            body: bytes = response.read()
            return body

    def start_session(self) -> None:
        self._get("/test/session/start")

    def traces(self) -> list[list[dict[str, Any]]]:
        result: list[list[dict[str, Any]]] = json.loads(self._get("/test/session/traces"))
        return result

    def run_spans(self, run_id: str, *, timeout: float = 15, complete: bool = True) -> list[dict]:
        """The spans of the trace whose root carries ``run_id`` (waits for them to arrive)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [
                span
                for trace in self.traces()
                for span in trace
                if span.get("meta", {}).get("sluiceway.run_id") == run_id
            ]
            has_root = any(s["name"] == "sluiceway.pipeline.run" for s in spans)
            if (has_root or not complete) and spans:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete trace for run {run_id}: {len(spans)} span(s)")
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.log.close()


def by_name(spans: list[dict], name: str) -> list[dict]:
    return sorted((s for s in spans if s["name"] == name), key=lambda s: s["start"])


def children(spans: list[dict], parent: dict) -> list[dict]:
    return sorted(
        (s for s in spans if s.get("parent_id") == parent["span_id"]), key=lambda s: s["start"]
    )


@contextlib.contextmanager
def statsd_listener() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    try:
        yield listener
    finally:
        listener.close()


_QUERY = re.compile(r"\b(?:avg|sum|min|max|count):([a-z0-9_.]+)\{([^}]*)\}(?:\s+by\s+\{([^}]*)\})?")


def queried(document: Any) -> list[tuple[str, set[str]]]:
    """(metric, tag keys it filters or groups by) for every metric query in a JSON document."""
    found: list[tuple[str, set[str]]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("q", "query") and isinstance(value, str):
                    for metric, scope, by in _QUERY.findall(value):
                        keys = {
                            part.strip().lstrip("$").split(":")[0]
                            for part in f"{scope},{by}".split(",")
                            if part.strip() and part.strip() != "*"
                        }
                        found.append((metric, keys))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return found
