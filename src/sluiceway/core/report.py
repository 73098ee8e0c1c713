"""What a validator says about a batch: one :class:`RuleResult` per rule, row-level when it can."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["OnFail", "RuleResult", "ValidationReport"]

OnFail = Literal["dlq", "warn", "fail"]


@dataclass(slots=True)
class RuleResult:
    """The outcome of one rule on one batch.

    ``failed_mask`` is True for each failing row, aligned with the rows the validator
    was given. A batch-level rule (row count, freshness) leaves it ``None`` and sets
    ``passed``; such a rule can warn or fail the run but cannot dead-letter rows.
    """

    rule: str
    on_fail: OnFail = "dlq"
    column: str | None = None
    tool: str = "expectations"
    checked: int = 0
    failed_mask: pa.BooleanArray | None = None
    passed: bool = True
    message: str = ""
    sample: list[Any] = field(default_factory=list)

    @property
    def row_level(self) -> bool:
        return self.failed_mask is not None

    @property
    def failed(self) -> int:
        if self.failed_mask is None:
            return 0 if self.passed else 1
        return int(pc.sum(self.failed_mask).as_py() or 0)

    @classmethod
    def from_mask(
        cls,
        rule: str,
        mask: pa.Array | pa.ChunkedArray,
        *,
        values: pa.Array | pa.ChunkedArray | None = None,
        column: str | None = None,
        on_fail: OnFail = "dlq",
        tool: str = "expectations",
        message: str = "",
        sample_size: int = 5,
    ) -> RuleResult:
        """A row-level result from a failing-row mask (nulls in the mask count as passing)."""
        if isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks()
        filled = pc.fill_null(mask, False)
        assert isinstance(filled, pa.BooleanArray)
        sample: list[Any] = []
        if values is not None and pc.any(filled).as_py():
            sample = pc.filter(values, filled).slice(0, sample_size).to_pylist()
        failing = int(pc.sum(filled).as_py() or 0)
        return cls(
            rule=rule,
            on_fail=on_fail,
            column=column,
            tool=tool,
            checked=len(filled),
            failed_mask=filled,
            passed=failing == 0,
            message=message,
            sample=sample,
        )


@dataclass(slots=True)
class ValidationReport:
    """All rule results of one validator on one batch."""

    validator: str
    results: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def add(self, result: RuleResult) -> None:
        self.results.append(result)
