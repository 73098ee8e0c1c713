"""Observability: structured logs and alerts, both subscribers of the pipeline's stage events."""

from sluiceway.observability.alerts import (
    ALERT_EVENTS,
    Alert,
    AlertChannel,
    AlertSubscriber,
    LogChannel,
    WebhookChannel,
)
from sluiceway.observability.logging import (
    REDACTED,
    LogSubscriber,
    configure_logging,
    looks_secret,
    metrics_summary,
    redact,
    redact_secrets,
    resolve_format,
)

__all__ = [
    "ALERT_EVENTS",
    "REDACTED",
    "Alert",
    "AlertChannel",
    "AlertSubscriber",
    "LogChannel",
    "LogSubscriber",
    "WebhookChannel",
    "configure_logging",
    "looks_secret",
    "metrics_summary",
    "redact",
    "redact_secrets",
    "resolve_format",
]
