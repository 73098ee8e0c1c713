"""Structured logs: JSON lines for machines, readable lines for people, secrets never.

:func:`configure_logging` sets structlog up once for the process: JSON lines
(``timestamp`` in ISO UTC, ``level``, ``logger``, ``event`` …) when stderr is not a
terminal, a console renderer when it is. Context variables are merged into every
line, so ``run_id`` and ``seq`` bound during a run appear on each line. A redaction
processor masks values under secret-looking keys, ``SecretStr`` values and
credentials embedded in URLs or ``key=value`` strings.

:class:`LogSubscriber` is a pipeline event hook (``Pipeline(hooks=[LogSubscriber()])``)
that turns stage events into log lines named like the event kinds.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from pydantic import SecretBytes, SecretStr
from structlog.contextvars import bind_contextvars, reset_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.observability.tracing import add_trace_context

__all__ = [
    "REDACTED",
    "LogSubscriber",
    "configure_logging",
    "looks_secret",
    "metrics_summary",
    "redact",
    "redact_secrets",
    "resolve_format",
]

REDACTED = "**********"

_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "dsn",
    "authorization",
    "credential",
    "credentials",
    "private_key",
    "access_key",
)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s/]+@"
)
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api_key|apikey)\s*=\s*)(?P<value>[^\s,;&'\"]+)",
    re.IGNORECASE,
)


def looks_secret(key: str) -> bool:
    """True for keys whose values must never be shown (``db_password``, ``api_key``, ``dsn``…)."""
    words = "_" + re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_") + "_"
    return any(f"_{word}_" in words for word in _SECRET_WORDS)


def _redact_text(text: str) -> str:
    if "://" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{REDACTED}@", text)
    if "=" in text:
        text = _KV_SECRET.sub(rf"\g<key>{REDACTED}", text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with secrets masked: under secret-looking keys, ``SecretStr``, URL passwords."""
    if key is not None and looks_secret(key) and value is not None:
        return REDACTED
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor applying :func:`redact` to every key of the event."""
    for key, value in list(event_dict.items()):
        event_dict[key] = redact(value, None if key == "event" else key)
    return event_dict


# -- output -----------------------------------------------------------------------------


class _StreamLogger:
    """Writes rendered lines to a stream looked up at write time (default: ``sys.stderr``).

    Looking the stream up late keeps logs working under test runners that swap
    ``sys.stderr`` and under Rich live displays that proxy it.
    """

    _lock = threading.Lock()

    def __init__(self, name: str | None, stream: TextIO | None) -> None:
        self.name = name
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


@dataclass(frozen=True, slots=True)
class _LoggerFactory:
    stream: TextIO | None

    def __call__(self, *args: Any) -> _StreamLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return _StreamLogger(name, self.stream)


def _add_logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


_FIRST = ("timestamp", "level", "logger", "event")


def _order(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered: EventDict = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    ordered.update(event_dict)
    return ordered


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """``json`` or ``console``: ``auto`` picks console on a terminal, JSON otherwise."""
    if fmt != "auto":
        return fmt
    target = stream or sys.stderr
    try:
        return "console" if target.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(
    level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None
) -> None:
    """Configure structlog for the process; calling it again replaces the configuration.

    ``level`` is a name (``debug`` … ``critical``); ``fmt`` is ``auto``, ``json`` or
    ``console``. Lines go to ``stream`` (default: whatever ``sys.stderr`` is when a
    line is written), keeping stdout free for command output.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    rendering = resolve_format(fmt, stream)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]
    if rendering == "json":
        processors += [
            structlog.processors.format_exc_info,
            _order,
            structlog.processors.JSONRenderer(json.dumps, default=str, ensure_ascii=False),
        ]
    else:
        target = stream or sys.stderr
        colors = bool(getattr(target, "isatty", lambda: False)())
        processors.append(structlog.dev.ConsoleRenderer(colors=colors))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_LoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


# -- pipeline events --------------------------------------------------------------------


def metrics_summary(metrics: PipelineMetrics) -> dict[str, Any]:
    """The counters of a run as flat log fields."""
    return {
        "read": metrics.read,
        "expanded": metrics.expanded,
        "written": metrics.written,
        "dead_lettered": metrics.dead_lettered,
        "filtered": metrics.filtered,
        "skipped_committed": metrics.skipped_committed,
        "warned": metrics.warned,
        "retries": metrics.retries,
        "batches": metrics.batches,
        "replayed_batches": metrics.replayed_batches,
        "replayed": metrics.replayed,
        "dry_run": metrics.dry_run,
        "dead_letter_ratio": round(metrics.dead_letter_ratio, 6),
        "dead_lettered_by": dict(metrics.dead_lettered_by),
        "balanced": metrics.balanced,
        "seconds": round(metrics.duration, 3),
        "rows_per_second": round(metrics.rows_per_second, 1),
    }


@dataclass(slots=True)
class _BatchCounts:
    read: int = 0
    written: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    expanded: int = 0
    skipped: int = 0
    warned: int = 0
    retries: int = 0


class LogSubscriber:
    """A pipeline event hook that logs a run: one line per batch, per dead letter, per retry.

    Lines carry the event kind's name (``batch_committed``, ``rows_dead_lettered``,
    ``load_retried``, ``validation_warned``, ``run_started``/``run_finished``/
    ``run_failed``). ``pipeline`` and ``run_id`` are bound as context variables for
    the run and ``seq`` for each batch, so other log lines of the run carry them too.
    Per-stage detail (extracted, transformed, validated, loaded) is logged at debug.
    """

    def __init__(self, logger_name: str = "sluiceway.run") -> None:
        self._log = structlog.get_logger(logger_name)
        self._batches: dict[int, _BatchCounts] = {}
        self._run_tokens: Mapping[str, Any] = {}
        self._seq_tokens: Mapping[str, Any] = {}

    def __call__(self, event: StageEvent) -> None:
        handler = getattr(self, f"_on_{event.kind.value}", None)
        if handler is not None:
            handler(event)

    def _counts(self, event: StageEvent) -> _BatchCounts:
        seq = -1 if event.seq is None else event.seq
        return self._batches.setdefault(seq, _BatchCounts())

    def _unbind_seq(self) -> None:
        if self._seq_tokens:
            reset_contextvars(**self._seq_tokens)
            self._seq_tokens = {}

    def _end_run(self) -> None:
        self._unbind_seq()
        if self._run_tokens:
            reset_contextvars(**self._run_tokens)
            self._run_tokens = {}
        self._batches.clear()

    # -- handlers (named after EventKind values) --------------------------------------

    def _on_run_started(self, e: StageEvent) -> None:
        self._run_tokens = bind_contextvars(pipeline=e.pipeline, run_id=e.run_id)
        self._log.info(EventKind.RUN_STARTED.value, **dict(e.attrs))

    def _on_intent_replayed(self, e: StageEvent) -> None:
        self._log.info(EventKind.INTENT_REPLAYED.value, seq=e.seq, rows=e.rows_out)

    def _on_rows_replayed(self, e: StageEvent) -> None:
        self._log.info(
            "rows_replayed",
            seq=e.seq,
            stage=e.stage,
            rows=e.rows_out,
            entries=e.attrs.get("entries"),
        )

    def _on_threshold_crossed(self, e: StageEvent) -> None:
        keys = ("threshold", "limit", "value", "dead_lettered", "dead_lettered_by")
        self._log.error(
            "threshold_crossed", seq=e.seq, error=e.error, **{k: e.attrs.get(k) for k in keys}
        )

    def _on_batch_extracted(self, e: StageEvent) -> None:
        self._unbind_seq()
        self._seq_tokens = bind_contextvars(seq=e.seq)
        self._counts(e).read += e.rows_out
        self._log.debug(
            EventKind.BATCH_EXTRACTED.value,
            rows=e.rows_out,
            seconds=round(e.seconds, 4),
            replay=bool(e.attrs.get("replay")),
        )

    def _on_batch_transformed(self, e: StageEvent) -> None:
        counts = self._counts(e)
        counts.filtered += int(e.attrs.get("filtered", 0))
        counts.expanded += int(e.attrs.get("expanded", 0))
        self._log.debug(
            EventKind.BATCH_TRANSFORMED.value,
            stage=e.stage,
            rows_in=e.rows_in,
            rows_out=e.rows_out,
            seconds=round(e.seconds, 4),
        )

    def _on_batch_validated(self, e: StageEvent) -> None:
        self._log.debug(
            EventKind.BATCH_VALIDATED.value,
            stage=e.stage,
            rows_in=e.rows_in,
            rows_out=e.rows_out,
            seconds=round(e.seconds, 4),
        )

    def _on_validation_warned(self, e: StageEvent) -> None:
        self._counts(e).warned += e.rows_in
        self._log.warning(
            EventKind.VALIDATION_WARNED.value,
            seq=e.seq,
            stage=e.stage,
            rule=e.attrs.get("rule"),
            rows=e.rows_in,
            message=e.attrs.get("message"),
        )

    def _on_rows_dead_lettered(self, e: StageEvent) -> None:
        self._counts(e).dead_lettered += e.rows_in
        self._log.warning(
            EventKind.ROWS_DEAD_LETTERED.value,
            seq=e.seq,
            stage=e.stage,
            rows=e.rows_in,
            error_type=e.attrs.get("error_type"),
            error=e.error,
            by_rule={str(k): v for k, v in dict(e.attrs.get("by_rule", {})).items() if k} or None,
            dlq=e.attrs.get("dlq"),
        )

    def _on_load_retried(self, e: StageEvent) -> None:
        self._counts(e).retries += 1
        self._log.warning(
            EventKind.LOAD_RETRIED.value,
            seq=e.seq,
            attempt=e.attrs.get("attempt"),
            delay=round(float(e.attrs.get("delay", 0.0)), 3),
            error_type=e.attrs.get("error_type"),
            error=e.error,
        )

    def _on_batch_loaded(self, e: StageEvent) -> None:
        if e.error is None:
            self._counts(e).written += e.rows_out
        self._log.debug(
            EventKind.BATCH_LOADED.value,
            rows_in=e.rows_in,
            rows_out=e.rows_out,
            attempts=e.attrs.get("attempts"),
            seconds=round(e.seconds, 4),
            error=e.error,
        )

    def _on_batch_skipped(self, e: StageEvent) -> None:
        self._counts(e).skipped += e.rows_in
        self._log.info(EventKind.BATCH_SKIPPED.value, seq=e.seq, rows=e.rows_in)

    def _on_batch_committed(self, e: StageEvent) -> None:
        counts = self._batches.pop(-1 if e.seq is None else e.seq, _BatchCounts())
        self._log.info(
            EventKind.BATCH_COMMITTED.value,
            seq=e.seq,
            rows=e.rows_in,
            written=counts.written,
            dead_lettered=counts.dead_lettered,
            filtered=counts.filtered,
            expanded=counts.expanded,
            skipped_committed=counts.skipped,
            warned=counts.warned,
            retries=counts.retries,
        )
        self._unbind_seq()

    def _on_run_finished(self, e: StageEvent) -> None:
        self._unbind_seq()
        metrics = e.attrs.get("metrics")
        summary = metrics_summary(metrics) if isinstance(metrics, PipelineMetrics) else {}
        self._log.info(EventKind.RUN_FINISHED.value, **summary)
        self._end_run()

    def _on_run_failed(self, e: StageEvent) -> None:
        self._unbind_seq()
        metrics = e.attrs.get("metrics")
        summary = metrics_summary(metrics) if isinstance(metrics, PipelineMetrics) else {}
        self._log.error(
            EventKind.RUN_FAILED.value,
            error=e.error,
            error_type=e.attrs.get("error_type"),
            **summary,
        )
        self._end_run()
