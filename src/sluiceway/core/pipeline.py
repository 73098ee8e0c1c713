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
:class:`~sluiceway.core.metrics.PipelineMetrics`) and the run's
:class:`~sluiceway.core.thresholds.Thresholds` must hold (they are also checked
after each batch commit).

With ``load_ahead=True`` (what specs do by default) the sink writes batch *N* on
a worker thread while batch *N + 1* is transformed and validated (see
:mod:`sluiceway.core._loading`); batches still load and commit strictly in order,
one in flight at most, so a crash may leave two intents pending instead of one.

``Pipeline(dry_run=True)`` extracts, transforms and validates but writes nothing:
no intent, no state commit, no DLQ file; the sink is not even opened. Its metrics
say what would have been written and dead-lettered.
:meth:`Pipeline.replay_dead_letters` puts dead-lettered rows back at the stage
where they failed (see :mod:`sluiceway.core.replay`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from sluiceway.core._loading import LoadAhead
from sluiceway.core._steps import StageSteps
from sluiceway.core.batch import Batch
from sluiceway.core.crash import crash_point
from sluiceway.core.dlq import DeadLetterQueue, DeadLetterReader, LocalParquetDLQ
from sluiceway.core.errors import AccountingError, ConfigError, SinkError, SluicewayError
from sluiceway.core.events import EventBus, EventKind, Hook
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.core.prefetch import Prefetcher
from sluiceway.core.replay import (
    PendingReplay,
    ReplayGroup,
    ReplayLedger,
    plan_replay,
    select_keys,
)
from sluiceway.core.retry import RetryExhaustedError, RetryPolicy, call_with_retry
from sluiceway.core.stages import (
    BaseExtractor,
    BaseLoader,
    BaseTransformer,
    BaseValidator,
    SinkContext,
    SourceContext,
)
from sluiceway.core.state import Intent, LocalStateStore, StateStore
from sluiceway.core.thresholds import Thresholds

__all__ = ["Pipeline", "RunFailedError", "new_run_id"]


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
        dry_run: bool = False,
        thresholds: Thresholds | None = None,
        load_ahead: bool = False,
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
        self.dry_run = dry_run
        self.thresholds = thresholds or Thresholds()
        self.load_ahead = load_ahead
        self._stop = threading.Event()
        self._drain = threading.Event()

    # -- public -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in flight, commit it, and end the run (e.g. on SIGTERM)."""
        self._stop.set()
        self._drain.set()

    def run(self, run_id: str | None = None) -> PipelineMetrics:
        """Run until the source is exhausted or stopped.

        Raises :class:`RunFailedError` (holding the metrics so far) on a fatal error.
        """
        run = _Run(self, run_id or new_run_id())
        return run.execute()

    def replay_dead_letters(
        self,
        entries: pa.Table | None = None,
        *,
        run_id: str | None = None,
        include_refailed: bool = False,
    ) -> PipelineMetrics:
        """Put dead-lettered rows back into the pipeline, each at the stage where it failed.

        ``entries`` are DLQ envelopes to replay (e.g. a filtered
        :func:`~sluiceway.core.dlq.read_dead_letters`); None replays every entry of
        this pipeline's DLQ. Entries already replayed are skipped, as are ones that
        carry no row (extract-stage rejects); ``metrics.replayed`` counts the rows put
        back and ``metrics.replay_skipped`` the entries left out, by reason. Rows that
        failed again in an earlier replay are put back only with ``include_refailed``.
        The source is not read. Raises :class:`RunFailedError` like :meth:`run`.
        """
        run = _Run(self, run_id or new_run_id(), replaying=True, entries=entries)
        run.include_refailed = include_refailed
        return run.execute()


class _Run(StageSteps):
    """One execution of a pipeline (or of a DLQ replay); holds the run's mutable state."""

    def __init__(
        self,
        pipeline: Pipeline,
        run_id: str,
        *,
        replaying: bool = False,
        entries: pa.Table | None = None,
    ) -> None:
        super().__init__(pipeline, run_id)
        self.replaying = replaying
        self.include_refailed = False
        self._replay_entries = entries

    # -- lifecycle ----------------------------------------------------------------

    def execute(self) -> PipelineMetrics:
        m = self.metrics
        m.started_at = time.time()
        self._emit(
            EventKind.RUN_STARTED,
            attrs={
                "source": self.p.extractor.name,
                "sink": self.p.loader.name,
                "dry_run": self.dry,
                "mode": "dlq_replay" if self.replaying else "run",
            },
        )
        try:
            lock = contextlib.nullcontext() if self.dry else self.p.state.lock(self.run_id)
            with lock:
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
                attrs={"error_type": m.error_type, "metrics": m, "dry_run": self.dry},
            )
            if isinstance(exc, Exception):
                raise RunFailedError(exc, m) from exc
            raise
        m.status = "succeeded"
        m.finished_at = time.time()
        self._emit(EventKind.RUN_FINISHED, seconds=m.duration, attrs={"metrics": m})
        return m

    def _open(self, context: SourceContext, opened: list[Any]) -> None:
        """Open the stages the run needs: no extractor for a replay, no sink in a dry run."""
        p = self.p
        if not self.replaying:
            p.extractor.open(context)
            opened.append(p.extractor)
        stages: list[BaseTransformer[Any, Any] | BaseValidator[Any]] = [
            *p.transformers,
            *p.validators,
        ]
        for stage in stages:
            stage.open()
            opened.append(stage)
        if self.dry:
            return
        sink_context = SinkContext(pipeline=p.name, run_id=self.run_id)
        try:
            call_with_retry(lambda: p.loader.open(sink_context), p.retry)
        except RetryExhaustedError as exc:
            raise SinkError(f"sink {p.loader.name!r} could not be opened: {exc.last}") from exc.last
        opened.append(p.loader)

    def _execute_locked(self) -> None:
        p = self.p
        self.state, self.version = p.state.read()
        context = SourceContext(
            pipeline=p.name,
            run_id=self.run_id,
            positions=dict(self.state.positions),
            stop=threading.Event(),
            limit=p.limit,
            drain=p._drain,
        )
        opened: list[Any] = []
        try:
            if self.replaying:
                self._check_replayable()
            self._open(context, opened)
            if not self.dry and p.load_ahead and getattr(p.loader, "load_ahead", True):
                self._ahead = LoadAhead(p.name)
            try:
                if self.replaying:
                    self._replay_dead_letters()
                else:
                    self._replay_intents()
                    if self._ahead is not None:
                        self._ahead.drain()  # the replayed batches' positions are committed
                    context.positions = dict(self.state.positions)
                    self._consume(context)
                if self._ahead is not None:
                    self._ahead.drain()
            except BaseException as exc:
                if self._ahead is not None:
                    self._ahead.settle(exc)
                raise

            if not self.metrics.balanced:
                raise AccountingError(
                    f"rows unaccounted for in pipeline {p.name!r}: "
                    + self.metrics.balance_message()
                )
            self._check_thresholds(final=True)
            if self.dry:
                return
            p.loader.finish()
            if not self.replaying:
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
            if self._ahead is not None:
                self._ahead.close()
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
        ahead = self._ahead
        prefetcher = Prefetcher(
            self.p.extractor,
            context,
            self.p.prefetch,
            on_idle=ahead.drain if ahead is not None else None,
        )
        try:
            for item in prefetcher:
                if self.p.extractor.is_stale(item.batch):
                    self._log.warning(
                        "batch_dropped_stale",
                        partitions=list(item.batch.positions),
                        detail="the source gave these partitions away; their new owner reads them",
                    )
                    continue
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

    def _extract_attrs(self, batch: Batch, replay: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {"replay": replay, "partitions": len(batch.positions)}
        gauges = dict(self.p.extractor.metrics())
        if gauges:
            attrs["source_metrics"] = gauges
            if "consumer_lag" in gauges:
                attrs["consumer_lag"] = gauges["consumer_lag"]
        return attrs

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
        self._emit(
            EventKind.BATCH_EXTRACTED,
            seq=batch.seq,
            stage="extract",
            rows_out=n,
            started=started,
            seconds=extract_seconds,
            attrs=self._extract_attrs(batch, replay),
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

        def commit() -> None:
            crash_point("after_sink_commit")
            for partition, span in batch.positions.items():
                self.state.positions[partition] = span.end
            self.state.intents = [i for i in self.state.intents if i.seq != batch.seq]
            self.state.next_seq = max(self.state.next_seq, batch.seq + 1)
            self._commit_state()
            if not self.dry:
                p.extractor.acknowledge(batch)
            self._emit(EventKind.BATCH_COMMITTED, seq=batch.seq, stage="state", rows_in=n)
            self._check_thresholds(final=False, seq=batch.seq)

        self._deliver(batch, self._route(batch, batch.data), commit)

    # -- DLQ replay ---------------------------------------------------------------

    def _check_replayable(self) -> None:
        described = self.p.loader.describe()
        if described.get("mode") == "replace":
            raise ConfigError(
                f"cannot replay into sink {self.p.loader.name!r} in replace mode: the run "
                "would replace its contents with only the replayed rows"
            )
        if self._replay_entries is None and not isinstance(self.p.dlq, DeadLetterReader):
            raise ConfigError(f"the DLQ {self.p.dlq.describe()} cannot be read back for a replay")

    def _replay_dead_letters(self) -> None:
        p = self.p
        stored = p.dlq.read() if isinstance(p.dlq, DeadLetterReader) else None
        selected = self._replay_entries if self._replay_entries is not None else stored
        assert selected is not None
        names = ([t.name for t in p.transformers], [v.name for v in p.validators])
        ledger = ReplayLedger.from_state(self.state)
        if not self.dry:
            # A replay batch a crash interrupted is redone first, with its seq and rows.
            for pending in list(ledger.pending):
                source = stored if stored is not None else selected
                redo = plan_replay(
                    select_keys(source, pending.keys),
                    transformers=names[0],
                    validators=names[1],
                    ledger=ledger,
                    redo=True,
                )
                for group in redo.groups:
                    self._replay_group(group, ledger, seq=pending.seq)
                if not redo.groups:  # its entries are gone from the DLQ: nothing to redo
                    ledger.pending = [q for q in ledger.pending if q.seq != pending.seq]
                    ledger.store(self.state)
                    self._commit_state()
        t0 = time.perf_counter()
        plan = plan_replay(
            selected,
            transformers=names[0],
            validators=names[1],
            ledger=ledger,
            include_refailed=self.include_refailed,
        )
        self.metrics.add_stage_time("replay", time.perf_counter() - t0, plan.rows)
        self.metrics.replay_skipped = dict(plan.skipped)
        for problem in plan.problems:
            self._log.warning("dlq_replay_unreadable", detail=problem)
        for group in plan.groups:
            for chunk in group.chunks(p.extractor.batch_size):
                if p._stop.is_set():
                    return
                self._replay_group(chunk, ledger, seq=None)

    def _replay_group(self, group: ReplayGroup, ledger: ReplayLedger, seq: int | None) -> None:
        """One replay batch: recorded as pending, routed from its stage, loaded, marked done."""
        m = self.metrics
        if seq is None:
            seq = self.state.next_seq
            self.state.next_seq = seq + 1
            ledger.pending.append(PendingReplay(seq, list(group.keys)))
            if self.run_id not in ledger.runs:
                ledger.runs.append(self.run_id)
            ledger.store(self.state)
            self._commit_state()
        batch = group.batch(seq)
        n = batch.num_rows
        m.replayed += n
        m.batches += 1
        self._derived = itertools.count(batch.extracted_rows)
        self._emit(
            EventKind.ROWS_REPLAYED,
            seq=seq,
            stage=group.stage,
            rows_out=n,
            attrs={"entries": len(group), "dry_run": self.dry},
        )
        data = self._route(
            batch,
            batch.data,
            transforms_from=group.transforms_from,
            validators_from=group.validators_from,
        )

        def commit() -> None:
            crash_point("after_sink_commit")
            ledger.pending = [q for q in ledger.pending if q.seq != seq]
            ledger.mark(group.keys)
            ledger.store(self.state)
            self.state.next_seq = max(self.state.next_seq, seq + 1)
            self._commit_state()
            self._emit(EventKind.BATCH_COMMITTED, seq=seq, stage="state", rows_in=n)
            self._check_thresholds(final=False, seq=seq)

        self._deliver(batch, data, commit)
