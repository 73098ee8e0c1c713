"""PipelineMetrics: what a run did, each term counted where it happened.

The books must balance: ``read + expanded == written + dead_lettered + filtered +
skipped_committed``. Every term is counted at the place it happens — never derived
by subtraction — so an imbalance means a row went somewhere it should not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["PipelineMetrics", "RuleStats"]

RunStatus = Literal["running", "succeeded", "failed"]


@dataclass(slots=True)
class RuleStats:
    """One validation rule over the whole run."""

    validator: str
    rule: str
    tool: str
    column: str | None
    on_fail: str
    row_level: bool
    checked: int = 0
    failed: int = 0
    batches_failed: int = 0
    sample: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class PipelineMetrics:
    """Counters and timings of one run (the seed's ``run() -> PipelineMetrics``)."""

    pipeline: str
    run_id: str
    status: RunStatus = "running"
    error: str | None = None
    error_type: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    read: int = 0
    expanded: int = 0
    written: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    skipped_committed: int = 0
    warned: int = 0
    retries: int = 0
    batches: int = 0
    replayed_batches: int = 0
    dead_lettered_by: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_rows: dict[str, int] = field(default_factory=dict)
    rules: dict[str, RuleStats] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        end = self.finished_at or self.started_at
        return max(0.0, end - self.started_at)

    @property
    def inflow(self) -> int:
        return self.read + self.expanded

    @property
    def outflow(self) -> int:
        return self.written + self.dead_lettered + self.filtered + self.skipped_committed

    @property
    def balanced(self) -> bool:
        return self.inflow == self.outflow

    @property
    def rows_per_second(self) -> float:
        return self.read / self.duration if self.duration > 0 else 0.0

    def add_stage_time(self, stage: str, seconds: float, rows: int = 0) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        self.stage_rows[stage] = self.stage_rows.get(stage, 0) + rows

    def add_dead_letters(self, stage: str, rule: str | None, rows: int) -> None:
        key = f"{stage}:{rule}" if rule else stage
        self.dead_lettered_by[key] = self.dead_lettered_by.get(key, 0) + rows
        self.dead_lettered += rows

    def balance_message(self) -> str:
        return (
            f"read {self.read} + expanded {self.expanded} = {self.inflow}, but "
            f"written {self.written} + dead-lettered {self.dead_lettered} + filtered "
            f"{self.filtered} + skipped {self.skipped_committed} = {self.outflow}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_seconds"] = round(self.duration, 6)
        data["rows_per_second"] = round(self.rows_per_second, 3)
        data["balanced"] = self.balanced
        return data
