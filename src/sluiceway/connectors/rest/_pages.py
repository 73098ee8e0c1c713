"""Pagination styles and record selection: from a response to records and the next page.

A page is named by a small JSON-able descriptor that becomes the source position
(so a crash at page k resumes at page k): ``{}`` for the first page of a
sequential style, ``{"page": k}``, ``{"offset": n}``, ``{"cursor": c}`` or
``{"url": u}``. Page-number and offset pages can be computed ahead of time
(``ahead``), so they can be fetched concurrently; cursor, next-URL and Link-header
pages are known only from the previous response.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

import pyarrow as pa

from sluiceway.connectors.rest._config import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    NoPagination,
    OffsetPagination,
    PageNumberPagination,
    Pagination,
)
from sluiceway.connectors.rest._http import Response

__all__ = ["Pager", "dig", "records_at", "records_to_arrow"]

_MISSING = object()


def dig(body: Any, path: str) -> Any:
    """The value at a dotted path (``data.items``, ``results.0.rows``); None if absent."""
    if not path or path == "$":
        return body
    node = body
    for part in path.removeprefix("$.").split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            index = int(part)
            node = node[index] if -len(node) <= index < len(node) else _MISSING
        else:
            node = _MISSING
        if node is _MISSING:
            return None
    return node


def records_at(body: Any, path: str) -> list[dict[str, Any]]:
    """The records a body holds at ``path``: a list (scalars wrapped as ``{"value": …}``)."""
    found = dig(body, path)
    if found is None:
        return []
    items = found if isinstance(found, list) else [found]
    return [item if isinstance(item, dict) else {"value": item} for item in items]


def records_to_arrow(records: Sequence[dict[str, Any]]) -> pa.Table:
    """Records as an Arrow table; a field whose values mix types is kept as JSON text."""
    if not records:
        return pa.table({})
    try:
        return pa.Table.from_pylist(list(records))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [record.get(name) for record in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array(
                [
                    None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                    for v in values
                ],
                pa.string(),
            )
    return pa.table(columns)


class Pager:
    """One endpoint's pagination style."""

    def __init__(self, style: Pagination) -> None:
        self.style = style

    @property
    def sequential(self) -> bool:
        """True when the next page is known only from the current response."""
        return not isinstance(self.style, PageNumberPagination | OffsetPagination)

    def first(self) -> dict[str, Any]:
        style = self.style
        if isinstance(style, PageNumberPagination):
            return {"page": style.start}
        if isinstance(style, OffsetPagination):
            return {"offset": style.start}
        return {}

    def ahead(self, page: dict[str, Any], k: int) -> dict[str, Any]:
        """The page ``k`` pages after ``page`` (page-number and offset styles only)."""
        style = self.style
        if isinstance(style, PageNumberPagination):
            return {"page": int(page["page"]) + k}
        if isinstance(style, OffsetPagination):
            return {"offset": int(page["offset"]) + k * style.limit}
        raise ValueError("sequential pagination cannot look ahead")

    def request(self, path: str, page: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """URL (a path, or the absolute next URL) and query parameters for ``page``."""
        style = self.style
        if "url" in page:
            return str(page["url"]), {}
        params: dict[str, Any] = {}
        if isinstance(style, PageNumberPagination):
            params[style.param] = page["page"]
            if style.size_param and style.size:
                params[style.size_param] = style.size
        elif isinstance(style, OffsetPagination):
            params[style.offset_param] = page["offset"]
            params[style.limit_param] = style.limit
        elif isinstance(style, CursorPagination) and "cursor" in page:
            params[style.param] = page["cursor"]
        return path, params

    def next(
        self, page: dict[str, Any], response: Response, body: Any, records: int
    ) -> dict[str, Any] | None:
        """The page after ``page``, or None when ``page`` was the last."""
        style = self.style
        if isinstance(style, NoPagination):
            return None
        if isinstance(style, PageNumberPagination):
            number = int(page["page"])
            if records == 0 or (style.size is not None and records < style.size):
                return None
            if style.total_pages is not None:
                total = dig(body, style.total_pages)
                if isinstance(total, int | float) and number >= int(total) + style.start - 1:
                    return None
            return {"page": number + 1}
        if isinstance(style, OffsetPagination):
            offset = int(page["offset"])
            if records == 0 or records < style.limit:
                return None
            if style.total is not None:
                total = dig(body, style.total)
                if isinstance(total, int | float) and offset + style.limit >= int(total):
                    return None
            return {"offset": offset + style.limit}
        if isinstance(style, CursorPagination):
            cursor = dig(body, style.path)
            if cursor in (None, "") or cursor == page.get("cursor"):
                return None
            return {"cursor": cursor}
        if isinstance(style, NextUrlPagination):
            url = dig(body, style.path)
            if not isinstance(url, str) or not url:
                return None
            return {"url": urljoin(response.url, url)}
        assert isinstance(style, LinkHeaderPagination)
        url = response.links.get(style.rel)
        if not url:
            return None
        return {"url": urljoin(response.url, url)}
