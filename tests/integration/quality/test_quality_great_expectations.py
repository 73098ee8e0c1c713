"""``type: great_expectations``: a real suite in an ephemeral context routes its failing rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.integration.quality.support import EMAIL, STATUSES, emails, routed, run

from sluiceway.core import (
    ConfigError,
    MissingExtraError,
    RunFailedError,
    ValidationFailedError,
)
from sluiceway.plugins import BuildContext, default_registry
from sluiceway.quality.great_expectations import GX_VALIDATOR, GreatExpectationsValidator

NOT_NULL = "id.expect_column_values_to_not_be_null"
UNIQUE = "id.expect_column_values_to_be_unique"
BETWEEN = "amount.expect_column_values_to_be_between"
REGEX = "email.expect_column_values_to_match_regex"
IN_SET = "status.expect_column_values_to_be_in_set"

SUITE: dict[str, Any] = {
    "name": "orders",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "amount", "min_value": 0, "max_value": 1000},
        },
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "email", "regex": EMAIL},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "status", "value_set": STATUSES},
        },
    ],
}

# GX, like Pandera, fails every occurrence of a duplicated id: b and g both go.
EXPECTED = [
    ("b@x.io", UNIQUE, "id", "2"),
    ("c@x.io", BETWEEN, "amount", "-5.0"),
    ("d@x.io", NOT_NULL, "id", None),
    ("f@x.io", IN_SET, "status", "lost"),
    ("g@x.io", UNIQUE, "id", "2"),
    ("no-at-sign", REGEX, "email", "no-at-sign"),
]


def build(
    tmp_path: Path, suite: dict[str, Any] | str = SUITE, **spec: Any
) -> GreatExpectationsValidator:
    if isinstance(suite, dict):
        (tmp_path / "suite.json").write_text(json.dumps(suite), encoding="utf-8")
        suite = "suite.json"
    config = GX_VALIDATOR.config.model_validate(
        {"type": "great_expectations", "suite": suite, **spec}
    )
    validator = GX_VALIDATOR.build(config, BuildContext(pipeline="orders", base_dir=tmp_path))
    assert isinstance(validator, GreatExpectationsValidator)
    return validator


def test_entry_point_resolves_to_the_plugin():
    assert default_registry().get("validator", "great_expectations") is GX_VALIDATOR


def test_failing_rows_reach_the_dlq_tagged_with_their_expectation_and_the_rest_load(tmp_path):
    metrics, loaded, dlq = run(tmp_path, build(tmp_path))

    assert routed(dlq) == EXPECTED
    assert emails(loaded) == ["a@x.io", "h@x.io"]
    assert {e["stage"] for e in dlq} == {"validate.0.great_expectations"}
    assert all("great_expectations" in e["error_message"] for e in dlq)
    stats = metrics.rules[f"great_expectations:{UNIQUE}"]
    assert (stats.tool, stats.row_level, stats.checked, stats.failed) == (
        "great_expectations",
        True,
        8,
        2,
    )
    assert metrics.rules[f"great_expectations:{BETWEEN}"].sample == [-5.0]


def test_a_suite_built_by_a_function_and_batches_of_four(tmp_path):
    validator = build(tmp_path, "tests.integration.quality.schemas:orders_suite")

    # b and g (the same id) land in different batches: unique is per batch.
    _, loaded, dlq = run(tmp_path, validator, batch_size=4)

    assert routed(dlq) == [e for e in EXPECTED if e[1] != UNIQUE]
    assert emails(loaded) == ["a@x.io", "b@x.io", "g@x.io", "h@x.io"]


def test_on_fail_per_expectation_warns_and_loads_those_rows(tmp_path):
    validator = build(tmp_path, on_fail={"default": "dlq", IN_SET: "warn", "email": "warn"})

    metrics, loaded, dlq = run(tmp_path, validator)

    assert {e["rule"] for e in dlq} == {NOT_NULL, UNIQUE, BETWEEN}
    assert emails(loaded) == ["a@x.io", "f@x.io", "h@x.io", "no-at-sign"]
    assert metrics.warned == 2


def test_fail_on_error_stops_the_run_naming_the_expectation(tmp_path):
    with pytest.raises(RunFailedError) as info:
        run(tmp_path, build(tmp_path, fail_on_error=True))

    assert isinstance(info.value.cause, ValidationFailedError)
    assert info.value.cause.rule == NOT_NULL
    assert NOT_NULL in str(info.value)
    assert info.value.metrics.written == 0


def test_aggregate_expectations_and_missing_columns_are_batch_level(tmp_path):
    suite = {
        "name": "table",
        "expectations": [
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"max_value": 5}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "sku"}},
        ],
    }
    validator = build(tmp_path, suite, on_fail="warn")

    metrics, loaded, dlq = run(tmp_path, validator, batch_size=6)

    assert dlq == []
    assert len(loaded) == 8
    rows = metrics.rules["great_expectations:expect_table_row_count_to_be_between"]
    assert (rows.row_level, rows.checked, rows.batches_failed, rows.sample) == (False, 2, 1, [6])
    sku = metrics.rules["great_expectations:sku.expect_column_values_to_not_be_null"]
    assert (sku.row_level, sku.batches_failed) == (False, 2)


def test_an_invalid_expectation_is_refused_not_dropped(tmp_path):
    suite = {
        "name": "s",
        "expectations": [{"type": "expect_column_values_to_be_betwen", "kwargs": {}}],
    }

    with pytest.raises(ConfigError, match=r"expectation 0 \(expect_column_values_to_be_betwen\)"):
        build(tmp_path, suite).open()


def test_missing_great_expectations_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "great_expectations", None)

    with pytest.raises(MissingExtraError, match=r"pip install 'sluiceway\[great-expectations\]'"):
        build(tmp_path).open()
