"""Stage events: the one hook logging, metrics, tracing and progress displays subscribe to.

The runner emits a :class:`StageEvent` when something happens to a batch; it knows
no vendor. A subscriber is any callable taking the event. A subscriber that raises
is reported once through the logger and never breaks the run.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["EventBus", "EventKind", "Hook", "StageEvent"]

_log = structlog.get_logger("sluiceway.events")


class EventKind(enum.StrEnum):
    RUN_STARTED = "run_started"
    INTENT_REPLAYED = "intent_replayed"
    BATCH_EXTRACTED = "batch_extracted"
    BATCH_TRANSFORMED = "batch_transformed"
    BATCH_VALIDATED = "batch_validated"
    VALIDATION_WARNED = "validation_warned"
    ROWS_DEAD_LETTERED = "rows_dead_lettered"
    LOAD_RETRIED = "load_retried"
    BATCH_LOADED = "batch_loaded"
    BATCH_SKIPPED = "batch_skipped"
    BATCH_COMMITTED = "batch_committed"
    RUN_FINISHED = "run_finished"
    RUN_FAILED = "run_failed"
    ROWS_REPLAYED = "rows_replayed"
    """A DLQ replay put rows back at ``stage`` (``rows_out``); attrs ``entries``, ``skipped``."""
    THRESHOLD_CROSSED = "threshold_crossed"
    """A run limit was crossed; attrs ``threshold``, ``limit``, ``value`` (the run then fails)."""


@dataclass(frozen=True, slots=True)
class StageEvent:
    """Something that happened in a run.

    ``stage`` names the stage (``extract``, ``transform.0.<name>``, ``validate.0.<name>``,
    ``load``, ``dlq``, ``state``); ``rows_in``/``rows_out`` are row counts around it;
    ``started``/``seconds`` time it (wall clock), so tracers can build spans after the fact.
    """

    kind: EventKind
    pipeline: str
    run_id: str
    seq: int | None = None
    stage: str | None = None
    rows_in: int = 0
    rows_out: int = 0
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    error: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


Hook = Callable[[StageEvent], None]


class EventBus:
    """Fans events out to subscribers in the order they subscribed."""

    def __init__(self, hooks: list[Hook] | None = None) -> None:
        self._hooks: list[Hook] = list(hooks or [])
        self._broken: set[int] = set()

    def subscribe(self, hook: Hook) -> None:
        self._hooks.append(hook)

    def emit(self, event: StageEvent) -> None:
        for hook in self._hooks:
            try:
                hook(event)
            except Exception as exc:
                if id(hook) not in self._broken:
                    self._broken.add(id(hook))
                    _log.warning("event_hook_failed", hook=repr(hook), error=repr(exc))
