"""Crash points: places where a test can make the process die at once.

``SLUICEWAY_CRASH_AT=<point>:<n>`` kills the process with SIGKILL the n-th time
(1-based) execution reaches ``crash_point(<point>)``. Nothing is flushed, no
``finally`` runs: exactly what a power cut or an OOM kill does. Unset, a crash
point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["CRASH_POINTS", "crash_point"]

#: The points the core and the built-in connectors pass through.
CRASH_POINTS = (
    "after_extract",
    "after_transform",
    "after_dlq_write",
    "mid_load",
    "after_sink_commit",
    "mid_state_write",
)

_lock = threading.Lock()
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("SLUICEWAY_CRASH_AT")
    if not spec:
        return None
    point, _, count = spec.partition(":")
    return point, int(count or "1")


def crash_point(name: str) -> None:
    """Die here if ``SLUICEWAY_CRASH_AT`` names this point and its count is reached."""
    target = _target()
    if target is None or target[0] != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] < target[1]:
            return
    sys.stderr.write(f"sluiceway: crash point {name}:{target[1]} reached, killing process\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
