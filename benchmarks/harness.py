"""Shared benchmark harness: contenders side by side, each in a fresh process.

Rules every benchmark here follows:

- each run of each contender is a fresh process (``subprocess.Popen``), timed by
  wall clock around the whole process;
- peak RSS is that child's own accounting: ``os.wait4`` returns the kernel's
  ``ru_maxrss`` for exactly that process (and descendants it waited for); the
  children are forked by a small launcher process so that the benchmark's own
  memory never leaks into their peak (see :class:`_Launcher`);
- times and RSS are medians of ``runs`` (at least 3) runs;
- CPU is the child's own user + system time (``os.wait4``, all its threads), and,
  where a benchmark names its server's processes (``server=``), the CPU those
  processes spent while the child ran, sampled from ``/proc`` every 50 ms: on a
  machine whose cores are all busy, the sum says how far any contender can go;
- after the runs, each contender's output is read back and compared with the
  reference contender's by the benchmark's own ``verify`` function;
- results are reported as ratios to the reference (the floor), not pass/fail.

Usage from a benchmark module::

    results = run_contenders([Contender("floor", [...]), Contender("sluiceway", [...])],
                             runs=3, prepare=clean_outputs)
    print(markdown_table(results, rows=5_000_000, reference="floor"))
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Contender", "Result", "markdown_table", "run_contenders", "run_once", "save_results"]


@dataclass(frozen=True)
class Contender:
    """One way of doing the job: a command line, run in a fresh process each time."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    server_cpu_seconds: list[float] = field(default_factory=list)
    failed: str | None = None

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def median_rss_mb(self) -> float:
        return statistics.median(self.peak_rss_mb) if self.peak_rss_mb else float("nan")


_LAUNCHER = r"""
import json, os, signal, subprocess, sys, threading, time

for line in sys.stdin:
    req = json.loads(line)
    started = time.perf_counter()
    proc = subprocess.Popen(
        req["argv"], env=req["env"], cwd=req["cwd"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    tail = []
    reader = threading.Thread(target=lambda: tail.append(proc.stderr.read()), daemon=True)
    reader.start()
    timer = threading.Timer(req["timeout"], lambda: proc.send_signal(signal.SIGKILL))
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    seconds = time.perf_counter() - started
    reader.join(5)
    err = (tail[0] if tail else b"").decode(errors="replace")[-4000:]
    reply = {"seconds": seconds, "maxrss_kb": usage.ru_maxrss,
             "cpu": usage.ru_utime + usage.ru_stime,
             "code": os.waitstatus_to_exitcode(status), "stderr": err}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""


class _Launcher:
    """A small process that starts every contender and reports its ``wait4`` usage.

    On Linux a forked child's ``ru_maxrss`` starts at its parent's resident size, and
    exec does not reset the maximum. A benchmark that generated or verified data in
    its own process would then inflate every contender's peak. The launcher is
    started while this process is still small and forks the contenders itself.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        return self._proc

    def run(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None, timeout: float
    ) -> dict[str, Any]:
        proc = self._ensure()
        assert proc.stdin is not None
        assert proc.stdout is not None
        request = {"argv": list(argv), "env": dict(env), "cwd": cwd, "timeout": timeout}
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        reply: dict[str, Any] = json.loads(proc.stdout.readline())
        return reply


_launcher = _Launcher()
_launcher._ensure()  # fork it now, while this process is small


def run_once(contender: Contender, timeout: float = 3600) -> tuple[float, float]:
    """Run the contender once; return (wall seconds, peak RSS in MB of that process)."""
    seconds, rss, _ = _run(contender, timeout)
    return seconds, rss


def _run(contender: Contender, timeout: float = 3600) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds) of one run of the contender."""
    env = {**os.environ, **contender.env}
    reply = _launcher.run(contender.argv, env, contender.cwd, timeout)
    if reply["code"] != 0:
        raise RuntimeError(f"{contender.name} exited {reply['code']}: {reply['stderr'][-2000:]}")
    # ru_maxrss is in KiB on Linux.
    return float(reply["seconds"]), float(reply["maxrss_kb"]) / 1024.0, float(reply["cpu"])


class ServerCpu:
    """CPU spent by the processes whose command line ``matches``, while a run goes on.

    Polls ``/proc`` every ``interval`` seconds in a thread and keeps each matching
    process's last CPU time, minus what it had used when first seen: a PostgreSQL
    backend that serves the run and exits loses at most one interval of its count.
    """

    def __init__(self, matches: Callable[[str], bool], interval: float = 0.05) -> None:
        self.matches = matches
        self.interval = interval
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _cpu(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if not self.matches(fh.read().replace(b"\0", b" ").decode(errors="replace")):
                    return None
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def _sample(self) -> None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                cpu = self._cpu(int(entry))
                if cpu is not None:
                    self._first.setdefault(int(entry), cpu)
                    self._last[int(entry)] = cpu

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> ServerCpu:
        self._sample()  # processes already there count from now on
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


def run_contenders(
    contenders: Sequence[Contender],
    *,
    runs: int = 3,
    prepare: Callable[[Contender], None] | None = None,
    verify: Callable[[Contender], None] | None = None,
    server: Callable[[str], bool] | None = None,
) -> list[Result]:
    """Run each contender ``runs`` times (interleaved), then verify each one's output.

    ``server`` picks, by command line, the processes of a server the contenders
    talk to, whose CPU during each run is recorded too (see :class:`ServerCpu`).
    """
    if runs < 3:
        raise ValueError("medians need at least 3 runs")
    results = {c.name: Result(c.name) for c in contenders}
    for i in range(runs):
        for contender in contenders:
            result = results[contender.name]
            if result.failed:
                continue
            if prepare is not None:
                prepare(contender)
            sampler = ServerCpu(server) if server is not None else None
            try:
                with sampler or contextlib.nullcontext():
                    seconds, rss, cpu = _run(contender)
            except (RuntimeError, TimeoutError) as exc:
                result.failed = str(exc)
                continue
            result.seconds.append(seconds)
            result.peak_rss_mb.append(rss)
            result.cpu_seconds.append(cpu)
            busy = f", CPU {cpu:.2f} s"
            if sampler is not None:
                result.server_cpu_seconds.append(sampler.seconds)
                busy += f" + server {sampler.seconds:.2f} s"
            print(
                f"  run {i + 1}/{runs} {contender.name}: {seconds:.2f} s, {rss:.0f} MB{busy}",
                file=sys.stderr,
                flush=True,
            )
            if verify is not None and i == runs - 1:
                try:
                    verify(contender)
                except AssertionError as exc:
                    result.failed = f"output differs: {exc}"
    return [results[c.name] for c in contenders]


def markdown_table(results: Sequence[Result], *, rows: int, reference: str) -> str:
    """Rows/s, median time, ratio to the reference, and peak RSS, one line per contender."""
    ref = next(r for r in results if r.name == reference)
    server = any(r.server_cpu_seconds for r in results)
    lines = [
        "| contender | median s | × floor | rows/s | peak RSS MB | CPU s |"
        + (" server CPU s |" if server else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if server else ""),
    ]
    for r in results:
        if r.failed:
            lines.append(
                f"| {r.name} | failed: {r.failed[:120]} | | | | |" + (" |" if server else "")
            )
            continue
        ratio = r.median_seconds / ref.median_seconds
        line = (
            f"| {r.name} | {r.median_seconds:.2f} | {ratio:.2f} | "
            f"{rows / r.median_seconds:,.0f} | {r.median_rss_mb:.0f} | {_median(r.cpu_seconds)} |"
        )
        if server:
            line += f" {_median(r.server_cpu_seconds)} |"
        lines.append(line)
    return "\n".join(lines)


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def save_results(path: Path, name: str, rows: int, results: Sequence[Result]) -> None:
    """Append the raw numbers (every run) to a JSON lines file next to the benchmark."""
    record = {
        "benchmark": name,
        "rows": rows,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [
            {
                "name": r.name,
                "seconds": r.seconds,
                "peak_rss_mb": r.peak_rss_mb,
                "cpu_seconds": r.cpu_seconds,
                "server_cpu_seconds": r.server_cpu_seconds,
                "failed": r.failed,
            }
            for r in results
        ],
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
