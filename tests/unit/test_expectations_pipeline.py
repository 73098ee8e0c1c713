"""Expectations inside a real pipeline run: rows routed to the DLQ, warned, or failing the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

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
    ValidationFailedError,
    read_dead_letters,
)
from sluiceway.quality.expectations import ExpectationsValidator


class TableSource(BaseExtractor[Any]):
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


ORDERS = pa.table(
    {
        "id": [1, 2, 3, None, 5, 2, 7, 8],
        "amount": pa.array(
            [Decimal(v) for v in ["10.00", "20.00", "-5.00", "1.00", "2.00", "3.00", "4.00", "5"]],
            pa.decimal128(12, 2),
        ),
        "email": ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "no-at-sign", "f@x.io", "g@x.io", "h@x"],
        "status": ["new", "paid", "new", "paid", "new", "shipped", "lost", "new"],
        "code": ["1.5", "2", "3", "4", "5", "6", "7", "oops"],
    }
)

RULES: list[dict[str, Any]] = [
    {"column": "id", "not_null": True, "unique": True},
    {"column": "amount", "between": [0, 1000000]},
    {"column": "email", "regex": "^[^@]+@[^@]+$"},
    {"column": "status", "accepted_values": ["new", "paid", "shipped"]},
    {"column": "code", "type": "decimal(12, 2)"},
]


def run(
    tmp_path: Path,
    validator: ExpectationsValidator,
    table: pa.Table = ORDERS,
    batch_size: int = 100,
) -> tuple[PipelineMetrics, list[dict[str, Any]], list[dict[str, Any]]]:
    sink = ListSink()
    pipeline = Pipeline(
        "orders", TableSource(table, batch_size), [], [validator], sink, home=tmp_path
    )
    metrics = pipeline.run()
    assert metrics.balanced, metrics.balance_message()
    return metrics, sink.rows, dead_letters(tmp_path)


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return read_dead_letters(tmp_path / "dlq" / "orders").to_pylist()


def test_each_check_dead_letters_exactly_its_failing_rows(tmp_path):
    metrics, loaded, dlq = run(tmp_path, ExpectationsValidator(RULES, name="quality"))

    got = sorted((json.loads(e["row"])["email"], e["rule"], e["column"], e["value"]) for e in dlq)
    assert got == [
        ("c@x.io", "amount.between", "amount", "-5.00"),
        ("d@x.io", "id.not_null", "id", None),
        ("f@x.io", "id.unique", "id", "2"),
        ("g@x.io", "status.accepted_values", "status", "lost"),
        ("h@x", "code.type", "code", "oops"),
        ("no-at-sign", "email.regex", "email", "no-at-sign"),
    ]
    assert {e["stage"] for e in dlq} == {"validate.0.quality"}
    assert {e["error_type"] for e in dlq} == {"ValidationFailed"}
    by_rule = {e["rule"]: e for e in dlq}
    assert by_rule["amount.between"]["error_message"] == "amount is not between 0 and 1000000"
    assert json.loads(by_rule["id.unique"]["row"])["status"] == "shipped"
    assert [r["email"] for r in loaded] == ["a@x.io", "b@x.io"]
    assert (metrics.read, metrics.written, metrics.dead_lettered) == (8, 2, 6)
    assert metrics.rules["quality:id.unique"].failed == 1
    assert metrics.rules["quality:amount.between"].sample == [Decimal("-5.00")]


def test_checks_run_per_batch(tmp_path):
    # id 2 appears in the first and the second batch: unique is within a batch
    validator = ExpectationsValidator([{"column": "id", "unique": True}])

    metrics, _, dlq = run(tmp_path, validator, batch_size=4)

    assert dlq == []
    assert metrics.written == 8


def test_warn_loads_the_row_and_counts_it(tmp_path):
    validator = ExpectationsValidator(
        [{"column": "status", "accepted_values": ["new", "paid", "shipped"], "on_fail": "warn"}]
    )

    metrics, loaded, dlq = run(tmp_path, validator)

    assert dlq == []
    assert len(loaded) == 8
    assert "lost" in [r["status"] for r in loaded]
    assert metrics.warned == 1
    assert metrics.rules["expectations:status.accepted_values"].on_fail == "warn"


def test_on_fail_fail_stops_the_run_naming_the_rule(tmp_path):
    validator = ExpectationsValidator(
        [
            {"column": "id", "not_null": True},
            {"column": "amount", "between": [0, None], "on_fail": "fail"},
        ],
        name="quality",
    )

    with pytest.raises(RunFailedError) as info:
        run(tmp_path, validator)

    assert isinstance(info.value.cause, ValidationFailedError)
    assert "amount.between" in str(info.value)
    assert "'quality'" in str(info.value)
    assert info.value.metrics.written == 0


def test_fail_on_error_makes_every_rule_fail_the_run(tmp_path):
    validator = ExpectationsValidator(
        [{"column": "email", "regex": "@"}, {"column": "id", "not_null": True}],
        fail_on_error=True,
    )

    with pytest.raises(RunFailedError) as info:
        run(tmp_path, validator)

    assert isinstance(info.value.cause, ValidationFailedError)
    assert info.value.cause.rule == "email.regex"
    assert dead_letters(tmp_path) == []


def test_unknown_column_fails_the_run_instead_of_dead_lettering(tmp_path):
    validator = ExpectationsValidator([{"column": "emial", "regex": "@"}], name="quality")

    with pytest.raises(RunFailedError) as info:
        run(tmp_path, validator)

    assert isinstance(info.value.cause, ConfigError)
    assert "'quality'" in str(info.value)
    assert "'emial'" in str(info.value)
    assert dead_letters(tmp_path) == []


def test_schema_mismatch_dead_letters_the_batch(tmp_path):
    validator = ExpectationsValidator(schema={"id": "int64", "amount": "double"})

    metrics, loaded, dlq = run(tmp_path, validator)

    assert loaded == []
    assert len(dlq) == 8
    assert {e["rule"] for e in dlq} == {"amount.schema"}
    assert {e["error_message"] for e in dlq} == {
        "column 'amount' is decimal(12, 2), expected double"
    }
    assert metrics.dead_lettered == 8
