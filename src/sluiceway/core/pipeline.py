"""The pipeline loop: extract → transform → validate → load → commit, per batch.

One thread extracts ahead into a bounded queue (memory is batch size x queue
depth); the calling thread takes each batch through the stages in order. For
each batch the loop

1. records an intent (seq, positions, upper bound) in the state store,
2. runs the transforms, dead-lettering failing rows (bisecting row-wise ones),
3. runs the validators, dead-lettering rows of failing ``dlq`` rules,
4. loads the rest, retrying transient errors; spent retries dead-letter the batch,
5. commits the batch's positions and clears the intent — only after the sink
   acknowledged and every dead letter is durable.

A rerun first replays pending intents exactly, so an idempotent sink sees the same
batch again and skips it. At the end the books must balance (see
:class:`~sluiceway.core.metrics.PipelineMetrics`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog

from sluiceway.core.batch import Batch, drop_hidden
from sluiceway.core.crash import crash_point
from sluiceway.core.dlq import (
    DeadLetterQueue,
    DeadLetters,
    LocalParquetDLQ,
    build_envelopes,
    build_reject_envelopes,
)
from sluiceway.core.errors import (
    AccountingError,
    DataError,
    FatalError,
    SinkError,
    SluicewayError,
)
from sluiceway.core.events import EventBus, EventKind, Hook, StageEvent
from sluiceway.core.frames import to_frame
from sluiceway.core.lineage import run_transform
from sluiceway.core.metrics import PipelineMetrics, RuleStats
from sluiceway.core.prefetch import Prefetcher
from sluiceway.core.report import RuleResult
from sluiceway.core.retry import RetryExhaustedError, RetryPolicy, call_with_retry
from sluiceway.core.routing import route_report
from sluiceway.core.stages import (
    BaseExtractor,
    BaseLoader,
    BaseTransformer,
    BaseValidator,
    LoadResult,
    SinkContext,
    SourceContext,
)
from sluiceway.core.state import Intent, LocalStateStore, PipelineState, StateStore

__all__ = ["Pipeline", "RunFailedError", "new_run_id"]

_log = structlog.get_logger("sluiceway.pipeline")


class RunFailedError(SluicewayError):
    """A run stopped on a fatal error; ``metrics`` holds what it did until then."""

    def __init__(self, cause: BaseException, metrics: PipelineMetrics) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.metrics = metrics


def new_run_id() -> str:
    """A time-ordered run id: UTC timestamp plus random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class Pipeline:
    """The seed's ``Pipeline``: name, extractor, transformers, validators, loader, ``run()``."""

    def __init__(
        self,
        name: str,
        extractor: BaseExtractor[Any],
        transformers: Sequence[BaseTransformer[Any, Any]] = (),
        validators: Sequence[BaseValidator[Any]] = (),
        loader: BaseLoader[Any] | None = None,
        *,
        dlq: DeadLetterQueue | None = None,
        state: StateStore | None = None,
        retry: RetryPolicy | None = None,
        prefetch: int = 2,
        hooks: Sequence[Hook] = (),
        limit: int | None = None,
        bisect_budget: int = 4096,
        home: str | os.PathLike[str] = ".sluiceway",
    ) -> None:
        if loader is None:
            raise ValueError("a pipeline needs a loader")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.name = name
        self.extractor = extractor
        self.transformers = list(transformers)
        self.validators = list(validators)
        self.loader = loader
        self.dlq: DeadLetterQueue = dlq or LocalParquetDLQ(Path(home) / "dlq" / name)
        self.state: StateStore = state or LocalStateStore(Path(home) / "state", name)
        self.retry = retry or RetryPolicy()
        self.prefetch = prefetch
        self.events = EventBus(list(hooks))
        self.limit = limit
        self.bisect_budget = bisect_budget
        self._stop = threading.Event()

    # -- public -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in flight, commit it, and end the run (e.g. on SIGTERM)."""
        self._stop.set()

    def run(self, run_id: str | None = None) -> PipelineMetrics:
        """Run until the source is exhausted or stopped.

        Raises :class:`RunFailedError` (holding the metrics so far) on a fatal error.
        """
        run = _Run(self, run_id or new_run_id())
        return run.execute()


class _Run:
    """One execution of a pipeline; holds the run's mutable state."""

    def __init__(self, pipeline: Pipeline, run_id: str) -> None:
        self.p = pipeline
        self.run_id = run_id
        self.metrics = PipelineMetrics(pipeline=pipeline.name, run_id=run_id)
        self.state = PipelineState(pipeline=pipeline.name)
        self.version = 0
        self._derived: Iterator[int] = itertools.count()
        self._log = _log.bind(pipeline=pipeline.name, run_id=run_id)

    # -- events -------------------------------------------------------------------

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        self.p.events.emit(
            StageEvent(kind=kind, pipeline=self.p.name, run_id=self.run_id, **fields)
        )

    # -- lifecycle ----------------------------------------------------------------

    def execute(self) -> PipelineMetrics:
        m = self.metrics
        m.started_at = time.time()
        self._emit(
            EventKind.RUN_STARTED,
            attrs={"source": self.p.extractor.name, "sink": self.p.loader.name},
        )
        try:
            with self.p.state.lock(self.run_id):
                self._execute_locked()
        except BaseException as exc:
            m.status = "failed"
            m.error = str(exc) or type(exc).__name__
            m.error_type = type(exc).__name__
            m.finished_at = time.time()
            self._emit(
                EventKind.RUN_FAILED,
                seconds=m.duration,
                error=m.error,
                attrs={"error_type": m.error_type, "metrics": m},
            )
            if isinstance(exc, Exception):
                raise RunFailedError(exc, m) from exc
            raise
        m.status = "succeeded"
        m.finished_at = time.time()
        self._emit(EventKind.RUN_FINISHED, seconds=m.duration, attrs={"metrics": m})
        return m

    def _execute_locked(self) -> None:
        p = self.p
        self.state, self.version = p.state.read()
        context = SourceContext(
            pipeline=p.name,
            run_id=self.run_id,
            positions=dict(self.state.positions),
            stop=threading.Event(),
            limit=p.limit,
        )
        opened: list[Any] = []
        try:
            p.extractor.open(context)
            opened.append(p.extractor)
            stages: list[BaseTransformer[Any, Any] | BaseValidator[Any]] = [
                *p.transformers,
                *p.validators,
            ]
            for stage in stages:
                stage.open()
                opened.append(stage)
            sink_context = SinkContext(pipeline=p.name, run_id=self.run_id)
            try:
                call_with_retry(lambda: p.loader.open(sink_context), p.retry)
            except RetryExhaustedError as exc:
                raise SinkError(
                    f"sink {p.loader.name!r} could not be opened: {exc.last}"
                ) from exc.last
            opened.append(p.loader)

            self._replay_intents()
            context.positions = dict(self.state.positions)
            self._consume(context)

            if not self.metrics.balanced:
                raise AccountingError(
                    f"rows unaccounted for in pipeline {p.name!r}: "
                    + self.metrics.balance_message()
                )
            p.loader.finish()
            self.state.last_run = {
                "run_id": self.run_id,
                "finished_at": time.time(),
                "read": self.metrics.read,
                "written": self.metrics.written,
                "dead_lettered": self.metrics.dead_lettered,
            }
            self._commit_state()
        finally:
            context.stop.set()
            for stage in reversed(opened):
                try:
                    stage.close()
                except Exception as exc:
                    self._log.warning("stage_close_failed", stage=repr(stage), error=repr(exc))

    # -- extraction ---------------------------------------------------------------

    def _replay_intents(self) -> None:
        for intent in list(self.state.intents):
            batch = self.p.extractor.replay(intent)
            if batch is None:
                self._log.warning(
                    "intent_not_replayable",
                    seq=intent.seq,
                    detail="source re-reads from committed positions instead",
                )
                self.state.intents = [i for i in self.state.intents if i.seq != intent.seq]
                self._commit_state()
                continue
            batch = batch.sequenced(intent.seq)
            self.metrics.replayed_batches += 1
            self._emit(EventKind.INTENT_REPLAYED, seq=intent.seq, rows_out=batch.num_rows)
            self._process(batch, extract_seconds=0.0, started=time.time(), replay=True)

    def _consume(self, context: SourceContext) -> None:
        prefetcher = Prefetcher(self.p.extractor, context, self.p.prefetch)
        try:
            for item in prefetcher:
                self._process(
                    item.batch.sequenced(self.state.next_seq),
                    extract_seconds=item.seconds,
                    started=item.started,
                    replay=False,
                )
                if self.p._stop.is_set() or (
                    self.p.limit is not None and self.metrics.read >= self.p.limit
                ):
                    break
        finally:
            prefetcher.close()

    # -- one batch ----------------------------------------------------------------

    def _process(
        self, batch: Batch, *, extract_seconds: float, started: float, replay: bool
    ) -> None:
        p, m = self.p, self.metrics
        n = batch.num_rows + batch.num_rejected
        m.read += n
        m.batches += 1
        p.extractor.records_read += n
        m.add_stage_time("extract", extract_seconds, n)
        self._derived = itertools.count(batch.extracted_rows)
        log = self._log.bind(seq=batch.seq)
        self._emit(
            EventKind.BATCH_EXTRACTED,
            seq=batch.seq,
            stage="extract",
            rows_out=n,
            started=started,
            seconds=extract_seconds,
            attrs={"replay": replay, "partitions": len(batch.positions)},
        )
        crash_point("after_extract")

        if not replay:
            self.state.intents.append(
                Intent(batch.seq, dict(batch.positions), batch.upper_bound, self.run_id)
            )
            self.state.next_seq = batch.seq + 1
            self._commit_state()

        if batch.rejected is not None:
            self._dead_letter_rejected(batch)
        data = batch.data
        for index, transformer in enumerate(p.transformers):
            if data.num_rows == 0:
                break
            data = self._transform(batch, index, transformer, data)
            crash_point("after_transform")
        for index, validator in enumerate(p.validators):
            if data.num_rows == 0:
                break
            data = self._validate(batch, index, validator, data)

        current = batch.with_data(data)
        if data.num_rows:
            if p.loader.committed(current):
                m.skipped_committed += data.num_rows
                log.info("batch_already_committed", rows=data.num_rows)
                self._emit(
                    EventKind.BATCH_SKIPPED, seq=batch.seq, stage="load", rows_in=data.num_rows
                )
            else:
                self._load(current)
        crash_point("after_sink_commit")

        for partition, span in batch.positions.items():
            self.state.positions[partition] = span.end
        self.state.intents = [i for i in self.state.intents if i.seq != batch.seq]
        self.state.next_seq = max(self.state.next_seq, batch.seq + 1)
        self._commit_state()
        p.extractor.acknowledge(batch)
        self._emit(EventKind.BATCH_COMMITTED, seq=batch.seq, stage="state", rows_in=n)

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

    def _load(self, batch: Batch) -> None:
        """Load with retries: ``load`` → refused rows durably to the DLQ → ``commit``.

        The sink commits only after the rows it refused are in the DLQ; otherwise a
        crash between the two would let a rerun skip the batch as loaded while those
        rows never reached the DLQ.
        """
        p, m = self.p, self.metrics
        started, t0 = time.time(), time.perf_counter()
        rows = batch.num_rows
        attempt_no = 0

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            m.retries += 1
            self._emit(
                EventKind.LOAD_RETRIED,
                seq=batch.seq,
                stage="load",
                rows_in=rows,
                error=str(exc),
                attrs={"attempt": attempt, "delay": delay, "error_type": type(exc).__name__},
            )

        def attempt() -> tuple[LoadResult, pa.Table | None, float]:
            nonlocal attempt_no
            attempt_no += 1
            result = p.loader.load(batch)
            outcome = result if result is not None else LoadResult(written=rows)
            refused: pa.Table | None = None
            dlq_seconds = 0.0
            try:
                if outcome.rejected:
                    letters = DeadLetters(
                        stage="load",
                        rows=batch.data.take(
                            pa.array([r.row_index for r in outcome.rejected], pa.int64())
                        ),
                        error_type=[r.error_type for r in outcome.rejected],
                        error_message=[r.message for r in outcome.rejected],
                        attempt=attempt_no,
                    )
                    refused = build_envelopes(batch, letters, pipeline=p.name, run_id=self.run_id)
                    t_dlq = time.perf_counter()
                    p.dlq.write(batch.seq, "load", refused)
                    dlq_seconds = time.perf_counter() - t_dlq
                p.loader.commit(batch)
            except BaseException:
                p.loader.abort(batch)
                raise
            return outcome, refused, dlq_seconds

        try:
            (outcome, refused, dlq_seconds), attempts = call_with_retry(
                attempt, p.retry, on_retry=on_retry
            )
        except RetryExhaustedError as exc:
            self._load_failed(batch, exc.last, exc.attempts, started, t0)
            return
        except DataError as exc:
            self._load_failed(batch, exc, attempt_no, started, t0)
            return
        except SluicewayError:
            raise
        except Exception as exc:
            raise FatalError(
                f"sink {p.loader.name!r} raised an unclassified error: {exc!r}"
            ) from exc

        m.written += outcome.written
        p.loader.records_written += outcome.written
        seconds = time.perf_counter() - t0
        m.add_stage_time("load", seconds - dlq_seconds, rows)
        self._emit(
            EventKind.BATCH_LOADED,
            seq=batch.seq,
            stage="load",
            rows_in=rows,
            rows_out=outcome.written,
            started=started,
            seconds=seconds,
            attrs={"attempts": attempts, "rejected": len(outcome.rejected)},
        )
        if refused is not None:
            self._account_dead_letters(batch, "load", refused, started, dlq_seconds)

    def _load_failed(
        self, batch: Batch, error: BaseException, attempts: int, started: float, t0: float
    ) -> None:
        seconds = time.perf_counter() - t0
        self.metrics.add_stage_time("load", seconds, batch.num_rows)
        self._emit(
            EventKind.BATCH_LOADED,
            seq=batch.seq,
            stage="load",
            rows_in=batch.num_rows,
            rows_out=0,
            started=started,
            seconds=seconds,
            error=str(error),
            attrs={"attempts": attempts, "error_type": type(error).__name__},
        )
        self._dead_letter(
            batch,
            DeadLetters(
                stage="load",
                rows=batch.data,
                error_type=type(error).__name__,
                error_message=str(error) or type(error).__name__,
                attempt=attempts,
            ),
        )

    # -- dead letters and state ---------------------------------------------------

    def _dead_letter_rejected(self, batch: Batch) -> None:
        entries = build_reject_envelopes(batch, pipeline=self.p.name, run_id=self.run_id)
        self._write_dead_letters(batch, "extract", entries)

    def _dead_letter(self, batch: Batch, letters: DeadLetters) -> None:
        entries = build_envelopes(batch, letters, pipeline=self.p.name, run_id=self.run_id)
        self._write_dead_letters(batch, letters.stage, entries)

    def _write_dead_letters(self, batch: Batch, stage: str, entries: pa.Table) -> None:
        started, t0 = time.time(), time.perf_counter()
        self.p.dlq.write(batch.seq, stage, entries)
        self._account_dead_letters(batch, stage, entries, started, time.perf_counter() - t0)

    def _account_dead_letters(
        self, batch: Batch, stage: str, entries: pa.Table, started: float, seconds: float
    ) -> None:
        """Count rows that are durably in the DLQ, and tell subscribers."""
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
            },
        )

    def _commit_state(self) -> None:
        t0 = time.perf_counter()
        self.version = self.p.state.commit(self.state, self.version)
        self.metrics.add_stage_time("state", time.perf_counter() - t0)
