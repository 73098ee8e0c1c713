"""The REST tests run against a real HTTP server on 127.0.0.1 (pytest-httpserver)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    return ("127.0.0.1", 0)


@pytest.fixture
def api(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    """A cleared server whose handlers a test registers; it checks no handler errored."""
    yield httpserver
    httpserver.check_assertions()
