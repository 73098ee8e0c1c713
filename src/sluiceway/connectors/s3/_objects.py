"""Reading several objects at once, handing their batches on in object order.

Each object is read by its own thread into a small queue (``depth`` batches); at
most ``concurrency`` objects are in flight. The consumer takes the first object's
batches until it is done, then the next one's, which its thread has been reading
meanwhile. Memory stays bounded by ``concurrency x (depth + 1)`` batches, and the
order of batches is the order of the objects, as if they were read one by one.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["read_concurrently"]

T = TypeVar("T")

_DONE = object()


@dataclass(slots=True)
class _Failed:
    error: BaseException


class _Lane(Generic[T]):
    """One object's reader thread and the queue it fills."""

    def __init__(
        self,
        task: Callable[[], Iterator[T]],
        depth: int,
        halts: tuple[threading.Event, ...],
        name: str,
    ) -> None:
        self._task = task
        self._halts = halts
        self.items: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def halted(self) -> bool:
        return any(event.is_set() for event in self._halts)

    def _put(self, item: object) -> bool:
        while not self.halted():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._task():
                if not self._put(item):
                    return
        except BaseException as exc:
            self._put(_Failed(exc))
            return
        self._put(_DONE)

    def get(self) -> object:
        while True:
            try:
                return self.items.get(timeout=0.1)
            except queue.Empty:
                if self.halted():
                    return _DONE
                if not self.thread.is_alive() and self.items.empty():  # pragma: no cover
                    return _DONE

    def stop(self) -> None:
        while self.thread.is_alive():
            try:
                self.items.get_nowait()
            except queue.Empty:
                self.thread.join(timeout=0.05)


def read_concurrently(
    tasks: Sequence[Callable[[], Iterator[T]]],
    *,
    concurrency: int,
    depth: int = 1,
    stop: threading.Event | None = None,
    name: str = "sluiceway-object",
) -> Iterator[T]:
    """The items of every task, task after task, with up to ``concurrency`` tasks running.

    An exception in a task is raised here when its turn comes. Setting ``stop``
    (or closing the iterator) stops every reader thread.
    """
    if concurrency < 1 or depth < 1:
        raise ValueError("concurrency and depth must be at least 1")
    halt = threading.Event()
    halts = (halt,) if stop is None else (halt, stop)
    pending = deque(tasks)
    lanes: deque[_Lane[T]] = deque()
    started = 0

    def start_more() -> None:
        nonlocal started
        while pending and len(lanes) < concurrency:
            lane = _Lane(pending.popleft(), depth, halts, f"{name}-{started}")
            started += 1
            lane.thread.start()
            lanes.append(lane)

    try:
        start_more()
        while lanes:
            item = lanes[0].get()
            if item is _DONE:
                lane = lanes.popleft()
                if lane.halted():
                    return
                start_more()
                continue
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        halt.set()
        for lane in lanes:
            lane.stop()
