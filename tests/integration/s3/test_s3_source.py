"""The S3 source against moto's S3 server: formats, increments, partitions, corrupt objects."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import structlog.testing
from tests.integration.s3.support import Fault, FaultProxy, MotoServer, parquet_bytes, put
from tests.support import ListLoader

from sluiceway.connectors.s3 import S3SourceConfig, build_source
from sluiceway.core import Pipeline, PipelineMetrics, RunFailedError, SourceError
from sluiceway.core.dlq import read_dead_letters
from sluiceway.plugins import BuildContext

ROWS = [{"id": i, "name": f"n{i}", "amount": i * 1.5} for i in range(7)]


def source(moto: MotoServer, tmp_path: Path, **spec: Any) -> Any:
    spec.setdefault("endpoint_url", moto.url)
    config = S3SourceConfig.model_validate({"type": "s3", **spec})
    return build_source(config, BuildContext(pipeline="objects", base_dir=tmp_path))


def run(extractor: Any, tmp_path: Path) -> tuple[PipelineMetrics, list[dict[str, Any]]]:
    loader = ListLoader()
    metrics = Pipeline("objects", extractor, loader=loader, home=tmp_path / "home").run()
    assert metrics.balanced, metrics.balance_message()
    return metrics, loader.rows


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_dead_letters(
        tmp_path / "home" / "dlq" / "objects"
    ).to_pylist()
    return rows


def csv_text(rows: list[dict[str, Any]]) -> bytes:
    lines = ["id,name,amount"] + [f"{r['id']},{r['name']},{r['amount']}" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return bytes(sink.getvalue())


def jsonl_text(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


ENCODINGS = {
    "parquet": ("data.parquet", lambda: parquet_bytes(pa.Table.from_pylist(ROWS))),
    "parquet-zstd": (
        "data.parquet",
        lambda: parquet_bytes(pa.Table.from_pylist(ROWS), compression="zstd", row_group_size=2),
    ),
    "csv": ("data.csv", lambda: csv_text(ROWS)),
    "csv-gzip": ("data.csv.gz", lambda: gzip.compress(csv_text(ROWS))),
    "jsonl": ("data.jsonl", lambda: jsonl_text(ROWS)),
    "jsonl-zstd": ("data.jsonl.zst", lambda: zstd(jsonl_text(ROWS))),
    "jsonl-bz2": ("data.jsonl.bz2", lambda: bz2.compress(jsonl_text(ROWS))),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_each_format_and_compression_is_read_completely(
    moto: MotoServer, bucket: str, tmp_path: Path, encoding: str
) -> None:
    name, body = ENCODINGS[encoding]
    put(moto.client(), bucket, f"in/{name}", body())
    fmt = encoding.split("-", maxsplit=1)[0]

    extractor = source(moto, tmp_path, path=f"s3://{bucket}/in/", format=fmt, batch_size=3)
    metrics, rows = run(extractor, tmp_path)

    assert metrics.read == len(ROWS) and metrics.written == len(ROWS)
    assert sorted(rows, key=lambda r: r["id"]) == ROWS


def test_a_later_run_reads_only_new_and_changed_objects(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    client = moto.client()
    table = pa.Table.from_pylist(ROWS)
    put(client, bucket, "in/a.parquet", parquet_bytes(table))
    put(client, bucket, "in/b.parquet", parquet_bytes(table))
    path = f"s3://{bucket}/in/*.parquet"

    first, _ = run(source(moto, tmp_path, path=path), tmp_path)
    assert first.written == 2 * len(ROWS)

    changed = pa.Table.from_pylist([{**r, "name": "changed"} for r in ROWS[:3]])
    put(client, bucket, "in/a.parquet", parquet_bytes(changed))
    put(client, bucket, "in/c.parquet", parquet_bytes(table.slice(0, 2)))
    second, rows = run(source(moto, tmp_path, path=path), tmp_path)

    assert second.read == 3 + 2
    assert sorted(r["name"] for r in rows) == ["changed"] * 3 + ["n0", "n1"]
    third, _ = run(source(moto, tmp_path, path=path), tmp_path)
    assert third.read == 0


def test_hive_directories_become_columns_with_declared_types(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    client = moto.client()
    body = parquet_bytes(pa.Table.from_pylist(ROWS[:2]))
    put(client, bucket, "t/date=2026-11-01/region=eu/part.parquet", body)
    put(client, bucket, "t/date=2026-11-02/region=us%20east/part.parquet", body)
    put(client, bucket, "t/date=__HIVE_DEFAULT_PARTITION__/region=eu/part.parquet", body)

    extractor = source(
        moto, tmp_path, path=f"s3://{bucket}/t/**/*.parquet", schema={"date": "date"}
    )
    _, rows = run(extractor, tmp_path)

    seen = sorted({(str(r["date"]), r["region"]) for r in rows})
    assert seen == [("2026-11-01", "eu"), ("2026-11-02", "us east"), ("None", "eu")]
    assert len(rows) == 6 and all(
        set(r) == {"id", "name", "amount", "date", "region"} for r in rows
    )


def test_a_corrupt_object_is_dead_lettered_with_its_key_while_the_others_load(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    client = moto.client()
    good = parquet_bytes(pa.Table.from_pylist(ROWS))
    put(client, bucket, "in/a.parquet", good)
    put(client, bucket, "in/b.parquet", b"PAR1 this is not parquet at all PAR1")
    put(client, bucket, "in/c.parquet", good)
    path = f"s3://{bucket}/in/*.parquet"

    metrics, rows = run(source(moto, tmp_path, path=path), tmp_path)

    assert len(rows) == 2 * len(ROWS)
    assert metrics.dead_lettered == 1
    (letter,) = dead_letters(tmp_path)
    assert letter["partition"] == f"s3://{bucket}/in/b.parquet"
    assert letter["stage"] == "extract" and letter["error_type"] == "DecodeError"
    assert f"s3://{bucket}/in/b.parquet" in letter["error_message"]

    again, _ = run(source(moto, tmp_path, path=path), tmp_path)
    assert again.read == 0  # the corrupt object is not retried until it changes
    put(client, bucket, "in/b.parquet", good)
    fixed, rows = run(source(moto, tmp_path, path=path), tmp_path)
    assert fixed.written == len(ROWS) and len(rows) == len(ROWS)


def test_a_broken_gzip_stream_is_dead_lettered(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    client = moto.client()
    put(client, bucket, "in/a.jsonl.gz", gzip.compress(jsonl_text(ROWS)))
    put(client, bucket, "in/b.jsonl.gz", b"\x1f\x8b\x08\x00garbage-garbage-garbage")

    metrics, rows = run(source(moto, tmp_path, path=f"s3://{bucket}/in/*.jsonl.gz"), tmp_path)

    assert len(rows) == len(ROWS) and metrics.dead_lettered == 1
    assert dead_letters(tmp_path)[0]["partition"] == f"s3://{bucket}/in/b.jsonl.gz"


def test_objects_read_concurrently_arrive_in_key_order(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    client = moto.client()
    for i in range(9):
        rows = [{"obj": i, "n": n} for n in range(10)]
        put(client, bucket, f"in/{i:02d}.parquet", parquet_bytes(pa.Table.from_pylist(rows)))
    loader = ListLoader()
    extractor = source(
        moto, tmp_path, path=f"s3://{bucket}/in/*.parquet", batch_size=4, concurrency=3
    )
    Pipeline("objects", extractor, loader=loader, home=tmp_path / "home").run()

    order = [next(iter(b.positions)) for b in loader.batches]
    assert order == sorted(order)
    assert len(loader.batches) == 9 * 3
    assert sorted((r["obj"], r["n"]) for r in loader.rows) == [
        (i, n) for i in range(9) for n in range(10)
    ]


def test_an_interrupted_batch_is_replayed_exactly_with_its_partition_columns(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    client = moto.client()
    for day in ("01", "02"):
        rows = [{"n": n} for n in range(10)]
        put(client, bucket, f"t/day={day}/x.parquet", parquet_bytes(pa.Table.from_pylist(rows)))

    class FailingOnce(ListLoader):
        def load(self, batch: Any) -> Any:
            if len(self.batches) == 2:
                raise SourceError("the sink went away")  # a fatal error: the run stops
            return super().load(batch)

    path = f"s3://{bucket}/t/**/*.parquet"
    failing = FailingOnce()
    with pytest.raises(RunFailedError):
        Pipeline(
            "objects",
            source(moto, tmp_path, path=path, batch_size=4),
            loader=failing,
            home=tmp_path / "home",
        ).run()
    metrics, rows = run(source(moto, tmp_path, path=path, batch_size=4), tmp_path)

    assert metrics.replayed_batches >= 1  # the failed batch (and one loaded ahead, if any)
    delivered = [(r["day"], r["n"]) for r in failing.rows + rows]
    assert sorted(delivered) == [(d, n) for d in ("01", "02") for n in range(10)]


@pytest.mark.parametrize(("reader", "faults"), [("arrow", 3), ("s3fs", 12)])
def test_a_transient_s3_failure_is_retried(
    moto: MotoServer, bucket: str, tmp_path: Path, reader: str, faults: int
) -> None:
    client = moto.client()
    for name in ("a", "b"):
        put(client, bucket, f"in/{name}.csv", csv_text(ROWS))
    proxy = FaultProxy(moto.port).start()
    # More 503s in a row than the client retries on its own (s3fs retries some by
    # itself): the source's read retry takes over and resumes the object.
    fault = proxy.inject(
        Fault(lambda method, path: method == "GET" and path.endswith("/a.csv"), times=faults)
    )
    try:
        extractor = source(
            moto,
            tmp_path,
            path=f"s3://{bucket}/in/*.csv",
            endpoint_url=proxy.url,
            max_attempts=1,
            reader=reader,
        )
        extractor.retry_delay = 0.05
        with structlog.testing.capture_logs() as logs:
            metrics, rows = run(extractor, tmp_path)
    finally:
        proxy.stop()

    assert fault.hits == faults
    assert any(entry["event"] == "object_read_retried" for entry in logs)
    assert metrics.written == 2 * len(ROWS) and len(rows) == 2 * len(ROWS)


def test_a_missing_bucket_stops_the_run(moto: MotoServer, tmp_path: Path) -> None:
    extractor = source(moto, tmp_path, path="s3://no-such-bucket-here/in/", format="parquet")
    with pytest.raises(RunFailedError) as caught:
        run(extractor, tmp_path)
    assert isinstance(caught.value.cause, SourceError)
    assert "no-such-bucket-here" in str(caught.value.cause)


def test_the_file_type_reads_a_local_folder_the_same_way(tmp_path: Path) -> None:
    folder = tmp_path / "lake" / "day=07"
    folder.mkdir(parents=True)
    (folder / "x.parquet").write_bytes(parquet_bytes(pa.Table.from_pylist(ROWS)))
    config = S3SourceConfig.model_validate({"type": "s3", "path": "lake/", "format": "parquet"})
    extractor = build_source(config, BuildContext(pipeline="objects", base_dir=tmp_path))

    _, rows = run(extractor, tmp_path)

    assert sorted((r["day"], r["id"]) for r in rows) == [("07", r["id"]) for r in ROWS]


def test_csv_options_are_refused_for_other_formats() -> None:
    with pytest.raises(ValueError, match="delimiter only apply to format 'csv'"):
        S3SourceConfig.model_validate({"type": "s3", "path": "s3://b/x.parquet", "delimiter": ";"})
    with pytest.raises(ValueError, match="set format"):
        S3SourceConfig.model_validate({"type": "s3", "path": "s3://b/prefix/"})
