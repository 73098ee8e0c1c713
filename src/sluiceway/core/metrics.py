"""PipelineMetrics: what a run did, each term counted where it happened.

The books must balance: ``read + replayed + expanded == written + dead_lettered +
filtered + skipped_committed``. Every term is counted at the place it happens —
never derived by subtraction — so an imbalance means a row went somewhere it
should not. ``replayed`` counts rows a DLQ replay put back into the pipeline (zero
in a normal run). In a dry run the same terms say what *would* have happened:
``written`` counts rows that reached the sink stage, ``dead_lettered`` rows that
would have gone to the DLQ; nothing was written anywhere.
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
    replayed: int = 0
    """Rows a DLQ replay put back into the pipeline (each at the stage where it failed)."""
    replay_skipped: dict[str, int] = field(default_factory=dict)
    """DLQ entries a replay selected but did not put back, by reason (not in the books)."""
    dry_run: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    """The run's limits (``max_dead_letter_ratio``, ``max_dead_letter_rows``), if any."""
    threshold_crossed: str | None = None
    """What crossed a limit, when one did (the run then failed)."""

    @property
    def duration(self) -> float:
        end = self.finished_at or self.started_at
        return max(0.0, end - self.started_at)

    @property
    def inflow(self) -> int:
        return self.read + self.replayed + self.expanded

    @property
    def outflow(self) -> int:
        return self.written + self.dead_lettered + self.filtered + self.skipped_committed

    @property
    def balanced(self) -> bool:
        return self.inflow == self.outflow

    @property
    def rows_per_second(self) -> float:
        """Rows taken in (read, or replayed from the DLQ) per second of the run."""
        rows = self.read + self.replayed
        return rows / self.duration if self.duration > 0 else 0.0

    @property
    def dead_letter_ratio(self) -> float:
        """Dead-lettered rows over rows taken in (read + replayed + expanded); 0 when none."""
        return self.dead_lettered / self.inflow if self.inflow else 0.0

    def add_stage_time(self, stage: str, seconds: float, rows: int = 0) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        self.stage_rows[stage] = self.stage_rows.get(stage, 0) + rows

    def add_dead_letters(self, stage: str, rule: str | None, rows: int) -> None:
        key = f"{stage}:{rule}" if rule else stage
        self.dead_lettered_by[key] = self.dead_lettered_by.get(key, 0) + rows
        self.dead_lettered += rows

    def balance_message(self) -> str:
        replayed = f" + replayed {self.replayed}" if self.replayed else ""
        return (
            f"read {self.read}{replayed} + expanded {self.expanded} = {self.inflow}, but "
            f"written {self.written} + dead-lettered {self.dead_lettered} + filtered "
            f"{self.filtered} + skipped {self.skipped_committed} = {self.outflow}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_seconds"] = round(self.duration, 6)
        data["rows_per_second"] = round(self.rows_per_second, 3)
        data["balanced"] = self.balanced
        data["dead_letter_ratio"] = round(self.dead_letter_ratio, 6)
        return data
