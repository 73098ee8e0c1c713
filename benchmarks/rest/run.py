"""REST → Parquet: pages/s against a local API answering each request after 50 ms.

    uv run python -m benchmarks.rest.run [--pages 200] [--latency-ms 50] [--runs 3]

Contenders, each in a fresh process (``benchmarks.harness``), medians of ``--runs``:

- ``floor``: a sequential httpx loop (``floor.py``) — pages × latency is its limit;
- ``sluiceway c=N``: ``sluiceway run`` with the rest source, ``concurrency: N``
  (page-number pagination lets pages be requested ahead; batches still commit in
  page order) and the Parquet sink.

Each page is a batch with its own state commit, so sluiceway pays a few ms per
page on top of the wire. Numbers are provisional (shared 2-core machine).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Contender, Result, run_contenders, save_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PER_PAGE = 100


def spec(base: str, out: Path, home: Path, concurrency: int) -> str:
    return f"""version: 1
name: bench-rest-c{concurrency}
source:
  type: rest
  base_url: "{base}"
  concurrency: {concurrency}
  endpoint_column: null
  endpoints:
    - name: items
      path: /items
      records: items
      paginate: {{type: page_number, size: {PER_PAGE}}}
sink: {{type: parquet, path: "{out}"}}
home: "{home}"
"""


def table(results: list[Result], pages: int) -> str:
    ref = next(r for r in results if r.name == "floor")
    lines = [
        "| contender | median s | pages/s | × floor speed | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.failed:
            lines.append(f"| {r.name} | failed: {r.failed[:100]} | | | |")
            continue
        lines.append(
            f"| {r.name} | {r.median_seconds:.2f} | {pages / r.median_seconds:.1f} | "
            f"{ref.median_seconds / r.median_seconds:.2f} | {r.median_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluiceway-bench-rest"))
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.rest.server",
            str(port),
            str(args.pages),
            str(PER_PAGE),
            str(args.latency_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    server.stdout.readline()
    base = f"http://127.0.0.1:{port}"
    try:
        env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        sluiceway = str(Path(sys.executable).parent / "sluiceway")
        contenders = [
            Contender(
                "floor",
                [sys.executable, "-m", "benchmarks.rest.floor", base, str(work / "floor.parquet")],
                env=env,
                cwd=str(ROOT),
            )
        ]
        for c in (int(x) for x in args.concurrency.split(",")):
            path = work / f"c{c}.yaml"
            path.write_text(spec(base, work / f"out-c{c}", work / f"home-c{c}", c))
            contenders.append(
                Contender(f"sluiceway c={c}", [sluiceway, "run", "-q", str(path)], env=env)
            )

        def prepare(contender: Contender) -> None:
            if contender.name.startswith("sluiceway"):
                c = contender.name.split("=")[1]
                shutil.rmtree(work / f"out-c{c}", ignore_errors=True)
                shutil.rmtree(work / f"home-c{c}", ignore_errors=True)

        def verify(contender: Contender) -> None:
            import pyarrow.parquet as pq

            if contender.name == "floor":
                path = work / "floor.parquet"
            else:
                path = work / f"out-c{contender.name.split('=')[1]}"
            ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
            assert sorted(ids) == list(range(args.pages * PER_PAGE)), contender.name

        results = run_contenders(contenders, runs=args.runs, prepare=prepare, verify=verify)
        print(table(results, args.pages))
        save_results(HERE / "results.jsonl", "rest", args.pages * PER_PAGE, results)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
