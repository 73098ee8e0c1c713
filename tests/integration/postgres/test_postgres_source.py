"""The PostgreSQL source against a real server: types, incremental reads, partitions, replay."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.integration.postgres.support import (
    ALL_TYPES_ARROW,
    FAST_RETRY,
    Pg,
    all_types_expected,
    create_all_types,
)
from tests.support import ListLoader

from sluiceway.connectors.files import ParquetLoader
from sluiceway.connectors.postgres import PostgresExtractor
from sluiceway.core import Intent, Pipeline, PipelineMetrics, SourceContext, read_dead_letters
from sluiceway.core.errors import SourceError
from sluiceway.core.state import LocalStateStore


def run(
    name: str, extractor: PostgresExtractor, loader: object, home: Path, **kw: object
) -> PipelineMetrics:
    pipeline = Pipeline(name, extractor, loader=loader, home=home, retry=FAST_RETRY, **kw)  # type: ignore[arg-type]
    return pipeline.run()


def ids(loader: ListLoader) -> list[int]:
    return sorted(row["id"] for row in loader.rows)


def make_events(pg: Pg, n: int, at: str = "2024-01-01 00:00:00+00") -> None:
    pg.execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text)"
    )
    pg.execute("CREATE INDEX ON events (updated_at, id)")
    pg.execute(
        "INSERT INTO events SELECT g, %s::timestamptz, 'v' || g FROM generate_series(1, %s) g",
        [at, n],
    )


def test_every_type_reaches_parquet_as_mapped(pg: Pg, home: Path, tmp_path: Path) -> None:
    create_all_types(pg)
    extractor = PostgresExtractor(pg.connection(), table=pg.table("all_types"), batch_size=2)
    metrics = run("types", extractor, ParquetLoader(tmp_path / "out"), home)
    assert (metrics.read, metrics.written, metrics.dead_lettered) == (3, 3, 0)

    table = pq.read_table(tmp_path / "out").sort_by("id")
    assert {f.name: f.type for f in table.schema} == ALL_TYPES_ARROW
    assert table.to_pylist() == all_types_expected()
    # The PostgreSQL type travels in the field metadata, for a PostgreSQL sink to reuse.
    assert table.schema.field("u").metadata[b"sluiceway.postgres.type"] == b"uuid"
    assert table.schema.field("n").metadata[b"sluiceway.postgres.type"] == b"numeric(12,2)"


def test_the_driver_library_can_be_chosen(pg: Pg, home: Path, tmp_path: Path) -> None:
    """``adbc_driver`` loads that build of the driver (an optimised one, say) for the reads."""
    packaged = importlib.resources.files("adbc_driver_postgresql") / "libadbc_driver_postgresql.so"
    library = tmp_path / "drivers" / "libadbc_driver_postgresql.so"
    library.parent.mkdir()
    library.write_bytes(packaged.read_bytes())
    create_all_types(pg)
    connection = dataclasses.replace(pg.connection(), adbc_driver=str(library))
    extractor = PostgresExtractor(connection, table=pg.table("all_types"), batch_size=2)
    metrics = run("driver", extractor, ParquetLoader(tmp_path / "out"), home)

    assert (metrics.read, metrics.written, metrics.dead_lettered) == (3, 3, 0)
    assert pq.read_table(tmp_path / "out").sort_by("id").to_pylist() == all_types_expected()
    assert str(library) in Path("/proc/self/maps").read_text()  # this copy did the reading

    missing = dataclasses.replace(connection, adbc_driver=str(tmp_path / "nowhere.so"))
    extractor = PostgresExtractor(missing, table=pg.table("all_types"))
    with pytest.raises(Exception, match=r"adbc_driver: no driver library at .*nowhere\.so") as info:
        run("driver", extractor, ListLoader(), home / "missing")
    assert isinstance(info.value.__cause__, SourceError)


def test_a_new_process_reads_the_source_end_to_end(pg: Pg, tmp_path: Path) -> None:
    """``sluiceway run`` in a fresh interpreter, where psycopg and the ADBC driver are
    first imported when the source opens: in-process tests have them imported already."""
    make_events(pg, 1000)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        f"version: 1\nname: fresh\n"
        f'source: {{type: postgres, dsn: "${{PG_DSN}}", table: {pg.table("events")}}}\n'
        "sink: {type: parquet, path: out}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "run", str(spec), "--quiet"],
        env={**os.environ, "PG_DSN": pg.dsn},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert pq.read_table(tmp_path / "out").num_rows == 1000


def test_unconstrained_numeric_misfits_are_dead_lettered_with_their_value(
    pg: Pg, home: Path
) -> None:
    pg.execute("CREATE TABLE amounts (id int PRIMARY KEY, amount numeric)")
    pg.execute(
        "INSERT INTO amounts VALUES (1, 1.5), (2, 'NaN'), (3, 0.1234567), (4, 1e30), (5, NULL)"
    )
    loader = ListLoader()
    extractor = PostgresExtractor(
        pg.connection(), table=pg.table("amounts"), numeric_precision=20, numeric_scale=4
    )
    metrics = run("amounts", extractor, loader, home)

    assert ids(loader) == [1, 5]
    assert metrics.dead_lettered == 3 and metrics.balanced
    dead = read_dead_letters(home / "dlq" / "amounts").sort_by("position").to_pylist()
    assert [(d["position"], d["column"], d["value"]) for d in dead] == [
        ('["2"]', "amount", "nan"),  # as the driver spells it
        ('["3"]', "amount", "0.1234567"),
        ('["4"]', "amount", "1000000000000000000000000000000"),
    ]
    assert all("does not fit decimal(20, 4)" in d["error_message"] for d in dead)
    assert all(d["stage"] == "extract" for d in dead)


def test_constrained_numeric_travels_as_bigint_exactly_and_nan_is_dead_lettered(
    pg: Pg, home: Path
) -> None:
    """numeric(p, s) with p <= 18 is read as its unscaled bigint (faster to decode) and
    rebuilt as decimal128(p, s): every digit kept, sign and NULL included; NaN, which
    a bigint cannot hold, is dead-lettered with its column, like any misfit."""
    from decimal import Decimal

    pg.execute(
        "CREATE TABLE prices (id int PRIMARY KEY, price numeric(18,4), qty numeric(5,0),"
        " big numeric(30,2))"
    )
    pg.execute(
        "INSERT INTO prices VALUES"
        " (1, 99999999999999.9999, 99999, 1234567890123456789012345678.91),"
        " (2, -99999999999999.9999, -99999, -1.5),"
        " (3, 0.0001, 0, 0),"
        " (4, NULL, NULL, NULL),"
        " (5, 'NaN', 7, 1),"
        " (6, -0.0001, 'NaN', 2)"
    )
    loader = ListLoader()
    extractor = PostgresExtractor(pg.connection(), table=pg.table("prices"), batch_size=4)
    metrics = run("prices", extractor, loader, home)

    assert metrics.read == 6 and metrics.written == 4 and metrics.dead_lettered == 2
    assert metrics.balanced
    rows = sorted(loader.rows, key=lambda r: r["id"])
    assert [(r["id"], r["price"], r["qty"], r["big"]) for r in rows] == [
        (
            1,
            Decimal("99999999999999.9999"),
            Decimal("99999"),
            Decimal("1234567890123456789012345678.91"),
        ),
        (2, Decimal("-99999999999999.9999"), Decimal("-99999"), Decimal("-1.50")),
        (3, Decimal("0.0001"), Decimal("0"), Decimal("0.00")),
        (4, None, None, None),
    ]
    schema = loader.batches[0].to_arrow().schema
    assert schema.field("price").type == pa.decimal128(18, 4)
    assert schema.field("qty").type == pa.decimal128(5, 0)
    dead = read_dead_letters(home / "dlq" / "prices").sort_by("position").to_pylist()
    assert [(d["position"], d["column"], d["value"]) for d in dead] == [
        ('["5"]', "price", "NaN"),
        ('["6"]', "qty", "NaN"),
    ]
    assert '"price": "NaN"' in dead[0]["raw"] or '"price":"NaN"' in dead[0]["raw"]
    assert all(d["stage"] == "extract" for d in dead)


def test_a_numeric_key_keeps_exact_positions(pg: Pg, home: Path) -> None:
    """A numeric column that orders the read stays on the text path: batches resume
    after the last key's text, so a key read as an unscaled bigint (25 for 0.25)
    would skip or repeat rows. Nine keys in batches of four arrive once each."""
    from decimal import Decimal

    pg.execute("CREATE TABLE ledger (k numeric(10,2) PRIMARY KEY, v int)")
    pg.execute("INSERT INTO ledger SELECT i / 4.0, i FROM generate_series(1, 9) i")
    loader = ListLoader()
    extractor = PostgresExtractor(pg.connection(), table=pg.table("ledger"), batch_size=4)
    assert run("ledger", extractor, loader, home).written == 9
    assert sorted((r["k"], r["v"]) for r in loader.rows) == [
        (Decimal(i) / 4, i) for i in range(1, 10)
    ]
    assert [b.num_rows for b in loader.batches] == [4, 4, 1]
    ends = [next(iter(b.positions.values())).end for b in loader.batches]
    assert [e["after"] for e in ends] == [["1.00"], ["2.00"], ["2.25"]]


def test_incremental_reads_inserts_and_updates_once_without_skipping_ties(
    pg: Pg, home: Path
) -> None:
    make_events(pg, 10)  # ten rows tie on the cursor; batches of 3 cut through the tie

    def extractor() -> PostgresExtractor:
        return PostgresExtractor(
            pg.connection(), table=pg.table("events"), cursor="updated_at", batch_size=3
        )

    first = ListLoader()
    assert run("events", extractor(), first, home).read == 10
    assert ids(first) == list(range(1, 11))
    assert [b.num_rows for b in first.batches] == [3, 3, 3, 1]

    pg.execute("INSERT INTO events VALUES (11, '2024-01-02', 'new'), (12, '2024-01-02', 'new')")
    pg.execute("UPDATE events SET updated_at = '2024-01-03', v = 'changed' WHERE id IN (2, 9)")
    second = ListLoader()
    assert run("events", extractor(), second, home).read == 4
    assert ids(second) == [2, 9, 11, 12]
    assert {r["v"] for r in second.rows if r["id"] in (2, 9)} == {"changed"}

    third = ListLoader()
    assert run("events", extractor(), third, home).read == 0

    state, _ = LocalStateStore(home / "state", "events").read()
    position = state.positions[pg.table("events")]
    assert position["after"][1] == "9"  # (cursor, id) of the last row read
    assert position["after"][0].startswith("2024-01-03 00:00:00")


def test_rows_of_a_transaction_still_open_are_not_passed_over(pg: Pg, home: Path) -> None:
    make_events(pg, 2)

    def extractor() -> PostgresExtractor:
        return PostgresExtractor(pg.connection(), table=pg.table("events"), cursor="updated_at")

    assert run("late", extractor(), ListLoader(), home).read == 2
    with psycopg.connect(pg.dsn) as slow:  # a transaction that started first, commits last
        slow.execute(f"INSERT INTO {pg.schema}.events VALUES (3, now(), 'slow')")
        pg.execute("INSERT INTO events VALUES (4, now(), 'quick')")
        held_back = ListLoader()
        # Row 4 is committed, but its cursor is past the open transaction's start: reading
        # it now would move the position past row 3, which commits later with an older cursor.
        assert run("late", extractor(), held_back, home).read == 0
        slow.commit()
    after = ListLoader()
    assert run("late", extractor(), after, home).read == 2
    assert ids(after) == [3, 4]


def test_lag_keeps_the_newest_rows_for_a_later_run(pg: Pg, home: Path) -> None:
    make_events(pg, 3)
    pg.execute("INSERT INTO events VALUES (4, now(), 'fresh')")
    loader = ListLoader()
    extractor = PostgresExtractor(
        pg.connection(), table=pg.table("events"), cursor="updated_at", lag=3600
    )
    assert run("lagged", extractor, loader, home).read == 3
    assert ids(loader) == [1, 2, 3]


def test_partitions_are_read_concurrently_each_with_its_own_position(pg: Pg, home: Path) -> None:
    make_events(pg, 1000)

    def extractor() -> PostgresExtractor:
        return PostgresExtractor(
            pg.connection(),
            table=pg.table("events"),
            cursor="updated_at",
            batch_size=100,
            partitions=3,
        )

    first = ListLoader()
    assert run("parts", extractor(), first, home).read == 1000
    assert ids(first) == list(range(1, 1001))
    names = {name for b in first.batches for name in b.positions}
    assert names == {f"{pg.table('events')}[{i}/3]" for i in range(3)}
    assert all(len(b.positions) == 1 for b in first.batches)
    state, _ = LocalStateStore(home / "state", "parts").read()
    splits = {tuple(p["split"]) for p in state.positions.values()}
    assert len(splits) == 1 and len(next(iter(splits))) == 2

    pg.execute("INSERT INTO events SELECT g, '2024-02-01', 'n' FROM generate_series(1001, 1100) g")
    pg.execute("UPDATE events SET updated_at = '2024-03-01' WHERE id IN (1, 500, 999)")
    second = ListLoader()
    assert run("parts", extractor(), second, home).read == 103
    assert ids(second) == [1, 500, 999, *range(1001, 1101)]
    state, _ = LocalStateStore(home / "state", "parts").read()
    assert {tuple(p["split"]) for p in state.positions.values()} == splits


def test_changing_the_partition_count_is_refused(pg: Pg, home: Path) -> None:
    make_events(pg, 10)
    run(
        "repart",
        PostgresExtractor(pg.connection(), table=pg.table("events"), cursor="updated_at"),
        ListLoader(),
        home,
    )
    extractor = PostgresExtractor(
        pg.connection(), table=pg.table("events"), cursor="updated_at", partitions=2
    )
    with pytest.raises(Exception, match="reset the state") as info:
        run("repart", extractor, ListLoader(), home)
    assert isinstance(info.value.__cause__, SourceError)


def test_replay_reads_exactly_the_rows_of_the_intent(pg: Pg) -> None:
    make_events(pg, 20)
    extractor = PostgresExtractor(
        pg.connection(), table=pg.table("events"), cursor="updated_at", batch_size=7
    )
    extractor.open(SourceContext(pipeline="replay", run_id="r1", stop=threading.Event()))
    batches = list(extractor.extract())
    second = batches[1]
    pg.execute("INSERT INTO events VALUES (0, '2023-01-01', 'before'), (21, '2025-01-01', 'after')")
    replayed = extractor.replay(
        Intent(seq=1, positions=dict(second.positions), upper_bound=second.upper_bound)
    )
    assert replayed is not None
    assert replayed.to_arrow().equals(second.to_arrow())
    assert replayed.positions == second.positions
    extractor.close()


def test_a_full_read_resumes_an_interrupted_run_then_starts_over(pg: Pg, home: Path) -> None:
    make_events(pg, 10)

    def extractor() -> PostgresExtractor:
        return PostgresExtractor(pg.connection(), table=pg.table("events"), batch_size=4)

    stopped = ListLoader()
    run("full", extractor(), stopped, home, limit=4)
    assert ids(stopped) == [1, 2, 3, 4]
    rest = ListLoader()
    run("full", extractor(), rest, home)
    assert ids(rest) == list(range(5, 11))
    again = ListLoader()
    run("full", extractor(), again, home)
    assert ids(again) == list(range(1, 11))


def test_a_query_source_with_a_key_and_one_without(pg: Pg, home: Path) -> None:
    make_events(pg, 6)
    query = f"SELECT id, v, updated_at FROM {pg.schema}.events WHERE id % 2 = 0"
    keyed = ListLoader()
    extractor = PostgresExtractor(
        pg.connection(), query=query, key=["id"], cursor="updated_at", batch_size=2
    )
    assert run("q1", extractor, keyed, home).read == 3
    assert ids(keyed) == [2, 4, 6]
    keyless = ListLoader()
    extractor = PostgresExtractor(pg.connection(), query=query + ";", batch_size=2)
    assert run("q2", extractor, keyless, home).read == 3
    extractor.open(SourceContext(pipeline="q2", run_id="r2"))
    # Without a key the rows have no order to re-read them by: no exact replay.
    assert extractor.replay(Intent(0, dict(keyless.batches[0].positions))) is None
    assert keyless.batches[0].positions["query"].end == {"row": 2, "gen": 1, "done": False}


def test_incremental_needs_a_key(pg: Pg, home: Path) -> None:
    pg.execute("CREATE TABLE nokey (updated_at timestamptz, v text)")
    extractor = PostgresExtractor(pg.connection(), table=pg.table("nokey"), cursor="updated_at")
    with pytest.raises(Exception, match="needs a unique key"):
        run("nokey", extractor, ListLoader(), home)


def test_a_table_that_does_not_exist_is_a_source_error(pg: Pg, home: Path) -> None:
    extractor = PostgresExtractor(pg.connection(), table=pg.table("missing"))
    with pytest.raises(Exception, match="does not exist") as info:
        run("missing", extractor, ListLoader(), home)
    assert isinstance(info.value.__cause__, SourceError)


def test_batches_share_one_schema_even_when_empty(pg: Pg) -> None:
    create_all_types(pg)
    pg.execute("DELETE FROM all_types")
    extractor = PostgresExtractor(pg.connection(), table=pg.table("all_types"))
    extractor.open(SourceContext(pipeline="empty", run_id="r1"))
    batches = list(extractor.extract())
    assert len(batches) == 1 and batches[0].num_rows == 0  # the generation's end marker
    assert batches[0].to_arrow().schema.equals(pa.schema(ALL_TYPES_ARROW.items()))


@pytest.mark.parametrize("scale", [0, 1, 2, 3, 4, 5, 8, 9, 18])
def test_numeric_send_bytes_decode_to_the_exact_unscaled_value(pg: Pg, scale: int) -> None:
    """The server's own binary numerics, every slice of them, against its text form."""
    from decimal import Decimal

    from sluiceway.connectors.postgres._catalog import SCALED_NAN
    from sluiceway.connectors.postgres._convert import numeric_send_to_unscaled

    texts = [
        "0", None, "NaN", "-0.0001", "1.5", "-7", "10000", "0.5", "100000000", "123456789",
        "-0.000000001", "-0.6", "99999.99999", "0.000000000000000001", "-12345.678901",
    ]  # fmt: skip
    kind = f"numeric(18,{scale})"
    rows = pg.rows(
        f"SELECT numeric_send(v::{kind}), (v::{kind})::text FROM unnest(%s::text[]) "
        "WITH ORDINALITY AS u(v, i) "
        f"WHERE v IS NULL OR v = 'NaN' OR abs(v::numeric) < 10^(18 - {scale}) ORDER BY i",
        [texts],
    )
    data = pa.array([r[0] for r in rows], pa.binary())
    expected = [
        None if t is None else SCALED_NAN if t == "NaN" else int(Decimal(t).scaleb(scale))
        for _, t in rows
    ]
    assert len(expected) >= 8
    for lo in range(len(expected)):
        for hi in range(lo, len(expected) + 1):
            got = numeric_send_to_unscaled(data.slice(lo, hi - lo), scale).to_pylist()
            assert got == expected[lo:hi], (lo, hi)
