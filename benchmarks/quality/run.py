"""Data-quality cost: five typical checks per tool, and the built-in checks' pipeline overhead.

    uv run python -m benchmarks.quality.run [--rows 1000000] [--pipeline-rows 5000000] [--runs 3]

Part 1 — validation cost per million rows. The same five checks (id not null, id
unique, amount between 0 and 1000, email matches a regex, status in a set) with
each tool: the built-in ``expectations`` (the reference), ``pandera`` (Polars),
``great_expectations`` (pandas, ephemeral context) and ``soda`` (contract over
DuckDB). Each contender is a fresh process through the shared harness
(``benchmarks.quality.tools``); inside it, ``validate()`` is timed over batches of
100,000 rows already in memory (conversion to the tool's frame included), apart
from the setup (imports, building the validator, a first small call). Medians of
``--runs``. After the runs each tool's failing-row counts are checked against
the counts the data was generated with (Pandera and GX fail every occurrence of a
duplicate; Pandera also counts nulls as duplicates of each other).

Part 2 — overhead on a pipeline at ``--pipeline-rows`` (default 5,000,000):
``sluiceway run`` Parquet → Parquet, batches of 100,000 rows, without validators
vs with the built-in five checks (goal: under 20%), and with ``unique_in_run``
added. Verified: every row is written or dead-lettered, and the validated runs
dead-letter exactly the generated bad rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.harness import Contender, markdown_table, run_contenders, save_results
from benchmarks.quality.data import BATCH, EMAIL, STATUSES, Expected

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOOLS = ("expectations", "pandera", "great_expectations", "soda")

SPEC = """\
version: 1
name: bench-quality
source: {{type: parquet, path: {data}, batch_size: {batch}}}
{validators}
sink: {{type: parquet, path: {out}, mode: replace}}
home: {home}
"""
RULES = f"""\
validators:
  - type: expectations
    rules:
      - {{column: id, not_null: true, unique: true}}
      - {{column: amount, between: [0, 1000]}}
      - {{column: email, regex: '{EMAIL}'}}
      - {{column: status, accepted_values: [{", ".join(STATUSES)}]}}
"""
PIPELINES = {
    "no validator": "",
    "expectations (5 checks)": RULES,
    "expectations + unique_in_run": RULES + "      - {column: id, unique_in_run: true}\n",
}


# -- part 1 ---------------------------------------------------------------------------


def generate(data: Path, rows: int) -> Expected:
    """Write the data in a child process (see ``benchmarks.quality.data.main``)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality.data", str(data), str(rows)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    return Expected(**json.loads(out))


def tool_costs(work: Path, rows: int, runs: int) -> str:
    data = work / f"orders-{rows}.parquet"
    expected = generate(data, rows)
    timings: dict[str, list[dict[str, Any]]] = {tool: [] for tool in TOOLS}
    contenders = [
        Contender(
            tool,
            [sys.executable, "-m", "benchmarks.quality.tools", tool, str(data), str(work / tool)],
            env={"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"},
            cwd=str(ROOT),
        )
        for tool in TOOLS
    ]

    def prepare(contender: Contender) -> None:
        out = work / contender.name
        if out.exists():  # the previous run of this contender
            timings[contender.name].append(json.loads(out.read_text()))
            out.unlink()

    def verify(contender: Contender) -> None:
        out = work / contender.name
        timings[contender.name].append(json.loads(out.read_text()))
        out.unlink()
        failed = timings[contender.name][-1]["failed"]
        assert failed == _expected_failures(contender.name, expected), failed

    for tool in TOOLS:
        (work / tool).unlink(missing_ok=True)
    results = run_contenders(contenders, runs=runs, prepare=prepare, verify=verify)
    save_results(HERE / "results.jsonl", "quality-tools", rows, results)
    reference = statistics.median(t["validate"] for t in timings["expectations"])
    lines = [
        f"Five checks over {rows:,} rows in batches of {BATCH:,} (medians of {runs} runs).",
        "",
        "| tool | validate s | s per 1M rows | × built-in | setup s | process s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if result.failed or not timings[result.name]:
            lines.append(f"| {result.name} | failed: {(result.failed or '')[:100]} | | | | | |")
            continue
        validate = statistics.median(t["validate"] for t in timings[result.name])
        setup = statistics.median(t["setup"] for t in timings[result.name])
        lines.append(
            f"| {result.name} | {validate:.2f} | {validate / rows * 1e6:.2f} | "
            f"{validate / reference:.1f} | {setup:.1f} | {result.median_seconds:.1f} | "
            f"{result.median_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def _expected_failures(tool: str, e: Expected) -> dict[str, int]:
    unique = e.duplicates
    if tool in ("pandera", "great_expectations"):
        unique = 2 * e.duplicates  # every occurrence
    if tool == "pandera":
        unique += e.null_ids  # nulls are duplicates of each other (≥2 nulls per batch here)
    return {
        "not_null": e.null_ids,
        "unique": unique,
        "between": e.out_of_range,
        "regex": e.bad_emails,
        "accepted": e.bad_statuses,
    }


# -- part 2 ---------------------------------------------------------------------------


def pipeline_overhead(work: Path, rows: int, runs: int) -> str:
    data = work / f"orders-{rows}.parquet"
    expected = generate(data, rows)
    contenders = []
    for index, (name, validators) in enumerate(PIPELINES.items()):
        folder = work / f"pipeline-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / "pipeline.yaml"
        spec.write_text(
            SPEC.format(
                data=data,
                batch=BATCH,
                validators=textwrap.dedent(validators),
                out=folder / "out",
                home=folder / ".sluiceway",
            )
        )
        argv = [sys.executable, "-m", "sluiceway", "run", str(spec), "--quiet"]
        argv += ["--metrics-json", str(folder / "metrics.json")]
        contenders.append(Contender(name, argv, env={"PYTHONWARNINGS": "ignore"}, cwd=str(ROOT)))
    folders = {c.name: work / f"pipeline-{i}" for i, c in enumerate(contenders)}
    stages: dict[str, list[dict[str, float]]] = {c.name: [] for c in contenders}

    def collect(name: str) -> None:
        metrics = folders[name] / "metrics.json"
        if metrics.exists():
            stages[name].append(json.loads(metrics.read_text())["stage_seconds"])
            metrics.unlink()

    def prepare(contender: Contender) -> None:
        collect(contender.name)
        shutil.rmtree(folders[contender.name] / "out", ignore_errors=True)
        shutil.rmtree(folders[contender.name] / ".sluiceway", ignore_errors=True)

    def verify(contender: Contender) -> None:
        collect(contender.name)
        folder = folders[contender.name]
        written = sum(pq.read_metadata(f).num_rows for f in (folder / "out").glob("*.parquet"))
        dlq = folder / ".sluiceway" / "dlq" / "bench-quality"
        dead = sum(pq.read_metadata(f).num_rows for f in dlq.rglob("*.parquet"))
        assert written + dead == rows, (written, dead)
        if contender.name != "no validator":
            assert dead == expected.bad_rows, (dead, expected)

    for folder in folders.values():
        (folder / "metrics.json").unlink(missing_ok=True)
    results = run_contenders(contenders, runs=runs, prepare=prepare, verify=verify)
    save_results(HERE / "results.jsonl", "quality-pipeline", rows, results)
    table = markdown_table(results, rows=rows, reference="no validator")
    breakdown = ["", "| contender | validate stage s | dlq s | load s |", "|---|---:|---:|---:|"]
    for name, seen in stages.items():
        if not seen:
            continue

        def median(key: str, runs: list[dict[str, float]] = seen) -> float:
            return statistics.median(
                sum(v for k, v in run.items() if k.startswith(key)) for run in runs
            )

        breakdown.append(
            f"| {name} | {median('validate'):.2f} | {median('dlq'):.2f} | {median('load'):.2f} |"
        )
    return (
        f"`sluiceway run` Parquet → Parquet, {rows:,} rows, batches of {BATCH:,} "
        f"(medians of {runs} runs; × floor = overhead ratio against no validator).\n\n"
        + table
        + "\n\nIn-run seconds by stage (from `--metrics-json`):\n"
        + "\n".join(breakdown)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pipeline-rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--part", choices=["tools", "pipeline", "both"], default="both")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sluiceway-bench-quality"
    )
    args = parser.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.part in ("tools", "both"):
        print(tool_costs(work, args.rows, args.runs), end="\n\n")
    if args.part in ("pipeline", "both"):
        print(pipeline_overhead(work, args.pipeline_rows, args.runs))


if __name__ == "__main__":
    main()
