"""Run limits: how many dead letters a run may produce before it is stopped.

A pipeline whose source suddenly sends garbage should not dead-letter a million
rows quietly. :class:`Thresholds` caps the dead letters of one run by count
(``max_dead_letter_rows``) and by share of the rows taken in
(``max_dead_letter_ratio`` = dead-lettered / (read + replayed + expanded)). The
runner checks them after each batch is committed — so work already done is kept
and the next run resumes after it — and once more at the end; a crossed limit
raises :class:`ThresholdExceededError` and the run fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluiceway.core.errors import FatalError
from sluiceway.core.metrics import PipelineMetrics

__all__ = ["ThresholdExceededError", "Thresholds"]


class ThresholdExceededError(FatalError):
    """A run limit was crossed; the batches committed before are kept."""

    def __init__(self, threshold: str, limit: float, value: float, message: str) -> None:
        super().__init__(message)
        self.threshold = threshold
        self.limit = limit
        self.value = value


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits on one run's dead letters; ``None`` means no limit.

    ``min_rows``: the ratio is judged after a batch only once at least this many
    rows came in, so one bad first batch of a big run does not stop it; the check
    at the end of the run always applies.
    """

    max_dead_letter_ratio: float | None = None
    max_dead_letter_rows: int | None = None
    min_rows: int = 0

    def __post_init__(self) -> None:
        ratio = self.max_dead_letter_ratio
        if ratio is not None and not 0 <= ratio <= 1:
            raise ValueError("max_dead_letter_ratio must be between 0 and 1")
        if self.max_dead_letter_rows is not None and self.max_dead_letter_rows < 0:
            raise ValueError("max_dead_letter_rows must be >= 0")
        if self.min_rows < 0:
            raise ValueError("min_rows must be >= 0")

    @property
    def active(self) -> bool:
        return self.max_dead_letter_ratio is not None or self.max_dead_letter_rows is not None

    def limits(self) -> dict[str, float]:
        """The set limits by name (for metrics and summaries)."""
        out: dict[str, float] = {}
        if self.max_dead_letter_ratio is not None:
            out["max_dead_letter_ratio"] = self.max_dead_letter_ratio
        if self.max_dead_letter_rows is not None:
            out["max_dead_letter_rows"] = self.max_dead_letter_rows
        return out

    def check(self, metrics: PipelineMetrics, *, final: bool) -> ThresholdExceededError | None:
        """The error for the first limit ``metrics`` cross, or None."""
        m = metrics
        what = "would have dead-lettered" if m.dry_run else "dead-lettered"
        rows = self.max_dead_letter_rows
        if rows is not None and m.dead_lettered > rows:
            return ThresholdExceededError(
                "max_dead_letter_rows",
                rows,
                m.dead_lettered,
                f"threshold crossed: {what} {m.dead_lettered:,} rows, more than "
                f"max_dead_letter_rows {rows:,}",
            )
        ratio = self.max_dead_letter_ratio
        if ratio is not None and m.inflow and (final or m.inflow >= self.min_rows):
            value = m.dead_letter_ratio
            if value > ratio:
                return ThresholdExceededError(
                    "max_dead_letter_ratio",
                    ratio,
                    value,
                    f"threshold crossed: {what} {m.dead_lettered:,} of {m.inflow:,} rows "
                    f"({value:.2%}), more than max_dead_letter_ratio {ratio:.2%}",
                )
        return None
