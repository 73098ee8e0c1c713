"""``type: soda``: a real Soda Core 4 contract over DuckDB routes the rows its checks count."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.integration.quality.support import EMAIL, ORDERS, STATUSES, emails, routed, run

from sluiceway.core import (
    ConfigError,
    MissingExtraError,
    RunFailedError,
    ValidationFailedError,
)
from sluiceway.plugins import BuildContext, default_registry
from sluiceway.quality.soda import SODA_VALIDATOR, SodaValidator

CONTRACT = f"""\
dataset: warehouse/analytics/public/orders
columns:
  - name: id
    checks:
      - missing:
      - duplicate:
  - name: amount
    checks:
      - invalid:
          valid_min: 0
          valid_max: 1000
  - name: email
    checks:
      - invalid:
          valid_format: {{regex: '{EMAIL}', name: email}}
  - name: status
    checks:
      - invalid:
          valid_values: [{", ".join(STATUSES)}]
"""

# Soda counts a duplicate from its second occurrence on: b loads, g goes.
EXPECTED = [
    ("c@x.io", "amount.invalid", "amount", "-5.0"),
    ("d@x.io", "id.missing", "id", None),
    ("f@x.io", "status.invalid", "status", "lost"),
    ("g@x.io", "id.duplicate", "id", "2"),
    ("no-at-sign", "email.invalid", "email", "no-at-sign"),
]


def build(
    tmp_path: Path, contract: str | dict[str, Any] | None = None, **spec: Any
) -> SodaValidator:
    if contract is None:
        (tmp_path / "orders.yaml").write_text(CONTRACT, encoding="utf-8")
        contract = "orders.yaml"
    config = SODA_VALIDATOR.config.model_validate({"type": "soda", "contract": contract, **spec})
    validator = SODA_VALIDATOR.build(config, BuildContext(pipeline="orders", base_dir=tmp_path))
    assert isinstance(validator, SodaValidator)
    return validator


def test_entry_point_resolves_to_the_plugin():
    assert default_registry().get("validator", "soda") is SODA_VALIDATOR


def test_rows_failing_row_level_checks_reach_the_dlq_and_the_rest_load(tmp_path):
    metrics, loaded, dlq = run(tmp_path, build(tmp_path))

    assert routed(dlq) == EXPECTED
    assert emails(loaded) == ["a@x.io", "b@x.io", "h@x.io"]
    assert {e["stage"] for e in dlq} == {"validate.0.soda"}
    assert all("soda" in e["error_message"] for e in dlq)
    stats = metrics.rules["soda:id.duplicate"]
    assert (stats.tool, stats.row_level, stats.checked, stats.failed) == ("soda", True, 8, 1)
    assert metrics.rules["soda:status.invalid"].sample == ["lost"]


def test_an_inline_contract_in_batches_of_four(tmp_path):
    contract = {
        "columns": [
            {"name": "id", "checks": [{"missing": None}, {"duplicate": None}]},
            {"name": "status", "checks": [{"invalid": {"valid_values": STATUSES}}]},
        ]
    }

    # b and g (the same id) land in different batches: duplicates are per batch.
    _, loaded, dlq = run(tmp_path, build(tmp_path, contract), batch_size=4)

    assert [(email, rule) for email, rule, _, _ in routed(dlq)] == [
        ("d@x.io", "id.missing"),
        ("f@x.io", "status.invalid"),
    ]
    assert len(loaded) == 6


def test_a_check_passing_by_its_threshold_loads_its_rows_and_warn_warns(tmp_path):
    contract = CONTRACT.replace(
        "      - missing:\n", "      - missing:\n          threshold: {must_be_less_than: 2}\n"
    )
    validator = build(tmp_path, contract, on_fail={"default": "dlq", "status": "warn"})

    metrics, loaded, dlq = run(tmp_path, validator)

    assert {e["rule"] for e in dlq} == {"amount.invalid", "id.duplicate", "email.invalid"}
    assert emails(loaded) == ["a@x.io", "b@x.io", "d@x.io", "f@x.io", "h@x.io"]
    assert metrics.warned == 1
    assert metrics.rules["soda:id.missing"].failed == 0


def test_fail_on_error_stops_the_run_naming_the_check(tmp_path):
    with pytest.raises(RunFailedError) as info:
        run(tmp_path, build(tmp_path, fail_on_error=True, name="contract"))

    assert isinstance(info.value.cause, ValidationFailedError)
    assert info.value.cause.rule == "id.missing"
    assert "'contract'" in str(info.value)
    assert info.value.metrics.written == 0


def test_dataset_checks_are_batch_level(tmp_path):
    contract = "columns: []\nchecks:\n  - row_count:\n      threshold: {must_be_greater_than: 5}\n"

    metrics, loaded, dlq = run(
        tmp_path, build(tmp_path, contract, on_fail={"row_count": "warn"}), batch_size=6
    )

    assert dlq == []
    assert len(loaded) == 8
    stats = metrics.rules["soda:row_count"]
    assert (stats.row_level, stats.checked, stats.batches_failed) == (False, 2, 1)


def test_a_check_on_a_missing_column_fails_batch_level_with_sodas_reason(tmp_path):
    validator = build(tmp_path, on_fail="warn")

    metrics, loaded, _ = run(tmp_path, validator, ORDERS.drop_columns(["status"]))

    assert len(loaded) == 8
    stats = metrics.rules["soda:status.invalid"]
    assert (stats.row_level, stats.batches_failed) == (False, 1)


def test_rows_that_do_not_match_sodas_count_are_not_trusted(tmp_path):
    validator = build(tmp_path)
    validator.open()
    path = next(p for p, r in validator.rules.items() if r.name == "id.missing")
    validator.rules[path].rows_sql = "SELECT 0 UNION ALL SELECT 1"  # two rows; Soda counts one

    report = validator.validate(ORDERS)

    result = next(r for r in report.results if r.rule == "id.missing")
    assert result.failed_mask is None
    assert not result.passed
    assert "found 2 rows but Soda counted 1" in result.message


def test_telemetry_is_off_unless_asked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("SODA_CORE_TELEMETRY_ENABLED", raising=False)

    build(tmp_path).open()

    assert os.environ["SODA_CORE_TELEMETRY_ENABLED"] == "false"


def test_an_invalid_contract_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="invalid contract"):
        build(tmp_path, "columns:\n  - name: id\n    checks:\n      - missng:\n").open()


def test_missing_soda_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "soda_core", None)

    with pytest.raises(MissingExtraError, match=r"pip install 'sluiceway\[soda\]'"):
        build(tmp_path).open()
