"""Built-in transforms inside a real pipeline run: what reaches the sink, the DLQ, the metrics."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from sluiceway.core import (
    BaseExtractor,
    BaseLoader,
    Batch,
    ConfigError,
    Pipeline,
    PipelineMetrics,
    RunFailedError,
    read_dead_letters,
)
from sluiceway.engines.transforms import (
    PYTHON_TRANSFORM,
    CastTransformer,
    PythonTransformer,
    SelectTransformer,
    SQLTransformer,
)
from sluiceway.plugins import BuildContext


class TableSource(BaseExtractor[Any]):
    """Yields an in-memory table in batches of ``batch_size`` rows."""

    def __init__(self, table: pa.Table, batch_size: int) -> None:
        super().__init__(batch_size)
        self.table = table

    def extract(self) -> Iterator[pa.Table]:
        for i in range(0, self.table.num_rows, self.batch_size):
            yield self.table.slice(i, self.batch_size)


class ListSink(BaseLoader[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []

    def load(self, batch: Batch) -> None:
        self.rows.extend(batch.to_records())


def run(
    tmp_path: Path, table: pa.Table, transforms: list[Any], batch_size: int = 1000
) -> tuple[PipelineMetrics, list[dict[str, Any]], list[dict[str, Any]]]:
    sink = ListSink()
    pipeline = Pipeline(
        "orders", TableSource(table, batch_size), transforms, [], sink, home=tmp_path
    )
    metrics = pipeline.run()
    assert metrics.balanced, metrics.balance_message()
    return metrics, sink.rows, dead_letters(tmp_path)


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return read_dead_letters(tmp_path / "dlq" / "orders").to_pylist()


def orders(n: int) -> pa.Table:
    return pa.table(
        {
            "id": list(range(n)),
            "amount": [str(i * 10) for i in range(n)],
            "status": [("new", "paid", "shipped")[i % 3] for i in range(n)],
        }
    )


def test_python_transform_failing_on_three_rows_dead_letters_exactly_those(tmp_path):
    bad = {17, 503, 998}

    def enrich(df: pl.DataFrame) -> pl.DataFrame:
        hit = set(df["id"].to_list()) & bad
        if hit:
            raise ValueError(f"cannot enrich order {min(hit)}")
        return df.with_columns(pl.col("id").alias("order_id"))

    metrics, loaded, dlq = run(tmp_path, orders(1000), [PythonTransformer(enrich, name="enrich")])

    assert sorted(json.loads(e["row"])["id"] for e in dlq) == sorted(bad)
    assert {e["stage"] for e in dlq} == {"transform.0.enrich"}
    assert {e["error_type"] for e in dlq} == {"ValueError"}
    by_id = {json.loads(e["row"])["id"]: e for e in dlq}
    assert by_id[503]["error_message"] == "cannot enrich order 503"
    assert by_id[503]["position"] == "503"
    assert sorted(r["id"] for r in loaded) == sorted(set(range(1000)) - bad)
    assert all(r["order_id"] == r["id"] for r in loaded)
    assert (metrics.read, metrics.written, metrics.dead_lettered) == (1000, 997, 3)
    assert metrics.filtered == metrics.expanded == 0


def test_failing_group_by_dead_letters_the_whole_batch(tmp_path):
    table = orders(20)
    amounts = table.column("amount").to_pylist()
    amounts[3] = "n/a"  # in the first batch of 10
    table = table.set_column(1, "amount", pa.array(amounts))
    totals = SQLTransformer(
        "SELECT status, sum(CAST(amount AS INTEGER)) AS total FROM batch GROUP BY status",
        name="totals",
    )

    metrics, loaded, dlq = run(tmp_path, table, [totals], batch_size=10)

    assert sorted(json.loads(e["row"])["id"] for e in dlq) == list(range(10))
    assert {e["stage"] for e in dlq} == {"transform.0.totals"}
    assert {e["error_type"] for e in dlq} == {"TransformError"}
    assert all("n/a" in e["error_message"] for e in dlq)
    # the second batch aggregates into one row per status
    assert sorted(r["status"] for r in loaded) == ["new", "paid", "shipped"]
    assert sum(r["total"] for r in loaded) == sum(i * 10 for i in range(10, 20))
    assert (metrics.read, metrics.dead_lettered, metrics.written) == (20, 10, 3)
    assert metrics.filtered == 7


def test_sql_where_counts_filtered_rows(tmp_path):
    sql = SQLTransformer("SELECT * FROM batch WHERE status <> 'new'")

    metrics, loaded, dlq = run(tmp_path, orders(30), [sql], batch_size=7)

    assert dlq == []
    assert sorted(r["id"] for r in loaded) == [i for i in range(30) if i % 3]
    assert metrics.filtered == 10
    assert metrics.written == 20
    assert metrics.expanded == 0


def test_exploding_transform_counts_expanded_rows(tmp_path):
    explode = SQLTransformer(
        "SELECT b.*, r.range AS copy FROM batch b, range(2) r ORDER BY b.id, copy"
    )

    metrics, loaded, _ = run(tmp_path, orders(5), [explode])

    assert [(r["id"], r["copy"]) for r in loaded] == [(i, c) for i in range(5) for c in (0, 1)]
    assert (metrics.read, metrics.expanded, metrics.written) == (5, 5, 10)


def test_exploded_rows_keep_their_source_row_in_the_dlq(tmp_path):
    explode = SQLTransformer("SELECT b.*, r.range AS copy FROM batch b, range(2) r")
    pick = PythonTransformer(
        lambda df: df.with_columns(pl.col("copy").cast(pl.Int64)).filter(pl.col("copy") == 1)
    )
    cast = CastTransformer({"status": "int64"})

    metrics, loaded, dlq = run(tmp_path, orders(2), [explode, pick, cast])

    assert loaded == []
    assert sorted(e["position"] for e in dlq) == ["0", "1"]
    assert {e["value"] for e in dlq} == {"new", "paid"}
    assert (metrics.expanded, metrics.filtered, metrics.dead_lettered) == (2, 2, 2)


def test_sql_syntax_error_fails_the_run_before_any_row_moves(tmp_path):
    sql = SQLTransformer("SELECT amount FROM batch WHERE", engine="polars", name="totals")

    with pytest.raises(RunFailedError) as info:
        run(tmp_path, orders(10), [sql])

    assert isinstance(info.value.cause, ConfigError)
    assert "sql transform 'totals'" in str(info.value)
    assert dead_letters(tmp_path) == []
    assert info.value.metrics.written == 0


def test_sql_unknown_column_fails_the_run_instead_of_dead_lettering(tmp_path):
    sql = SQLTransformer("SELECT amout FROM batch", name="totals")

    with pytest.raises(RunFailedError) as info:
        run(tmp_path, orders(10), [sql])

    assert isinstance(info.value.cause, ConfigError)
    assert "'totals'" in str(info.value)
    assert "amout" in str(info.value)
    assert dead_letters(tmp_path) == []


def test_cast_transform_dead_letters_values_that_do_not_fit(tmp_path):
    table = orders(6)
    amounts = table.column("amount").to_pylist()
    amounts[2], amounts[4] = "12,5", "9999999999999"
    table = table.set_column(1, "amount", pa.array(amounts))
    cast = CastTransformer({"amount": "int32"}, name="types")

    metrics, loaded, dlq = run(tmp_path, table, [cast])

    assert [(e["column"], e["value"]) for e in dlq] == [
        ("amount", "12,5"),
        ("amount", "9999999999999"),
    ]
    assert {e["stage"] for e in dlq} == {"transform.0.types"}
    assert {e["error_type"] for e in dlq} == {"CastError"}
    assert json.loads(dlq[0]["row"]) == {"id": 2, "amount": "12,5", "status": "shipped"}
    assert [(r["id"], r["amount"]) for r in loaded] == [(0, 0), (1, 10), (3, 30), (5, 50)]
    assert (metrics.written, metrics.dead_lettered) == (4, 2)


def test_python_plugin_runs_a_module_next_to_the_spec(tmp_path):
    module = f"transforms_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(
        "import polars as pl\n"
        "def only(df, status):\n"
        "    return df.filter(pl.col('status') == status)\n"
    )
    spec = {"type": "python", "function": f"{module}:only", "args": {"status": "paid"}}
    config = PYTHON_TRANSFORM.config.model_validate(spec)
    fn = PYTHON_TRANSFORM.build(config, BuildContext(pipeline="orders", base_dir=tmp_path))
    select = SelectTransformer(["id"])

    metrics, loaded, _ = run(tmp_path, orders(9), [fn, select])

    assert loaded == [{"id": 1}, {"id": 4}, {"id": 7}]
    assert (metrics.filtered, metrics.written) == (6, 3)
