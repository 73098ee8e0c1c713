"""Built-in expectations: ``type: expectations``, vectorised row-level checks.

A validator holds rule dicts, each naming a column and one or more checks::

    validators:
      - type: expectations
        schema: {id: int64, amount: "decimal(12, 2)"}
        rules:
          - {column: id, not_null: true, unique: true}
          - {column: id, unique_in_run: true}
          - {column: amount, between: [0, 1000000], on_fail: warn}
          - {column: email, regex: '^[^@]+@[^@]+$'}
          - {column: status, accepted_values: [new, paid, shipped]}
          - {column: amount, type: "decimal(12, 2)"}
          - {name: shipped_after_order, sql: "shipped_at >= ordered_at"}
          - {row_count: [1, 1000000], on_fail: fail}
          - {column: updated_at, freshness: 1h, on_fail: warn}

Every check is its own :class:`~sluiceway.core.report.RuleResult`, named
``<column>.<check>`` (``id.not_null``, ``amount.between``) — or the rule's
``name`` — with a mask of the failing rows, so only those rows are dead-lettered
(or warned about, or fail the run: ``on_fail`` of the rule dict). Nulls pass every
check except ``not_null``.

``row_count`` and ``freshness`` are batch-level (they judge the batch, not a row),
as is ``schema``: each listed column must be present with exactly that Arrow type
(one result per column, ``<column>.schema``, with ``schema_on_fail``). A batch
that breaks a batch-level check cannot be split into good and bad rows, so under
``dlq`` the whole batch is dead-lettered; ``warn`` or ``fail`` suit them better.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from sluiceway.plugins import BuildContext, Plugin, StageConfig, parse_duration

__all__ = [
    "CHECKS",
    "EXPECTATIONS_VALIDATOR",
    "ExpectationRule",
    "ExpectationsConfig",
    "ExpectationsValidator",
]

Scalar = bool | int | float | Decimal | dt.datetime | dt.date | str | None

#: The checks a rule dict may hold, in the order they run.
CHECKS: tuple[str, ...] = (
    "not_null",
    "unique",
    "unique_in_run",
    "between",
    "regex",
    "accepted_values",
    "type",
    "sql",
    "row_count",
    "freshness",
)

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
_POS = "__sluiceway_pos"


class ExpectationRule(BaseModel):
    """One rule dict: (usually) a column and its checks, sharing one ``on_fail``.

    - ``not_null``: the value is not null.
    - ``unique``: unique *within the batch*: the first occurrence of a value passes,
      every later occurrence fails.
    - ``unique_in_run``: unique across every batch of the run: the first occurrence
      in the run passes, later ones fail (in the same batch or any later one). The
      validator remembers a 64-bit hash per distinct value (8 bytes each, for the
      run only; memory grows with the distinct values seen and is not otherwise
      bounded — across runs, uniqueness is the sink's merge key).
    - ``between: [low, high]``: inclusive; either bound may be null (open-ended);
      NaN fails.
    - ``regex``: RE2 syntax, search semantics (matches anywhere unless anchored).
    - ``accepted_values``: the value is one of these.
    - ``type``: the value fits this type (e.g. ``decimal(12, 2)``), by checked cast.
    - ``sql``: a DuckDB SQL boolean expression over the batch's columns that each
      row must satisfy (``amount <= credit_limit``); a row where it is false fails,
      where it is null passes. ``column`` (the value reported) or ``name`` is required.
    - ``row_count: [min, max]`` (batch-level): the batch's row count, inclusive;
      either bound may be null. Needs no column.
    - ``freshness`` (batch-level): the newest value of a timestamp or date column is
      at most this old when the batch is validated (``1h``, ``30m``, seconds);
      naive timestamps are taken as UTC; a batch with no value fails.

    ``name`` replaces the rule name ``<column>.<check>`` (with several checks in the
    dict, it becomes ``<name>.<check>``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = Field(default=None, min_length=1)
    name: str | None = Field(default=None, min_length=1)
    not_null: bool = False
    unique: bool = False
    unique_in_run: bool = False
    between: tuple[Scalar, Scalar] | None = None
    regex: str | None = None
    accepted_values: list[Scalar] | None = Field(default=None, min_length=1)
    type: str | None = None
    sql: str | None = Field(default=None, min_length=1)
    row_count: tuple[int | None, int | None] | None = None
    freshness: float | None = Field(default=None, gt=0)
    on_fail: OnFail = "dlq"

    @field_validator("between", "row_count")
    @classmethod
    def _bounds(cls, value: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
        if value is not None and value[0] is None and value[1] is None:
            raise ValueError("needs at least one bound")
        return value

    @field_validator("freshness", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

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

    @field_validator("sql")
    @classmethod
    def _sql(cls, value: str | None) -> str | None:
        if value is not None:
            _check_predicate(value)
        return value

    @model_validator(mode="after")
    def _has_check(self) -> ExpectationRule:
        checks = self.checks()
        if not checks:
            raise ValueError(f"rule for column {self.column!r} has no check; use {CHECKS}")
        if self.column is None:
            needs_column = [c for c in checks if c not in ("row_count", "sql")]
            if needs_column:
                raise ValueError(f"{', '.join(needs_column)} needs a column")
            if "sql" in checks and self.name is None:
                raise ValueError("an sql rule needs a column (the value reported) or a name")
        return self

    def checks(self) -> list[str]:
        """The checks this rule enables, in :data:`CHECKS` order."""
        return [c for c in CHECKS if getattr(self, c) not in (None, False)]

    def rule_name(self, check: str) -> str:
        """The name results of ``check`` carry (``<column>.<check>``, or from ``name``)."""
        if self.name is not None:
            return self.name if len(self.checks()) == 1 else f"{self.name}.{check}"
        return check if self.column is None else f"{self.column}.{check}"


def _check_predicate(predicate: str) -> None:
    """Parse ``SELECT (predicate) FROM batch`` with DuckDB: a syntax error is a config error."""
    import duckdb

    con = duckdb.connect()
    try:
        statements = con.extract_statements(f"SELECT ({predicate}) FROM batch")
    except duckdb.Error as exc:
        raise ValueError(f"invalid SQL predicate {predicate!r}: {exc}") from None
    finally:
        con.close()
    if len(statements) != 1:
        raise ValueError(f"invalid SQL predicate {predicate!r}: expected one expression")


# -- config and validator --------------------------------------------------------------


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
    ``unique_in_run`` state lives from :meth:`open` to :meth:`close` (one run);
    ``sql`` rules run on a DuckDB connection held for the run. ``clock`` (seconds
    since the epoch) is what ``freshness`` compares with; tests pass a fixed one.
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
        clock: Callable[[], float] = time.time,
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
        self.clock = clock
        self._seen: dict[int, _SeenHashes] = {}
        self._con: Any = None

    def __repr__(self) -> str:
        return f"ExpectationsValidator(name={self.name!r}, rules={len(self.rules)})"

    def open(self) -> None:
        self._seen = {}

    def close(self) -> None:
        self._seen = {}
        con, self._con = self._con, None
        if con is not None:
            con.close()

    def validate(self, data: pa.Table) -> ValidationReport:
        report = ValidationReport(validator=self.name)
        for result in self._schema_results(data):
            report.add(result)
        for index, rule in enumerate(self.rules):
            if rule.column is not None and rule.column not in data.column_names:
                raise ConfigError(
                    f"validator {self.name!r}: rule {index} ({', '.join(rule.checks())}): "
                    f"column {rule.column!r} not found (the batch has: "
                    f"{', '.join(data.column_names)})"
                )
            values = None if rule.column is None else _plain(data.column(rule.column))
            for check in rule.checks():
                report.add(self._check(index, rule, check, data, values))
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

    def _row_count(self, rule: ExpectationRule, data: pa.Table) -> RuleResult:
        assert rule.row_count is not None
        low, high = rule.row_count
        n = data.num_rows
        ok = (low is None or n >= low) and (high is None or n <= high)
        expected = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f"at least {low}" if low is not None else f"at most {high}")
        )
        return RuleResult(
            rule=rule.rule_name("row_count"),
            on_fail=rule.on_fail,
            checked=1,
            passed=ok,
            message="" if ok else f"the batch has {n} rows, expected {expected}",
            sample=[] if ok else [n],
        )

    def _freshness(self, rule: ExpectationRule, values: pa.Array, where: str) -> RuleResult:
        assert rule.freshness is not None
        assert rule.column is not None
        dtype = values.type
        if not (pa.types.is_timestamp(dtype) or pa.types.is_date(dtype)):
            raise ConfigError(
                f"{where}: freshness needs a timestamp or date column; "
                f"{rule.column!r} is {type_name(dtype)}"
            )
        newest = pc.max(values).as_py()
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        limit = dt.timedelta(seconds=rule.freshness)
        if newest is None:
            problem = f"{rule.column} has no value to judge freshness by"
        else:
            if isinstance(newest, dt.datetime):
                stamp = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
            else:  # a date counts from its midnight, UTC
                stamp = dt.datetime.combine(newest, dt.time(), dt.UTC)
            age = now - stamp
            problem = (
                f"the newest {rule.column} is {age}, older than {limit}" if age > limit else ""
            )
        return RuleResult(
            rule=rule.rule_name("freshness"),
            on_fail=rule.on_fail,
            column=rule.column,
            checked=1,
            passed=not problem,
            message=problem,
            sample=[] if not problem or newest is None else [newest],
        )

    # -- row level ----------------------------------------------------------------

    def _check(
        self,
        index: int,
        rule: ExpectationRule,
        check: str,
        data: pa.Table,
        values: pa.Array | None,
    ) -> RuleResult:
        column = rule.column
        where = f"validator {self.name!r}: rule {index} ({rule.rule_name(check)})"
        try:
            if check == "row_count":
                return self._row_count(rule, data)
            if check == "sql":
                mask, message = self._sql(rule, data, where)
            else:
                assert values is not None
                if check == "freshness":
                    return self._freshness(rule, values, where)
                if check == "unique_in_run":
                    mask, message = self._unique_in_run(index, rule, values)
                else:
                    mask, message = _CHECKERS[check](rule, values, where)
        except ConfigError:
            raise
        except _ARROW_ERRORS as exc:
            shown = "" if values is None else f" of type {values.type}"
            raise ConfigError(f"{where}: cannot check column {column!r}{shown}: {exc}") from exc
        return RuleResult.from_mask(
            rule.rule_name(check),
            mask,
            values=values,
            column=column,
            on_fail=rule.on_fail,
            message=message,
        )

    def _unique_in_run(
        self, index: int, rule: ExpectationRule, values: pa.Array
    ) -> tuple[pa.Array, str]:
        later_in_batch, _ = _unique(rule, values, "")
        seen = self._seen.setdefault(index, _SeenHashes())
        earlier_batch = seen.check_and_add(values)
        mask = pc.or_(later_in_batch, earlier_batch)
        return mask, f"{rule.column} is a duplicate (an earlier row in this run has the same value)"

    def _sql(self, rule: ExpectationRule, data: pa.Table, where: str) -> tuple[pa.Array, str]:
        import duckdb

        assert rule.sql is not None
        if self._con is None:
            from sluiceway.engines.sql import default_threads

            self._con = duckdb.connect(config={"threads": default_threads()})
        con = self._con
        n = data.num_rows
        # Positions, not row order: DuckDB may return a filter's rows in any order.
        con.register("batch", data.append_column(_POS, arange(n)))
        try:
            failing = con.sql(
                f'SELECT "{_POS}" FROM batch WHERE NOT coalesce(({rule.sql}), true)'
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise ConfigError(f"{where}: SQL predicate {rule.sql!r} failed: {exc}") from exc
        finally:
            con.unregister("batch")
        mask = pc.is_in(arange(n), value_set=failing.column(0).combine_chunks())
        return mask, f"{rule.sql} is false"


class _SeenHashes:
    """The 64-bit hashes of every value one ``unique_in_run`` rule has seen this run.

    Kept as disjoint sorted runs: a batch adds one run of its new hashes, and a run
    is merged (a linear merge of two sorted runs) into its predecessor once that is
    at most ``_MERGE`` times its size, so there are O(log batches) runs. A batch's
    hashes are sorted once and binary-searched in each run, which keeps the searches
    cache-friendly. Two values sharing a hash (odds about n²/2⁶⁵) would make the
    later one a false duplicate: dead-lettered, never loaded twice.
    """

    _MERGE = 4

    def __init__(self) -> None:
        import polars as pl

        self._pl = pl
        self.runs: list[Any] = []  # disjoint sorted pl.DataFrame({"h": UInt64})

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.runs)

    def check_and_add(self, values: pa.Array) -> pa.Array:
        """Mask of the non-null values whose hash an earlier batch had; then remember these."""
        pl = self._pl
        n = len(values)
        valid = pc.is_valid(values)
        hashes = pl.Series(values=pl.from_arrow(values.filter(valid))).hash(seed=0)
        order = hashes.arg_sort()
        ordered = hashes.gather(order)
        seen = pl.repeat(False, len(ordered), eager=True)
        for run in self.runs:
            column = run.get_column("h")
            at = column.search_sorted(ordered).clip(0, len(column) - 1)
            seen = seen | (column.gather(at) == ordered)
        fresh = ordered.filter(~seen)
        fresh = fresh.filter((fresh != fresh.shift(1)).fill_null(True))  # sorted: drop repeats
        if len(fresh):
            self.runs.append(fresh.to_frame("h").set_sorted("h"))
            while len(self.runs) > 1 and len(self.runs[-2]) <= self._MERGE * len(self.runs[-1]):
                last = self.runs.pop()
                self.runs[-1] = self.runs[-1].merge_sorted(last, key="h").set_sorted("h")
        # Back to row order: the valid rows' flags, scattered to their positions.
        flags = pl.repeat(False, len(ordered), eager=True).scatter(order.filter(seen), True)
        earlier = pl.repeat(False, n, eager=True)
        valid_positions = pl.Series(values=pc.indices_nonzero(valid))
        earlier = earlier.scatter(valid_positions.filter(flags), True)
        return earlier.to_arrow()


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
    message = f"{rule.column} is a duplicate (an earlier row in the batch has the same value)"
    try:  # Polars' hash kernel is the faster one; Arrow's group_by covers what it cannot take
        import polars as pl

        first = pl.Series(values=pl.from_arrow(values)).is_first_distinct().to_arrow()
    except (pl.exceptions.PolarsError, TypeError, ValueError):
        n = len(values)
        positions = arange(n)
        firsts = (
            pa.table({"v": values, "i": positions})
            .group_by("v", use_threads=False)
            .aggregate([("i", "min")])
            .column("i_min")
        )
        first = pc.is_in(positions, value_set=firsts)
    return pc.and_(pc.invert(first), pc.is_valid(values)), message


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
