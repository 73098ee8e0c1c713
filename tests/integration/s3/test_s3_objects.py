"""Bounded concurrent reading of objects: order kept, concurrency bounded, errors in turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sluiceway.connectors.s3._objects import read_concurrently


def test_items_come_in_task_order_with_bounded_concurrency() -> None:
    running, peak = 0, 0
    lock = threading.Lock()

    def task(i: int) -> Callable[[], Iterator[tuple[int, int]]]:
        def run() -> Iterator[tuple[int, int]]:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                for k in range(3):
                    time.sleep(0.002 * ((7 - i) % 4))  # later tasks are faster
                    yield i, k
            finally:
                with lock:
                    running -= 1

        return run

    got = list(read_concurrently([task(i) for i in range(8)], concurrency=3))

    assert got == [(i, k) for i in range(8) for k in range(3)]
    assert 1 < peak <= 3


def test_an_error_is_raised_when_its_task_comes_up() -> None:
    def ok() -> Iterator[str]:
        yield "a"

    def broken() -> Iterator[str]:
        yield "b"
        raise OSError("disk on fire")

    seen = read_concurrently([ok, broken, ok], concurrency=2)
    assert [next(seen), next(seen)] == ["a", "b"]
    with pytest.raises(OSError, match="disk on fire"):
        next(seen)


def test_stop_ends_the_readers() -> None:
    stop = threading.Event()

    def endless() -> Iterator[int]:
        n = 0
        while True:
            n += 1
            yield n

    seen = []
    for item in read_concurrently([endless, endless], concurrency=2, stop=stop):
        seen.append(item)
        if len(seen) == 5:
            stop.set()
    assert seen[:5] == [1, 2, 3, 4, 5] and len(seen) <= 7
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name.startswith("sluiceway-object")]
