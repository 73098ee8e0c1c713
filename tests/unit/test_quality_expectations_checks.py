"""Built-in expectations added for data quality: unique in the run, row count, freshness, SQL."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError
from tests.support import ListLoader

from sluiceway.core import (
    BaseExtractor,
    ConfigError,
    Pipeline,
    PipelineMetrics,
    RuleResult,
    read_dead_letters,
)
from sluiceway.quality.expectations import EXPECTATIONS_VALIDATOR, ExpectationsValidator

NOON = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


class Slices(BaseExtractor[Any]):
    def __init__(self, table: pa.Table, batch_size: int) -> None:
        super().__init__(batch_size)
        self.table = table

    def extract(self) -> Iterator[pa.Table]:
        for i in range(0, self.table.num_rows, self.batch_size):
            yield self.table.slice(i, self.batch_size)


def run(
    home: Path, validator: ExpectationsValidator, table: pa.Table, batch_size: int
) -> tuple[PipelineMetrics, list[dict[str, Any]], list[dict[str, Any]]]:
    sink = ListLoader()
    metrics = Pipeline("q", Slices(table, batch_size), [], [validator], sink, home=home).run()
    assert metrics.balanced, metrics.balance_message()
    folder = home / "dlq" / "q"
    dlq = read_dead_letters(folder).to_pylist() if folder.exists() else []
    return metrics, sink.rows, dlq


def results(validator: ExpectationsValidator, table: pa.Table) -> dict[str, RuleResult]:
    return {r.rule: r for r in validator.validate(table).results}


def mask(result: RuleResult) -> list[bool]:
    assert result.failed_mask is not None
    return result.failed_mask.to_pylist()


# -- unique in the run ------------------------------------------------------------------


def test_unique_in_run_dead_letters_repeats_across_batches(tmp_path):
    table = pa.table({"id": [1, 2, 3, 2, None, 1, 4, None, 4], "n": list(range(9))})
    validator = ExpectationsValidator([{"column": "id", "unique_in_run": True}])

    metrics, loaded, dlq = run(tmp_path, validator, table, batch_size=3)

    got = sorted((json.loads(e["row"])["n"], e["rule"], e["value"]) for e in dlq)
    # 2 again in batch 2 (row 3), 1 again in batch 2 (row 5), 4 twice in batch 3 (row 8)
    assert got == [
        (3, "id.unique_in_run", "2"),
        (5, "id.unique_in_run", "1"),
        (8, "id.unique_in_run", "4"),
    ]
    assert sorted(r["n"] for r in loaded) == [0, 1, 2, 4, 6, 7]
    assert metrics.rules["expectations:id.unique_in_run"].failed == 3


def test_unique_in_run_starts_afresh_each_run(tmp_path):
    table = pa.table({"id": [1, 2, 1]})
    validator = ExpectationsValidator([{"column": "id", "unique_in_run": True}])

    first, _, _ = run(tmp_path / "a", validator, table, batch_size=2)
    second, _, _ = run(tmp_path / "b", validator, table, batch_size=2)

    assert first.dead_lettered == second.dead_lettered == 1


def test_unique_in_run_matches_a_set_over_many_batches():
    rng = random.Random(7)
    values: list[str | None] = [rng.choice([None, *map(str, range(400))]) for _ in range(3000)]
    validator = ExpectationsValidator([{"column": "v", "unique_in_run": True}])
    validator.open()
    seen: set[str] = set()
    for start in range(0, len(values), 37):  # 82 batches: the hash runs merge many times
        chunk = values[start : start + 37]
        expected = []
        for value in chunk:
            expected.append(value is not None and value in seen)
            if value is not None:
                seen.add(value)
        got = mask(results(validator, pa.table({"v": chunk}))["v.unique_in_run"])
        assert got == expected, f"batch at {start}"
    assert validator._seen[0].size == len(seen)
    assert len(validator._seen[0].runs) <= 8


# -- row count and freshness (batch-level) ---------------------------------------------


def test_row_count_is_batch_level_and_says_what_it_saw():
    validator = ExpectationsValidator([{"row_count": [2, 3], "on_fail": "fail"}])

    small = results(validator, pa.table({"a": [1]}))["row_count"]
    fine = results(validator, pa.table({"a": [1, 2]}))["row_count"]

    assert small.failed_mask is None
    assert (small.passed, small.on_fail, small.sample) == (False, "fail", [1])
    assert small.message == "the batch has 1 rows, expected between 2 and 3"
    assert fine.passed


def test_row_count_bounds_may_be_open():
    validator = ExpectationsValidator([{"row_count": [None, 2], "name": "at_most_two"}])

    result = results(validator, pa.table({"a": [1, 2, 3]}))["at_most_two"]

    assert result.message == "the batch has 3 rows, expected at most 2"


def test_a_failing_batch_level_check_under_warn_loads_everything(tmp_path):
    validator = ExpectationsValidator([{"row_count": [3, None], "on_fail": "warn"}])

    metrics, loaded, dlq = run(tmp_path, validator, pa.table({"a": [1, 2, 3, 4]}), batch_size=2)

    assert (len(loaded), dlq) == (4, [])
    stats = metrics.rules["expectations:row_count"]
    assert (stats.row_level, stats.checked, stats.batches_failed) == (False, 2, 2)


def fresh(column: pa.Array, age: str = "1h") -> RuleResult:
    validator = ExpectationsValidator([{"column": "ts", "freshness": age}], clock=NOON.timestamp)
    return results(validator, pa.table({"ts": column}))["ts.freshness"]


def test_freshness_judges_the_newest_value_against_the_clock():
    recent = pa.array([NOON - dt.timedelta(hours=5), NOON - dt.timedelta(minutes=59)])
    stale = pa.array([NOON - dt.timedelta(hours=5), NOON - dt.timedelta(minutes=61)])

    assert fresh(recent).passed
    result = fresh(stale)
    assert (result.passed, result.failed_mask) == (False, None)
    assert result.message == "the newest ts is 1:01:00, older than 1:00:00"


def test_freshness_takes_naive_timestamps_as_utc_and_dates_from_midnight():
    naive = pa.array([dt.datetime(2024, 5, 1, 11, 30)], pa.timestamp("us"))
    assert fresh(naive, "31m").passed
    assert not fresh(naive, "29m").passed
    assert fresh(pa.array([dt.date(2024, 5, 1)]), "12h").passed
    assert not fresh(pa.array([dt.date(2024, 4, 30)]), "1d").passed


def test_freshness_fails_a_batch_without_values_and_refuses_text_columns():
    assert fresh(pa.array([None], pa.timestamp("us", "UTC"))).message == (
        "ts has no value to judge freshness by"
    )
    with pytest.raises(ConfigError, match="freshness needs a timestamp or date column"):
        fresh(pa.array(["2024-05-01"]))


# -- SQL predicate (row-level, DuckDB) --------------------------------------------------


def test_sql_predicate_fails_rows_where_it_is_false_and_passes_nulls():
    validator = ExpectationsValidator(
        [
            {"column": "shipped", "sql": "shipped >= ordered"},
            {"name": "total_matches", "sql": "qty * price = total", "on_fail": "warn"},
        ]
    )
    table = pa.table(
        {
            "ordered": [1, 5, 3, 4],
            "shipped": [2, 4, None, 4],
            "qty": [1, 2, 3, 4],
            "price": [10, 10, 10, 10],
            "total": [10, 20, 31, 40],
        }
    )

    got = results(validator, table)

    assert mask(got["shipped.sql"]) == [False, True, False, False]
    assert got["shipped.sql"].sample == [4]
    assert got["shipped.sql"].message == "shipped >= ordered is false"
    assert mask(got["total_matches"]) == [False, False, True, False]
    assert got["total_matches"].column is None
    assert got["total_matches"].on_fail == "warn"


def test_sql_predicate_masks_align_with_rows_in_a_large_batch():
    n = 300_000
    bad = {7, 65_537, 150_000, 299_999}
    table = pa.table({"x": [-1 if i in bad else i for i in range(n)]})
    validator = ExpectationsValidator([{"column": "x", "sql": "x >= 0"}])

    failing = results(validator, table)["x.sql"].failed_mask

    assert failing is not None
    assert {i for i, f in enumerate(failing.to_pylist()) if f} == bad
    validator.close()


def test_sql_predicate_dead_letters_in_a_pipeline(tmp_path):
    validator = ExpectationsValidator([{"column": "b", "sql": "a < b"}])
    table = pa.table({"a": [1, 5, 2], "b": [2, 3, 9]})

    _, loaded, dlq = run(tmp_path, validator, table, batch_size=10)

    assert [(e["rule"], e["column"], e["value"]) for e in dlq] == [("b.sql", "b", "3")]
    assert [r["a"] for r in loaded] == [1, 2]


def test_sql_predicate_on_an_unknown_column_is_a_config_error():
    validator = ExpectationsValidator([{"column": "a", "sql": "a < bb"}], name="q")

    with pytest.raises(ConfigError, match=r"validator 'q': rule 0 \(a.sql\): SQL predicate"):
        validator.validate(pa.table({"a": [1]}))


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"sql": "a > 0"}, "needs a column .* or a name"),
        ({"sql": "a >"}, "invalid SQL predicate"),
        ({"row_count": [None, None]}, "at least one bound"),
        ({"freshness": "soon", "column": "ts"}, "invalid duration"),
        ({"freshness": "1h"}, "freshness needs a column"),
        ({"unique_in_run": True}, "unique_in_run needs a column"),
    ],
)
def test_invalid_rules_are_rejected_with_the_reason(rule, expected):
    with pytest.raises(ValidationError, match=expected):
        EXPECTATIONS_VALIDATOR.config.model_validate({"type": "expectations", "rules": [rule]})


def test_freshness_accepts_the_spec_duration_syntax():
    config = EXPECTATIONS_VALIDATOR.config.model_validate(
        {"type": "expectations", "rules": [{"column": "ts", "freshness": "1h30m"}]}
    )
    assert config.rules[0].freshness == 5400.0
