"""Built-in expectations: each check's row mask, messages, config errors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from sluiceway.core import ConfigError, RuleResult
from sluiceway.plugins import BuildContext, default_registry
from sluiceway.quality.expectations import (
    EXPECTATIONS_VALIDATOR,
    ExpectationsConfig,
    ExpectationsValidator,
)


def check(column: pa.Array | list[Any], **rule: Any) -> RuleResult:
    """The single result of one check on a one-column table named ``c``."""
    values = column if isinstance(column, pa.Array) else pa.array(column)
    report = ExpectationsValidator([{"column": "c", **rule}]).validate(pa.table({"c": values}))
    assert len(report.results) == 1
    return report.results[0]


def failing(result: RuleResult) -> list[bool]:
    assert result.failed_mask is not None
    return result.failed_mask.to_pylist()


def build(spec: dict[str, Any]) -> ExpectationsValidator:
    config = EXPECTATIONS_VALIDATOR.config.model_validate({"type": "expectations", **spec})
    validator = EXPECTATIONS_VALIDATOR.build(config, BuildContext(pipeline="p", base_dir=Path()))
    assert isinstance(validator, ExpectationsValidator)
    return validator


def test_entry_point_resolves_to_the_plugin():
    assert default_registry().get("validator", "expectations") is EXPECTATIONS_VALIDATOR


def test_not_null_fails_only_nulls():
    result = check([1, None, 3, None], not_null=True)
    assert failing(result) == [False, True, False, True]
    assert result.rule == "c.not_null"
    assert result.column == "c"
    assert result.failed == 2
    assert result.message == "c is null"


def test_unique_fails_every_occurrence_after_the_first_and_ignores_nulls():
    result = check(["a", "b", "a", None, None, "a", "b"], unique=True)
    assert failing(result) == [False, False, True, False, False, True, True]
    assert result.sample == ["a", "a", "b"]


def test_unique_handles_decimals_and_dictionary_columns():
    decimals = pa.array([Decimal("1.10"), Decimal("1.10"), Decimal("2.00")], pa.decimal128(5, 2))
    assert failing(check(decimals, unique=True)) == [False, True, False]
    labels = pa.array(["x", "y", "x"]).dictionary_encode()
    assert failing(check(labels, unique=True)) == [False, False, True]


def test_between_is_inclusive_and_nulls_pass():
    result = check([-5, 0, 10, 11, None], between=[0, 10])
    assert failing(result) == [True, False, False, True, False]
    assert result.rule == "c.between"
    assert result.message == "c is not between 0 and 10"
    assert result.sample == [-5, 11]


def test_between_open_ended_bounds():
    assert failing(check([-1, 0, 99], between=[0, None])) == [True, False, False]
    assert failing(check([-1, 0, 99], between=[None, 0])) == [False, False, True]
    assert check([1], between=[None, 0]).message == "c is greater than 0"


def test_between_fails_nan():
    assert failing(check([0.5, float("nan"), None], between=[0, 1])) == [False, True, False]


def test_between_compares_decimals_and_dates_exactly():
    amounts = pa.array(
        [Decimal("0.00"), Decimal("-0.01"), Decimal("1000000.01")], pa.decimal128(12, 2)
    )
    assert failing(check(amounts, between=[0, 1000000])) == [False, True, True]
    assert failing(check(amounts, between=["0", "1000000.01"])) == [False, True, False]
    days = pa.array([dt.date(2023, 12, 31), dt.date(2024, 1, 1)])
    assert failing(check(days, between=[dt.date(2024, 1, 1), None])) == [True, False]
    stamps = pa.array(
        [dt.datetime(2024, 1, 1, 12), dt.datetime(2025, 1, 1)], pa.timestamp("us", tz="UTC")
    )
    assert failing(check(stamps, between=["2024-01-01", "2024-12-31T23:59:59Z"])) == [False, True]


def test_between_with_a_bound_the_column_cannot_hold_is_a_config_error():
    with pytest.raises(ConfigError, match="quote"):
        check(["a"], between=[0, 10])
    with pytest.raises(ConfigError, match=r"'soon'.*date"):
        check(pa.array([dt.date(2024, 1, 1)]), between=["soon", None])


def test_regex_uses_search_semantics_unless_anchored():
    emails = ["a@b.c", "no-at", "x a@b", None]
    assert failing(check(emails, regex="@")) == [False, True, False, False]
    anchored = check(emails, regex="^[^@ ]+@[^@]+$")
    assert failing(anchored) == [False, True, True, False]
    assert anchored.rule == "c.regex"
    assert anchored.message == "c does not match '^[^@ ]+@[^@]+$'"


def test_regex_on_a_number_column_matches_its_text():
    assert failing(check([12345, 1234], regex=r"^\d{5}$")) == [False, True]


def test_accepted_values():
    result = check(["new", "paid", "lost", None], accepted_values=["new", "paid", "shipped"])
    assert failing(result) == [False, False, True, False]
    assert result.message == "c is not one of [new, paid, shipped]"
    assert result.rule == "c.accepted_values"


def test_accepted_values_are_compared_in_the_column_type():
    assert failing(check([1, 2, 3], accepted_values=[1, 3])) == [False, True, False]
    prices = pa.array([Decimal("1.50"), Decimal("2.00")], pa.decimal128(6, 2))
    assert failing(check(prices, accepted_values=[2, "1.5"])) == [False, False]
    with pytest.raises(ConfigError, match="quote"):
        check(["1"], accepted_values=[1])
    with pytest.raises(ConfigError, match=r"'1\.5' does not fit column 'c' of type int64"):
        check([1], accepted_values=[1.5])


def test_type_flags_values_that_do_not_fit():
    result = check(["1.50", "abc", "123456789012.00", None, "7"], type="decimal(12, 2)")
    assert failing(result) == [False, True, True, False, False]
    assert result.rule == "c.type"
    assert result.message == "c does not fit decimal(12, 2)"
    assert result.sample == ["abc", "123456789012.00"]


def test_on_fail_of_the_rule_dict_applies_to_each_of_its_checks():
    validator = ExpectationsValidator(
        [
            {"column": "id", "not_null": True, "unique": True, "on_fail": "warn"},
            {"column": "amount", "between": [0, 10]},
        ]
    )
    report = validator.validate(pa.table({"id": [1, 1], "amount": [5, 50]}))
    assert [(r.rule, r.on_fail, r.failed) for r in report.results] == [
        ("id.not_null", "warn", 0),
        ("id.unique", "warn", 1),
        ("amount.between", "dlq", 1),
    ]


def test_schema_is_a_batch_level_result_per_column():
    validator = build({"schema": {"id": "int64", "amount": "decimal(12, 2)", "email": "string"}})
    table = pa.table({"id": pa.array([1], pa.int32()), "amount": pa.array([Decimal("1.00")])})
    table = table.set_column(1, "amount", table.column("amount").cast(pa.decimal128(12, 2)))
    results = {r.rule: r for r in validator.validate(table).results}
    assert set(results) == {"id.schema", "amount.schema", "email.schema"}
    assert results["amount.schema"].passed
    assert not results["id.schema"].passed
    assert results["id.schema"].message == "column 'id' is int32, expected int64"
    assert results["email.schema"].message == "column 'email' is missing (expected string)"
    assert results["email.schema"].failed_mask is None
    assert results["email.schema"].on_fail == "dlq"


def test_unknown_column_is_a_config_error_naming_validator_rule_and_column():
    validator = build(
        {
            "name": "orders-quality",
            "rules": [{"column": "id", "not_null": True}, {"column": "amout", "between": [0, 1]}],
        }
    )
    with pytest.raises(ConfigError) as info:
        validator.validate(pa.table({"id": [1], "amount": [1]}))
    message = str(info.value)
    assert "'orders-quality'" in message
    assert "rule 1 (between)" in message
    assert "'amout'" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"rules": [{"column": "a"}]}, "no check"),
        ({"rules": [{"column": "a", "not_nul": True}]}, "not_nul"),
        ({"rules": [{"column": "a", "regex": "(?=x)"}]}, "RE2"),
        ({"rules": [{"column": "a", "type": "integr"}]}, "unknown type"),
        ({"rules": [{"column": "a", "between": [None, None]}]}, "at least one bound"),
        ({"rules": [{"column": "a", "on_fail": "ignore"}]}, "on_fail"),
        ({"schema": {"a": "integr"}}, "unknown type"),
        ({}, "at least one rule or a schema"),
    ],
)
def test_invalid_config_is_rejected_with_the_reason(spec, expected):
    with pytest.raises(ValidationError, match=expected):
        EXPECTATIONS_VALIDATOR.config.model_validate({"type": "expectations", **spec})


def test_config_defaults_and_names():
    config = ExpectationsConfig.model_validate(
        {"type": "expectations", "rules": [{"column": "a", "not_null": True}]}
    )
    assert config.fail_on_error is False
    assert config.rules[0].on_fail == "dlq"
    validator = build({"rules": [{"column": "a", "not_null": True}], "fail_on_error": True})
    assert validator.name == "expectations"
    assert validator.fail_on_error is True
