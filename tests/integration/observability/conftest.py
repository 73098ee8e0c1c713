"""Fixtures: the Datadog APM test agent (one per test session) and a DogStatsD listener."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from tests.integration.observability.support import StatsdListener, TestAgent, statsd_listener


@pytest.fixture(scope="session")
def test_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestAgent]:
    agent = TestAgent(tmp_path_factory.mktemp("ddapm"))
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def agent(test_agent: TestAgent) -> TestAgent:
    test_agent.start_session()
    return test_agent


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    with statsd_listener() as listener:
        yield listener


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
