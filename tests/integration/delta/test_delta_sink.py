"""The Delta sink on local tables: modes, merge semantics, schema modes, txn idempotence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from tests.integration.delta.support import ListExtractor, read_delta_log, sorted_rows, txns

from sluiceway.connectors.delta import DeltaLoader, DeltaSinkConfig, build_loader
from sluiceway.core import (
    BaseTransformer,
    FatalError,
    Pipeline,
    PipelineMetrics,
    RunFailedError,
    read_dead_letters,
)
from sluiceway.plugins import BuildContext
from sluiceway.testing import SequenceExtractor, check_delivery, expected_rows


def run(
    tmp_path: Path, extractor: Any, loader: DeltaLoader, name: str = "orders", **kw: Any
) -> PipelineMetrics:
    metrics = Pipeline(name, extractor, loader=loader, home=tmp_path / "home", **kw).run()
    assert metrics.balanced, metrics.balance_message()
    return metrics


def dead(tmp_path: Path, name: str = "orders") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_dead_letters(tmp_path / "home" / "dlq" / name).to_pylist()
    return rows


def test_append_is_read_back_by_independent_readers(tmp_path: Path) -> None:
    table = tmp_path / "lake" / "rows"
    metrics = run(
        tmp_path, SequenceExtractor(partitions=3, rows=200, batch_size=90), DeltaLoader(table)
    )

    ours = read_delta_log(str(table))
    report = check_delivery(
        expected_rows(3, 200), ours, pa.table({"row": pa.array([], pa.string())})
    )
    assert report.ok, report.summary()
    assert metrics.written == 600
    polars = pl.read_delta(str(table)).sort(["partition", "n"])
    assert polars.select("partition", "n").rows() == sorted(
        (p, n) for p, n, _ in expected_rows(3, 200)
    )
    # one txn per source partition, version = the end position in it
    assert {k: v for k, v in txns(str(table)).items() if k.startswith("orders/")} == {
        "orders/p0": 200,
        "orders/p1": 200,
        "orders/p2": 200,
    }


def test_a_batch_the_table_holds_is_skipped_not_written_twice(tmp_path: Path) -> None:
    table = str(tmp_path / "t")
    rows = [{"id": i} for i in range(5)]
    run(tmp_path, ListExtractor([("p0", 0, rows)]), DeltaLoader(table))

    # The state is lost (a crash before the checkpoint): the same batch comes again.
    again = Pipeline(
        "orders",
        ListExtractor([("p0", 0, rows), ("p0", 5, [{"id": 5}])]),
        loader=DeltaLoader(table),
        home=tmp_path / "other-home",
    ).run()

    assert again.skipped_committed == 5 and again.written == 1
    assert sorted(r["id"] for r in read_delta_log(table).to_pylist()) == list(range(6))


def test_txn_versions_are_read_once_per_table_version_not_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delta-rs replays the log for each txn question: a run asks once per app id."""
    from deltalake import DeltaTable

    asked: list[str] = []
    original = DeltaTable.transaction_version

    def counting(self: DeltaTable, app_id: str) -> int | None:
        asked.append(app_id)
        return original(self, app_id)

    monkeypatch.setattr(DeltaTable, "transaction_version", counting)
    table = str(tmp_path / "t")
    run(tmp_path, SequenceExtractor(partitions=2, rows=100, batch_size=10), DeltaLoader(table))
    # 20 batches, each checked before loading: without memory, 20+ log replays each.
    assert set(asked) <= {"orders/p0", "orders/p1"}
    assert 1 <= len(asked) <= 2
    assert {k: v for k, v in txns(table).items() if k.startswith("orders/")} == {
        "orders/p0": 100,
        "orders/p1": 100,
    }

    # Another writer moves the table: what this loader knew is forgotten, not trusted.
    from deltalake import CommitProperties, Transaction

    loader = DeltaLoader(table)
    snapshot = DeltaTable(table)
    assert loader._txn_version(snapshot, "orders/p0") == 100
    other = DeltaTable(table)
    other.create_write_transaction(
        [],
        mode="append",
        schema=other.schema(),
        partition_by=[],
        commit_properties=CommitProperties(app_transactions=[Transaction("orders/p0", 150)]),
    )
    assert loader._txn_version(snapshot, "orders/p0") == 100  # as of the version it holds
    snapshot.update_incremental()
    assert loader._txn_version(snapshot, "orders/p0") == 150


def test_non_integer_positions_use_the_batch_seq_as_version(tmp_path: Path) -> None:
    from tests.integration.s3.support import parquet_bytes

    data = tmp_path / "in"
    data.mkdir()
    (data / "a.parquet").write_bytes(parquet_bytes(pa.table({"x": [1, 2, 3]})))
    from sluiceway.connectors.files import ParquetExtractor

    table = str(tmp_path / "t")
    run(tmp_path, ParquetExtractor(str(data), batch_size=2), DeltaLoader(table))

    assert txns(table)[f"orders/{data / 'a.parquet'}"] == 1  # batches 0 and 1


MERGE_BATCHES = [
    (
        "p0",
        0,
        [
            {"id": 1, "v": "first", "ts": 1, "op": "U"},
            {"id": 1, "v": "newest", "ts": 3, "op": "U"},
            {"id": 1, "v": "older", "ts": 2, "op": "U"},
            {"id": 2, "v": "two", "ts": 1, "op": "U"},
            {"id": 3, "v": "three", "ts": 5, "op": "U"},
            {"id": None, "v": "no key", "ts": 1, "op": "U"},
        ],
    ),
    (
        "p0",
        6,
        [
            {"id": 1, "v": "stale", "ts": 2, "op": "U"},  # older than the table's row
            {"id": 2, "v": "two-b", "ts": 1, "op": "U"},  # same ts: the incoming row wins
            {"id": 3, "v": "gone", "ts": 4, "op": "D"},  # an older delete does not delete
            {"id": 4, "v": "four", "ts": 1, "op": "D"},  # delete of a missing key: nothing
        ],
    ),
    ("p0", 10, [{"id": 2, "v": "deleted", "ts": 9, "op": "D"}]),
]


def test_merge_keeps_the_latest_row_per_key_and_refuses_null_keys(tmp_path: Path) -> None:
    table = str(tmp_path / "t")
    loader = DeltaLoader(table, mode="merge", keys=["id"], order_by="ts", delete_when="op = 'D'")
    metrics = run(tmp_path, ListExtractor(MERGE_BATCHES), loader)

    assert sorted_rows(read_delta_log(table), "id") == [
        {"id": 1, "v": "newest", "ts": 3, "op": "U"},
        {"id": 3, "v": "three", "ts": 5, "op": "U"},
    ]
    (letter,) = dead(tmp_path)
    assert letter["error_type"] == "NullMergeKey" and '"v":"no key"' in letter["row"]
    assert metrics.written == 10 and metrics.dead_lettered == 1


def test_merge_matches_the_duckdb_sink_on_the_same_batches(tmp_path: Path) -> None:
    from sluiceway.connectors.duckdb import DuckDBLoader

    batches = [
        (p, s, [{k: v for k, v in r.items() if k != "op"} for r in rows])
        for p, s, rows in MERGE_BATCHES
    ]
    delta = str(tmp_path / "t")
    run(
        tmp_path,
        ListExtractor(batches),
        DeltaLoader(delta, mode="merge", keys=["id"], order_by="ts"),
    )
    duck = DuckDBLoader(tmp_path / "w.duckdb", "t", mode="merge", keys=["id"], order_by="ts")
    Pipeline("duck", ListExtractor(batches), loader=duck, home=tmp_path / "home2").run()
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        expected = con.sql("SELECT id, v, ts FROM t ORDER BY id").to_arrow_table().to_pylist()
    assert sorted_rows(read_delta_log(delta).select(["id", "v", "ts"]), "id") == expected


def test_evolve_adds_columns_and_strict_dead_letters_the_batch(tmp_path: Path) -> None:
    batches = [
        ("p0", 0, [{"id": 1, "v": "a"}]),
        ("p0", 1, [{"id": 2, "v": "b", "extra": 2.5}]),
        ("p0", 2, [{"id": 3}]),
        ("p0", 3, [{"id": "four", "v": "d"}]),
    ]
    evolving = str(tmp_path / "evolve")
    run(tmp_path, ListExtractor(batches[:3]), DeltaLoader(evolving), name="evolve")
    assert sorted_rows(read_delta_log(evolving), "id") == [
        {"id": 1, "v": "a", "extra": None},
        {"id": 2, "v": "b", "extra": 2.5},
        {"id": 3, "v": None, "extra": None},
    ]

    strict = str(tmp_path / "strict")
    metrics = run(
        tmp_path, ListExtractor(batches), DeltaLoader(strict, schema_mode="strict"), name="strict"
    )
    assert read_delta_log(strict).to_pylist() == [{"id": 1, "v": "a"}]
    reasons = {letter["seq"]: letter["error_message"] for letter in dead(tmp_path, "strict")}
    assert "extra column(s) 'extra'" in reasons[1]
    assert "missing column(s) 'v'" in reasons[2]
    assert "mismatched type(s) 'id' (batch string, table long)" in reasons[3]
    assert metrics.dead_lettered == 3 and metrics.written == 1


def test_partition_by_writes_partition_directories(tmp_path: Path) -> None:
    table = tmp_path / "t"
    rows = [{"day": d, "n": n} for d in ("2026-11-01", "2026-11-02") for n in range(3)]
    run(tmp_path, ListExtractor([("p0", 0, rows)]), DeltaLoader(table, partition_by=["day"]))

    assert sorted(p.name for p in table.iterdir() if p.is_dir() and p.name != "_delta_log") == [
        "day=2026-11-01",
        "day=2026-11-02",
    ]
    assert sorted_rows(read_delta_log(str(table)), "day", "n") == rows


class _StopAt(BaseTransformer[pa.Table, pa.Table]):
    """Fails the run (fatally) when it sees the marker row."""

    def __init__(self, marker: int | None) -> None:
        super().__init__("stop")
        self.marker = marker

    def transform(self, data: pa.Table) -> pa.Table:
        if self.marker is not None and self.marker in data.column("id").to_pylist():
            raise FatalError("the machine went away")
        return data


def test_overwrite_replaces_the_table_and_a_rerun_continues_an_interrupted_one(
    tmp_path: Path,
) -> None:
    table = str(tmp_path / "t")
    old = [("p0", 0, [{"id": 100}]), ("p0", 1, [{"id": 101}])]
    run(tmp_path, ListExtractor(old), DeltaLoader(table, mode="overwrite"))
    assert sorted(r["id"] for r in read_delta_log(table).to_pylist()) == [100, 101]

    new = [("p0", 2, [{"id": 1}]), ("p0", 3, [{"id": 2}]), ("p0", 4, [{"id": 3}])]
    with pytest.raises(RunFailedError):
        run(
            tmp_path,
            ListExtractor(new),
            DeltaLoader(table, mode="overwrite"),
            transformers=[_StopAt(2)],
        )
    assert sorted(r["id"] for r in read_delta_log(table).to_pylist()) == [1]

    run(tmp_path, ListExtractor(new), DeltaLoader(table, mode="overwrite"))
    assert sorted(r["id"] for r in read_delta_log(table).to_pylist()) == [1, 2, 3]

    newer = [("p0", 5, [{"id": 7}])]
    run(tmp_path, ListExtractor(newer), DeltaLoader(table, mode="overwrite"))
    assert [r["id"] for r in read_delta_log(table).to_pylist()] == [7]


def test_after_run_compacts_the_table(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from sluiceway.connectors.delta import AfterRun

    table = str(tmp_path / "t")
    batches = [("p0", i, [{"id": i}]) for i in range(6)]
    run(tmp_path, ListExtractor(batches), DeltaLoader(table, after_run=AfterRun(optimize=True)))

    assert sorted(r["id"] for r in read_delta_log(table).to_pylist()) == list(range(6))
    assert len(DeltaTable(table).file_uris()) == 1


def test_the_spec_builds_a_loader_relative_to_the_spec_file(tmp_path: Path) -> None:
    config = DeltaSinkConfig.model_validate(
        {"type": "delta", "uri": "lake/t", "mode": "merge", "keys": ["id"], "order_by": "ts"}
    )
    loader = build_loader(config, BuildContext(pipeline="x", base_dir=tmp_path))
    assert loader.uri == str(tmp_path / "lake" / "t") and loader.mode == "merge"
    with pytest.raises(ValueError, match="needs keys"):
        DeltaSinkConfig.model_validate({"type": "delta", "uri": "t", "mode": "merge"})
    with pytest.raises(ValueError, match="only apply to mode 'merge'"):
        DeltaSinkConfig.model_validate({"type": "delta", "uri": "t", "order_by": "ts"})
