"""Parquet in → one SQL transform → two validators → Parquet out, against the floor and pandas.

    uv run python -m benchmarks.files.run --rows 5000000
    uv run python -m benchmarks.files.run --rows 1000000,5000000   # the scaling check

Contenders, each in a fresh process (``benchmarks.harness``), medians of ``--runs``:

- ``floor``: ``pq.read_table`` + ``pq.write_table`` of the same file (no transform, no checks);
- ``pandas``: the script a user would write (``benchmarks/files/pandas_job.py``);
- ``sluiceway``: ``sluiceway run`` of a spec doing the same job (``job.py``), with DLQ and state.

The input is generated once per row count (``data.py``); outputs are read back and
compared with an independent pyarrow computation (``verify.py``). Generation and
verification run in subprocesses: this parent stays small, because Linux counts
the parent's peak RSS into every child's ``ru_maxrss``.

Every contender runs with bytecode caching on (``PYTHONPYCACHEPREFIX`` under the
work dir) after one untimed warm-up, as on an installed system; with
``PYTHONDONTWRITEBYTECODE=1`` each process would recompile pandas and Polars.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.files.job import source_name, spec
from benchmarks.harness import Contender, markdown_table, run_contenders, save_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _python(module: str, *args: object, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )


def bench(rows: int, runs: int, batch_size: int, workdir: Path, only: set[str]) -> str:
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(workdir / "pycache")}
    source = workdir / source_name(rows)
    _python("benchmarks.files.data", source, rows, env=env)
    print(f"input: {source} ({source.stat().st_size / 1e6:.0f} MB, {rows:,} rows)", file=sys.stderr)
    out = workdir / "out"
    spec_path = workdir / "bench-files.yaml"
    spec_path.write_text(
        spec(str(source), str(out / "sluiceway"), str(out / "sluiceway-home"), batch_size)
    )
    py = sys.executable
    contenders = [
        Contender(
            "floor",
            [py, "-m", "benchmarks.files.floor", str(source), str(out / "floor")],
            env=env,
            cwd=str(ROOT),
        ),
        Contender(
            "pandas",
            [py, "-m", "benchmarks.files.pandas_job", str(source), str(out / "pandas")],
            env=env,
            cwd=str(ROOT),
        ),
        Contender(
            "sluiceway",
            [py, "-m", "sluiceway", "run", str(spec_path), "--quiet"],
            env={**env, "SLUICEWAY_LOG_LEVEL": "error", "SLUICEWAY_LOG_FORMAT": "json"},
            cwd=str(ROOT),
        ),
    ]
    if only:
        contenders = [c for c in contenders if c.name in only]
    # Warm the bytecode cache (untimed): every import compiled once, as on an installed system.
    _python("benchmarks.files.warm", env=env)

    def prepare(contender: Contender) -> None:
        for name in (contender.name, f"{contender.name}-home"):
            shutil.rmtree(out / name, ignore_errors=True)

    def verify(contender: Contender) -> None:
        done = subprocess.run(
            [py, "-m", "benchmarks.files.verify", contender.name, str(source), str(out)],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(done.stderr.strip()[-500:] or f"verify exited {done.returncode}")
        print(f"  verified {contender.name}: output matches the expected rows", file=sys.stderr)

    results = run_contenders(contenders, runs=runs, prepare=prepare, verify=verify)
    save_results(HERE / "results.jsonl", "files", rows, results)
    head = f"### {rows:,} rows (batch_size {batch_size:,}; medians of {runs} runs)\n\n"
    return head + markdown_table(results, rows=rows, reference=contenders[0].name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", default="5000000", help="row count(s), comma separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=250_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluiceway-bench-files"))
    parser.add_argument("--only", default="", help="contenders to run, comma separated")
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    tables = [
        bench(int(rows), args.runs, args.batch_size, args.workdir, only)
        for rows in args.rows.split(",")
    ]
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
