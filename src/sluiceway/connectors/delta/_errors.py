"""``deltalake``'s exceptions, translated once into sluiceway's hierarchy.

- a commit that lost to a concurrent writer (after delta-rs's own retries) and
  object-store failures a retry may fix (connection refused or reset, timeouts,
  throttling, 5xx) → :class:`TransientError`;
- a batch that does not fit the table (schema mismatch, a failed cast) →
  :class:`DataError`, so the batch is dead-lettered with the reason;
- anything else (a missing bucket, access denied, an unsupported table feature) →
  :class:`SinkError`, which stops the run.
"""

from __future__ import annotations

import re

from sluiceway.core.errors import DataError, SinkError, SluicewayError, TransientError

__all__ = ["clean_message", "translate"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRANSIENT = re.compile(
    r"error sending request|timed out|timeout|connection (?:refused|reset|closed)|"
    r"broken pipe|dns error|temporarily unavailable|slow ?down|throttl|"
    r"\b(?:429|500|502|503|504)\b|service unavailable|internal ?error|"
    r"incomplete|unexpected eof",
    re.IGNORECASE,
)
_DATA = re.compile(
    r"cast error|cannot cast|schema error|schema mismatch|invalid data|"
    r"failed to parse|parser error|invalid argument|cannot be null|not nullable|"
    r"data type|unsupported type|null type",
    re.IGNORECASE,
)


def clean_message(exc: BaseException) -> str:
    """The message without terminal colours, each line trimmed, on one line."""
    text = _ANSI.sub("", str(exc))
    parts = [part.strip().lstrip("↳").strip() for part in text.splitlines()]
    return " ".join(p for p in parts if p) or type(exc).__name__


def translate(exc: BaseException, action: str) -> SluicewayError:
    """``exc`` as the sluiceway error saying what the runner does with the batch."""
    from deltalake.exceptions import (
        CommitFailedError,
        DeltaProtocolError,
        SchemaMismatchError,
    )

    message = clean_message(exc)
    if isinstance(exc, CommitFailedError):
        return TransientError(
            f"cannot {action}: commit conflict with a concurrent writer: {message}"
        )
    if isinstance(exc, SchemaMismatchError):
        return DataError(f"cannot {action}: the batch does not fit the table: {message}")
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        if _TRANSIENT.search(message):
            return TransientError(f"cannot {action}: {message}")
        return SinkError(f"cannot {action}: {message}")
    if isinstance(exc, DeltaProtocolError):
        return SinkError(f"cannot {action}: {message}")
    if _DATA.search(message):
        return DataError(f"cannot {action}: the batch does not fit the table: {message}")
    if _TRANSIENT.search(message):
        return TransientError(f"cannot {action}: {message}")
    return SinkError(f"cannot {action}: {message}")
