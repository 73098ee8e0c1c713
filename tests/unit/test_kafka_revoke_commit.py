"""What the Kafka source does when partitions go without their loaded offsets
committed: the broker refuses the revoke-time commit, or the partitions are lost.

The broker's refusal cannot be provoked on demand from the mock cluster (it
depends on which member's JoinGroup arrives first), so the consumer here is a
stand-in whose ``commit`` raises the error confluent-kafka raises; everything
else — the offset book, the callback, the log event — is the source's own.
"""

from __future__ import annotations

from typing import Any

import confluent_kafka
import pytest
from structlog.testing import capture_logs

from sluiceway.connectors.kafka import KafkaExtractor, KafkaSourceConfig, decoder_for
from sluiceway.core.stages import SourceContext

TOPIC = "orders"


class RefusingConsumer:
    """Accepts commits until told to refuse them with ``code``."""

    def __init__(self) -> None:
        self.refuse: int | None = None
        self.commits: list[dict[tuple[str, int], int]] = []
        self.unassigned: list[list[tuple[str, int]]] = []

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.refuse is not None:
            raise confluent_kafka.KafkaException(confluent_kafka.KafkaError(self.refuse))
        self.commits.append({(p.topic, p.partition): p.offset for p in offsets})

    def incremental_unassign(self, partitions: list[Any]) -> None:
        self.unassigned.append([(p.topic, p.partition) for p in partitions])


def _source() -> tuple[KafkaExtractor, RefusingConsumer]:
    config = KafkaSourceConfig(bootstrap_servers="127.0.0.1:9", topics=[TOPIC], group_id="g")
    source = KafkaExtractor(config, group_id="g", decoder_factory=lambda: decoder_for(config))
    source.context = SourceContext(pipeline="p", run_id="r")
    consumer = RefusingConsumer()
    source._kafka = confluent_kafka
    source._consumer = consumer
    source.book.assigned([(TOPIC, 0), (TOPIC, 1)])
    return source, consumer


def _partitions(*numbers: int) -> list[Any]:
    return [confluent_kafka.TopicPartition(TOPIC, n) for n in numbers]


def test_a_commit_accepted_on_revoke_hands_over_without_a_warning() -> None:
    source, consumer = _source()
    source.book.loaded(((TOPIC, 0, 1),), {(TOPIC, 0): 40})
    with capture_logs() as logs:
        source._on_revoke(consumer, _partitions(0))
    assert consumer.commits == [{(TOPIC, 0): 40}]
    assert consumer.unassigned == [[(TOPIC, 0)]]
    assert not [e for e in logs if e["event"] == "kafka_handover_not_committed"]


REFUSALS = [
    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
    confluent_kafka.KafkaError.ILLEGAL_GENERATION,
]


@pytest.mark.parametrize("code", REFUSALS)
def test_a_refused_revoke_commit_warns_with_the_range_the_next_owner_reads_again(
    code: int,
) -> None:
    source, consumer = _source()
    # Offsets 0-24 of partition 0 were committed; 25-59 were loaded after that.
    source.book.loaded(((TOPIC, 0, 1),), {(TOPIC, 0): 25})
    source._commit(consumer, source.book.pending(), why="acknowledge")
    source.book.loaded(((TOPIC, 0, 2), (TOPIC, 1, 2)), {(TOPIC, 0): 60, (TOPIC, 1): 7})
    consumer.refuse = code

    with capture_logs() as logs:
        source._on_revoke(consumer, _partitions(0, 1))

    (warning,) = [e for e in logs if e["event"] == "kafka_handover_not_committed"]
    assert warning["log_level"] == "warning"
    assert warning["why"] == "revoke"
    # [first, end): the group's last committed offset (unknown for partition 1) to
    # the end of what this member loaded.
    assert warning["redelivered"] == {f"{TOPIC}/0": [25, 60], f"{TOPIC}/1": [None, 7]}
    assert consumer.commits == [{(TOPIC, 0): 25}]
    # The partitions are given up all the same: the run goes on with the rest.
    assert consumer.unassigned == [[(TOPIC, 0), (TOPIC, 1)]]
    assert source.book.assignment() == set()


def test_nothing_pending_on_revoke_means_nothing_to_warn_about() -> None:
    source, consumer = _source()
    consumer.refuse = confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS
    with capture_logs() as logs:
        source._on_revoke(consumer, _partitions(1))
    assert not [e for e in logs if e["event"] == "kafka_handover_not_committed"]
    assert consumer.commits == []


def test_lost_partitions_warn_with_what_was_loaded_and_never_committed() -> None:
    source, consumer = _source()
    source.book.loaded(((TOPIC, 1, 1),), {(TOPIC, 1): 12})
    source._commit(consumer, source.book.pending(), why="acknowledge")
    source.book.loaded(((TOPIC, 1, 2),), {(TOPIC, 1): 30})

    with capture_logs() as logs:
        source._on_lost(consumer, _partitions(1))

    (warning,) = [e for e in logs if e["event"] == "kafka_handover_not_committed"]
    assert warning["why"] == "lost"
    assert warning["redelivered"] == {f"{TOPIC}/1": [12, 30]}
    assert consumer.commits == [{(TOPIC, 1): 12}]  # no commit tried for lost partitions
    assert source.book.assignment() == {(TOPIC, 0)}
