"""S3 Parquet → Delta table on S3, with one transform, side by side.

    uv run python -m benchmarks.s3_delta.run [--rows 5000000] [--runs 3]

Contenders, each in a fresh process, against one moto S3 server (started here):

- ``floor``: pyarrow reads the objects, ``deltalake.write_deltalake`` writes the
  table in one commit — the least work the job can be done with;
- ``sluiceway``: ``sluiceway run`` — s3 source, a ``python`` transform, delta sink
  (one commit per batch with its ``txn`` actions, state and DLQ on disk);
- ``dlt``: dlt's filesystem source (Arrow batches) to its delta destination.

The transform is the same function everywhere (:func:`common.transform`,
``amount = amount_cents / 100`` in pyarrow compute). Every output table is
read back and compared with the floor's (rows, distinct ids, checksums). The table
goes to ``README.md`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchmarks.harness import Contender, markdown_table, run_contenders, save_results
from benchmarks.s3_delta.common import (
    BUCKET,
    CREDENTIALS,
    SOURCE,
    delete_prefix,
    make_source,
    start_moto,
)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TARGETS = {
    "floor": f"s3://{BUCKET}/floor/orders",
    "sluiceway": f"s3://{BUCKET}/sluiceway/orders",
    "dlt": f"s3://{BUCKET}/dlt/orders",
}


def spec(endpoint: str, work: Path, batch_size: int) -> Path:
    path = work / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: s3-delta-bench
            source:
              type: s3
              path: {SOURCE}/*.parquet
              endpoint_url: {endpoint}
              batch_size: {batch_size}
              concurrency: 2
            transforms:
              - type: python
                function: benchmarks.s3_delta.common:transform
                frame: arrow
            sink:
              type: delta
              uri: {TARGETS["sluiceway"]}
              endpoint_url: {endpoint}
            home: {work / "home"}
            """
        )
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500_000)
    args = parser.parse_args()

    os.environ.update(CREDENTIALS)
    work = Path(tempfile.mkdtemp(prefix="s3-delta-bench-"))
    moto, endpoint = start_moto()
    try:
        print(f"writing {args.rows:,} rows to {SOURCE} on {endpoint}", file=sys.stderr)
        make_source(endpoint, args.rows)
        python = sys.executable
        sluiceway = str(Path(python).parent / "sluiceway")
        # A warm bytecode cache for every contender, as on an installed system: with
        # PYTHONDONTWRITEBYTECODE=1 each run would recompile its imports (~1-2 s).
        env = {
            **CREDENTIALS,
            "SLUICEWAY_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "",
            "PYTHONPYCACHEPREFIX": str(work / "pycache"),
        }
        subprocess.run([python, "-c", WARM], env={**os.environ, **env}, cwd=str(ROOT), check=True)
        contenders = [
            Contender(
                "floor",
                [python, "-m", "benchmarks.s3_delta.floor", endpoint, TARGETS["floor"]],
                env,
                str(ROOT),
            ),
            Contender(
                "sluiceway",
                [sluiceway, "run", "--quiet", str(spec(endpoint, work, args.batch_size))],
                env,
                str(ROOT),
            ),
            Contender(
                "dlt",
                [python, "-m", "benchmarks.s3_delta.dlt_job", endpoint, TARGETS["dlt"]],
                env,
                str(ROOT),
            ),
        ]

        def table_of(contender: Contender) -> str:
            if contender.name == "dlt":  # dlt puts tables under <bucket_url>/<dataset>/
                base, _, name = TARGETS["dlt"].rpartition("/")
                return f"{base}/out/{name}"
            return TARGETS[contender.name]

        def prepare(contender: Contender) -> None:
            delete_prefix(endpoint, TARGETS[contender.name].split("/", 3)[3].split("/")[0] + "/")
            shutil.rmtree(work / "home", ignore_errors=True)

        expected: dict[str, float] = {}

        def verify(contender: Contender) -> None:
            # In a child process: reading a table here would grow this process, and a
            # forked child's peak RSS counts the parent's pages it started with.
            out = subprocess.run(
                [python, "-m", "benchmarks.s3_delta.common", table_of(contender), endpoint],
                cwd=str(ROOT),
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(out.stdout)
            if contender.name == "floor":
                expected.update(got)
            assert got["rows"] == args.rows, f"{got['rows']:.0f} rows, expected {args.rows}"
            assert got == expected, f"{got} != floor {expected}"

        results = run_contenders(contenders, runs=args.runs, prepare=prepare, verify=verify)
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)

    table = markdown_table(results, rows=args.rows, reference="floor")
    print(table)
    save_results(HERE / "results.jsonl", "s3_delta", args.rows, results)
    command = "uv run python -m benchmarks.s3_delta.run" + (
        f" --rows {args.rows}" if args.rows != 5_000_000 else ""
    )
    (HERE / "README.md").write_text(README.format(command=command, table=table, rows=args.rows))


#: Imports of every contender, compiled once (untimed) before the runs.
WARM = (
    "import deltalake, dlt, pyarrow.dataset, s3fs, sluiceway.cli.app, "
    "sluiceway.connectors.s3, sluiceway.connectors.delta, benchmarks.s3_delta.common"
)

README = """# S3 Parquet → Delta Lake on S3, one transform

`{command}`

{rows:,} rows (id, customer, amount_cents, status, created_at) in 10 Parquet objects
(100k-row groups, snappy) on a local moto S3 server; each contender reads them,
applies the same function (`common.transform`: `amount = amount_cents / 100` in
pyarrow compute) and writes a Delta table on the same server.
Every contender runs in a fresh process; times and peak RSS are medians of 3 runs;
each output table is read back and compared with the floor's (row count, distinct
ids, column checksums).

- **floor**: pyarrow dataset over S3 → `deltalake.write_deltalake`, one commit.
- **sluiceway**: `sluiceway run` — `type: s3` source (`batch_size: 500000`,
  `concurrency: 2`), `type: python` transform (`frame: arrow`), `type: delta` sink:
  one Delta commit per batch carrying its `txn` actions (effectively-once), state
  and DLQ on local disk.
- **dlt**: `filesystem` source with `read_parquet(use_pyarrow=True)` (its Arrow fast
  path) → `filesystem` destination with `table_format="delta"`.

{table}

On the 2-core machine, every contender with a warm bytecode cache. moto (a Python
server on the same two cores) is a large part of every contender's time; the ratios
matter more than the absolute rows/s. Raw numbers of every run are appended to
`results.jsonl`; see `benchmarks/README.md` for the reading against the goal.
"""


if __name__ == "__main__":
    main()
