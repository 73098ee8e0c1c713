"""The Delta sink on moto's S3: reruns, concurrent writers, transient failures, stateless runs."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any

import polars as pl
from tests.integration.delta.support import ListExtractor, read_delta_log, txns
from tests.integration.s3.support import Fault, FaultProxy, MotoServer, keys

from sluiceway.config import build_pipeline, load_spec
from sluiceway.connectors.delta import DeltaLoader
from sluiceway.connectors.s3 import read_s3_dead_letters
from sluiceway.core import Pipeline, PipelineMetrics, RetryPolicy
from sluiceway.testing import check_delivery, expected_rows

FAST_RETRY = RetryPolicy(attempts=4, initial_delay=0.05, max_delay=0.2, jitter=0.0)


def s3fs_options(moto: MotoServer) -> dict[str, Any]:
    return {"endpoint_url": moto.url}


def test_a_stateless_run_keeps_state_dlq_and_table_on_s3(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: lake
            source: {{type: sequence, partitions: 2, rows: 150, batch_size: 100, bad_every: 10}}
            validators:
              - type: expectations
                rules: [{{column: amount, between: [0, null]}}]
            sink:
              type: delta
              uri: s3://{bucket}/tables/rows
              endpoint_url: {moto.url}
              mode: merge
              keys: [partition, n]
            state: {{uri: "s3://{bucket}/_state", endpoint_url: "{moto.url}"}}
            dlq: {{uri: "s3://{bucket}/_dlq/lake", endpoint_url: "{moto.url}"}}
            """
        )
    )

    def run() -> PipelineMetrics:
        parsed, base = load_spec(spec)
        return build_pipeline(parsed, base_dir=base).run()

    first = run()
    second = run()

    assert first.written == 270 and first.dead_lettered == 30
    assert second.read == 0
    assert keys(moto.client(), bucket, "_state/") == ["_state/lake.state.json"]  # lock released
    table = read_delta_log(f"s3://{bucket}/tables/rows", s3fs_options(moto))
    letters = read_s3_dead_letters(f"s3://{bucket}/_dlq/lake", options=moto.options())
    report = check_delivery(expected_rows(2, 150), table, letters)
    assert report.ok, report.summary()


def _writer(
    moto: MotoServer, uri: str, home: Path, partitions: list[str], out: dict[str, Any]
) -> None:
    batches = [
        (p, start, [{"partition": p, "n": n} for n in range(start, start + 5)])
        for start in range(0, 40, 5)
        for p in partitions
    ]
    loader = DeltaLoader(uri, options=moto.options())
    try:
        out[partitions[0]] = Pipeline(
            "group", ListExtractor(batches), loader=loader, home=home, retry=FAST_RETRY
        ).run()
    except Exception as exc:  # reported by the test
        out[partitions[0]] = exc


def test_two_writers_on_disjoint_partitions_never_mask_each_other(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/tables/events"
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=_writer, args=(moto, uri, tmp_path / name, parts, results))
        for name, parts in (("a", ["p0", "p1"]), ("b", ["p2", "p3"]))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert all(isinstance(m, PipelineMetrics) for m in results.values()), results
    assert sum(m.written for m in results.values()) == 4 * 40
    table = read_delta_log(uri, s3fs_options(moto))
    got = sorted((r["partition"], r["n"]) for r in table.select(["partition", "n"]).to_pylist())
    assert got == [(p, n) for p in ("p0", "p1", "p2", "p3") for n in range(40)]
    assert {k: v for k, v in txns(uri, s3fs_options(moto)).items() if k.startswith("group/")} == {
        f"group/p{i}": 40 for i in range(4)
    }
    # Writer a's state is lost: it reads again from the start and loads nothing twice.
    _writer(moto, uri, tmp_path / "a-again", ["p0", "p1"], results)
    assert results["p0"].skipped_committed == 80 and results["p0"].written == 0


def _proxied_loader(moto: MotoServer, proxy: FaultProxy, uri: str) -> DeltaLoader:
    # delta-rs retries an object-store request itself; allow it once so that the
    # injected failures reach sluiceway's own retry.
    return DeltaLoader(
        uri,
        options=moto.options(),
        storage_options={"AWS_ENDPOINT_URL": proxy.url, "max_retries": "1", "retry_timeout": "2s"},
    )


def _is_commit(method: str, path: str) -> bool:
    return method == "PUT" and "/_delta_log/" in path and path.endswith(".json")


def test_a_transient_s3_failure_of_the_commit_is_retried(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/tables/t"
    batches = [("p0", i * 10, [{"id": i * 10 + k} for k in range(10)]) for i in range(3)]
    proxy = FaultProxy(moto.port).start()
    try:
        proxy.inject(Fault(lambda m, p: _is_commit(m, p) and "0001.json" in p, times=3))
        metrics = Pipeline(
            "t",
            ListExtractor(batches),
            loader=_proxied_loader(moto, proxy, uri),
            home=tmp_path,
            retry=FAST_RETRY,
        ).run()
    finally:
        proxy.stop()

    assert metrics.retries >= 1 and metrics.written == 30 and metrics.dead_lettered == 0
    ids = sorted(read_delta_log(uri, s3fs_options(moto)).column("id").to_pylist())
    assert ids == list(range(30))


def test_a_commit_that_landed_but_was_reported_failed_is_not_written_twice(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/tables/t"
    batches = [("p0", i * 10, [{"id": i * 10 + k} for k in range(10)]) for i in range(3)]
    proxy = FaultProxy(moto.port).start()
    try:
        # The log entry of the second commit is stored, then the client hears 503.
        fault = proxy.inject(
            Fault(lambda m, p: _is_commit(m, p) and "0001.json" in p, times=1, after=True)
        )
        metrics = Pipeline(
            "t",
            ListExtractor(batches),
            loader=_proxied_loader(moto, proxy, uri),
            home=tmp_path,
            retry=FAST_RETRY,
        ).run()
    finally:
        proxy.stop()

    assert fault.hits == 1
    assert metrics.written + metrics.skipped_committed == 30 and metrics.dead_lettered == 0
    ids = sorted(read_delta_log(uri, s3fs_options(moto)).column("id").to_pylist())
    assert ids == list(range(30))
    polars_options = {"aws_endpoint_url": moto.url, "aws_allow_http": "true"}
    frame = pl.read_delta(uri, storage_options=polars_options)
    assert sorted(frame["id"].to_list()) == list(range(30))


def test_strict_schema_mismatch_on_s3_is_dead_lettered_with_the_reason(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/tables/strict"
    batches = [("p0", 0, [{"id": 1}]), ("p0", 1, [{"id": 2, "surprise": "x"}])]
    loader = DeltaLoader(uri, options=moto.options(), schema_mode="strict")
    metrics = Pipeline("s", ListExtractor(batches), loader=loader, home=tmp_path).run()

    assert metrics.written == 1 and metrics.dead_lettered == 1
    assert read_delta_log(uri, s3fs_options(moto)).to_pylist() == [{"id": 1}]
    from sluiceway.core import read_dead_letters

    (letter,) = read_dead_letters(tmp_path / "dlq" / "s").to_pylist()
    assert "extra column(s) 'surprise'" in letter["error_message"]
