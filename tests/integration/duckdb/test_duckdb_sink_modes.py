"""The DuckDB sink's modes and schema handling, through the pipeline, on a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from pydantic import ValidationError
from tests.integration.duckdb.support import RunPipeline, TablesExtractor, read_rows, table_names

from sluiceway.connectors.duckdb import (
    DUCKDB_SINK,
    LEDGER_TABLE,
    DuckDBLoader,
    DuckDBSinkConfig,
)
from sluiceway.core import RunFailedError, SinkError, read_dead_letters
from sluiceway.plugins import BuildContext, default_registry


def test_append_reads_back_and_records_the_ledger(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "warehouse" / "w.duckdb"
    tables = [
        pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}),
        pa.table({"id": [4, 5], "name": ["d", None]}),
    ]

    metrics = run_pipeline("events", TablesExtractor(tables), DuckDBLoader(db, "events"))

    assert metrics.written == 5
    assert read_rows(db, "events", "id") == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
        {"id": 3, "name": "c"},
        {"id": 4, "name": "d"},
        {"id": 5, "name": None},
    ]
    ledger = read_rows(db, LEDGER_TABLE, "seq")
    assert [(r["pipeline"], r["target"], r["partition"]) for r in ledger] == [
        ("events", "main.events", "p0"),
        ("events", "main.events", "p0"),
    ]
    assert [(r["start_pos"], r["end_pos"]) for r in ledger] == [("0", "3"), ("3", "5")]

    # A second run finds nothing new and writes nothing.
    again = run_pipeline("events", TablesExtractor(tables), DuckDBLoader(db, "events"))
    assert again.written == 0
    assert len(read_rows(db, "events", "id")) == 5


def test_merge_keeps_the_last_row_per_key_within_a_batch(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    batch = pa.table(
        {
            "id": [1, 2, 2, 3, 3],
            "v": ["a", "b", "c", "d", "e"],
            "ts": [1, 5, 5, 9, 2],
        }
    )

    last = run_pipeline(
        "plain", TablesExtractor([batch]), DuckDBLoader(db, "plain", mode="merge", keys=["id"])
    )
    ordered = run_pipeline(
        "ordered",
        TablesExtractor([batch]),
        DuckDBLoader(db, "ordered", mode="merge", keys=["id"], order_by="ts"),
    )

    # Without order_by the later row wins; with it the greatest ts, ties -> the later row.
    assert [(r["id"], r["v"]) for r in read_rows(db, "plain", "id")] == [
        (1, "a"),
        (2, "c"),
        (3, "e"),
    ]
    assert [(r["id"], r["v"]) for r in read_rows(db, "ordered", "id")] == [
        (1, "a"),
        (2, "c"),
        (3, "d"),
    ]
    # Superseded rows are acknowledged by the sink, not lost: the books balance.
    assert last.written == ordered.written == 5
    assert last.dead_lettered == ordered.dead_lettered == 0


def test_merge_out_of_order_replay_never_overwrites_newer_rows(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    newer = pa.table(
        {"id": [1, 2, 4], "v": ["new", "x", "first"], "ts": pa.array([10, None, 7], pa.int64())}
    )
    older = pa.table({"id": [1, 2, 3, 4], "v": ["old", "y", "z", "second"], "ts": [5, 1, 1, 7]})

    metrics = run_pipeline(
        "orders",
        TablesExtractor([newer, older]),
        DuckDBLoader(db, "orders", mode="merge", keys=["id"], order_by="ts"),
    )

    assert metrics.written == 7
    assert [(r["id"], r["v"], r["ts"]) for r in read_rows(db, "orders", "id")] == [
        (1, "new", 10),  # the replayed older row did not overwrite
        (2, "y", 1),  # the existing order_by was null: replaced
        (3, "z", 1),  # new key: inserted
        (4, "second", 7),  # equal order_by is not older: replaced
    ]


def test_merge_dead_letters_rows_with_a_null_key(tmp_path: Path, run_pipeline: RunPipeline) -> None:
    db = tmp_path / "w.duckdb"
    batch = pa.table({"id": pa.array([1, None, 2], pa.int64()), "v": ["a", "lost", "b"]})

    metrics = run_pipeline(
        "keys", TablesExtractor([batch]), DuckDBLoader(db, "keys", mode="merge", keys=["id"])
    )

    assert metrics.written == 2
    assert metrics.dead_lettered == 1
    assert [r["v"] for r in read_rows(db, "keys", "id")] == ["a", "b"]
    letters = read_dead_letters(tmp_path / "dlq" / "keys").to_pylist()
    assert [(d["error_type"], d["position"]) for d in letters] == [("NullMergeKey", "1")]
    assert "merge key (id) is null" in letters[0]["error_message"]


def test_evolve_adds_new_columns_and_fills_missing_ones_with_null(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    tables = [
        pa.table({"id": [1], "a": ["a1"]}),
        pa.table({"b": [2.5], "id": [2], "a": ["a2"]}),  # new column, other order
        pa.table({"id": [3]}),  # columns missing
    ]

    metrics = run_pipeline("evolve", TablesExtractor(tables), DuckDBLoader(db, "evolve"))

    assert metrics.written == 3
    assert read_rows(db, "evolve", "id") == [
        {"id": 1, "a": "a1", "b": None},
        {"id": 2, "a": "a2", "b": 2.5},
        {"id": 3, "a": None, "b": None},
    ]


def test_freeze_dead_letters_batches_that_do_not_match_the_table(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    tables = [
        pa.table({"id": [1], "a": ["a1"]}),
        pa.table({"id": [2], "a": ["a2"], "extra": [True]}),
        pa.table({"id": [3]}),
        pa.table({"id": [4], "a": [4.5]}),
        pa.table({"id": pa.array([5], pa.int32()), "a": ["a5"]}),  # widens to BIGINT: fine
    ]

    metrics = run_pipeline(
        "frozen", TablesExtractor(tables), DuckDBLoader(db, "frozen", schema_mode="freeze")
    )

    assert metrics.written == 2
    assert metrics.dead_lettered == 3
    assert read_rows(db, "frozen", "id") == [{"id": 1, "a": "a1"}, {"id": 5, "a": "a5"}]
    letters = read_dead_letters(tmp_path / "dlq" / "frozen").to_pylist()
    reasons = {d["seq"]: (d["stage"], d["error_type"], d["error_message"]) for d in letters}
    assert reasons[1][:2] == ("load", "DataError")
    assert "extra column(s) 'extra'" in reasons[1][2]
    assert "missing column(s) 'a'" in reasons[2][2]
    assert "mismatched type(s) 'a' (batch DOUBLE, table VARCHAR)" in reasons[3][2]


def test_a_value_duckdb_cannot_convert_dead_letters_the_batch_with_its_message(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    tables = [pa.table({"n": [1]}), pa.table({"n": ["not a number"]}), pa.table({"n": [3]})]

    metrics = run_pipeline("casts", TablesExtractor(tables), DuckDBLoader(db, "casts"))

    assert [r["n"] for r in read_rows(db, "casts", "n")] == [1, 3]
    assert metrics.dead_lettered == 1
    (letter,) = read_dead_letters(tmp_path / "dlq" / "casts").to_pylist()
    assert letter["error_type"] == "DataError"
    assert "not a number" in letter["error_message"]


def test_replace_swaps_only_when_the_run_succeeds(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    first = pa.table({"id": [1, 2]})
    second, third = pa.table({"id": [10]}), pa.table({"id": [20, 30]})

    def loader() -> DuckDBLoader:
        return DuckDBLoader(db, "snap", mode="replace")

    run_pipeline("snap", TablesExtractor([first]), loader())
    assert [r["id"] for r in read_rows(db, "snap", "id")] == [1, 2]

    with pytest.raises(RunFailedError, match="broke midway"):
        run_pipeline("snap", TablesExtractor([first, second, third], fail_at=2), loader())
    # The failed run staged a batch but the table is untouched.
    assert [r["id"] for r in read_rows(db, "snap", "id")] == [1, 2]
    assert [r["id"] for r in read_rows(db, "snap__sluiceway_staging", "id")] == [10]

    metrics = run_pipeline("snap", TablesExtractor([first, second, third]), loader())
    assert metrics.written == 2
    # The rerun continued into the staging table, then swapped it in.
    assert [r["id"] for r in read_rows(db, "snap", "id")] == [10, 20, 30]
    assert "snap__sluiceway_staging" not in table_names(db)


def test_identifiers_with_quotes_spaces_and_sql_round_trip(
    tmp_path: Path, run_pipeline: RunPipeline
) -> None:
    db = tmp_path / "w.duckdb"
    table = 'my schema.we"ird; DROP TABLE x; --'
    key, value, order = 'id "x"', "value'); DROP TABLE y; --", "sp ace"
    tables = [
        pa.table({key: [1, 2], value: ["o'ne", 'tw"o'], order: [1, 1]}),
        pa.table({key: [1, 3], value: ["un", "trois"], order: [2, 1]}),
    ]

    metrics = run_pipeline(
        "weird",
        TablesExtractor(tables),
        DuckDBLoader(db, table, mode="merge", keys=[key], order_by=order),
    )

    assert metrics.written == 4
    assert read_rows(db, table, key) == [
        {key: 1, value: "un", order: 2},
        {key: 2, value: 'tw"o', order: 1},
        {key: 3, value: "trois", order: 1},
    ]
    assert {"x", "y"}.isdisjoint(table_names(db))


def test_config_validates_mode_combinations() -> None:
    with pytest.raises(ValidationError, match="mode 'merge' needs keys"):
        DuckDBSinkConfig(database="w.duckdb", table="t", mode="merge")
    with pytest.raises(ValidationError, match="only apply to mode 'merge'"):
        DuckDBSinkConfig(database="w.duckdb", table="t", keys=["id"])
    with pytest.raises(ValidationError, match="must not be one of the keys"):
        DuckDBSinkConfig(database="w.duckdb", table="t", mode="merge", keys=["id"], order_by="id")
    with pytest.raises(ValidationError, match=r"'schema\.table'"):
        DuckDBSinkConfig(database="w.duckdb", table="a.b.c")
    with pytest.raises(ValidationError, match="reserved"):
        DuckDBSinkConfig(database="w.duckdb", table=LEDGER_TABLE)


def test_plugin_builds_a_loader_with_the_database_relative_to_the_spec(tmp_path: Path) -> None:
    assert default_registry().get("sink", "duckdb") is DUCKDB_SINK
    config = DUCKDB_SINK.config.model_validate(
        {"type": "duckdb", "database": "out/w.duckdb", "table": "t", "mode": "replace"}
    )
    loader = DUCKDB_SINK.build(config, BuildContext(pipeline="p", base_dir=tmp_path))
    assert isinstance(loader, DuckDBLoader)
    assert loader.database == str(tmp_path / "out" / "w.duckdb")
    assert loader.describe()["mode"] == "replace"


def test_create_false_needs_an_existing_table(tmp_path: Path, run_pipeline: RunPipeline) -> None:
    db = tmp_path / "w.duckdb"
    rows = pa.table({"id": [1]})
    with pytest.raises(RunFailedError, match="does not exist") as failed:
        run_pipeline("nocreate", TablesExtractor([rows]), DuckDBLoader(db, "t", create=False))
    assert isinstance(failed.value.cause, SinkError)

    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t (id BIGINT, note VARCHAR)")
    run_pipeline("nocreate", TablesExtractor([rows]), DuckDBLoader(db, "t", create=False))
    assert read_rows(db, "t", "id") == [{"id": 1, "note": None}]
