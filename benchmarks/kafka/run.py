"""Kafka → Parquet: 1,000,000 JSON messages of ~300 bytes, sluiceway against the floor.

    uv run python -m benchmarks.kafka.run [--messages 1000000] [--runs 3]

The broker is librdkafka's mock cluster in its own process (no Java broker here);
it keeps about 5 MB per partition, so the messages are spread over 20 topics of 4
partitions and read by pattern. Every contender reads all of them into Parquet, in
a fresh process (``benchmarks.harness``), medians of ``--runs``:

- ``floor``: a plain confluent-kafka loop (assign, consume, one ``pyarrow.json``
  parse per 100k messages, Parquet per chunk): no group, offsets, state or DLQ;
- ``naive``: the same loop decoding with ``json.loads`` per message;
- ``sluiceway``: ``sluiceway run`` with the kafka source (consumer group, offsets
  committed after each load, state, DLQ) and the Parquet sink.

Outputs are checked in a subprocess (every id exactly once). Numbers are
provisional on a shared 2-core machine; the broker shares those cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from benchmarks.harness import Contender, markdown_table, run_contenders, save_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOPICS = 20


def spec(bootstrap: str, prefix: str, out: Path, home: Path, group: str) -> str:
    return f"""version: 1
name: bench-kafka
source:
  type: kafka
  bootstrap_servers: "{bootstrap}"
  pattern: "^{prefix}-[0-9]+$"
  group_id: {group}
  batch_size: 100000
  max_batch_wait: 2s
  metadata: [topic, partition, offset]
sink: {{type: parquet, path: "{out}"}}
home: "{home}"
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluiceway-bench-kafka"))
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.kafka.broker"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert broker.stdout is not None
    bootstrap = broker.stdout.readline().strip()
    try:
        prefix = "bench"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.kafka.produce",
                bootstrap,
                prefix,
                str(TOPICS),
                str(args.messages),
            ],
            cwd=ROOT,
            check=True,
        )
        env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        outs = {name: work / name for name in ("floor", "naive", "sluiceway")}
        spec_path = work / "bench-kafka.yaml"
        floor = [sys.executable, "-m", "benchmarks.kafka.floor", bootstrap, prefix, str(TOPICS)]
        contenders = [
            Contender("floor", [*floor, str(outs["floor"])], env=env, cwd=str(ROOT)),
            Contender("naive", [*floor, str(outs["naive"]), "naive"], env=env, cwd=str(ROOT)),
            Contender(
                "sluiceway",
                [str(Path(sys.executable).parent / "sluiceway"), "run", "-q", str(spec_path)],
                env={**env, "SLUICEWAY_LOG_FORMAT": "json"},
                cwd=str(ROOT),
            ),
        ]

        def prepare(contender: Contender) -> None:
            shutil.rmtree(outs[contender.name], ignore_errors=True)
            if contender.name == "sluiceway":
                shutil.rmtree(work / "home", ignore_errors=True)
                group = "bench-" + uuid.uuid4().hex[:8]  # a new group reads from the start
                spec_path.write_text(
                    spec(bootstrap, prefix, outs["sluiceway"], work / "home", group)
                )

        def verify(contender: Contender) -> None:
            check = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.kafka.verify",
                    str(outs[contender.name]),
                    str(args.messages),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            assert check.returncode == 0, check.stderr

        results = run_contenders(contenders, runs=args.runs, prepare=prepare, verify=verify)
        print(markdown_table(results, rows=args.messages, reference="floor"))
        save_results(HERE / "results.jsonl", "kafka", args.messages, results)
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    main()
