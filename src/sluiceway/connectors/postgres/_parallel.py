"""Read several partitions at once, with bounded memory.

Each partition is read by its own thread (the ADBC driver decodes in C++ with the
GIL released, so threads decode in parallel); their batches meet in one bounded
queue. A thread whose batch does not fit waits, so at most ``depth`` batches wait
in the queue plus one being built per thread: memory is bounded by the number of
partitions and the batch size, never by the table.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["interleave"]

P = TypeVar("P")
T = TypeVar("T")

_POLL = 0.1


@dataclass(slots=True)
class _Failed:
    error: BaseException


@dataclass(slots=True)
class _Finished:
    pass


class _Worker(Generic[P, T]):
    def __init__(
        self,
        part: P,
        read: Callable[[P], Iterator[T]],
        out: queue.Queue[object],
        stop: threading.Event,
        name: str,
    ) -> None:
        self.part = part
        self.read = read
        self.out = out
        self.stop = stop
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            iterator = self.read(self.part)
            try:
                for item in iterator:
                    if not self.put(item):
                        return
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            self.put(_Failed(exc))
            return
        self.put(_Finished())


def interleave(
    parts: Sequence[P],
    read: Callable[[P], Iterator[T]],
    *,
    stop: threading.Event,
    depth: int,
    name: str = "sluiceway-postgres",
) -> Iterator[T]:
    """Items of ``read(part)`` for every part, read concurrently, in arrival order.

    The first error of any reader stops the others and is raised here. Closing the
    iterator early (or ``stop``) stops every reader.
    """
    out: queue.Queue[object] = queue.Queue(maxsize=max(depth, 1))
    halt = threading.Event()
    workers = [
        _Worker(part, read, out, halt, f"{name}-{index}") for index, part in enumerate(parts)
    ]
    for worker in workers:
        worker.thread.start()
    running = len(workers)
    try:
        while running:
            if stop.is_set():
                return
            try:
                item = out.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, _Finished):
                running -= 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield item  # type: ignore[misc]
    finally:
        halt.set()
        for worker in workers:
            while worker.thread.is_alive():
                try:
                    out.get_nowait()
                except queue.Empty:
                    worker.thread.join(timeout=_POLL)
