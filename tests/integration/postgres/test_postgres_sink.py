"""The PostgreSQL sink against a real server: modes, ledger, refused rows, schema, types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tests.integration.postgres.support import (
    FAST_RETRY,
    Pg,
    TablesExtractor,
    create_all_types,
)

from sluiceway.connectors.postgres import PostgresExtractor, PostgresLoader
from sluiceway.core import Pipeline, PipelineMetrics, read_dead_letters
from sluiceway.core.errors import SinkError


def run(name: str, extractor: Any, loader: PostgresLoader, home: Path) -> PipelineMetrics:
    return Pipeline(name, extractor, loader=loader, home=home, retry=FAST_RETRY).run()


def sink(pg: Pg, table: str = "out", **options: Any) -> PostgresLoader:
    return PostgresLoader(pg.connection(), pg.table(table), **options)


def batch(**columns: list[Any]) -> pa.Table:
    return pa.table(columns)


def test_every_type_round_trips_postgres_to_postgres(pg: Pg, home: Path) -> None:
    create_all_types(pg)
    extractor = PostgresExtractor(pg.connection(), table=pg.table("all_types"), batch_size=2)
    metrics = run("types", extractor, sink(pg, "copied"), home)
    assert (metrics.written, metrics.dead_lettered) == (3, 0)

    described = (
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum"
    )
    source = pg.rows(described, [pg.table("all_types")])
    columns = [name for name, _ in source]
    # The created columns take the source's PostgreSQL types (a domain becomes its base type).
    assert pg.rows(described, [pg.table("copied")]) == [
        (name, "integer" if name == "pos" else type_) for name, type_ in source
    ]
    as_text = ", ".join(f"{c}::text" for c in columns)
    assert pg.rows(f"SELECT {as_text} FROM copied ORDER BY id") == pg.rows(
        f"SELECT {as_text} FROM all_types ORDER BY id"
    )


def test_append_records_each_batch_in_the_ledger_and_skips_it_on_rerun(pg: Pg, home: Path) -> None:
    tables = [batch(id=[1, 2], v=["a", "b"]), batch(id=[3], v=["c"])]
    assert run("ledger", TablesExtractor(tables), sink(pg), home).written == 3
    assert pg.rows("SELECT id, v FROM out ORDER BY id") == [(1, "a"), (2, "b"), (3, "c")]
    ledger = pg.rows(
        "SELECT pipeline, target, partition, start_pos, end_pos, seq FROM _sluiceway_ledger "
        "ORDER BY seq"
    )
    assert ledger == [
        ("ledger", pg.table("out"), "p0", "0", "2", 0),
        ("ledger", pg.table("out"), "p0", "2", "3", 1),
    ]
    # A run from scratch (state lost) replays the same batches: the ledger skips them.
    metrics = run("ledger", TablesExtractor(tables), sink(pg), home / "fresh")
    assert (metrics.written, metrics.skipped_committed) == (0, 3)
    assert pg.scalar("SELECT count(*) FROM out") == 3


def test_rows_violating_constraints_are_dead_lettered_with_the_database_message(
    pg: Pg, home: Path
) -> None:
    pg.execute(
        "CREATE TABLE out (id bigint PRIMARY KEY, amount integer NOT NULL CHECK (amount >= 0), "
        "code text UNIQUE, u uuid)"
    )
    pg.execute("INSERT INTO out VALUES (100, 1, 'taken', NULL)")
    rows = batch(
        id=[1, 2, 3, 4, 5, 6, 7, 8, 1],
        amount=[10, -5, 30, None, 50, 60, 70, 80, 90],
        code=["a", "b", "c", "d", "taken", "f", "g", "h", "i"],
        u=[None, None, None, None, None, "not-a-uuid", None, None, None],
    )
    metrics = run("refuse", TablesExtractor([rows]), sink(pg), home)

    assert (metrics.written, metrics.dead_lettered) == (4, 5) and metrics.balanced
    assert pg.rows("SELECT id FROM out ORDER BY id") == [(1,), (3,), (7,), (8,), (100,)]
    dead = read_dead_letters(home / "dlq" / "refuse").sort_by("position").to_pylist()
    assert [(d["position"], d["stage"], d["error_type"]) for d in dead] == [
        ("1", "load", "RowRefused"),
        ("3", "load", "RowRefused"),
        ("4", "load", "RowRefused"),
        ("5", "load", "RowRefused"),
        ("8", "load", "RowRefused"),
    ]
    messages = [d["error_message"] for d in dead]
    assert 'violates check constraint "out_amount_check"' in messages[0]
    assert 'null value in column "amount"' in messages[1]
    assert 'violates unique constraint "out_code_key"' in messages[2]
    assert "invalid input syntax for type uuid" in messages[3]
    assert 'violates unique constraint "out_pkey"' in messages[4]
    assert '"id":1' in dead[4]["row"] and '"amount":90' in dead[4]["row"]


def test_too_many_refused_rows_dead_letter_the_batch_whole(pg: Pg, home: Path) -> None:
    pg.execute("CREATE TABLE out (id bigint, amount integer CHECK (amount > 0))")
    rows = batch(id=list(range(64)), amount=[-1 if i % 2 else 1 for i in range(64)])
    metrics = run("budget", TablesExtractor([rows]), sink(pg, isolation_budget=8), home)
    assert (metrics.written, metrics.dead_lettered) == (0, 64)
    assert pg.scalar("SELECT count(*) FROM out") == 0
    dead = read_dead_letters(home / "dlq" / "budget")
    assert "statements were needed to isolate" in dead.column("error_message")[0].as_py()


def test_merge_keeps_the_newest_row_per_key_even_when_replayed_out_of_order(
    pg: Pg, home: Path
) -> None:
    newer = batch(
        id=[1, 2, 1, 3, 2],
        version=[2, 5, 3, 1, 4],
        v=["1@2", "2@5", "1@3", "3@1", "2@4"],
    )
    older = batch(id=[1, 2, 3, None], version=[1, 1, 9, 1], v=["1@1", "2@1", "3@9", "nokey"])
    loader = sink(pg, mode="merge", keys=["id"], order_by="version")
    metrics = run("merge", TablesExtractor([newer, older]), loader, home)

    assert (metrics.written, metrics.dead_lettered) == (8, 1)
    assert pg.rows("SELECT id, version, v FROM out ORDER BY id") == [
        (1, 3, "1@3"),  # the greatest version of the batch wins, not the last row
        (2, 5, "2@5"),
        (3, 9, "3@9"),  # a newer row replaces an older one
    ]
    dead = read_dead_letters(home / "dlq" / "merge").to_pylist()
    assert [(d["error_type"], d["error_message"]) for d in dead] == [
        ("NullMergeKey", "merge key (id) is null")
    ]
    # The table was created with a primary key on the merge keys.
    assert (
        pg.scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'out'::regclass AND indisprimary")
        == 1
    )


def test_merge_into_a_table_without_a_unique_index_fails_clearly(pg: Pg, home: Path) -> None:
    pg.execute("CREATE TABLE out (id bigint, v text)")
    loader = sink(pg, mode="merge", keys=["id"])
    with pytest.raises(Exception, match=r"needs a unique index on \(id\)") as info:
        run("noindex", TablesExtractor([batch(id=[1], v=["a"])]), loader, home)
    assert isinstance(info.value.__cause__, SinkError)
    assert "CREATE UNIQUE INDEX ON" in str(info.value)


def test_replace_swaps_the_new_table_in_when_the_run_succeeds(pg: Pg, home: Path) -> None:
    pg.execute("CREATE TABLE out (id bigint PRIMARY KEY, v text)")
    pg.execute("INSERT INTO out VALUES (1, 'old'), (2, 'old')")
    tables = [batch(id=[10, 11], v=["new", "new"]), batch(id=[12], v=["new"])]
    loader = sink(pg, mode="replace")
    metrics = run("replace", TablesExtractor(tables), loader, home)
    assert metrics.written == 3
    assert pg.rows("SELECT id, v FROM out ORDER BY id") == [(10, "new"), (11, "new"), (12, "new")]
    assert pg.scalar("SELECT to_regclass('out__sluiceway_staging') IS NULL")
    # The replaced table keeps the original's constraints.
    assert (
        pg.scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'out'::regclass AND indisprimary")
        == 1
    )
    assert {r[0] for r in pg.rows("SELECT DISTINCT target FROM _sluiceway_ledger")} == {
        pg.table("out")
    }


def test_evolve_adds_new_columns_and_freeze_dead_letters_the_batch(pg: Pg, home: Path) -> None:
    first = batch(id=[1], v=["a"])
    grown = batch(id=[2], v=["b"], extra=[1.5])
    run("evolve", TablesExtractor([first, grown]), sink(pg), home)
    assert pg.rows("SELECT id, v, extra FROM out ORDER BY id") == [(1, "a", None), (2, "b", 1.5)]

    frozen = sink(pg, "out", schema_mode="freeze")
    metrics = run("freeze", TablesExtractor([batch(id=[3], v=["c"], more=[True])]), frozen, home)
    assert (metrics.written, metrics.dead_lettered) == (0, 1)
    dead = read_dead_letters(home / "dlq" / "freeze").to_pylist()
    assert "extra column(s) 'more'" in dead[0]["error_message"]
    assert "missing column(s) 'extra'" in dead[0]["error_message"]
    assert pg.scalar("SELECT count(*) FROM out") == 2


def test_create_false_requires_the_table(pg: Pg, home: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        run("nocreate", TablesExtractor([batch(id=[1])]), sink(pg, create=False), home)


def test_column_types_pick_the_created_types(pg: Pg, home: Path) -> None:
    rows = batch(id=["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"], doc=['{"k": 1}'])
    loader = sink(pg, column_types={"id": "uuid", "doc": "jsonb"})
    run("typed", TablesExtractor([rows]), loader, home)
    assert pg.rows("SELECT pg_typeof(id)::text, pg_typeof(doc)::text, doc->>'k' FROM out") == [
        ("uuid", "jsonb", "1")
    ]


def test_identifiers_are_quoted(pg: Pg, home: Path) -> None:
    rows = pa.table({'we"ird col': [1], "select": ["x"]})
    run("quoted", TablesExtractor([rows]), sink(pg, 'My "Table"'), home)
    assert pg.rows('SELECT "we""ird col", "select" FROM "My ""Table"""') == [(1, "x")]


def test_nested_values_land_as_jsonb_and_intervals_as_interval(pg: Pg, home: Path) -> None:
    interval = pa.struct([("months", pa.int32()), ("days", pa.int32()), ("nanos", pa.int64())])
    rows = pa.table(
        {
            "id": [1, 2],
            "doc": pa.array(
                [{"a": 1, "b": "x"}, None], pa.struct([("a", pa.int64()), ("b", pa.string())])
            ),
            "tags": pa.array([[[1, 2], [3]], []], pa.list_(pa.list_(pa.int64()))),
            "wait": pa.array([{"months": 1, "days": 2, "nanos": 3_000_000_000}, None], interval),
            "ids": pa.array([[1, 2], None], pa.large_list(pa.int64())),
        }
    )
    run("nested", TablesExtractor([rows]), sink(pg), home)
    assert pg.rows(
        "SELECT pg_typeof(doc)::text, pg_typeof(tags)::text, pg_typeof(wait)::text, "
        "pg_typeof(ids)::text FROM out LIMIT 1"
    ) == [("jsonb", "jsonb", "interval", "bigint[]")]
    assert pg.rows("SELECT doc->>'b', tags::text, wait::text, ids FROM out ORDER BY id") == [
        ("x", "[[1, 2], [3]]", "1 mon 2 days 00:00:03", [1, 2]),
        (None, "[]", None, None),
    ]


def _count_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows went through the copy table (the way that is not straight)."""
    copied: list[int] = []
    original = PostgresLoader._copy

    def counting(self: PostgresLoader, ingest: pa.Table) -> None:
        copied.append(ingest.num_rows)
        original(self, ingest)

    monkeypatch.setattr(PostgresLoader, "_copy", counting)
    return copied


def test_batches_after_the_first_copy_straight_into_the_table_with_their_ledger_rows(
    pg: Pg, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One COPY per batch once the first batch proved the columns need no cast."""
    copied = _count_copies(monkeypatch)
    pg.execute(
        "CREATE TABLE out (id bigint, v varchar(5), amount numeric(6,2), doc jsonb, raw json)"
    )
    tables = [
        batch(
            id=list(range(i * 3, i * 3 + 3)),
            v=[f"v{j}" for j in range(3)],
            amount=[pa.scalar(j, pa.decimal128(10, 2)).as_py() for j in range(3)],
            doc=[f'{{"n": {j}}}' for j in range(3)],
            raw=[f'{{"n":  {j}}}' for j in range(3)],
        )
        for i in range(4)
    ]
    metrics = run("straight", TablesExtractor(tables), sink(pg), home)

    assert (metrics.written, metrics.dead_lettered) == (12, 0)
    assert copied == [3]  # only the first batch went through the copy table
    assert pg.scalar("SELECT count(*) FROM out") == 12
    assert pg.rows("SELECT jsonb_typeof(doc), doc->>'n', raw::text FROM out WHERE id = 10") == [
        ("object", "1", '{"n":  1}')  # json keeps its text as sent
    ]
    assert pg.rows("SELECT seq, end_pos FROM _sluiceway_ledger ORDER BY seq") == [
        (0, "3"),
        (1, "6"),
        (2, "9"),
        (3, "12"),
    ]
    # The ledger rows came with the data: a rerun from scratch skips every batch.
    again = run("straight", TablesExtractor(tables), sink(pg), home / "fresh")
    assert (again.written, again.skipped_committed) == (0, 12)
    assert pg.scalar("SELECT count(*) FROM out") == 12


def test_a_refused_row_sends_the_batch_the_isolating_way_and_turns_straight_off(
    pg: Pg, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copied = _count_copies(monkeypatch)
    pg.execute("CREATE TABLE out (id bigint PRIMARY KEY, v text, doc jsonb)")
    tables = [
        batch(id=[1, 2], v=["a", "b"], doc=["{}", "[]"]),
        batch(id=[3, 1, 4], v=["c", "dup", "d"], doc=["{}", "{}", "{}"]),  # 1 is taken
        batch(id=[5, 6], v=["e", "f"], doc=["{}", "not json"]),
        batch(id=[7], v=["g"], doc=["{}"]),
    ]
    metrics = run("refusal", TablesExtractor(tables), sink(pg), home)

    assert (metrics.written, metrics.dead_lettered) == (6, 2) and metrics.balanced
    assert pg.rows("SELECT id FROM out ORDER BY id") == [(1,), (2,), (3,), (4,), (5,), (7,)]
    # Batch 2 was tried straight, refused, and went the copy-table way; after that,
    # every batch did (straight is off for the run).
    assert copied == [2, 3, 2, 1]
    dead = read_dead_letters(home / "dlq" / "refusal").sort_by("position").to_pylist()
    assert [d["position"] for d in dead] == ["3", "6"]
    assert 'violates unique constraint "out_pkey"' in dead[0]["error_message"]
    assert "invalid input syntax for type json" in dead[1]["error_message"]
    ledger = pg.rows("SELECT seq, written FROM _sluiceway_ledger ORDER BY seq")
    assert ledger == [(0, 2), (1, 2), (2, 1), (3, 1)]
