"""``type: pandera``: a real Pandera schema routes exactly its failing rows to the DLQ."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from tests.integration.quality.schemas import Order
from tests.integration.quality.support import ORDERS, emails, routed, run

from sluiceway.core import (
    ConfigError,
    MissingExtraError,
    RunFailedError,
    ValidationFailedError,
)
from sluiceway.plugins import BuildContext, default_registry
from sluiceway.quality.pandera import PANDERA_VALIDATOR, PanderaValidator

MODULE = "tests.integration.quality.schemas"

# Pandera fails every occurrence of a duplicated id: b and g both go.
EXPECTED = [
    ("b@x.io", "id.field_uniqueness", "id", "2"),
    ("c@x.io", "amount.in_range", "amount", "-5.0"),
    ("d@x.io", "id.not_nullable", "id", None),
    ("f@x.io", "status.isin", "status", "lost"),
    ("g@x.io", "id.field_uniqueness", "id", "2"),
    ("no-at-sign", "email.str_matches", "email", "no-at-sign"),
]


def build(tmp_path: Path, **spec: object) -> PanderaValidator:
    config = PANDERA_VALIDATOR.config.model_validate({"type": "pandera", **spec})
    validator = PANDERA_VALIDATOR.build(config, BuildContext(pipeline="orders", base_dir=tmp_path))
    assert isinstance(validator, PanderaValidator)
    return validator


def test_entry_point_resolves_to_the_plugin():
    assert default_registry().get("validator", "pandera") is PANDERA_VALIDATOR


def test_failing_rows_reach_the_dlq_tagged_with_their_check_and_the_rest_load(tmp_path):
    metrics, loaded, dlq = run(tmp_path, build(tmp_path, schema=f"{MODULE}:Order"))

    assert routed(dlq) == EXPECTED
    assert emails(loaded) == ["a@x.io", "h@x.io"]
    assert {e["stage"] for e in dlq} == {"validate.0.pandera"}
    by_rule = {e["rule"]: e["error_message"] for e in dlq}
    assert "pandera" in by_rule["amount.in_range"]
    stats = metrics.rules["pandera:id.field_uniqueness"]
    assert (stats.tool, stats.row_level, stats.checked, stats.failed) == ("pandera", True, 8, 2)
    assert metrics.rules["pandera:email.str_matches"].sample == ["no-at-sign"]
    # Checks that never failed are reported with what they checked.
    assert metrics.rules["pandera:status.dtype"].row_level is False
    assert metrics.rules["pandera:status.dtype"].failed == 0


def test_a_yaml_schema_file_runs_like_the_model(tmp_path):
    (tmp_path / "order.yaml").write_text(Order.to_schema().to_yaml(), encoding="utf-8")

    # In batches of 4, b and g (the same id) are in different batches: unique is per batch.
    _, loaded, dlq = run(tmp_path, build(tmp_path, schema="order.yaml"), batch_size=4)

    assert routed(dlq) == [e for e in EXPECTED if e[1] != "id.field_uniqueness"]
    assert emails(loaded) == ["a@x.io", "b@x.io", "g@x.io", "h@x.io"]


def test_a_pandas_schema_runs_on_a_pandas_frame(tmp_path):
    validator = build(tmp_path, schema=f"{MODULE}:PandasOrder")

    _, loaded, dlq = run(tmp_path, validator)

    assert validator.flavour == "pandas"
    assert [(email, rule) for email, rule, _, _ in routed(dlq)] == [
        (email, rule) for email, rule, _, _ in EXPECTED
    ]
    assert emails(loaded) == ["a@x.io", "h@x.io"]


def test_on_fail_per_check_warns_and_loads_those_rows(tmp_path):
    validator = build(
        tmp_path,
        schema=f"{MODULE}:Order",
        on_fail={"default": "dlq", "status.isin": "warn", "email": "warn"},
    )

    metrics, loaded, dlq = run(tmp_path, validator)

    assert {e["rule"] for e in dlq} == {"id.field_uniqueness", "amount.in_range", "id.not_nullable"}
    assert emails(loaded) == ["a@x.io", "f@x.io", "h@x.io", "no-at-sign"]
    assert metrics.warned == 2
    assert metrics.rules["pandera:status.isin"].on_fail == "warn"


def test_fail_on_error_stops_the_run_naming_the_check(tmp_path):
    validator = build(tmp_path, schema=f"{MODULE}:Order", fail_on_error=True, name="orders-schema")

    with pytest.raises(RunFailedError) as info:
        run(tmp_path, validator)

    assert isinstance(info.value.cause, ValidationFailedError)
    assert info.value.cause.rule == "id.not_nullable"
    assert "'orders-schema'" in str(info.value)
    assert "id.not_nullable" in str(info.value)
    assert info.value.metrics.written == 0


def test_rows_that_cannot_be_coerced_fail_alone_and_the_rest_is_checked(tmp_path):
    shipments = pa.table({"ref": ["s1", "s2", "s3", "s4"], "qty": ["3", "x", "-1", "7"]})

    _, loaded, dlq = run(tmp_path, build(tmp_path, schema=f"{MODULE}:Shipment"), shipments)

    got = sorted((json.loads(e["row"])["ref"], e["rule"], e["value"]) for e in dlq)
    assert got == [("s2", "qty.coerce_dtype", "x"), ("s3", "qty.greater_than_or_equal_to", "-1")]
    assert sorted(r["ref"] for r in loaded) == ["s1", "s4"]


def test_checks_without_rows_are_batch_level_and_say_so(tmp_path):
    # One boolean for the whole frame: sum(amount) < 40. Batches of 4 sum to 26 and 14
    # (pass); one batch of 8 sums to 40 (fails), and under dlq the batch goes whole.
    metrics, _, dlq = run(tmp_path, build(tmp_path, schema=f"{MODULE}:Totals"), batch_size=4)
    stats = metrics.rules["pandera:dataframe.small_total"]
    assert (stats.row_level, stats.checked, stats.failed, dlq) == (False, 2, 0, [])

    metrics, loaded, dlq = run(tmp_path / "one", build(tmp_path, schema=f"{MODULE}:Totals"))

    stats = metrics.rules["pandera:dataframe.small_total"]
    assert (stats.row_level, stats.checked, stats.batches_failed) == (False, 1, 1)
    assert loaded == []
    assert len(dlq) == 8
    assert {e["rule"] for e in dlq} == {"dataframe.small_total"}
    assert all("batch-level" in e["error_message"] for e in dlq)


def test_a_missing_column_is_batch_level_under_its_own_name(tmp_path):
    validator = build(tmp_path, schema=f"{MODULE}:Order", on_fail="warn")

    metrics, loaded, _ = run(tmp_path, validator, ORDERS.drop_columns(["status"]))

    stats = metrics.rules["pandera:status.column_in_dataframe"]
    assert (stats.row_level, stats.failed) == (False, 1)
    assert len(loaded) == 8


def test_an_on_fail_key_naming_no_check_is_a_config_error(tmp_path):
    validator = build(tmp_path, schema=f"{MODULE}:Order", on_fail={"emial.str_matches": "warn"})

    with pytest.raises(ConfigError, match=r"'emial.str_matches'.*did you mean 'email.str_matches'"):
        validator.open()


def test_missing_pandera_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandera", None)
    validator = build(tmp_path, schema=f"{MODULE}:Order")

    with pytest.raises(MissingExtraError, match=r"pip install 'sluiceway\[pandera\]'"):
        validator.open()
    with pytest.raises(RunFailedError) as info:
        run(tmp_path, build(tmp_path, schema=f"{MODULE}:Order"))
    assert isinstance(info.value.cause, MissingExtraError)
