"""What the Pandera, Great Expectations and Soda validators share.

Each adapter runs a third-party tool on a batch and turns the tool's verdict into
one :class:`~sluiceway.core.report.RuleResult` per check, named
``<column>.<check>``. This module holds the parts that are the same for all three:
the ``on_fail`` knob (one value, or a mapping by check or column with a
``default``), the config fields every adapter takes, loading a user's
``module:object`` reference, and building a row mask from the failing row
positions a tool reports.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from sluiceway.core.batch import arange
from sluiceway.core.errors import ConfigError
from sluiceway.core.report import OnFail, RuleResult
from sluiceway.core.stages import BaseValidator
from sluiceway.plugins import StageConfig

__all__ = [
    "BATCH_LEVEL_NOTE",
    "OnFailPolicy",
    "OnFailSetting",
    "ToolValidator",
    "ToolValidatorConfig",
    "load_reference",
    "positions_mask",
]

OnFailSetting = OnFail | dict[str, OnFail]
"""``on_fail: warn``, or by check or column: ``{default: dlq, "<column>.<check>": warn}``."""

BATCH_LEVEL_NOTE = "batch-level: the tool does not say which rows failed"


class OnFailPolicy:
    """Which ``on_fail`` a check gets: by exact check name, then by column, then ``default``."""

    def __init__(self, setting: OnFailSetting = "dlq") -> None:
        if isinstance(setting, str):
            self.default: OnFail = setting
            self.by_key: dict[str, OnFail] = {}
        else:
            self.by_key = {k: v for k, v in setting.items() if k != "default"}
            self.default = setting.get("default", "dlq")

    def __repr__(self) -> str:
        return f"OnFailPolicy(default={self.default!r}, by_key={self.by_key!r})"

    def __call__(self, rule: str, column: str | None = None) -> OnFail:
        if rule in self.by_key:
            return self.by_key[rule]
        if column is not None and column in self.by_key:
            return self.by_key[column]
        return self.default

    def check_keys(self, rules: Iterable[str], columns: Iterable[str], *, where: str) -> None:
        """A key naming no check and no column is a typo: :class:`ConfigError` with a hint."""
        known = set(rules) | set(columns)
        for key in self.by_key:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                shown = ", ".join(sorted(known)) or "none"
                raise ConfigError(
                    f"{where}: on_fail names {key!r}, which is no check or column{hint}; "
                    f"the checks are: {shown}"
                )


class ToolValidatorConfig(StageConfig):
    """The options every tool adapter takes besides its own (schema, suite, contract)."""

    name: str | None = Field(default=None, description="Stage name (default: the type).")
    fail_on_error: bool = Field(default=False, description="Every failing check fails the run.")
    on_fail: OnFailSetting = Field(
        default="dlq",
        description=(
            "dlq | warn | fail for every check, or a mapping by check name "
            "('<column>.<check>') or column, with a 'default'"
        ),
    )


def load_reference(ref: str, base_dir: Any, *, what: str) -> Any:
    """Import ``module:attribute`` (the spec file's folder first on ``sys.path``).

    Raises :class:`ConfigError` starting with ``what`` (e.g. "pandera validator
    'orders': schema") so the message says which option was wrong.
    """
    from sluiceway.engines.python_fn import load_function

    try:
        return load_function(ref, base_dir)
    except ConfigError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise ConfigError(f"{what} {ref!r}: {reason}") from exc


def positions_mask(n: int, positions: Iterable[int] | pa.Array) -> pa.BooleanArray:
    """A mask of ``n`` rows, True at ``positions`` (0-based row numbers in the batch)."""
    value_set = positions if isinstance(positions, pa.Array) else pa.array(list(positions))
    value_set = value_set.cast(pa.int64())
    mask = pc.is_in(arange(n), value_set=value_set)
    assert isinstance(mask, pa.BooleanArray)
    return mask


class ToolValidator(BaseValidator[pa.Table]):
    """Base of the tool adapters: Arrow in, one result per check, the ``on_fail`` policy.

    Subclasses load the tool in :meth:`open` (so a missing extra or a broken schema
    fails before the first batch) and convert the batch to the tool's frame
    themselves, keeping the Arrow table for failing values and samples.
    """

    frame = "arrow"
    tool: str = "tool"

    def __init__(
        self,
        name: str,
        *,
        on_fail: OnFailSetting | OnFailPolicy = "dlq",
        fail_on_error: bool = False,
    ) -> None:
        super().__init__(name, fail_on_error=fail_on_error)
        self.policy = on_fail if isinstance(on_fail, OnFailPolicy) else OnFailPolicy(on_fail)

    @property
    def where(self) -> str:
        return f"{self.tool} validator {self.name!r}"

    def row_result(
        self,
        rule: str,
        column: str | None,
        mask: pa.Array,
        table: pa.Table,
        *,
        message: str,
        sample: list[Any] | None = None,
    ) -> RuleResult:
        """A row-level result; the sample comes from ``column`` of ``table`` unless given."""
        values = table.column(column) if column and column in table.column_names else None
        result = RuleResult.from_mask(
            rule,
            mask,
            values=values,
            column=column,
            on_fail=self.policy(rule, column),
            tool=self.tool,
            message=message,
        )
        if sample is not None and not result.sample and not result.passed:
            result.sample = sample[:5]
        return result

    def batch_result(
        self,
        rule: str,
        column: str | None,
        *,
        passed: bool,
        message: str,
        sample: list[Any] | None = None,
    ) -> RuleResult:
        """A batch-level result: counts one check per batch; under ``dlq`` the batch goes."""
        return RuleResult(
            rule=rule,
            on_fail=self.policy(rule, column),
            column=column,
            tool=self.tool,
            checked=1,
            passed=passed,
            message=message,
            sample=(sample or [])[:5],
        )
