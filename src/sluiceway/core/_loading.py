"""Loading a batch — and loading it while the next batch is transformed.

:func:`load_batch` is the sink side of one batch: ask an idempotent sink whether it
holds the batch already, else ``load`` with retries, write the rows the sink
refused durably to the DLQ, then ``commit``. It only *returns* what happened
(:class:`LoadOutcome`); counting, events and the state commit stay on the run's
thread.

:class:`LoadAhead` runs :func:`load_batch` on one worker thread so that batch *N*
is written while batch *N + 1* is transformed and validated: the sink's write and
the transforms overlap, as extraction already overlaps with both. Order and
delivery are unchanged — at most one batch is in flight, and batch *N + 1*
commits nothing (not its positions, not its dead letters' checkpoint) before
batch *N* is loaded and committed. A sink that must be called from the run's
thread only says ``load_ahead = False`` on its class.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import structlog

from sluiceway.core.batch import Batch
from sluiceway.core.dlq import DeadLetters, build_envelopes
from sluiceway.core.errors import DataError, FatalError, SluicewayError
from sluiceway.core.retry import RetryExhaustedError, call_with_retry
from sluiceway.core.stages import LoadResult

if TYPE_CHECKING:
    from sluiceway.core.pipeline import Pipeline

__all__ = ["LoadAhead", "LoadOutcome", "Retried", "load_batch"]

_log = structlog.get_logger("sluiceway.pipeline")


@dataclass(frozen=True, slots=True)
class Retried:
    """One transient failure of ``load`` that was retried."""

    attempt: int
    error: str
    error_type: str
    delay: float


@dataclass(slots=True)
class LoadOutcome:
    """What loading one batch did: ``skipped`` (already held), ``loaded`` or ``failed``."""

    status: str
    started: float
    seconds: float = 0.0
    written: int = 0
    attempts: int = 0
    refused: pa.Table | None = None
    rejected: int = 0
    dlq_seconds: float = 0.0
    error: BaseException | None = None
    retries: list[Retried] = field(default_factory=list)


def load_batch(
    pipeline: Pipeline, batch: Batch, run_id: str, dlq_lock: threading.Lock
) -> LoadOutcome:
    """Load ``batch`` (its rows are the ones to write); safe to run off the run's thread.

    The sink commits only after the rows it refused are in the DLQ; otherwise a
    crash between the two would let a rerun skip the batch as loaded while those
    rows never reached the DLQ. Transient errors are retried; spent retries and
    data errors return ``failed`` (the run dead-letters the batch); anything else
    raises.
    """
    p = pipeline
    started, t0 = time.time(), time.perf_counter()
    outcome = LoadOutcome(status="loaded", started=started)
    if p.loader.committed(batch):
        outcome.status = "skipped"
        outcome.seconds = time.perf_counter() - t0
        return outcome
    rows = batch.num_rows

    def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
        outcome.retries.append(Retried(attempt, str(exc), type(exc).__name__, delay))

    def attempt() -> tuple[LoadResult, pa.Table | None, float]:
        outcome.attempts += 1
        result = p.loader.load(batch)
        done = result if result is not None else LoadResult(written=rows)
        refused: pa.Table | None = None
        dlq_seconds = 0.0
        try:
            if done.rejected:
                index = pa.array([r.row_index for r in done.rejected], pa.int64())
                letters = DeadLetters(
                    stage="load",
                    rows=batch.data.take(index),
                    error_type=[r.error_type for r in done.rejected],
                    error_message=[r.message for r in done.rejected],
                    attempt=outcome.attempts,
                )
                refused = build_envelopes(batch, letters, pipeline=p.name, run_id=run_id)
                t_dlq = time.perf_counter()
                with dlq_lock:
                    p.dlq.write(batch.seq, "load", refused)
                dlq_seconds = time.perf_counter() - t_dlq
            p.loader.commit(batch)
        except BaseException:
            p.loader.abort(batch)
            raise
        return done, refused, dlq_seconds

    try:
        (done, refused, dlq_seconds), attempts = call_with_retry(
            attempt, p.retry, on_retry=on_retry
        )
    except RetryExhaustedError as exc:
        outcome.status, outcome.error, outcome.attempts = "failed", exc.last, exc.attempts
    except DataError as exc:
        outcome.status, outcome.error = "failed", exc
    except SluicewayError:
        raise
    except Exception as exc:
        raise FatalError(f"sink {p.loader.name!r} raised an unclassified error: {exc!r}") from exc
    else:
        outcome.written = done.written
        outcome.attempts = attempts
        outcome.refused = refused
        outcome.rejected = len(done.rejected)
        outcome.dlq_seconds = dlq_seconds
    outcome.seconds = time.perf_counter() - t0
    return outcome


@dataclass(slots=True)
class _InFlight:
    future: concurrent.futures.Future[LoadOutcome]
    then: Callable[[LoadOutcome], None]


class LoadAhead:
    """One worker thread loading the batch in flight while the run routes the next one."""

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"sluiceway-load-{name}"
        )
        self._inflight: _InFlight | None = None

    def submit(self, job: Callable[[], LoadOutcome], then: Callable[[LoadOutcome], None]) -> None:
        """Start ``job``; ``then(outcome)`` runs on the caller's thread at the next drain."""
        if self._inflight is not None:
            raise RuntimeError("drain the batch in flight before submitting the next")
        self._inflight = _InFlight(self._pool.submit(job), then)

    def drain(self) -> None:
        """Wait for the batch in flight and finish it (count, commit); raises its error."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.then(inflight.future.result())

    def settle(self, failure: BaseException) -> None:
        """The run is failing: keep the batch in flight if it was loaded, else leave it pending.

        On an ``Exception`` a batch the sink accepted is still committed (work kept);
        on an abort (``KeyboardInterrupt``) nothing more is committed.
        """
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        try:
            outcome = inflight.future.result()
            if isinstance(failure, Exception):
                inflight.then(outcome)
        except BaseException as exc:
            _log.warning(
                "batch_in_flight_not_committed",
                error=str(exc) or type(exc).__name__,
                detail="its intent stays pending; the next run replays it",
            )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
