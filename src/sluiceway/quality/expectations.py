"""Built-in expectations: ``type: expectations``, vectorised row-level checks.

A validator holds rule dicts, each naming a column and one or more checks::

    validators:
      - type: expectations
        schema: {id: int64, amount: "decimal(12, 2)"}
        rules:
          - {column: id, not_null: true, unique: true}
          - {column: amount, between: [0, 1000000], on_fail: warn}
          - {column: email, regex: '^[^@]+@[^@]+$'}
          - {column: status, accepted_values: [new, paid, shipped]}
          - {column: amount, type: "decimal(12, 2)"}

Every check is its own :class:`~sluiceway.core.report.RuleResult`, named
``<column>.<check>`` (``id.not_null``, ``amount.between``), with a mask of the
failing rows, so only those rows are dead-lettered (or warned about, or fail the
run: ``on_fail`` of the rule dict). Nulls pass every check except ``not_null``.

``schema`` is batch-level: each listed column must be present with exactly that
Arrow type (one result per column, ``<column>.schema``, with ``schema_on_fail``).
A batch that breaks it cannot be split into good and bad rows, so under ``dlq``
the whole batch is dead-lettered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluiceway.core.batch import arange
from sluiceway.core.errors import ConfigError
from sluiceway.core.report import OnFail, RuleResult, ValidationReport
from sluiceway.core.stages import BaseValidator
from sluiceway.engines.cast import checked_cast
from sluiceway.engines.types import parse_type, type_name
from sluiceway.plugins import BuildContext, Plugin, StageConfig

__all__ = [
    "CHECKS",
    "EXPECTATIONS_VALIDATOR",
    "ExpectationRule",
    "ExpectationsConfig",
    "ExpectationsValidator",
]

Scalar = bool | int | float | Decimal | dt.datetime | dt.date | str | None

#: The row-level checks a rule dict may hold, in the order they run.
CHECKS: tuple[str, ...] = ("not_null", "unique", "between", "regex", "accepted_values", "type")

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


class ExpectationRule(BaseModel):
    """One rule dict: a column and its checks, sharing one ``on_fail``.

    - ``not_null``: the value is not null.
    - ``unique``: unique *within the batch*: the first occurrence of a value passes,
      every later occurrence fails (uniqueness across batches is the sink's key).
    - ``between: [low, high]``: inclusive; either bound may be null (open-ended);
      NaN fails.
    - ``regex``: RE2 syntax, search semantics (matches anywhere unless anchored).
    - ``accepted_values``: the value is one of these.
    - ``type``: the value fits this type (e.g. ``decimal(12, 2)``), by checked cast.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    not_null: bool = False
    unique: bool = False
    between: tuple[Scalar, Scalar] | None = None
    regex: str | None = None
    accepted_values: list[Scalar] | None = Field(default=None, min_length=1)
    type: str | None = None
    on_fail: OnFail = "dlq"

    @field_validator("between")
    @classmethod
    def _bounds(cls, value: tuple[Scalar, Scalar] | None) -> tuple[Scalar, Scalar] | None:
        if value is not None and value[0] is None and value[1] is None:
            raise ValueError("between needs at least one bound")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pc.match_substring_regex(pa.array([""]), value)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"{exc} (RE2 syntax: no look-around or backreferences)") from None
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_type(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _has_check(self) -> ExpectationRule:
        if not self.checks():
            raise ValueError(f"rule for column {self.column!r} has no check; use {CHECKS}")
        return self

    def checks(self) -> list[str]:
        """The checks this rule enables, in :data:`CHECKS` order."""
        return [c for c in CHECKS if getattr(self, c) not in (None, False)]


class ExpectationsConfig(StageConfig):
    """``type: expectations`` — rule dicts plus an optional batch-level ``schema``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["expectations"] = "expectations"
    name: str | None = Field(default=None, description="Stage name (default: expectations).")
    fail_on_error: bool = Field(default=False, description="Every failing rule fails the run.")
    rules: list[ExpectationRule] = Field(default_factory=list)
    schema_: dict[str, str] | None = Field(
        default=None,
        alias="schema",
        description="Columns that must be present with exactly these types.",
    )
    schema_on_fail: OnFail = "dlq"

    @field_validator("schema_")
    @classmethod
    def _schema_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for type_text in (value or {}).values():
            try:
                parse_type(type_text)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ExpectationsConfig:
        if not self.rules and not self.schema_:
            raise ValueError("expectations need at least one rule or a schema")
        return self


class ExpectationsValidator(BaseValidator[pa.Table]):
    """Runs expectation rules on each batch, vectorised with ``pyarrow.compute``.

    Takes Arrow (without hidden columns); every mask aligns with the table's rows.
    A rule naming a column the batch does not have is a :class:`ConfigError`.
    """

    frame = "arrow"

    def __init__(
        self,
        rules: Sequence[ExpectationRule | Mapping[str, Any]] = (),
        *,
        schema: Mapping[str, str | pa.DataType] | None = None,
        schema_on_fail: OnFail = "dlq",
        name: str | None = None,
        fail_on_error: bool = False,
    ) -> None:
        super().__init__(name or "expectations", fail_on_error=fail_on_error)
        self.rules = [
            r if isinstance(r, ExpectationRule) else ExpectationRule.model_validate(r)
            for r in rules
        ]
        self.schema: dict[str, pa.DataType] = {}
        for column, target in (schema or {}).items():
            try:
                self.schema[column] = parse_type(target) if isinstance(target, str) else target
            except ConfigError as exc:
                raise ConfigError(f"validator {self.name!r}: schema of {column!r}: {exc}") from exc
        self.schema_on_fail: OnFail = schema_on_fail

    def __repr__(self) -> str:
        return f"ExpectationsValidator(name={self.name!r}, rules={len(self.rules)})"

    def validate(self, data: pa.Table) -> ValidationReport:
        report = ValidationReport(validator=self.name)
        for result in self._schema_results(data):
            report.add(result)
        for index, rule in enumerate(self.rules):
            if rule.column not in data.column_names:
                raise ConfigError(
                    f"validator {self.name!r}: rule {index} ({', '.join(rule.checks())}): "
                    f"column {rule.column!r} not found (the batch has: "
                    f"{', '.join(data.column_names)})"
                )
            values = _plain(data.column(rule.column))
            for check in rule.checks():
                report.add(self._check(index, rule, check, values))
        return report

    # -- batch level --------------------------------------------------------------

    def _schema_results(self, data: pa.Table) -> Iterator[RuleResult]:
        for column, expected in self.schema.items():
            if column not in data.column_names:
                problem = f"column {column!r} is missing (expected {type_name(expected)})"
            elif data.schema.field(column).type != expected:
                actual = data.schema.field(column).type
                problem = (
                    f"column {column!r} is {type_name(actual)}, expected {type_name(expected)}"
                )
            else:
                problem = ""
            yield RuleResult(
                rule=f"{column}.schema",
                on_fail=self.schema_on_fail,
                column=column,
                checked=1,
                passed=not problem,
                message=problem,
            )

    # -- row level ----------------------------------------------------------------

    def _check(self, index: int, rule: ExpectationRule, check: str, values: pa.Array) -> RuleResult:
        column = rule.column
        where = f"validator {self.name!r}: rule {index} ({column}.{check})"
        try:
            mask, message = _CHECKERS[check](rule, values, where)
        except ConfigError:
            raise
        except _ARROW_ERRORS as exc:
            raise ConfigError(
                f"{where}: cannot check column {column!r} of type {values.type}: {exc}"
            ) from exc
        return RuleResult.from_mask(
            f"{column}.{check}",
            mask,
            values=values,
            column=column,
            on_fail=rule.on_fail,
            message=message,
        )


def _plain(column: pa.ChunkedArray) -> pa.Array:
    """One contiguous array, dictionary-decoded (the checks' kernels want plain values)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


# -- checks: each returns (failing-row mask, message); nulls in the mask pass ----------


def _not_null(rule: ExpectationRule, values: pa.Array, where: str) -> tuple[pa.Array, str]:
    return pc.is_null(values), f"{rule.column} is null"


def _unique(rule: ExpectationRule, values: pa.Array, where: str) -> tuple[pa.Array, str]:
    n = len(values)
    positions = arange(n)
    firsts = (
        pa.table({"v": values, "i": positions})
        .group_by("v", use_threads=False)
        .aggregate([("i", "min")])
        .column("i_min")
    )
    later = pc.invert(pc.is_in(positions, value_set=firsts))
    return pc.and_(later, pc.is_valid(values)), (
        f"{rule.column} is a duplicate (an earlier row in the batch has the same value)"
    )


def _between(rule: ExpectationRule, values: pa.Array, where: str) -> tuple[pa.Array, str]:
    assert rule.between is not None
    low, high = rule.between
    failing: pa.Array | None = None
    if low is not None:
        failing = _compare(pc.less, values, low, rule, where)
    if high is not None:
        above = _compare(pc.greater, values, high, rule, where)
        failing = above if failing is None else pc.or_(failing, above)
    assert failing is not None
    if pa.types.is_floating(values.type):
        failing = pc.or_(failing, pc.is_nan(values))
    if low is not None and high is not None:
        message = f"{rule.column} is not between {low} and {high}"
    elif low is not None:
        message = f"{rule.column} is less than {low}"
    else:
        message = f"{rule.column} is greater than {high}"
    return failing, message


def _compare(op: Any, values: pa.Array, bound: Scalar, rule: ExpectationRule, where: str) -> Any:
    """``op(values, bound)`` with the bound as a value of the column's type."""
    numeric = (
        pa.types.is_integer(values.type)
        or pa.types.is_floating(values.type)
        or pa.types.is_decimal(values.type)
    )
    if numeric and isinstance(bound, int | float | Decimal) and not isinstance(bound, bool):
        # Arrow's kernels compare across numeric types exactly (1 < 1.5 on an int column).
        return op(values, pa.scalar(bound))
    return op(values, _literals([bound], values.type, rule, where)[0])


def _literals(
    items: Sequence[Scalar], dtype: pa.DataType, rule: ExpectationRule, where: str
) -> Any:
    """The spec's literal values as an Arrow array of the column's type.

    Text columns take only text (``1`` and ``"1"`` differ); other columns take
    what converts exactly (``"2024-01-01"`` for a date, ``2.5`` for a decimal).
    """
    shown = ", ".join(repr(v) for v in items)
    text = pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    if text and not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: {shown}: column {rule.column!r} is text; quote the values")
    try:
        if pa.types.is_decimal(dtype):
            # Through Decimal: Arrow casts integers only to very wide decimals.
            source = pa.array([Decimal(str(v)) for v in items])
        else:
            source = pa.array(list(items))
    except (*_ARROW_ERRORS, ArithmeticError, ValueError) as exc:
        raise ConfigError(
            f"{where}: {shown} cannot be compared with column {rule.column!r} of type "
            f"{type_name(dtype)}"
        ) from exc
    result = checked_cast(pa.table({"v": source}), {"v": dtype})
    if not result.ok:
        bad = ", ".join(repr(f.value) for f in result.failures)
        raise ConfigError(
            f"{where}: {bad} does not fit column {rule.column!r} of type {type_name(dtype)}"
        )
    return result.table.column("v").combine_chunks()


def _regex(rule: ExpectationRule, values: pa.Array, where: str) -> tuple[pa.Array, str]:
    assert rule.regex is not None
    text = values
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        text = pc.cast(values, pa.string())
    matched = pc.match_substring_regex(text, rule.regex)
    return pc.invert(matched), f"{rule.column} does not match {rule.regex!r}"


def _accepted(rule: ExpectationRule, values: pa.Array, where: str) -> tuple[pa.Array, str]:
    assert rule.accepted_values is not None
    accepted = [v for v in rule.accepted_values if v is not None]
    shown = ", ".join(str(v) for v in accepted)
    message = f"{rule.column} is not one of [{shown}]"
    if not accepted:
        return pc.is_valid(values), message
    value_set = _literals(accepted, values.type, rule, where)
    # is_in says False (not null) for a null value: nulls pass explicitly.
    outside = pc.invert(pc.is_in(values, value_set=value_set))
    return pc.and_(outside, pc.is_valid(values)), message


def _type(rule: ExpectationRule, values: pa.Array, where: str) -> tuple[pa.Array, str]:
    assert rule.type is not None
    target = parse_type(rule.type)
    result = checked_cast(pa.table({"v": values}), {"v": target})
    bad = pa.array(result.bad_rows, type=pa.int64())
    mask = pc.is_in(arange(len(values)), value_set=bad)
    return mask, f"{rule.column} does not fit {type_name(target)}"


_CHECKERS = {
    "not_null": _not_null,
    "unique": _unique,
    "between": _between,
    "regex": _regex,
    "accepted_values": _accepted,
    "type": _type,
}


# -- plugin -----------------------------------------------------------------------


def _build(config: ExpectationsConfig, context: BuildContext) -> ExpectationsValidator:
    return ExpectationsValidator(
        config.rules,
        schema=config.schema_,
        schema_on_fail=config.schema_on_fail,
        name=config.name,
        fail_on_error=config.fail_on_error,
    )


EXPECTATIONS_VALIDATOR = Plugin(
    kind="validator",
    type="expectations",
    config=ExpectationsConfig,
    build=_build,
    summary="Row-level not_null, unique, between, regex, accepted_values, type; batch schema",
)
