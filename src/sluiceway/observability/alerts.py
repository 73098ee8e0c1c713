"""Alerts: tell people when rows reach the DLQ, when a threshold is crossed, when a run fails.

:class:`AlertSubscriber` is a pipeline event hook. It collects dead-letter counts
per ``stage:rule`` and hands :class:`Alert` objects to a channel —
:class:`WebhookChannel` (a Slack incoming-webhook message or a generic JSON body)
or :class:`LogChannel` (an ``alert`` log line):

- **Rate limit.** At most one dead-letter alert per ``min_interval``; rows
  dead-lettered in between are aggregated into the next alert, and whatever is
  still held back when the run ends goes out in a final ``summary`` alert.
- **De-duplication.** Within a run an alert lists only the counts that grew since
  the previous alert: a ``stage:rule`` that alerted does not alert again unless more
  rows failed it, and then not before the interval has passed.
- **Failures and thresholds** alert at once (``on: [run_failed, threshold]``),
  carrying the counts held back so far. A run failed by a threshold that already
  alerted does not alert a second time.
- **Dry runs** never alert.

Delivery runs on a background thread so a slow endpoint never slows the pipeline;
a failed delivery is retried a little (``attempts``), then logged
(``alert_failed``) and dropped — an alert never fails a run. Webhook URLs and
headers are secrets: logs name only the endpoint's host.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

import structlog

from sluiceway.core.events import EventKind, StageEvent
from sluiceway.observability.logging import redact

__all__ = [
    "ALERT_EVENTS",
    "Alert",
    "AlertChannel",
    "AlertEvent",
    "AlertKind",
    "AlertSubscriber",
    "LogChannel",
    "WebhookChannel",
]

_log = structlog.get_logger("sluiceway.alerts")

AlertEvent = Literal["dead_letters", "run_failed", "threshold"]
ALERT_EVENTS: tuple[AlertEvent, ...] = ("dead_letters", "run_failed", "threshold")
AlertKind = Literal["dead_letters", "summary", "run_failed", "threshold"]

_MAX_MESSAGE = 500
_THRESHOLD_ERROR = "ThresholdExceededError"


def _clip(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(markdown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": markdown}}


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Alert:
    """What one alert says; channels render it (Slack blocks, JSON, a log line).

    ``counts`` are rows dead-lettered per ``stage:rule`` since the previous alert of
    this run, ``totals`` since the run started. ``first_error`` is the first failure
    among ``counts`` (keys ``stage``, ``rule``, ``error_type``, ``message``).
    """

    kind: AlertKind
    pipeline: str
    run_id: str
    counts: Mapping[str, int] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)
    first_error: Mapping[str, Any] | None = None
    dlq: str | None = None
    error: str | None = None
    min_interval: float = 0.0
    ts: float = field(default_factory=time.time)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def headline(self) -> str:
        """One line saying what happened."""
        if self.kind == "run_failed":
            return f"{self.pipeline}: run failed"
        if self.kind == "threshold":
            return f"{self.pipeline}: threshold crossed, run stopped"
        held = " more" if self.kind == "summary" else ""
        return f"{self.pipeline}: {self.rows:,}{held} rows dead-lettered"

    def text(self) -> str:
        """A plain-text rendering (Slack's notification text, the log line's message)."""
        parts = [self.headline() + f" (run {self.run_id})"]
        if self.error:
            parts.append(_clip(self.error))
        if self.counts:
            parts.append(", ".join(f"{k}: {v:,}" for k, v in sorted(self.counts.items())))
        if self.total != self.rows:
            parts.append(f"{self.total:,} dead-lettered in this run so far")
        if self.first_error:
            e = self.first_error
            parts.append(f"first error at {e.get('stage')}: {_clip(str(e.get('message')))}")
        if self.dlq:
            parts.append(f"DLQ: {self.dlq}")
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The generic JSON body of a webhook (``format: json``)."""
        return {
            "source": "sluiceway",
            "kind": self.kind,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "summary": self.headline(),
            "dead_lettered": dict(self.counts),
            "dead_lettered_rows": self.rows,
            "run_dead_lettered": dict(self.totals),
            "run_dead_lettered_rows": self.total,
            "first_error": dict(self.first_error) if self.first_error else None,
            "dlq": self.dlq,
            "error": self.error,
            "ts": datetime.fromtimestamp(self.ts, UTC).isoformat(),
        }

    def to_slack(self) -> dict[str, Any]:
        """A Slack incoming-webhook message: fallback ``text`` plus Block Kit ``blocks``."""
        icon = ":warning:" if self.kind in ("dead_letters", "summary") else ":rotating_light:"
        fields = [
            {"type": "mrkdwn", "text": f"*Pipeline*\n{self.pipeline}"},
            {"type": "mrkdwn", "text": f"*Run*\n`{self.run_id}`"},
            {"type": "mrkdwn", "text": f"*Dead-lettered in this run*\n{self.total:,}"},
        ]
        if self.dlq:
            fields.append({"type": "mrkdwn", "text": f"*DLQ*\n`{_clip(self.dlq, 200)}`"})
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(f"{icon} {self.headline()}", 150)},
            },
            {"type": "section", "fields": fields},
        ]
        if self.error:
            blocks.append(_section(f"*Error*\n{_clip(self.error)}"))
        if self.counts:
            width = max(len(k) for k in self.counts)
            lines = [f"{k.ljust(width)}  {v:>10,}" for k, v in sorted(self.counts.items())]
            label = "since the last alert" if self.kind == "summary" else "by stage:rule"
            body = _clip("\n".join(lines), 2800)
            blocks.append(_section(f"*Rows {label}*\n```{body}```"))
        if self.first_error:
            e = self.first_error
            rule = f" · {e.get('rule')}" if e.get("rule") else ""
            what = f"*First error* (`{e.get('stage')}`{rule} · {e.get('error_type')})"
            blocks.append(_section(f"{what}\n{_clip(str(e.get('message')))}"))
        note = "sent by sluiceway"
        if self.min_interval:
            note += f" · at most one alert per {_duration(self.min_interval)}, counts aggregated"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        return {"text": self.text(), "blocks": blocks}


@runtime_checkable
class AlertChannel(Protocol):
    """Where alerts go. ``send`` may raise; the subscriber logs the failure and goes on."""

    def send(self, alert: Alert) -> None: ...

    def describe(self) -> str:
        """A name safe to log (no secrets)."""
        ...

    @property
    def max_seconds(self) -> float:
        """The longest one ``send`` may take, retries included (bounds the final wait)."""
        ...


class LogChannel:
    """Alerts as ``alert`` log lines at ``level`` (for log-based alerting, e.g. Datadog logs)."""

    def __init__(self, level: Literal["info", "warning", "error"] = "warning") -> None:
        self.level = level
        self.max_seconds = 1.0

    def __repr__(self) -> str:
        return f"LogChannel(level={self.level!r})"

    def describe(self) -> str:
        return "log"

    def send(self, alert: Alert) -> None:
        getattr(_log, self.level)(
            "alert",
            kind=alert.kind,
            pipeline=alert.pipeline,
            run_id=alert.run_id,
            summary=alert.headline(),
            dead_lettered=dict(alert.counts),
            run_dead_lettered=alert.total,
            first_error=dict(alert.first_error) if alert.first_error else None,
            dlq=alert.dlq,
            error=alert.error,
        )


class AlertDeliveryError(Exception):
    """A webhook did not accept an alert."""


class WebhookChannel:
    """POSTs each alert to a URL: a Slack message (``format="slack"``) or JSON (``"json"``).

    Transport errors, 5xx and 429 responses are retried (``attempts`` in all, with a
    short backoff that honours ``Retry-After`` up to 30 s); other 4xx are not. The URL
    and header values are secrets: :meth:`describe` and ``repr`` show only the host.
    """

    def __init__(
        self,
        url: str,
        *,
        format: Literal["slack", "json"] = "slack",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("a webhook URL must be http:// or https://")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._url = url
        self._host = f"{parsed.scheme}://{parsed.hostname or ''}" + (
            f":{parsed.port}" if parsed.port else ""
        )
        self.format = format
        self._headers = dict(headers or {})
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WebhookChannel({self.describe()!r}, format={self.format!r})"

    def describe(self) -> str:
        return f"webhook {self._host}/…"

    @property
    def max_seconds(self) -> float:
        waits = sum(min(self.backoff * 2.0**i, 30.0) for i in range(self.attempts - 1))
        return float(self.attempts * self.timeout + waits)

    def body(self, alert: Alert) -> dict[str, Any]:
        return alert.to_slack() if self.format == "slack" else alert.to_json()

    def _safe(self, text: str) -> str:
        return str(redact(text.replace(self._url, self.describe())))

    def send(self, alert: Alert) -> None:
        import httpx

        payload = json.dumps(self.body(alert), default=str).encode("utf-8")
        headers = {"Content-Type": "application/json", **self._headers}
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
            client = self._client
        problem = ""
        for attempt in range(1, self.attempts + 1):
            delay = min(self.backoff * 2 ** (attempt - 1), 30.0)
            try:
                response = client.post(self._url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                problem = self._safe(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}: {self._safe(_clip(response.text, 200))}"
                retriable = response.status_code == 429 or response.status_code >= 500
                if not retriable:
                    break
                with contextlib.suppress(ValueError):
                    delay = min(float(response.headers.get("Retry-After", delay)), 30.0)
            if attempt < self.attempts:
                _log.info("alert_retried", channel=self.describe(), attempt=attempt, error=problem)
                time.sleep(delay)
        raise AlertDeliveryError(problem)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _Outbox:
    """Delivers alerts on a background thread; :meth:`drain` waits for them (bounded)."""

    _STOP = object()

    def __init__(self, channel: AlertChannel) -> None:
        self.channel = channel
        self._items: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, alert: Alert) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="sluiceway-alerts", daemon=True)
            self._thread.start()
        self._items.put(alert)

    def _work(self) -> None:
        while True:
            item = self._items.get()
            if item is self._STOP:
                return
            assert isinstance(item, Alert)
            deliver(self.channel, item)

    def drain(self, timeout: float) -> None:
        thread = self._thread
        if thread is None:
            return
        self._items.put(self._STOP)
        thread.join(timeout)
        if thread.is_alive():
            _log.warning(
                "alerts_undelivered",
                channel=self.channel.describe(),
                detail=f"still sending after {timeout:.0f}s; the run ends without waiting",
            )
        self._thread = None


def deliver(channel: AlertChannel, alert: Alert) -> bool:
    """Send one alert; log and swallow any failure (an alert never fails a run)."""
    try:
        channel.send(alert)
    except Exception as exc:
        _log.warning(
            "alert_failed",
            channel=channel.describe(),
            kind=alert.kind,
            pipeline=alert.pipeline,
            run_id=alert.run_id,
            error=str(redact(str(exc))) or type(exc).__name__,
        )
        return False
    _log.debug("alert_sent", channel=channel.describe(), kind=alert.kind, rows=alert.rows)
    return True


class AlertSubscriber:
    """A pipeline hook that raises rate-limited, de-duplicated alerts on one channel.

    ``on`` picks what alerts (:data:`ALERT_EVENTS`); ``min_interval`` (seconds) spaces
    dead-letter alerts; ``clock`` is injectable for tests. With ``background=False``
    alerts are sent on the run's thread (tests, simple scripts).
    """

    def __init__(
        self,
        channel: AlertChannel,
        *,
        on: Iterable[AlertEvent] = ALERT_EVENTS,
        min_interval: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.channel = channel
        self.on = frozenset(on)
        unknown = self.on - set(ALERT_EVENTS)
        if unknown:
            raise ValueError(f"unknown alert events {sorted(unknown)}; known: {ALERT_EVENTS}")
        self.min_interval = max(0.0, min_interval)
        self.clock = clock
        self._outbox = _Outbox(channel) if background else None
        self._reset("", "")
        self.active = False

    def __repr__(self) -> str:
        return f"AlertSubscriber({self.channel.describe()!r}, on={sorted(self.on)})"

    def _reset(self, pipeline: str, run_id: str) -> None:
        self.pipeline = pipeline
        self.run_id = run_id
        self.pending: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.first_error: dict[str, Any] | None = None
        self.dlq: str | None = None
        self.last_sent: float | None = None
        self.threshold_alerted = False

    def __call__(self, event: StageEvent) -> None:
        kind = event.kind
        if kind is EventKind.RUN_STARTED:
            self._reset(event.pipeline, event.run_id)
            self.active = not event.attrs.get("dry_run", False)
            return
        if not self.active or event.run_id != self.run_id:
            return
        if kind is EventKind.ROWS_DEAD_LETTERED:
            self._count(event)
            self._maybe_flush()
        elif kind is EventKind.BATCH_COMMITTED:
            self._maybe_flush()
        elif kind is EventKind.THRESHOLD_CROSSED:
            if "threshold" in self.on:
                self.threshold_alerted = True
                self._send("threshold", error=event.error)
        elif kind is EventKind.RUN_FAILED:
            by_threshold = event.attrs.get("error_type") == _THRESHOLD_ERROR
            if "run_failed" in self.on and not (by_threshold and self.threshold_alerted):
                self._send("run_failed", error=event.error)
            self._end()
        elif kind is EventKind.RUN_FINISHED:
            self._end()

    def _count(self, event: StageEvent) -> None:
        stage = event.stage or "?"
        by_rule: Mapping[Any, int] = event.attrs.get("by_rule") or {None: event.rows_in}
        for rule, count in by_rule.items():
            key = f"{stage}:{rule}" if rule else stage
            self.totals[key] = self.totals.get(key, 0) + int(count)
            if "dead_letters" in self.on:
                self.pending[key] = self.pending.get(key, 0) + int(count)
        if self.first_error is None and "dead_letters" in self.on:
            first_rule = next((str(r) for r in by_rule if r), None)
            self.first_error = {
                "stage": stage,
                "rule": first_rule,
                "error_type": event.attrs.get("error_type"),
                "message": _clip(str(redact(event.error or ""))),
            }
        self.dlq = event.attrs.get("dlq") or self.dlq

    def _maybe_flush(self) -> None:
        if not self.pending:
            return
        now = self.clock()
        if self.last_sent is not None and now - self.last_sent < self.min_interval:
            return
        self._send("dead_letters")

    def _send(self, kind: AlertKind, *, error: str | None = None) -> None:
        alert = Alert(
            kind=kind,
            pipeline=self.pipeline,
            run_id=self.run_id,
            counts=dict(self.pending),
            totals=dict(self.totals),
            first_error=self.first_error,
            dlq=self.dlq,
            error=str(redact(error)) if error else None,
            min_interval=self.min_interval,
        )
        self.pending = {}
        self.first_error = None
        if kind in ("dead_letters", "summary"):
            self.last_sent = self.clock()
        if self._outbox is not None:
            self._outbox.put(alert)
        else:
            deliver(self.channel, alert)

    def _end(self) -> None:
        """Send what was held back, wait (bounded) for delivery, release the channel."""
        if self.pending:
            self._send("summary")
        self.active = False
        if self._outbox is not None:
            self._outbox.drain(self.channel.max_seconds + 1.0)
        close = getattr(self.channel, "close", None)
        if callable(close):
            close()
