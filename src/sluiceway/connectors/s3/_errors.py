"""botocore's and s3fs's exceptions, translated once into sluiceway's hierarchy.

What a retry may fix (a refused or reset connection, a timeout, throttling, a 5xx)
becomes :class:`~sluiceway.core.errors.TransientError`; anything else (no such
bucket, access denied, missing credentials) becomes the fatal error the caller
names. A conditional write that lost (HTTP 412) is reported by :func:`error_code`
so that stores can turn it into a conflict.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from sluiceway.core.errors import FatalError, SluicewayError, TransientError

__all__ = ["error_code", "is_transient", "not_found", "status_code", "translate"]

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
}
#: What pyarrow's S3 client (the AWS C++ SDK) says when a retry may help.
_TRANSIENT_TEXT = re.compile(
    r"NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|THROTTLING|"
    r"REQUEST_TIMEOUT|curlCode|Couldn't connect|Connection refused|Connection reset|"
    r"timed out|Timeout|HTTP response code: 5\d\d|Please reduce your request rate",
    re.IGNORECASE,
)
_TRANSIENT_NAMES = (
    "ConnectionError",
    "HTTPClientError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "ConnectionClosedError",
    "ReadTimeoutError",
)


def _botocore_exceptions() -> Any:
    try:
        return importlib.import_module("botocore.exceptions")
    except ImportError:  # pragma: no cover - the s3 extra brings botocore
        return None


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ``ClientError`` (``NoSuchKey``, ``PreconditionFailed`` …)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a ``ClientError``."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def not_found(exc: BaseException) -> bool:
    """A missing key or bucket (``NoSuchKey``, ``NoSuchBucket``, 404)."""
    return error_code(exc) in {"NoSuchKey", "404", "NotFound"} or status_code(exc) == 404


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may succeed where this attempt failed."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    code, status = error_code(exc), status_code(exc)
    if code is not None or status is not None:
        return code in _TRANSIENT_CODES or (status is not None and status >= 500)
    botocore = _botocore_exceptions()
    if botocore is not None:
        kinds = tuple(getattr(botocore, n) for n in _TRANSIENT_NAMES if hasattr(botocore, n))
        if isinstance(exc, kinds):
            return True
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return type(exc) is OSError and bool(_TRANSIENT_TEXT.search(str(exc)))


def translate(
    exc: BaseException, message: str, fatal: type[FatalError] = FatalError
) -> SluicewayError:
    """``exc`` as a :class:`TransientError` or as ``fatal``, with ``message`` and the cause."""
    detail = _describe(exc)
    if is_transient(exc):
        return TransientError(f"{message}: {detail}")
    return fatal(f"{message}: {detail}")


def _describe(exc: BaseException) -> str:
    code = error_code(exc)
    text = str(exc) or type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text
