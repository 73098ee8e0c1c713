"""Observability overhead: the file pipeline with Datadog tracing + metrics + events on vs off.

    uv run python -m benchmarks.observability.run [--rows 2000000] [--runs 3]

The pipeline: Parquet (≈10 columns) → one SQL transform → two expectation
validators → Parquet, batches of 100,000 rows, run as users run it (``sluiceway run
SPEC --quiet``, the files benchmark's command). Two contenders, each run in a fresh
process through the shared harness (medians of ``--runs``), differing only in the
spec's ``observability:`` section:

- ``off``: ``observability`` off (the default) — no vendor package imported;
- ``on``: ``observability: {datadog: true}`` — ddtrace spans to a real trace agent
  (``ddapm-test-agent`` started here on 127.0.0.1), DogStatsD metrics and events to
  a UDP listener in this process. Import of ddtrace and the final flush included;
  with the default exporter (a child process that the run starts, feeds and waits
  for), that child's CPU is in the run's CPU column too (``wait4`` counts the
  descendants a process has waited for).

The ratio ``on / off`` is the overhead (goal: under 1.05). After the runs the
outputs are compared (same rows written) and the listener must have received a
``sluiceway.records.written`` total equal to the rows written by each ``on`` run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness import Contender, markdown_table, run_contenders, save_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BATCH = 100_000

SPEC = """\
version: 1
name: bench-observability
source: {{type: parquet, path: {data}, batch_size: {batch}}}
transforms:
  - type: sql
    query: SELECT *, amount_cents / 100.0 AS amount, quantity * price AS total FROM batch
validators:
  - type: expectations
    rules:
      - {{column: id, not_null: true}}
      - {{column: amount, between: [0, 100000]}}
  - type: expectations
    rules:
      - {{column: status, accepted_values: [new, paid, shipped, cancelled]}}
      - {{column: country, not_null: true}}
sink: {{type: parquet, path: {out}, mode: replace}}
home: {home}
{observability}"""

#: What the "on" spec adds: spans, metrics and events, everything else from ``DD_*``.
ON = "observability: {datadog: {traces: true, metrics: true, events: true}}\n"


def generate(path: Path, rows: int) -> None:
    """A deterministic ~10-column orders table (a few rows fail validation)."""
    if path.exists() and pq.read_metadata(path).num_rows == rows:
        return
    rng = np.random.default_rng(7)
    statuses = np.array(["new", "paid", "shipped", "cancelled", "lost"])
    countries = np.array(["DE", "FR", "US", "JP", "BR", "IN", "NL"])
    table = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "customer_id": pa.array(rng.integers(1, 1_000_000, rows)),
            "amount_cents": pa.array(rng.integers(0, 5_000_000, rows)),
            "quantity": pa.array(rng.integers(1, 20, rows).astype(np.int32)),
            "price": pa.array(rng.random(rows) * 100),
            "status": pa.array(statuses[rng.choice(5, rows, p=[0.3, 0.3, 0.3, 0.0999, 0.0001])]),
            "country": pa.array(countries[rng.integers(0, 7, rows)]),
            "created_at": pa.array(
                (1_700_000_000_000_000 + rng.integers(0, 10**13, rows)).astype("datetime64[us]")
            ),
            "email": pa.array([f"user{i % 100_000}@example.com" for i in range(rows)]),
            "discount": pa.array(rng.random(rows)),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=BATCH)


class UdpSink:
    """A DogStatsD listener: counts ``sluiceway.records.written`` per received datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.written = 0.0
        self.datagrams = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65535).decode()
            except TimeoutError:
                continue
            except OSError:  # closed by close() while waiting
                return
            for line in packet.split("\n"):
                self.datagrams += 1
                if line.startswith("sluiceway.records.written:"):
                    self.written += float(line.split(":", 1)[1].split("|", 1)[0])

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def start_agent(port: int, log: Path) -> subprocess.Popen[bytes]:
    command = shutil.which("ddapm-test-agent") or str(
        Path(sys.executable).parent / "ddapm-test-agent"
    )
    proc = subprocess.Popen(
        [command, "--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"ddapm-test-agent did not start: {log.read_text()[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    default_workdir = Path(tempfile.gettempdir()) / "sluiceway-bench-observability"
    parser.add_argument("--workdir", type=Path, default=default_workdir)
    args = parser.parse_args()
    work: Path = args.workdir
    data = work / f"orders-{args.rows}.parquet"
    print(f"generating {args.rows:,} rows in {data} …", file=sys.stderr)
    generate(data, args.rows)

    udp = UdpSink()
    agent_port = free_port()
    agent = start_agent(agent_port, work / "agent.log")
    env = {
        "PYTHONPATH": str(ROOT),
        "DD_TRACE_AGENT_URL": f"http://127.0.0.1:{agent_port}",
        "DD_AGENT_HOST": "127.0.0.1",
        "DD_DOGSTATSD_PORT": str(udp.port),
        "DD_ENV": "bench",
        # As the files benchmark runs it: JSON log lines at level error (none here).
        "SLUICEWAY_LOG_LEVEL": "error",
        "SLUICEWAY_LOG_FORMAT": "json",
        # A warm bytecode cache, as on an installed system: with PYTHONDONTWRITEBYTECODE=1
        # each "on" run would recompile ddtrace (~1 s that is not observability's cost).
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(work / "pycache"),
    }
    contenders = []
    for mode in ("off", "on"):
        folder = work / mode
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / "pipeline.yaml"
        spec.write_text(
            textwrap.dedent(
                SPEC.format(
                    data=data,
                    batch=BATCH,
                    out=folder / "out",
                    home=folder / ".sluiceway",
                    observability=ON if mode == "on" else "",
                )
            )
        )
        argv = [sys.executable, "-m", "sluiceway", "run", str(spec), "--quiet"]
        contenders.append(Contender(mode, argv, env=env, cwd=str(ROOT)))

    # Warm the cache (untimed): every import of either mode compiled once.
    subprocess.run(
        [sys.executable, "-m", "benchmarks.files.warm"], env={**os.environ, **env}, check=True
    )
    subprocess.run(
        [sys.executable, "-c", "import ddtrace.trace, datadog.dogstatsd.base"],
        env={**os.environ, **env},
        check=True,
    )

    received: list[float] = []

    def prepare(contender: Contender) -> None:
        folder = work / contender.name
        shutil.rmtree(folder / "out", ignore_errors=True)
        shutil.rmtree(folder / ".sluiceway", ignore_errors=True)
        if contender.name == "on":
            received.append(udp.written)

    def rows_out(name: str) -> int:
        return sum(pq.read_metadata(f).num_rows for f in (work / name / "out").glob("*.parquet"))

    def verify(contender: Contender) -> None:
        assert rows_out(contender.name) == rows_out("off") > 0
        if contender.name == "on":
            time.sleep(0.5)
            assert udp.written - received[-1] == rows_out("on"), "metrics lost before exit"

    try:
        results = run_contenders(contenders, runs=args.runs, prepare=prepare, verify=verify)
    finally:
        agent.terminate()
        udp.close()
    print(markdown_table(results, rows=args.rows, reference="off"))
    on, off = results[1], results[0]
    if not (on.failed or off.failed):
        print(f"\noverhead: {100 * (on.median_seconds / off.median_seconds - 1):+.1f}%")
        # Runs alternate off, on: each pair shares the machine's state of the moment.
        paired = statistics.median(b - a for a, b in zip(off.seconds, on.seconds, strict=True))
        print(f"paired difference (median of on - off per run): {paired:+.3f} s")
    save_results(HERE / "results.jsonl", "observability", args.rows, results)


if __name__ == "__main__":
    main()
