"""Helpers of the REST tests: a small fake-free API served by pytest-httpserver, and runners."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from tests.support import ListLoader
from werkzeug import Request, Response

from sluiceway.connectors.rest import RestExtractor, RestSourceConfig
from sluiceway.core import Pipeline, PipelineMetrics, read_dead_letters

USERS = [
    {"id": i, "name": f"user{i}", "updated_at": f"2024-01-{1 + i % 28:02d}"} for i in range(1, 251)
]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def run_source(
    config: dict[str, Any], home: Path, name: str = "rest-test"
) -> tuple[ListLoader, PipelineMetrics]:
    """Run a pipeline reading ``config`` into a list, in this process."""
    source = RestSourceConfig.model_validate({"type": "rest", **config})
    loader = ListLoader()
    metrics = Pipeline(name, RestExtractor(source), loader=loader, home=home).run()
    return loader, metrics


def dead_letters(home: Path, name: str = "rest-test") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_dead_letters(home / "dlq" / name).to_pylist()
    return rows


def requests_to(server: HTTPServer, path: str) -> list[Request]:
    return [request for request, _ in server.log if request.path == path]


def page_of(items: list[dict[str, Any]], request: Request, size: int = 100) -> list[dict[str, Any]]:
    page = int(request.args.get("page", "1"))
    return items[(page - 1) * size : page * size]
