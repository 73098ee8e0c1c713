"""What each stage does to one batch: transform, validate, load, dead-letter, commit state.

:class:`StageSteps` is the part of a run that handles one batch inside one stage;
:mod:`sluiceway.core.pipeline` orders the steps (intent, stages, commit) for
batches read from the source, :mod:`sluiceway.core.replay` for rows put back
from the DLQ. A dry run goes through the same steps but writes nothing: no DLQ
file, no sink call, no state commit; the counters say what would have happened.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import structlog

from sluiceway.core._loading import LoadAhead, LoadOutcome, load_batch
from sluiceway.core.batch import Batch, drop_hidden
from sluiceway.core.crash import crash_point
from sluiceway.core.dlq import DeadLetters, build_envelopes, build_reject_envelopes
from sluiceway.core.errors import FatalError, SluicewayError
from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.frames import to_frame
from sluiceway.core.lineage import run_transform
from sluiceway.core.metrics import PipelineMetrics, RuleStats
from sluiceway.core.report import RuleResult
from sluiceway.core.routing import route_report
from sluiceway.core.stages import BaseTransformer, BaseValidator
from sluiceway.core.state import PipelineState

if TYPE_CHECKING:
    from sluiceway.core.pipeline import Pipeline

__all__ = ["StageSteps"]


class StageSteps:
    """The per-batch, per-stage work of one run; holds the run's counters and state."""

    def __init__(self, pipeline: Pipeline, run_id: str) -> None:
        self.p = pipeline
        self.run_id = run_id
        self.dry = pipeline.dry_run
        self.metrics = PipelineMetrics(pipeline=pipeline.name, run_id=run_id, dry_run=self.dry)
        self.metrics.thresholds = pipeline.thresholds.limits()
        self.state = PipelineState(pipeline=pipeline.name)
        self.version = 0
        self._derived: Iterator[int] = itertools.count()
        self._ahead: LoadAhead | None = None
        self._dlq_lock = threading.Lock()
        self._log = structlog.get_logger("sluiceway.pipeline").bind(
            pipeline=pipeline.name, run_id=run_id
        )

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        self.p.events.emit(
            StageEvent(kind=kind, pipeline=self.p.name, run_id=self.run_id, **fields)
        )

    # -- through the stages ---------------------------------------------------------

    def _route(
        self, batch: Batch, data: pa.Table, *, transforms_from: int = 0, validators_from: int = 0
    ) -> pa.Table:
        """Run ``data`` through the transforms and validators from the given indexes on."""
        p = self.p
        for index in range(transforms_from, len(p.transformers)):
            if data.num_rows == 0:
                break
            data = self._transform(batch, index, p.transformers[index], data)
            crash_point("after_transform")
        for index in range(validators_from, len(p.validators)):
            if data.num_rows == 0:
                break
            data = self._validate(batch, index, p.validators[index], data)
        return data

    def _deliver(self, batch: Batch, data: pa.Table, commit: Callable[[], None]) -> None:
        """Load the rows that came through, then ``commit`` the batch (positions, state).

        With a :class:`LoadAhead`, the batch in flight is finished first (batches
        commit in order) and this one is loaded on the worker while the run goes on;
        its ``commit`` runs when the next batch is delivered or the run drains.
        """
        if self._ahead is not None:
            self._ahead.drain()
        if data.num_rows == 0 or self.dry:
            if data.num_rows:
                self.metrics.written += data.num_rows
                self._emit(
                    EventKind.BATCH_LOADED,
                    seq=batch.seq,
                    stage="load",
                    rows_in=data.num_rows,
                    rows_out=data.num_rows,
                    attrs={"attempts": 0, "rejected": 0, "dry_run": True},
                )
            commit()
            return
        current = batch.with_data(data)

        def job() -> LoadOutcome:
            return load_batch(self.p, current, self.run_id, self._dlq_lock)

        def then(outcome: LoadOutcome) -> None:
            self._finish_load(current, outcome)
            commit()

        if self._ahead is None:
            then(job())
        else:
            self._ahead.submit(job, then)

    def _finish_load(self, batch: Batch, outcome: LoadOutcome) -> None:
        """Count and report what :func:`load_batch` did (on the run's thread)."""
        p, m = self.p, self.metrics
        rows = batch.num_rows
        if outcome.status == "skipped":
            m.skipped_committed += rows
            self._log.info("batch_already_committed", seq=batch.seq, rows=rows)
            self._emit(EventKind.BATCH_SKIPPED, seq=batch.seq, stage="load", rows_in=rows)
            return
        for retried in outcome.retries:
            m.retries += 1
            self._emit(
                EventKind.LOAD_RETRIED,
                seq=batch.seq,
                stage="load",
                rows_in=rows,
                error=retried.error,
                attrs={
                    "attempt": retried.attempt,
                    "delay": retried.delay,
                    "error_type": retried.error_type,
                },
            )
        if outcome.status == "failed":
            error = outcome.error or RuntimeError("load failed")
            m.add_stage_time("load", outcome.seconds, rows)
            self._emit(
                EventKind.BATCH_LOADED,
                seq=batch.seq,
                stage="load",
                rows_in=rows,
                rows_out=0,
                started=outcome.started,
                seconds=outcome.seconds,
                error=str(error),
                attrs={"attempts": outcome.attempts, "error_type": type(error).__name__},
            )
            self._dead_letter(
                batch,
                DeadLetters(
                    stage="load",
                    rows=batch.data,
                    error_type=type(error).__name__,
                    error_message=str(error) or type(error).__name__,
                    attempt=outcome.attempts,
                ),
            )
            return
        m.written += outcome.written
        p.loader.records_written += outcome.written
        m.add_stage_time("load", outcome.seconds - outcome.dlq_seconds, rows)
        self._emit(
            EventKind.BATCH_LOADED,
            seq=batch.seq,
            stage="load",
            rows_in=rows,
            rows_out=outcome.written,
            started=outcome.started,
            seconds=outcome.seconds,
            attrs={"attempts": outcome.attempts, "rejected": outcome.rejected},
        )
        if outcome.refused is not None:
            self._account_dead_letters(
                batch, "load", outcome.refused, outcome.started, outcome.dlq_seconds
            )

    def _transform(
        self, batch: Batch, index: int, transformer: BaseTransformer[Any, Any], data: pa.Table
    ) -> pa.Table:
        stage = f"transform.{index}.{transformer.name}"
        started, t0 = time.time(), time.perf_counter()
        outcome = run_transform(
            transformer,
            data,
            stage=stage,
            derived_ids=self._derived,
            budget=self.p.bisect_budget,
        )
        seconds = time.perf_counter() - t0
        self.metrics.filtered += outcome.filtered
        self.metrics.expanded += outcome.expanded
        self.metrics.add_stage_time(stage, seconds, data.num_rows)
        self._emit(
            EventKind.BATCH_TRANSFORMED,
            seq=batch.seq,
            stage=stage,
            rows_in=data.num_rows,
            rows_out=outcome.data.num_rows,
            started=started,
            seconds=seconds,
            error=outcome.letters.error_message[0]
            if outcome.letters and isinstance(outcome.letters.error_message, list)
            else None,
            attrs={
                "filtered": outcome.filtered,
                "expanded": outcome.expanded,
                "calls": outcome.calls,
                "dead_lettered": len(outcome.letters) if outcome.letters else 0,
            },
        )
        if outcome.letters is not None:
            self._dead_letter(batch, outcome.letters)
        return outcome.data

    def _validate(
        self, batch: Batch, index: int, validator: BaseValidator[Any], data: pa.Table
    ) -> pa.Table:
        stage = f"validate.{index}.{validator.name}"
        started, t0 = time.time(), time.perf_counter()
        visible = drop_hidden(data)
        try:
            report = validator.validate(to_frame(visible, validator.frame))
        except SluicewayError:
            raise
        except Exception as exc:
            raise FatalError(f"validator {validator.name!r} raised {exc!r}") from exc
        try:
            routing = route_report(
                report,
                data,
                visible,
                stage=stage,
                validator=validator.name,
                fail_on_error=validator.fail_on_error,
            )
        finally:
            for result in report.results:
                on_fail = "fail" if validator.fail_on_error else result.on_fail
                self._record_rule(validator.name, result, on_fail)
        for result in routing.warned:
            self.metrics.warned += result.failed
            self._emit(
                EventKind.VALIDATION_WARNED,
                seq=batch.seq,
                stage=stage,
                rows_in=result.failed,
                attrs={"rule": result.rule, "message": result.message},
            )
        seconds = time.perf_counter() - t0
        self.metrics.add_stage_time(stage, seconds, data.num_rows)
        if routing.letters is not None:
            self._dead_letter(batch, routing.letters)
        self._emit(
            EventKind.BATCH_VALIDATED,
            seq=batch.seq,
            stage=stage,
            rows_in=data.num_rows,
            rows_out=routing.kept.num_rows,
            started=started,
            seconds=seconds,
            attrs={"rules": len(report.results)},
        )
        return routing.kept

    def _record_rule(self, validator: str, result: RuleResult, on_fail: str) -> None:
        key = f"{validator}:{result.rule}"
        stats = self.metrics.rules.get(key)
        if stats is None:
            stats = RuleStats(
                validator=validator,
                rule=result.rule,
                tool=result.tool,
                column=result.column,
                on_fail=on_fail,
                row_level=result.row_level,
            )
            self.metrics.rules[key] = stats
        stats.checked += result.checked
        stats.failed += result.failed
        if not result.passed:
            stats.batches_failed += 1
            room = 5 - len(stats.sample)
            if room > 0:
                stats.sample.extend(result.sample[:room])

    # -- dead letters and state -----------------------------------------------------

    def _dead_letter_rejected(self, batch: Batch) -> None:
        entries = build_reject_envelopes(batch, pipeline=self.p.name, run_id=self.run_id)
        self._write_dead_letters(batch, "extract", entries)

    def _dead_letter(self, batch: Batch, letters: DeadLetters) -> None:
        entries = build_envelopes(batch, letters, pipeline=self.p.name, run_id=self.run_id)
        self._write_dead_letters(batch, letters.stage, entries)

    def _write_dead_letters(self, batch: Batch, stage: str, entries: pa.Table) -> None:
        started, t0 = time.time(), time.perf_counter()
        if not self.dry:
            with self._dlq_lock:
                self.p.dlq.write(batch.seq, stage, entries)
        self._account_dead_letters(batch, stage, entries, started, time.perf_counter() - t0)

    def _account_dead_letters(
        self, batch: Batch, stage: str, entries: pa.Table, started: float, seconds: float
    ) -> None:
        """Count rows that are durably in the DLQ (or would be, in a dry run); tell subscribers."""
        if not self.dry:
            self.metrics.add_stage_time("dlq", seconds, entries.num_rows)
        by_rule: dict[str | None, int] = {}
        for rule in entries.column("rule").to_pylist():
            by_rule[rule] = by_rule.get(rule, 0) + 1
        for rule, count in by_rule.items():
            self.metrics.add_dead_letters(stage, rule, count)
        first = entries.slice(0, 1).to_pylist()[0] if entries.num_rows else {}
        self._emit(
            EventKind.ROWS_DEAD_LETTERED,
            seq=batch.seq,
            stage=stage,
            rows_in=entries.num_rows,
            started=started,
            seconds=seconds,
            error=first.get("error_message"),
            attrs={
                "by_rule": by_rule,
                "error_type": first.get("error_type"),
                "dlq": self.p.dlq.describe(),
                "dry_run": self.dry,
            },
        )

    def _commit_state(self) -> None:
        """Commit the state (compare-and-swap); a dry run commits nothing."""
        if self.dry:
            return
        t0 = time.perf_counter()
        self.version = self.p.state.commit(self.state, self.version)
        self.metrics.add_stage_time("state", time.perf_counter() - t0)

    def _check_thresholds(self, *, final: bool, seq: int | None = None) -> None:
        """Fail the run if a limit is crossed (called after a batch commit and at the end)."""
        error = self.p.thresholds.check(self.metrics, final=final)
        if error is None:
            return
        m = self.metrics
        m.threshold_crossed = str(error)
        self._emit(
            EventKind.THRESHOLD_CROSSED,
            seq=seq,
            error=str(error),
            attrs={
                "threshold": error.threshold,
                "limit": error.limit,
                "value": error.value,
                "dead_lettered": m.dead_lettered,
                "inflow": m.inflow,
                "dead_lettered_by": dict(m.dead_lettered_by),
                "dlq": self.p.dlq.describe(),
                "dry_run": self.dry,
            },
        )
        raise error
