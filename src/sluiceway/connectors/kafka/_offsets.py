"""The offset book: which offsets are handed out, loaded and committed.

Two threads share a Kafka source. The consumer lives in the prefetch thread (it
polls, and rebalance callbacks run inside its polls); the runner's thread calls
``acknowledge`` once a batch is loaded and its state committed. librdkafka's
consumer is thread-safe for ``commit``, with one trap measured against
librdkafka 2.16: a commit issued from another thread *while a rebalance callback
runs* blocks until long after the callback returns and stalls the group's
rejoin. So every client call is made under one lock (the client lock, held by the
consumer thread around each poll, and so around every callback), and this book
records what each side needs to know without touching the client:

- the assignment generation of each partition (bumped on every assign), so a
  batch read before a partition was revoked is recognised as stale;
- the batches handed out and not yet loaded, so a revoke can wait for them;
- the highest end offset loaded per partition (``acked``) and the highest known
  committed, so whoever holds the client lock next commits what is pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

__all__ = ["BatchKey", "OffsetBook", "TopicPartitionKey"]

TopicPartitionKey = tuple[str, int]
BatchKey = tuple[tuple[str, int, int], ...]


class OffsetBook:
    """Thread-safe bookkeeping of one consumer's offsets (no client calls in here)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._counter = 0
        self._generation: dict[TopicPartitionKey, int] = {}
        self._handed: dict[BatchKey, dict[TopicPartitionKey, int]] = {}
        self._acked: dict[TopicPartitionKey, int] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._rebalancing = False

    # -- assignment -------------------------------------------------------------------

    def assigned(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Partitions now owned by this consumer (a new generation for each)."""
        with self._cond:
            for tp in partitions:
                self._counter += 1
                self._generation[tp] = self._counter

    def revoked(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Partitions given up: batches read from them before now are stale."""
        with self._cond:
            for tp in partitions:
                self._generation.pop(tp, None)
            self._cond.notify_all()

    def assignment(self) -> set[TopicPartitionKey]:
        with self._cond:
            return set(self._generation)

    def is_assigned(self, tp: TopicPartitionKey) -> bool:
        with self._cond:
            return tp in self._generation

    # -- batches ---------------------------------------------------------------------

    def hand_out(self, key: BatchKey, partitions: Iterable[TopicPartitionKey]) -> None:
        """A batch leaves the consumer thread, read under the current generations."""
        with self._cond:
            self._handed[key] = {tp: self._generation.get(tp, -1) for tp in partitions}

    def is_stale(self, key: BatchKey) -> bool:
        """True if a partition of the batch was revoked (or reassigned) since it was read."""
        with self._cond:
            generations = self._handed.get(key)
            if generations is None:
                return False
            return any(self._generation.get(tp) != gen for tp, gen in generations.items())

    def loaded(self, key: BatchKey, ends: Mapping[TopicPartitionKey, int]) -> list[str]:
        """The batch is loaded: record its end offsets; return the partitions skipped as stale.

        A batch that was not handed out by this consumer (a replayed intent) is
        recorded for every partition: its offsets become a floor for the next assign.
        """
        stale: list[str] = []
        with self._cond:
            generations = self._handed.pop(key, None)
            for tp, end in ends.items():
                if generations is not None and self._generation.get(tp) != generations.get(tp):
                    stale.append(f"{tp[0]}/{tp[1]}")
                    continue
                if end > self._acked.get(tp, -1):
                    self._acked[tp] = end
            self._cond.notify_all()
        return stale

    def floor(self, tp: TopicPartitionKey) -> int | None:
        """The highest end offset loaded for a partition (None if none)."""
        with self._cond:
            return self._acked.get(tp)

    # -- commits ---------------------------------------------------------------------

    def pending(self) -> dict[TopicPartitionKey, int]:
        """Loaded offsets of owned partitions that are not known to be committed."""
        with self._cond:
            return {
                tp: end
                for tp, end in self._acked.items()
                if tp in self._generation and end > self._committed.get(tp, -1)
            }

    def pending_for(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        with self._cond:
            return {
                tp: self._acked[tp]
                for tp in partitions
                if tp in self._acked and self._acked[tp] > self._committed.get(tp, -1)
            }

    def committed(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """The broker acknowledged these committed offsets."""
        with self._cond:
            for tp, end in offsets.items():
                if end > self._committed.get(tp, -1):
                    self._committed[tp] = end

    def committed_offset(self, tp: TopicPartitionKey) -> int | None:
        with self._cond:
            return self._committed.get(tp)

    # -- rebalances ------------------------------------------------------------------

    @property
    def rebalancing(self) -> bool:
        with self._cond:
            return self._rebalancing

    def begin_rebalance(
        self, partitions: Iterable[TopicPartitionKey], timeout: float, stop: threading.Event
    ) -> bool:
        """Wait until no batch read from ``partitions`` is still being loaded.

        Returns False when the wait ended by ``timeout`` or ``stop`` with batches
        still out (those become stale: their offsets are not committed).
        """
        revoked = set(partitions)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._rebalancing = True
            while True:
                waiting = any(
                    tp in revoked and self._generation.get(tp) == gen
                    for generations in self._handed.values()
                    for tp, gen in generations.items()
                )
                if not waiting:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self._cond.wait(min(left, 0.1))

    def end_rebalance(self) -> None:
        with self._cond:
            self._rebalancing = False
            self._cond.notify_all()

    def forget_handed(self) -> None:
        """The run ends: batches still out will never be loaded by this consumer."""
        with self._cond:
            self._handed.clear()
            self._cond.notify_all()
