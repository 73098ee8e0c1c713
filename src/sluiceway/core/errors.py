"""One exception hierarchy whose branches say what the runtime does.

- :class:`ConfigError` — the spec or settings are wrong; nothing ran. Exit code 2.
- :class:`FatalError` — the run stops now; the current batch is not committed, its
  intent stays pending and the next run replays it.
- :class:`TransientError` — worth retrying under the retry policy (network blips,
  throttling, serialization failures). Spent retries dead-letter the batch.
- :class:`DataError` — the records themselves are wrong; they go to the
  dead-letter queue and the run goes on.

Connectors translate their client library's exceptions into these once, at the
boundary (``raise … from exc``), so the runner never sees a driver's exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AccountingError",
    "CastError",
    "ConfigError",
    "DataError",
    "DecodeError",
    "FatalError",
    "MissingExtraError",
    "ReplayError",
    "RunLockedError",
    "SinkError",
    "SluicewayError",
    "SourceError",
    "StateConflictError",
    "StateError",
    "TransformError",
    "TransientError",
    "ValidationFailedError",
]


class SluicewayError(Exception):
    """Root of every error sluiceway raises on purpose."""


class ConfigError(SluicewayError):
    """The pipeline spec or a setting is invalid: fix the file, nothing ran."""


class MissingExtraError(ConfigError):
    """A connector's optional dependency is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the optional dependency {module!r}: pip install 'sluiceway[{extra}]'"
        )
        self.extra = extra
        self.module = module


class FatalError(SluicewayError):
    """The run cannot go on; the batch in flight is left uncommitted."""


class SourceError(FatalError):
    """The source cannot be read (missing file, refused connection after retries)."""


class SinkError(FatalError):
    """The sink cannot be written (not writable, schema frozen and incompatible)."""


class StateError(FatalError):
    """The state store cannot be read or written."""


class StateConflictError(StateError):
    """A compare-and-swap on the state store lost: someone else committed first."""


class RunLockedError(StateError):
    """Another run of the same pipeline holds the run lock."""


class ReplayError(StateError):
    """A pending intent cannot be replayed exactly by this source."""


class AccountingError(FatalError):
    """``read + expanded != written + dead_lettered + filtered + skipped_committed``."""


class ValidationFailedError(FatalError):
    """A rule with ``on_fail: fail`` found failing rows."""

    def __init__(self, validator: str, rule: str, failed: int, sample: Sequence[Any]) -> None:
        shown = ", ".join(repr(v) for v in list(sample)[:5])
        super().__init__(
            f"validator {validator!r}: rule {rule!r} failed on {failed} row(s)"
            + (f" (e.g. {shown})" if shown else "")
            + " and is set to on_fail=fail"
        )
        self.validator = validator
        self.rule = rule
        self.failed = failed


class TransientError(SluicewayError):
    """Retry under the policy; when retries are spent the batch is dead-lettered."""


class DataError(SluicewayError):
    """The record is bad; dead-letter it and go on."""


class DecodeError(DataError):
    """A source record could not be decoded (malformed CSV line, invalid JSON)."""


class CastError(DataError):
    """A value does not fit the declared type."""


class TransformError(DataError):
    """A transform raised on a record (or, when not row-wise, on a batch)."""
