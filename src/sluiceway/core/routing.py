"""Turning a validator's report into routing: which rows go on, which to the DLQ, which warn.

Each failing rule is handled by its effective ``on_fail`` (``fail`` for every rule
of a validator with ``fail_on_error``): ``fail`` raises, ``warn`` lets the rows
through, ``dlq`` sends them to the dead-letter queue tagged with the first rule
they failed. A batch-level rule (no row mask) applies to every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.dlq import DeadLetters
from sluiceway.core.errors import ValidationFailedError
from sluiceway.core.report import OnFail, RuleResult, ValidationReport

__all__ = ["ValidationRouting", "route_report"]


@dataclass(slots=True)
class ValidationRouting:
    kept: pa.Table
    letters: DeadLetters | None = None
    warned: list[RuleResult] = field(default_factory=list)


def route_report(
    report: ValidationReport,
    data: pa.Table,
    visible: pa.Table,
    *,
    stage: str,
    validator: str,
    fail_on_error: bool,
) -> ValidationRouting:
    """Split ``data`` by ``report``.

    Masks align with ``visible``: the same rows as ``data`` without hidden columns.
    """
    routing = ValidationRouting(kept=data)
    dlq_mask: pa.Array | None = None
    # Per dead-lettered row index: (rule, column, value, message); only failing rows are touched.
    tags: dict[int, tuple[str, str | None, str | None, str]] = {}
    for result in report.results:
        on_fail: OnFail = "fail" if fail_on_error else result.on_fail
        if result.passed:
            continue
        if on_fail == "fail":
            raise ValidationFailedError(validator, result.rule, result.failed, result.sample)
        if on_fail == "warn":
            routing.warned.append(result)
            continue
        mask = result.failed_mask
        if mask is None:
            mask = pa.array([True] * data.num_rows, type=pa.bool_())
        new = mask if dlq_mask is None else pc.and_not(mask, dlq_mask)
        new_idx = pc.indices_nonzero(new)
        if len(new_idx):
            values = (
                visible.column(result.column).take(new_idx).to_pylist()
                if result.column and result.column in visible.column_names
                else [None] * len(new_idx)
            )
            message = result.message or f"rule {result.rule} failed"
            for i, value in zip(new_idx.to_pylist(), values, strict=True):
                tags[i] = (
                    result.rule,
                    result.column,
                    None if value is None else str(value),
                    message,
                )
        dlq_mask = mask if dlq_mask is None else pc.or_(dlq_mask, mask)

    if tags:
        assert dlq_mask is not None
        idx = sorted(tags)
        routing.letters = DeadLetters(
            stage=stage,
            rows=data.take(pa.array(idx, pa.int64())),
            error_type="ValidationFailed",
            error_message=[tags[i][3] for i in idx],
            rule=[tags[i][0] for i in idx],
            column=[tags[i][1] for i in idx],
            value=[tags[i][2] for i in idx],
        )
        routing.kept = data.filter(pc.invert(pc.fill_null(dlq_mask, False)))
    return routing
