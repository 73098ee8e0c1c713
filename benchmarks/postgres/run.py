"""PostgreSQL table → Parquet and → PostgreSQL, against the COPY floor, dlt and pandas.

    uv run python -m benchmarks.postgres.run --rows 5000000
    uv run python -m benchmarks.postgres.run --rows 1000000,5000000   # flat memory check

Contenders, each in a fresh process (``benchmarks.harness``), medians of ``--runs``:

to Parquet
- ``copy-floor``: ``psql -c "COPY … TO STDOUT (FORMAT binary)"`` into /dev/null — the
  server's cost of handing the rows over, with no decoding at all;
- ``sluiceway``: ``sluiceway run`` of a spec ``postgres`` source → ``parquet`` sink;
- ``sluiceway-driver`` (with ``--adbc-driver PATH``): the same, its source reading
  through that build of the ADBC PostgreSQL driver (``adbc_driver:``);
- ``dlt-<backend>``: dlt's ``sql_table`` with ``--dlt-backends`` (connectorx, pyarrow)
  into its filesystem destination as Parquet;
- ``pandas``: ``pandas.read_sql(chunksize=100000)`` on a streaming cursor, ``to_parquet``
  per chunk.

to PostgreSQL (another table of the same server)
- ``copy-pipe-floor``: ``psql COPY TO STDOUT (FORMAT binary) | psql COPY FROM STDIN``;
- ``sluiceway``: ``postgres`` source → ``postgres`` sink (``append``, with its ledger).

dlt's default ``sqlalchemy`` backend is measured apart, on ``--slow-rows`` rows (it
takes minutes at full size), against the floor at that size.

The source table is generated once per row count (``data.py``); every output is
read back and compared with the source (``verify.py``: row count and checksums).
Generation and verification run in subprocesses, so this parent stays small (Linux
counts the parent's peak RSS into each child's ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from benchmarks.harness import Contender, markdown_table, run_contenders, save_results
from benchmarks.postgres.job import (
    BATCH_SIZE,
    DSN,
    PARQUET_SPEC,
    POSTGRES_SPEC,
    source_table,
    target_table,
    url,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _psql() -> str:
    return shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"


def _python(module: str, *args: object, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )


def _sql(statement: str) -> None:
    subprocess.run(
        [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", DSN, "-c", statement],
        check=True,
        capture_output=True,
    )


def _verify(rows: int, kind: str, path: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.postgres.verify", str(rows), kind, path],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr.strip()[-500:] or f"verify exited {done.returncode}")
    print(f"  verified {path}: matches the source", file=sys.stderr)


def _backend_of_bench_db(command: str) -> bool:
    """A PostgreSQL backend process serving the benchmark's database (its title says so)."""
    dbname = dict(part.split("=", 1) for part in DSN.split()).get("dbname", "")
    return command.startswith("postgres: ") and f" {dbname} " in command


def _table(title: str, results: Sequence[object], rows: int, reference: str) -> str:
    return f"#### {title}\n\n" + markdown_table(results, rows=rows, reference=reference)  # type: ignore[arg-type]


def bench(
    rows: int,
    runs: int,
    workdir: Path,
    partitions: int,
    backends: Sequence[str],
    only: set[str],
    targets: Collection[str] = ("parquet", "postgres"),
    adbc_driver: Path | None = None,
) -> str:
    env = {
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
        "BENCH_PG_DSN": DSN,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    _python("benchmarks.postgres.data", rows, env=env)
    _python("benchmarks.postgres.warm", env=env)  # bytecode compiled once, untimed
    source, target = source_table(rows), target_table(rows)
    floor_target = f"bench_floor_{rows}"
    out = workdir / "out"
    py = sys.executable

    def write_parquet_spec(name: str, driver: Path | None = None) -> Path:
        spec = workdir / f"to-parquet{'-driver' if driver else ''}.yaml"
        text = PARQUET_SPEC.format(
            table=source,
            batch_size=BATCH_SIZE,
            partitions=partitions,
            target=out / name,
            home=out / f"{name}-home",
        )
        if driver is not None:  # the same run, reading through another build of the driver
            text = text.replace("source:\n", f"source:\n  adbc_driver: {driver.resolve()}\n")
        spec.write_text(text)
        return spec

    parquet_spec = write_parquet_spec("sluiceway")
    driver_spec = write_parquet_spec("sluiceway-driver", adbc_driver) if adbc_driver else None
    pg_spec = workdir / "to-postgres.yaml"
    pg_spec.write_text(
        POSTGRES_SPEC.format(
            table=source,
            batch_size=BATCH_SIZE,
            partitions=partitions,
            target=target,
            home=out / "sluiceway-pg-home",
        )
    )
    quiet = {**env, "SLUICEWAY_LOG_LEVEL": "error", "SLUICEWAY_LOG_FORMAT": "json"}
    copy_out = f"COPY public.{source} TO STDOUT (FORMAT binary)"
    to_parquet = [
        Contender("copy-floor", [_psql(), "-X", "-q", "-d", DSN, "-c", copy_out], env=env),
        Contender(
            "sluiceway",
            [py, "-m", "sluiceway", "run", str(parquet_spec), "--quiet"],
            env=quiet,
            cwd=str(ROOT),
        ),
        *(
            [
                Contender(
                    "sluiceway-driver",
                    [py, "-m", "sluiceway", "run", str(driver_spec), "--quiet"],
                    env=quiet,
                    cwd=str(ROOT),
                )
            ]
            if driver_spec is not None
            else []
        ),
        *[
            Contender(
                f"dlt-{backend}",
                [
                    py,
                    "-m",
                    "benchmarks.postgres.dlt_job",
                    url(),
                    source,
                    str(out / f"dlt-{backend}"),
                    backend,
                ],
                env=env,
                cwd=str(ROOT),
            )
            for backend in backends
        ],
        Contender(
            "pandas",
            [py, "-m", "benchmarks.postgres.pandas_job", url(), source, str(out / "pandas")],
            env=env,
            cwd=str(ROOT),
        ),
    ]
    pipe = (
        f"{_psql()} -X -q -d '{DSN}' -c '{copy_out}' | "
        f"{_psql()} -X -q -d '{DSN}' -c 'COPY public.{floor_target} FROM STDIN (FORMAT binary)'"
    )
    to_postgres = [
        Contender("copy-pipe-floor", ["sh", "-c", pipe], env=env),
        Contender(
            "sluiceway",
            [py, "-m", "sluiceway", "run", str(pg_spec), "--quiet"],
            env=quiet,
            cwd=str(ROOT),
        ),
    ]

    def prepare(contender: Contender) -> None:
        for path in out.glob(f"{contender.name}*"):
            shutil.rmtree(path, ignore_errors=True)
        if contender.name == "copy-pipe-floor":
            _sql(f"DROP TABLE IF EXISTS {floor_target}")
            _sql(f"CREATE TABLE {floor_target} (LIKE {source})")
        if contender in to_postgres and contender.name == "sluiceway":
            shutil.rmtree(out / "sluiceway-pg-home", ignore_errors=True)
            _sql(f"DROP TABLE IF EXISTS {target}")
            _sql(
                "DELETE FROM _sluiceway_ledger WHERE pipeline = 'bench-pg-pg'"
                if _ledger_exists()
                else "SELECT 1"
            )

    def verify_parquet(contender: Contender) -> None:
        if contender.name == "copy-floor":
            return
        folder = out / contender.name
        if contender.name.startswith("dlt-"):
            folder = folder / "data" / "bench" / source
        _verify(rows, "parquet", str(folder), env)

    def verify_postgres(contender: Contender) -> None:
        _verify(
            rows, "postgres", floor_target if contender.name.startswith("copy") else target, env
        )

    sections = []
    for title, group, check in (
        ("to Parquet", to_parquet if "parquet" in targets else [], verify_parquet),
        ("to PostgreSQL", to_postgres if "postgres" in targets else [], verify_postgres),
    ):
        if not group:
            continue
        chosen = [c for c in group if not only or c.name in only or c.name.endswith("floor")]
        results = run_contenders(
            chosen, runs=runs, prepare=prepare, verify=check, server=_backend_of_bench_db
        )
        save_results(HERE / "results.jsonl", f"postgres {title}", rows, results)
        sections.append(_table(f"{rows:,} rows {title}", results, rows, chosen[0].name))
    head = (
        f"### {rows:,} rows (batch_size {BATCH_SIZE:,}, partitions {partitions}; "
        f"medians of {runs} runs)\n\n"
    )
    return head + "\n\n".join(sections)


def slow(rows: int, runs: int, workdir: Path) -> str:
    """dlt's default (sqlalchemy) backend, on a smaller table, against the floor there."""
    env = {
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    _python("benchmarks.postgres.data", rows, env=env)
    source = source_table(rows)
    out = workdir / "out"
    py = sys.executable
    copy_out = f"COPY public.{source} TO STDOUT (FORMAT binary)"
    contenders = [
        Contender("copy-floor", [_psql(), "-X", "-q", "-d", DSN, "-c", copy_out], env=env),
        Contender(
            "dlt-sqlalchemy",
            [
                py,
                "-m",
                "benchmarks.postgres.dlt_job",
                url(),
                source,
                str(out / "dlt-sqlalchemy"),
                "sqlalchemy",
            ],
            env=env,
            cwd=str(ROOT),
        ),
    ]

    def prepare(contender: Contender) -> None:
        shutil.rmtree(out / contender.name, ignore_errors=True)

    def verify(contender: Contender) -> None:
        if contender.name != "copy-floor":
            _verify(rows, "parquet", str(out / contender.name / "data" / "bench" / source), env)

    results = run_contenders(
        contenders, runs=runs, prepare=prepare, verify=verify, server=_backend_of_bench_db
    )
    save_results(HERE / "results.jsonl", "postgres dlt default backend", rows, results)
    return _table(f"{rows:,} rows to Parquet, dlt's default backend", results, rows, "copy-floor")


def _ledger_exists() -> bool:
    done = subprocess.run(
        [
            _psql(),
            "-X",
            "-q",
            "-At",
            "-d",
            DSN,
            "-c",
            "SELECT to_regclass('_sluiceway_ledger') IS NOT NULL",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() == "t"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", default="5000000", help="row count(s), comma separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=1, help="sluiceway source partitions")
    parser.add_argument("--dlt-backends", default="connectorx,pyarrow")
    parser.add_argument(
        "--slow-rows", type=int, default=500_000, help="dlt default backend; 0: skip"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluiceway-bench-postgres"))
    parser.add_argument("--only", default="", help="contenders to run (floors always run)")
    parser.add_argument(
        "--to", default="parquet,postgres", help="targets to measure: parquet, postgres or both"
    )
    parser.add_argument(
        "--adbc-driver",
        type=Path,
        help="also run sluiceway → Parquet reading through this build of the ADBC PostgreSQL "
        "driver (contender sluiceway-driver)",
    )
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    backends = [b for b in args.dlt_backends.split(",") if b]
    sections = [
        bench(
            int(rows),
            args.runs,
            args.workdir,
            args.partitions,
            backends,
            only,
            {name for name in args.to.split(",") if name},
            args.adbc_driver,
        )
        for rows in args.rows.split(",")
    ]
    if args.slow_rows and (not only or "dlt-sqlalchemy" in only):
        sections.append(slow(args.slow_rows, args.runs, args.workdir))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
