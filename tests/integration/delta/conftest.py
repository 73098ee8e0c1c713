"""Fixtures of the Delta sink tests: one moto server per session, a fresh bucket per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.integration.s3.support import MotoServer, running_moto


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto's S3 server on a free 127.0.0.1 port; test credentials in the environment."""
    with running_moto() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.bucket()
