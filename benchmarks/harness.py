"""Shared benchmark harness: contenders side by side, each in a fresh process.

Rules every benchmark here follows:

- each run of each contender is a fresh process (``subprocess.Popen``), timed by
  wall clock around the whole process;
- peak RSS is that child's own accounting: ``os.wait4`` returns the kernel's
  ``ru_maxrss`` for exactly that process (and descendants it waited for); the
  children are forked by a small launcher process so that the benchmark's own
  memory never leaks into their peak (see :class:`_Launcher`);
- times and RSS are medians of ``runs`` (at least 3) runs;
- after the runs, each contender's output is read back and compared with the
  reference contender's by the benchmark's own ``verify`` function;
- results are reported as ratios to the reference (the floor), not pass/fail.

Usage from a benchmark module::

    results = run_contenders([Contender("floor", [...]), Contender("sluiceway", [...])],
                             runs=3, prepare=clean_outputs)
    print(markdown_table(results, rows=5_000_000, reference="floor"))
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
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
    env = {**os.environ, **contender.env}
    reply = _launcher.run(contender.argv, env, contender.cwd, timeout)
    if reply["code"] != 0:
        raise RuntimeError(f"{contender.name} exited {reply['code']}: {reply['stderr'][-2000:]}")
    return float(reply["seconds"]), float(reply["maxrss_kb"]) / 1024.0  # KiB on Linux


def run_contenders(
    contenders: Sequence[Contender],
    *,
    runs: int = 3,
    prepare: Callable[[Contender], None] | None = None,
    verify: Callable[[Contender], None] | None = None,
) -> list[Result]:
    """Run each contender ``runs`` times (interleaved), then verify each one's output."""
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
            try:
                seconds, rss = run_once(contender)
            except (RuntimeError, TimeoutError) as exc:
                result.failed = str(exc)
                continue
            result.seconds.append(seconds)
            result.peak_rss_mb.append(rss)
            print(
                f"  run {i + 1}/{runs} {contender.name}: {seconds:.2f} s, {rss:.0f} MB",
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
    lines = [
        "| contender | median s | × floor | rows/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.failed:
            lines.append(f"| {r.name} | failed: {r.failed[:120]} | | | |")
            continue
        ratio = r.median_seconds / ref.median_seconds
        lines.append(
            f"| {r.name} | {r.median_seconds:.2f} | {ratio:.2f} | "
            f"{rows / r.median_seconds:,.0f} | {r.median_rss_mb:.0f} |"
        )
    return "\n".join(lines)


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
                "failed": r.failed,
            }
            for r in results
        ],
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
