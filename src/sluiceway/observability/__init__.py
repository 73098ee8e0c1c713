"""Observability: structured logs now; tracing, metrics and alerts hook into the same events."""

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
    "REDACTED",
    "LogSubscriber",
    "configure_logging",
    "looks_secret",
    "metrics_summary",
    "redact",
    "redact_secrets",
    "resolve_format",
]
