"""Spec models of the REST API source (``type: rest``).

Everything a user declares: base URL, endpoints with their record selector,
pagination style, incremental field or parameter and parent endpoint, the
authentication, timeouts, concurrency and retries. Secrets (tokens, API keys,
passwords, client secrets) are ``SecretStr``: never printed, never logged, and
redacted from URLs in error messages.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sluiceway.core.errors import ConfigError
from sluiceway.engines.types import parse_type
from sluiceway.plugins import Duration, StageConfig

__all__ = [
    "ApiKeyAuth",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "CursorPagination",
    "EndpointConfig",
    "IncrementalConfig",
    "LinkHeaderPagination",
    "NextUrlPagination",
    "NoPagination",
    "OAuth2ClientCredentials",
    "OffsetPagination",
    "PageNumberPagination",
    "Pagination",
    "RestRetryConfig",
    "RestSourceConfig",
    "placeholders",
]


Seconds = Duration
"""Seconds, or a duration such as ``500ms``, ``30s``, ``5m``."""


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- authentication ---------------------------------------------------------------------


class BearerAuth(_Model):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr


class ApiKeyAuth(_Model):
    """An API key in a header (``X-API-Key: …``) or a query parameter (``?api_key=…``)."""

    type: Literal["api_key"] = "api_key"
    name: str = Field("X-API-Key", min_length=1, description="header or parameter name")
    value: SecretStr
    location: Literal["header", "query"] = Field("header", alias="in")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BasicAuth(_Model):
    """HTTP basic authentication."""

    type: Literal["basic"] = "basic"
    username: str
    password: SecretStr


class OAuth2ClientCredentials(_Model):
    """OAuth2 client credentials: a token from ``token_url``, refreshed before it expires."""

    type: Literal["oauth2"] = "oauth2"
    token_url: str = Field(min_length=1)
    client_id: str
    client_secret: SecretStr
    scopes: list[str] = Field(default_factory=list)
    audience: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        "body", description="send the client credentials in the form body or as basic auth"
    )


Auth = Annotated[
    BearerAuth | ApiKeyAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="type")
]


# -- pagination -------------------------------------------------------------------------


class NoPagination(_Model):
    """One request per endpoint."""

    type: Literal["none"] = "none"


class PageNumberPagination(_Model):
    """``?page=1``, ``?page=2`` … until a page is empty (or short, or past ``total_pages``)."""

    type: Literal["page_number"] = "page_number"
    param: str = "page"
    start: int = 1
    size_param: str | None = Field(None, description="e.g. per_page; sent with size")
    size: int | None = Field(None, gt=0, description="records per page; a shorter page is the last")
    total_pages: str | None = Field(None, description="path of the page count in the body")


class OffsetPagination(_Model):
    """``?offset=0&limit=100``, ``?offset=100&limit=100`` … until a short page (or ``total``)."""

    type: Literal["offset"] = "offset"
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, gt=0)
    start: int = 0
    total: str | None = Field(None, description="path of the record count in the body")


class CursorPagination(_Model):
    """The next page's cursor comes in the body (``path``) and goes back as ``param``."""

    type: Literal["cursor"] = "cursor"
    param: str = "cursor"
    path: str = Field("next_cursor", description="where the body holds the next cursor")


class NextUrlPagination(_Model):
    """The body holds the next page's URL (absolute or relative) at ``path``."""

    type: Literal["next_url"] = "next_url"
    path: str = Field("next", description="where the body holds the next URL")


class LinkHeaderPagination(_Model):
    """The ``Link`` header's ``rel="next"`` (or another ``rel``) URL (RFC 8288, GitHub style)."""

    type: Literal["link_header"] = "link_header"
    rel: str = "next"


Pagination = Annotated[
    NoPagination
    | PageNumberPagination
    | OffsetPagination
    | CursorPagination
    | NextUrlPagination
    | LinkHeaderPagination,
    Field(discriminator="type"),
]


# -- endpoints --------------------------------------------------------------------------


class IncrementalConfig(_Model):
    """Read only what is new since the last run.

    ``field`` is a record field (e.g. ``updated_at``) whose highest value is kept in
    the state. With ``param`` the API filters: the kept value is sent as that
    query parameter (``?updated_since=…``). Without it, records at or below the kept
    value are dropped here.
    """

    field: str = Field(min_length=1)
    param: str | None = None
    initial: Any = Field(None, description="value sent on the very first run (with param)")


class EndpointConfig(_Model):
    """One endpoint: a path under ``base_url`` and how to read it."""

    name: str = Field(description="names the endpoint's source partition(s)")
    path: str = Field(description="e.g. /users or /users/{id}/orders for a child endpoint")
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = Field(None, description="request body for POST")
    records: str = Field(
        "", description="dotted path to the records in the body (data.items); empty: the body"
    )
    paginate: Pagination = Field(default_factory=NoPagination)
    incremental: IncrementalConfig | None = None
    parent: str | None = Field(None, description="endpoint whose records fill {placeholders}")
    parent_fields: dict[str, str] = Field(
        default_factory=dict,
        description="parent record field → column added to each child row (e.g. {id: user_id})",
    )
    emit: bool = Field(True, description="load this endpoint's rows (false: only a parent)")
    schema_: dict[str, str] | None = Field(
        None, alias="schema", description="declared column types, checked casts"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"endpoint name {value!r}: use letters, digits, '_', '.', '-'")
        return value

    @field_validator("schema_")
    @classmethod
    def _known_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, name in (value or {}).items():
            try:
                parse_type(name)
            except ConfigError as exc:
                raise ValueError(f"column {column!r}: {exc}") from exc
        return value


def placeholders(path: str) -> list[str]:
    """The ``{names}`` in a path template."""
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]


class RestRetryConfig(_Model):
    """How 429, 5xx and network errors are retried (429 waits ``Retry-After`` when given)."""

    attempts: int = Field(default=6, ge=1, description="tries in all, the first included")
    initial_delay: Seconds = 0.5
    max_delay: Seconds = 30.0
    max_retry_after: Seconds = Field(default=300.0, description="longest Retry-After honoured")


class RestSourceConfig(StageConfig):
    """``source: {type: rest, base_url: …, endpoints: […]}``."""

    type: Literal["rest"] = "rest"
    base_url: str = Field(min_length=1, description="e.g. https://api.example.com/v1")
    endpoints: list[EndpointConfig] = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="query parameters sent with every request"
    )
    auth: Auth | None = None
    timeout: Seconds = Field(30.0, gt=0, description="per request (connect, read, write)")
    concurrency: int = Field(
        1, ge=1, le=64, description="requests in flight at once (pages, child endpoints)"
    )
    retry: RestRetryConfig = Field(default_factory=RestRetryConfig)
    endpoint_column: str | None = Field(
        "_endpoint", description="column naming each row's endpoint (null: none)"
    )
    max_pages: int | None = Field(None, gt=0, description="stop each endpoint after this many")
    verify_tls: bool = True

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in ("authorization", "proxy-authorization", "x-api-key", "cookie"):
                raise ValueError(f"header {name!r} holds a secret: use auth (kept secret)")
        return value

    @model_validator(mode="after")
    def _endpoints(self) -> RestSourceConfig:
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique: {names}")
        by_name = {e.name: e for e in self.endpoints}
        for endpoint in self.endpoints:
            holes = placeholders(endpoint.path)
            if endpoint.parent is None:
                if holes:
                    raise ValueError(
                        f"endpoint {endpoint.name!r}: {{{holes[0]}}} in the path needs a parent"
                    )
                continue
            parent = by_name.get(endpoint.parent)
            if parent is None:
                raise ValueError(f"endpoint {endpoint.name!r}: unknown parent {endpoint.parent!r}")
            if parent.parent is not None:
                raise ValueError(
                    f"endpoint {endpoint.name!r}: parent {parent.name!r} has a parent itself "
                    "(one level of nesting is supported)"
                )
            if not holes:
                raise ValueError(
                    f"endpoint {endpoint.name!r}: a child path needs {{field}} placeholders"
                )
        return self
