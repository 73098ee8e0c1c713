"""The SQL transform keeps the columns a query only passes through out of DuckDB.

Every case compares the narrowed run with the same query over the whole batch: the
same rows in the same order, the same column names in the same places, the same
values (pass-through columns keep their Arrow type, where DuckDB would hand back
its own).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from sluiceway.core import ROW_ID
from sluiceway.engines.sql import SQLTransformer, passthrough_plan


def orders(ids: list[int] | None = None) -> pa.Table:
    n = 6
    table = pa.table(
        {
            "id": pa.array(range(1, n + 1), pa.int64()),
            "email": pa.array([f"u{i}@example.com" for i in range(n)], pa.large_string()),
            "status": pa.array(["new", "paid", "x", "paid", None, "new"]),
            "amount_cents": pa.array([100, 250, 999, 0, 5, 70], pa.int64()),
            "tags": pa.array([["a"], [], ["b", "c"], None, ["d"], ["e"]]),
            "point": pa.array([{"x": i, "y": -i} for i in range(n)]),
            "note": pa.array(["n"] * n).dictionary_encode(),
        }
    )
    row_ids = ids if ids is not None else list(range(n))
    return table.append_column(ROW_ID, pa.array(row_ids, pa.int64()))


def run(query: str, data: pa.Table, *, narrowed: bool) -> pa.Table:
    sql = SQLTransformer(query)
    if not narrowed:
        sql._plan = None
    sql.open()
    try:
        return sql.transform(data)
    finally:
        sql.close()


QUERIES = [
    "SELECT *, amount_cents / 100.0 AS amount FROM batch",
    "SELECT *, amount_cents / 100.0 AS amount FROM batch WHERE status = 'paid'",
    "SELECT id * 10 AS id10, * FROM batch WHERE amount_cents > 50",
    "SELECT upper(status) AS s, *, id + 1 AS next FROM batch",
    "SELECT *, point.x AS px FROM batch",
    "SELECT *, batch.id AS again FROM batch",
    "SELECT *, unnest(tags) AS tag FROM batch",
    "SELECT *, row_number() OVER (ORDER BY amount_cents) AS rn FROM batch",
    "SELECT *, (SELECT max(amount_cents) FROM batch) AS top FROM batch",
    "SELECT * FROM batch WHERE email LIKE '%1@%' OR id > 4",
]


@pytest.mark.parametrize("query", QUERIES)
def test_narrowed_run_matches_the_query_over_the_whole_batch(query):
    assert passthrough_plan(query) is not None
    for data in (orders(), orders(ids=[10, 11, 12, 20, 21, 22])):
        fast = run(query, data, narrowed=True)
        full = run(query, data, narrowed=False)
        assert fast.column_names == full.column_names
        assert fast.num_rows == full.num_rows
        for name in fast.column_names:
            assert fast.column(name).to_pylist() == full.column(name).to_pylist(), name


def test_pass_through_columns_keep_their_arrow_type():
    data = orders()
    out = run("SELECT *, amount_cents * 2 AS doubled FROM batch", data, narrowed=True)
    assert out.schema.field("email").type == pa.large_string()
    # Dictionaries still go through DuckDB, which decodes them, as before narrowing.
    assert out.schema.field("note").type == pa.string()
    assert out.schema.field("doubled").type == pa.int64()


def test_a_filtered_batch_takes_pass_through_values_by_row_id():
    # A second transform sees row ids that are no longer 0..n-1.
    data = orders(ids=[7, 3, 9, 1, 5, 8])
    out = run("SELECT *, id AS k FROM batch WHERE amount_cents >= 100", data, narrowed=True)
    assert out.column(ROW_ID).to_pylist() == [7, 3, 9]
    assert out.column("email").to_pylist() == ["u0@example.com", "u1@example.com", "u2@example.com"]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * EXCLUDE (email) FROM batch",
        "SELECT * REPLACE (upper(email) AS email) FROM batch",
        "SELECT *, to_json(batch) AS j FROM batch",
        "SELECT b.*, 1 AS one FROM batch b",
        "SELECT *, #2 AS second FROM batch",
        "SELECT *, COLUMNS('id') + 1 FROM batch",
        "SELECT * FROM batch ORDER BY id DESC",
        "SELECT DISTINCT * FROM batch",
        "SELECT * FROM batch LIMIT 2",
        "SELECT status, count(*) AS n FROM batch GROUP BY status",
        "WITH t AS (SELECT * FROM batch) SELECT * FROM t",
        "SELECT * FROM batch UNION ALL SELECT * FROM batch",
        "SELECT * FROM batch JOIN batch AS other USING (id)",
    ],
)
def test_queries_the_plan_cannot_prove_safe_run_over_the_whole_batch(query):
    assert passthrough_plan(query) is None


def test_an_output_named_like_a_passed_column_runs_as_written():
    # `email` is passed through by `*` and also produced by the query: DuckDB renames
    # one of them; the narrowed run must not guess, so it runs the query as written.
    query = "SELECT *, 'x' AS email FROM batch"
    data = orders()
    fast = run(query, data, narrowed=True)
    full = run(query, data, narrowed=False)
    assert fast.column_names == full.column_names
    assert fast.equals(full)
