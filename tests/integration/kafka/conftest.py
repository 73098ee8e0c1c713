"""The Kafka tests share one mock broker process per session (see mock_broker.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.integration.kafka.support import KafkaBroker, start_broker


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    broker = start_broker()
    yield broker
    broker.stop()
