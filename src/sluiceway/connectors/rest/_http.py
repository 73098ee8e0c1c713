"""HTTP for the REST source: one pooled httpx client, authentication, retries, redaction.

- 429 waits what ``Retry-After`` says (seconds or an HTTP date, capped), else backs
  off exponentially with jitter, like 5xx responses and network errors (timeouts,
  refused or reset connections); when the attempts are spent the run stops with a
  :class:`~sluiceway.core.errors.SourceError` naming the URL.
- Any other 4xx stops the run at once with the status, the URL and a body excerpt.
- OAuth2 client-credentials tokens are fetched on first use, refreshed shortly
  before they expire, and once more on a 401.
- Secrets never reach a message: the URL's user info and every query parameter
  that carries a secret (the API key's name, ``token``, ``key``, ``signature`` …)
  are replaced by ``***``.
"""

from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from sluiceway.connectors.rest._config import (
    ApiKeyAuth,
    Auth,
    BasicAuth,
    BearerAuth,
    OAuth2ClientCredentials,
    RestRetryConfig,
)
from sluiceway.core.errors import SourceError, TransientError

__all__ = ["HttpClient", "Response", "redact_url"]

_log = structlog.get_logger("sluiceway.connectors.rest")

_SECRET_PARAMS = re.compile(
    r"(token|key|secret|password|passwd|signature|sig|auth|credential|session)", re.IGNORECASE
)
_EXCERPT = 500


def redact_url(url: str, extra: frozenset[str] = frozenset()) -> str:
    """``url`` without user info and with secret-looking query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if parts.netloc != netloc:
        netloc = "***@" + netloc
    query = urlencode(
        [
            (k, "***" if k in extra or _SECRET_PARAMS.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True, slots=True)
class Response:
    """What a page request returned: final URL, status, headers' ``Link`` URLs, body bytes."""

    url: str
    status: int
    body: bytes
    links: Mapping[str, str]


class _RetryLater(TransientError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


class _OAuth2Token:
    """A client-credentials token shared by every request thread."""

    def __init__(self, config: OAuth2ClientCredentials, post: Callable[..., Any]) -> None:
        self.config = config
        self._post = post
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    def get(self, *, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._token is None or time.monotonic() > self._expires - 30:
                self._fetch()
            assert self._token is not None
            return self._token

    def _fetch(self) -> None:
        cfg = self.config
        data: dict[str, str] = {"grant_type": "client_credentials"}
        if cfg.scopes:
            data["scope"] = " ".join(cfg.scopes)
        if cfg.audience:
            data["audience"] = cfg.audience
        auth = None
        if cfg.client_auth == "basic":
            auth = (cfg.client_id, cfg.client_secret.get_secret_value())
        else:
            data["client_id"] = cfg.client_id
            data["client_secret"] = cfg.client_secret.get_secret_value()
        response = self._post(cfg.token_url, data=data, auth=auth)
        where = redact_url(cfg.token_url)
        if response.status_code != 200:
            raise SourceError(
                f"OAuth2 token request to {where} failed: HTTP {response.status_code}: "
                f"{response.text[:_EXCERPT]}"
            )
        try:
            payload = response.json()
            self._token = str(payload["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"OAuth2 token response from {where} has no access_token") from exc
        expires_in = payload.get("expires_in")
        self._expires = time.monotonic() + (
            float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        )
        _log.info("oauth2_token_fetched", token_url=where, expires_in=expires_in)


class HttpClient:
    """A pooled, thread-safe httpx client with the source's auth and retry policy."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        auth: Auth | None,
        timeout: float,
        concurrency: int,
        retry: RestRetryConfig,
        verify: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.base_url = base_url
        self.retry = retry
        self.auth = auth
        self._sleep = sleep
        self._secret_params = frozenset(
            [auth.name] if isinstance(auth, ApiKeyAuth) and auth.location == "query" else []
        )
        self._client = httpx.Client(
            headers={"Accept": "application/json", **headers},
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1
            ),
            follow_redirects=True,
            verify=verify,
        )
        self._token = (
            _OAuth2Token(auth, self._client.post)
            if isinstance(auth, OAuth2ClientCredentials)
            else None
        )
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def redact(self, url: str) -> str:
        return redact_url(url, self._secret_params)

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def _authorise(self, headers: dict[str, str], params: dict[str, Any], *, refresh: bool) -> Any:
        auth = self.auth
        if isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        elif isinstance(auth, ApiKeyAuth):
            if auth.location == "header":
                headers[auth.name] = auth.value.get_secret_value()
            else:
                params[auth.name] = auth.value.get_secret_value()
        elif isinstance(auth, BasicAuth):
            return (auth.username, auth.password.get_secret_value())
        elif self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get(refresh=refresh)}"
        return None

    def get(
        self,
        url: str,
        params: Mapping[str, Any],
        *,
        method: str = "GET",
        json_body: Any = None,
    ) -> Response:
        """One page, retried under the policy; raises SourceError when it cannot be had."""
        policy = self.retry
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            try:
                return self._once(url, params, method, json_body, refresh=refreshed)
            except _Unauthorised:
                if self._token is None or refreshed:
                    raise SourceError(
                        f"HTTP 401 Unauthorized from {self.redact(url)}: check the credentials"
                    ) from None
                refreshed = True
                attempt -= 1
                continue
            except _RetryLater as exc:
                if attempt >= policy.attempts:
                    raise SourceError(f"gave up after {attempt} attempt(s): {exc}") from exc
                delay = exc.retry_after
                if delay is None:
                    delay = min(policy.max_delay, policy.initial_delay * 2 ** (attempt - 1))
                    delay += random.uniform(0, policy.initial_delay)
                _log.warning(
                    "http_request_retried", attempt=attempt, delay=round(delay, 3), error=str(exc)
                )
                self._sleep(delay)

    def _once(
        self,
        url: str,
        params: Mapping[str, Any],
        method: str,
        json_body: Any,
        *,
        refresh: bool,
    ) -> Response:
        httpx = self._httpx
        headers: dict[str, str] = {}
        query = dict(params)
        basic = self._authorise(headers, query, refresh=refresh)
        # httpx replaces a URL's own query by the params it is given: merge them here.
        target = httpx.URL(self.url(url))
        full = target.copy_with(params=target.params.merge(query)) if query else target
        shown = self.redact(str(full))
        try:
            response = self._client.request(
                method, full, headers=headers, auth=basic, json=json_body
            )
        except httpx.TimeoutException as exc:
            raise _RetryLater(f"timeout on {shown}: {type(exc).__name__}", None) from exc
        except httpx.TransportError as exc:
            raise _RetryLater(f"network error on {shown}: {exc}", None) from exc
        self.requests += 1
        status = response.status_code
        if status == 401:
            raise _Unauthorised()
        if status in {429, 408}:
            wait = _retry_after(response.headers.get("Retry-After"), self.retry.max_retry_after)
            raise _RetryLater(f"HTTP {status} from {shown}", wait)
        if status >= 500:
            wait = _retry_after(response.headers.get("Retry-After"), self.retry.max_retry_after)
            raise _RetryLater(f"HTTP {status} from {shown}", wait)
        if status >= 400:
            raise SourceError(
                f"HTTP {status} {response.reason_phrase} from {method} {shown}: "
                f"{response.text[:_EXCERPT]}"
            )
        links = {
            str(rel): str(link["url"])
            for rel, link in response.links.items()
            if isinstance(link, Mapping) and "url" in link
        }
        return Response(str(response.url), status, response.content, links)


class _Unauthorised(Exception):
    pass
