"""The file sinks: parts named by seq, overwrite on replay, replace swaps, unwritable dirs."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluiceway.connectors.files import (
    CsvExtractor,
    CsvLoader,
    FileLoader,
    JsonlLoader,
    ParquetLoader,
)
from sluiceway.connectors.files import _sinks as sinks_module
from sluiceway.core import Batch, PartitionSpan, Pipeline, RunFailedError, SinkContext, SinkError

TABLE = pa.table(
    {
        "id": pa.array([1, 2, 3], type=pa.int64()),
        "name": ["a", None, "c"],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), None],
    }
)


def batch(seq: int, table: pa.Table = TABLE) -> Batch:
    span = PartitionSpan(0, table.num_rows, table.num_rows)
    return Batch.from_source(table, {"p": span}).sequenced(seq)


def opened(loader: FileLoader) -> FileLoader:
    loader.open(SinkContext("t", "run"))
    return loader


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("part-"))


def test_parquet_part_per_batch_named_by_seq_without_hidden_columns(tmp_path: Path) -> None:
    loader = opened(ParquetLoader(tmp_path / "out"))

    result = loader.load(batch(42))

    assert result.written == 3
    assert parts(tmp_path / "out") == ["part-000000000042.parquet"]
    assert pq.read_table(tmp_path / "out" / "part-000000000042.parquet").equals(TABLE)


def test_csv_and_jsonl_parts_hold_the_rows(tmp_path: Path) -> None:
    opened(CsvLoader(tmp_path / "csv")).load(batch(1))
    opened(JsonlLoader(tmp_path / "jsonl")).load(batch(1))

    with open(tmp_path / "csv" / "part-000000000001.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["day"] == "2024-01-01"
    lines = (tmp_path / "jsonl" / "part-000000000001.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "name": "a", "day": "2024-01-01"},
        {"id": 2, "name": None, "day": "2024-01-02"},
        {"id": 3, "name": "c", "day": None},
    ]


def test_a_replayed_batch_overwrites_its_own_part(tmp_path: Path) -> None:
    loader = opened(ParquetLoader(tmp_path / "out"))

    loader.load(batch(5))
    loader.load(batch(5))

    assert parts(tmp_path / "out") == ["part-000000000005.parquet"]
    assert pq.read_table(tmp_path / "out").num_rows == 3


def test_a_failure_before_the_rename_leaves_no_part_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(name: str) -> None:
        assert name == "mid_load"
        raise RuntimeError("killed mid load")

    monkeypatch.setattr(sinks_module, "crash_point", crash)
    loader = opened(ParquetLoader(tmp_path / "out"))

    with pytest.raises(RuntimeError):
        loader.load(batch(1))

    assert list((tmp_path / "out").iterdir()) == []


def test_an_unwritable_directory_is_a_sink_error_from_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")

    with pytest.raises(SinkError, match="not writable") as info:
        opened(ParquetLoader(blocker / "out"))
    assert str(blocker / "out") in str(info.value)


def test_an_unwritable_sink_fails_the_pipeline_before_reading(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("id\n1\n", encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    pipeline = Pipeline(
        "unwritable", CsvExtractor(str(data)), loader=CsvLoader(blocker), home=tmp_path / "h"
    )

    with pytest.raises(RunFailedError) as info:
        pipeline.run()

    assert isinstance(info.value.cause, SinkError)
    assert info.value.metrics.read == 0


def test_csv_sink_refuses_nested_columns_with_a_hint(tmp_path: Path) -> None:
    loader = opened(CsvLoader(tmp_path / "out"))
    nested = pa.table({"tags": [["a"], ["b", "c"]]})

    with pytest.raises(SinkError, match="jsonl or parquet"):
        loader.load(batch(0, nested))
    assert parts(tmp_path / "out") == []


def test_replace_mode_swaps_in_the_new_run_only_when_it_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = opened(ParquetLoader(out))
    first.load(batch(0))
    first.load(batch(1))

    second = opened(ParquetLoader(out, mode="replace"))
    second.load(batch(2, TABLE.slice(0, 1)))
    assert parts(out) == ["part-000000000000.parquet", "part-000000000001.parquet"]
    assert parts(out / "_staging") == ["part-000000000002.parquet"]

    second.finish()

    assert parts(out) == ["part-000000000002.parquet"]
    assert parts(out / "_staging") == []
    assert pq.read_table(out).column("id").to_pylist() == [1]


def test_replace_run_that_staged_nothing_leaves_the_target_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    opened(ParquetLoader(out)).load(batch(0))

    idle = opened(ParquetLoader(out, mode="replace"))
    idle.finish()

    assert parts(out) == ["part-000000000000.parquet"]


def test_an_interrupted_swap_is_finished_by_the_next_open(tmp_path: Path) -> None:
    out = tmp_path / "out"
    opened(ParquetLoader(out)).load(batch(0))
    staged = opened(ParquetLoader(out, mode="replace"))
    staged.load(batch(1))
    staged.load(batch(2))
    # What a crash in finish() leaves: the marker written, one part moved, one not.
    (out / "_staging" / "_swap.json").write_text(
        json.dumps(["part-000000000001.parquet", "part-000000000002.parquet"])
    )
    (out / "_staging" / "part-000000000001.parquet").rename(out / "part-000000000001.parquet")

    opened(ParquetLoader(out, mode="replace"))

    assert parts(out) == ["part-000000000001.parquet", "part-000000000002.parquet"]
    assert not (out / "_staging" / "_swap.json").exists()


def test_replace_mode_through_the_pipeline(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("id\n1\n2\n", encoding="utf-8")
    out = tmp_path / "out"

    def run() -> None:
        Pipeline(
            "replace",
            CsvExtractor(str(data), incremental=False),
            loader=ParquetLoader(out, mode="replace"),
            home=tmp_path / "home",
        ).run()

    run()
    run()

    assert pq.read_table(out).column("id").to_pylist() == [1, 2]
    assert len(parts(out)) == 1


def test_a_uri_sink_path_is_refused(tmp_path: Path) -> None:
    from sluiceway.core import ConfigError

    with pytest.raises(ConfigError, match="local directory"):
        ParquetLoader("s3://bucket/out")
