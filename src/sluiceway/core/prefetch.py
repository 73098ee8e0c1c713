"""Extraction ahead of processing, through a bounded queue.

A thread pulls batches from the extractor while the caller processes the previous
ones; the queue holds at most ``depth`` batches, so memory stays bounded by batch
size, not data size (backpressure: a full queue blocks the extractor).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sluiceway.core.batch import Batch, PartitionSpan
from sluiceway.core.frames import from_frame
from sluiceway.core.stages import BaseExtractor, SourceContext

__all__ = ["Extracted", "Prefetcher"]


@dataclass(slots=True)
class Extracted:
    """A batch as the extractor produced it, with the wall time it started and took."""

    batch: Batch
    seconds: float
    started: float


@dataclass(slots=True)
class _Failed:
    error: BaseException


_DONE = object()


class Prefetcher:
    """Iterates an extractor's batches from a background thread, ``depth`` at most in flight."""

    def __init__(
        self,
        extractor: BaseExtractor[Any],
        context: SourceContext,
        depth: int,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.extractor = extractor
        self.context = context
        self._on_idle = on_idle
        self._items: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(
            target=self._produce, name=f"sluiceway-extract-{context.pipeline}", daemon=True
        )

    def __iter__(self) -> Iterator[Extracted]:
        self._thread.start()
        while True:
            try:
                item = self._items.get(timeout=0.2)
            except queue.Empty:
                # Nothing extracted yet: finish work in flight (e.g. commit a loaded
                # batch) so a slow or idle source never holds a commit back.
                if self._on_idle is not None:
                    self._on_idle()
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, Extracted)
            yield item

    def close(self) -> None:
        """Stop the extractor thread and wait for it (it may be blocked on a full queue)."""
        self.context.stop.set()
        while self._thread.is_alive():
            try:
                self._items.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)

    def _put(self, item: object) -> bool:
        while not self.context.stop.is_set():
            try:
                self._items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        extractor = self.extractor
        committed = self.context.positions.get(extractor.name)
        offset = committed if isinstance(committed, int) and not isinstance(committed, bool) else 0
        try:
            iterator = iter(extractor.extract())
            while not self.context.stop.is_set():
                started, t0 = time.time(), time.perf_counter()
                try:
                    raw = next(iterator)
                except StopIteration:
                    break
                batch = as_batch(raw, extractor.name, offset)
                if batch.num_rows == 0 and batch.num_rejected == 0 and not batch.positions:
                    continue
                span = batch.positions.get(extractor.name)
                if span is not None and isinstance(span.end, int):
                    offset = span.end
                if not self._put(Extracted(batch, time.perf_counter() - t0, started)):
                    return
        except BaseException as exc:
            self._put(_Failed(exc))
            return
        self._put(_DONE)


def as_batch(raw: object, partition: str, offset: int) -> Batch:
    """Wrap what a simple extractor yielded (Arrow or records) with row-count positions."""
    if isinstance(raw, Batch):
        return raw
    table = from_frame(raw)
    n = table.num_rows
    return Batch.from_source(table, {partition: PartitionSpan(offset, offset + n, n)})
