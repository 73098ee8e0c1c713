"""confluent-kafka's exceptions translated into sluiceway's, once, with secrets redacted."""

from __future__ import annotations

import re
from typing import Any

from sluiceway.core.errors import FatalError, SourceError, TransientError

__all__ = ["describe_servers", "dlq_error", "redact", "source_error"]

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` anywhere in ``text``."""
    return _USERINFO.sub("***@", text)


def describe_servers(servers: str) -> str:
    """Bootstrap servers as shown in messages and logs (credentials, if any, hidden)."""
    return redact(servers)


def _detail(exc: Any) -> tuple[str, bool]:
    error = exc.args[0] if getattr(exc, "args", None) else None
    if error is not None and hasattr(error, "str"):
        return redact(str(error.str())), bool(error.retriable())
    return redact(str(exc)), False


def source_error(exc: BaseException, what: str) -> SourceError:
    """A client failure of the source: the run stops, the batch in flight stays pending."""
    detail, _ = _detail(exc)
    return SourceError(f"{what}: {detail}")


def dlq_error(exc: BaseException, what: str) -> FatalError | TransientError:
    """A client failure of the Kafka DLQ: retriable ones as transient, others fatal."""
    detail, retriable = _detail(exc)
    if retriable:
        return TransientError(f"{what}: {detail}")
    return FatalError(f"{what}: {detail}")
