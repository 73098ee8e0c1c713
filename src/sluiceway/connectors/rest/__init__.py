"""REST APIs (``type: rest``): declarative endpoints read page by page through httpx.

Base URL, endpoints with a record selector, pagination (page number, offset/limit,
cursor in the body, ``Link`` header, next URL in the body), authentication
(bearer, API key in a header or the query, basic, OAuth2 client credentials),
incremental reads by a field or a query parameter, and parent/child endpoints
(``/users/{id}/orders`` for each user). Each page is a batch; its position is the
page, so a crash at page k resumes at page k. ``httpx`` is imported when the
source opens.
"""

from __future__ import annotations

from sluiceway.connectors.rest._config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    CursorPagination,
    EndpointConfig,
    IncrementalConfig,
    LinkHeaderPagination,
    NextUrlPagination,
    NoPagination,
    OAuth2ClientCredentials,
    OffsetPagination,
    PageNumberPagination,
    RestRetryConfig,
    RestSourceConfig,
)
from sluiceway.connectors.rest._http import HttpClient, redact_url
from sluiceway.connectors.rest._pages import Pager, dig, records_at
from sluiceway.connectors.rest._source import RestExtractor
from sluiceway.plugins import BuildContext, Plugin, require

__all__ = [
    "REST_SOURCE",
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "CursorPagination",
    "EndpointConfig",
    "HttpClient",
    "IncrementalConfig",
    "LinkHeaderPagination",
    "NextUrlPagination",
    "NoPagination",
    "OAuth2ClientCredentials",
    "OffsetPagination",
    "PageNumberPagination",
    "Pager",
    "RestExtractor",
    "RestRetryConfig",
    "RestSourceConfig",
    "dig",
    "records_at",
    "redact_url",
]


def _build(config: RestSourceConfig, ctx: BuildContext) -> RestExtractor:
    require("httpx", extra="rest", what="the rest source")
    return RestExtractor(config)


REST_SOURCE = Plugin(
    kind="source",
    type="rest",
    config=RestSourceConfig,
    build=_build,
    summary="REST API endpoints: pagination, auth, incremental, parent/child, page-exact resume",
    extra="rest",
)
