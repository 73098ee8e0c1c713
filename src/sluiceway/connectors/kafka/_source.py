"""The Kafka source: a consumer group read in micro-batches, committed after the load.

Delivery: auto commit and auto offset store are off. After the runner has loaded a
batch, written its dead letters and committed its state, ``acknowledge`` records
the batch's end offsets and commits them (synchronously) for the partitions this
consumer still owns. The group's committed offsets are the resume point; the
pipeline's own committed positions are a floor under them (so a crash between the
state commit and the Kafka commit does not re-deliver what the sink already has).
A pending intent is replayed exactly: ``replay`` re-reads ``[start, end)`` of each
partition with a throw-away consumer, so an idempotent sink recognises the batch.

Threads: the consumer polls in the prefetch thread; ``acknowledge`` runs in the
runner's thread. See :mod:`._offsets` for why every client call happens under one
lock and how a rebalance waits for batches in flight before giving partitions up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from sluiceway.connectors.kafka._batch import (
    MessageBatcher,
    batch_key,
    parse_partition,
    partition_name,
)
from sluiceway.connectors.kafka._config import KafkaSourceConfig, StopAfter
from sluiceway.connectors.kafka._decode import ValueDecoder
from sluiceway.connectors.kafka._errors import describe_servers, source_error
from sluiceway.connectors.kafka._offsets import OffsetBook, TopicPartitionKey
from sluiceway.core.batch import Batch
from sluiceway.core.errors import SourceError
from sluiceway.core.stages import BaseExtractor, SourceContext
from sluiceway.core.state import Intent
from sluiceway.plugins import require

__all__ = ["KafkaExtractor"]

_log = structlog.get_logger("sluiceway.connectors.kafka")

#: Longest single poll: bounds how long ``acknowledge`` may wait for the client lock.
_POLL = 0.1
#: Rebalance-related commit failures: the partitions moved, the next owner resumes.
_REBALANCE_CODES = ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID")
_LAG_LOG_INTERVAL = 30.0
#: Incremental rebalancing: partitions that move are revoked while the group is stable,
#: so the revoke-time commit is accepted; the rest keep being consumed meanwhile.
_STRATEGY = "cooperative-sticky"


class KafkaExtractor(BaseExtractor[dict[str, Any]]):
    """Reads a consumer group's topics in batches of at most ``batch_size`` messages.

    A batch is cut when it holds ``batch_size`` messages or ``max_batch_wait``
    seconds after its first message. ``stop`` ends the run when caught up (every
    assigned partition reached the end it had when assigned), after a duration, or
    never (a service, stopped by SIGTERM).
    """

    type_name = "kafka"

    def __init__(
        self,
        config: KafkaSourceConfig,
        *,
        group_id: str,
        decoder_factory: Callable[[], ValueDecoder],
    ) -> None:
        super().__init__(config.batch_size)
        self.config = config
        self.group_id = group_id
        self._decoder_factory = decoder_factory
        self._batcher: MessageBatcher | None = None
        self._consumer: Any = None
        self._kafka: Any = None
        self._client_lock = threading.RLock()
        self.book = OffsetBook()
        self._targets: dict[TopicPartitionKey, int] = {}
        self._eof: dict[TopicPartitionKey, int] = {}
        self._assigned_once = False
        self._assignment_changed = False
        self._cooperative = "cooperative" in str(
            config.client_config.get("partition.assignment.strategy", _STRATEGY)
        )
        self.lag: dict[str, int] = {}
        self._lag_logged = 0.0
        self._commit_paused_until = 0.0
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------

    @property
    def servers(self) -> str:
        return describe_servers(self.config.bootstrap_servers)

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties of the group consumer (holds secrets: never log it)."""
        return {
            **self.config.librdkafka(),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": self.config.auto_offset_reset,
            "partition.assignment.strategy": self.config.client_config.get(
                "partition.assignment.strategy", _STRATEGY
            ),
            "error_cb": self._on_error,
        }

    def open(self, context: SourceContext) -> None:
        super().open(context)
        self._kafka = require("confluent_kafka", extra="kafka", what="the kafka source")
        self._batcher = MessageBatcher(
            self._decoder_factory(),
            metadata=self.config.metadata,
            prefix=self.config.metadata_prefix,
            key_format=self.config.key_format,
        )
        try:
            self._consumer = self._kafka.Consumer(self.client_config())
        except self._kafka.KafkaException as exc:
            raise source_error(exc, f"cannot create a consumer for {self.servers}") from exc

    def close(self) -> None:
        """Commit what is loaded and not yet committed, then leave the group."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self.book.forget_handed()
        with self._client_lock:
            self._commit(consumer, self.book.pending(), why="close")
            self._closing = True
            try:
                consumer.close()
            except Exception as exc:  # KafkaError/KafkaException from a last callback
                _log.warning("kafka_close_failed", error=str(exc))

    def _on_error(self, error: Any) -> None:
        # librdkafka reports most errors here as informational (it retries itself).
        _log.warning("kafka_client_error", error=str(error), code=error.name())

    # -- offsets ----------------------------------------------------------------------

    def acknowledge(self, batch: Batch) -> None:
        """The batch is loaded and its state committed: commit its end offsets.

        Skips partitions revoked since the batch was read (their new owner resumes
        from the last committed offset). Waits for the client lock at most while no
        rebalance is under way; otherwise the commit is left to the rebalance
        callback or the consumer thread's next poll.
        """
        ends = {parse_partition(name): int(span.end) for name, span in batch.positions.items()}
        stale = self.book.loaded(batch_key(batch), ends)
        if stale:
            _log.warning(
                "kafka_stale_batch_loaded",
                partitions=stale,
                detail="revoked while the batch was in flight; their new owner re-reads them",
            )
        consumer = self._consumer
        if consumer is None:
            return
        while not self._client_lock.acquire(timeout=0.05):
            if self.book.rebalancing or self.context.stop.is_set():
                return
        try:
            if not self.book.rebalancing:
                self._commit(consumer, self.book.pending(), why="acknowledge")
        finally:
            self._client_lock.release()

    def is_stale(self, batch: Batch) -> bool:
        """True if a partition of ``batch`` was revoked since it was read (drop it)."""
        return self.book.is_stale(batch_key(batch))

    def _commit(self, consumer: Any, offsets: dict[TopicPartitionKey, int], *, why: str) -> bool:
        """Commit offsets synchronously (call with the client lock held); True if done.

        While the group rebalances the broker refuses commits; routine commits
        (after a batch, before a poll) then pause briefly instead of retrying on
        every poll, and the rebalance callback commits what is pending.
        """
        if not offsets:
            return True
        routine = why in ("acknowledge", "poll")
        if routine and time.monotonic() < self._commit_paused_until:
            return False
        kafka = self._kafka
        partitions = [kafka.TopicPartition(t, p, end) for (t, p), end in offsets.items()]
        try:
            consumer.commit(offsets=partitions, asynchronous=False)
        except kafka.KafkaException as exc:
            code = exc.args[0].name() if exc.args else ""
            rebalancing = code in _REBALANCE_CODES
            if rebalancing:
                self._commit_paused_until = time.monotonic() + 0.5
            level = "info" if rebalancing else "warning"
            getattr(_log, level)(
                "kafka_commit_failed",
                why=why,
                error=str(exc),
                detail="the offsets stay pending; the pipeline's own positions keep the "
                "next run from re-reading what was loaded",
            )
            return False
        self.book.committed(offsets)
        _log.debug("kafka_offsets_committed", why=why, offsets=_named(offsets))
        return True

    # -- rebalance callbacks (consumer thread, client lock held) ------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if self._closing:
            return  # leaving the group: nothing more will be read
        kafka = self._kafka
        tps = [(p.topic, p.partition) for p in partitions]
        try:
            committed = consumer.committed(partitions, timeout=10) if partitions else []
        except Exception as exc:  # KafkaException, or a KafkaError raised as is
            _log.warning(
                "kafka_committed_offsets_unknown",
                error=str(exc),
                detail="resuming from the group's offsets without the pipeline's floor",
            )
            committed = [kafka.TopicPartition(p.topic, p.partition) for p in partitions]
        floors: dict[TopicPartitionKey, int] = {}
        for tp, stored in zip(partitions, committed, strict=True):
            key = (tp.topic, tp.partition)
            start = stored.offset if stored.offset >= 0 else None
            if start is not None:
                self.book.committed({key: start})
            floor = self._floor(key)
            if floor is not None and (start is None or floor > start):
                tp.offset = floor
                floors[key] = floor
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.book.assigned(tps)
        if floors:
            _log.info("kafka_resume_from_pipeline_positions", offsets=_named(floors))
            self._commit(consumer, floors, why="assign")
        if self.config.stop == "caught_up":
            for tp in partitions:
                try:
                    _, high = consumer.get_watermark_offsets(
                        kafka.TopicPartition(tp.topic, tp.partition), timeout=30
                    )
                except kafka.KafkaException as exc:
                    raise source_error(
                        exc,
                        f"cannot read the end offset of {partition_name(tp.topic, tp.partition)}",
                    ) from exc
                self._targets[(tp.topic, tp.partition)] = high
                if tp.offset >= 0 and tp.offset >= high:
                    self._eof[(tp.topic, tp.partition)] = tp.offset
        self._assigned_once = True
        self._assignment_changed = True
        _log.info("kafka_partitions_assigned", partitions=[partition_name(*tp) for tp in tps])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._closing:
            self.book.revoked([(p.topic, p.partition) for p in partitions])
            return
        tps = [(p.topic, p.partition) for p in partitions]
        drained = self.book.begin_rebalance(tps, self.config.rebalance_timeout, self.context.stop)
        try:
            pending = self.book.pending_for(tps)
            if not self._commit(consumer, pending, why="revoke"):
                self._warn_redelivery(pending, why="revoke")
        finally:
            self.book.revoked(tps)
            self.book.end_rebalance()
        if self._cooperative:
            consumer.incremental_unassign(partitions)
        self._forget(tps)
        _log.info(
            "kafka_partitions_revoked",
            partitions=[partition_name(*tp) for tp in tps],
            drained=drained,
        )

    def _warn_redelivery(self, pending: dict[TopicPartitionKey, int], *, why: str) -> None:
        """Partitions went without their loaded offsets committed (the revoke-time commit
        was refused, or they were lost): say which messages the next owner reads again,
        as ``{partition: [first, end)}`` (``first`` is the last offset the group is
        known to have committed; None if unknown)."""
        reason = (
            "the broker refused the revoke-time commit"
            if why == "revoke"
            else "the partitions were lost (this member left the group) before a commit"
        )
        _log.warning(
            "kafka_handover_not_committed",
            why=why,
            redelivered={
                partition_name(*tp): [self.book.committed_offset(tp), end]
                for tp, end in sorted(pending.items())
            },
            detail=f"{reason}: another member that takes them over resumes from the "
            "group's committed offsets and reads these loaded messages again (at-least-once "
            "across this handover); this pipeline's own positions skip them if it does",
        )

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        pending = self.book.pending_for(tps)
        if pending:  # lost, not revoked: no commit is possible any more
            self._warn_redelivery(pending, why="lost")
        self.book.revoked(tps)
        if self._cooperative:
            consumer.incremental_unassign(partitions)
        self._forget(tps)
        _log.warning("kafka_partitions_lost", partitions=[partition_name(*tp) for tp in tps])

    def _forget(self, tps: list[TopicPartitionKey]) -> None:
        for tp in tps:
            self._targets.pop(tp, None)
            self._eof.pop(tp, None)
            self.lag.pop(partition_name(*tp), None)
        self._assignment_changed = True

    def _floor(self, tp: TopicPartitionKey) -> int | None:
        committed = self.context.positions.get(partition_name(*tp))
        candidates = [self.book.floor(tp)]
        if isinstance(committed, int) and not isinstance(committed, bool):
            candidates.append(committed)
        known = [c for c in candidates if c is not None]
        return max(known) if known else None

    # -- extraction -------------------------------------------------------------------

    def extract(self) -> Iterator[Batch]:
        consumer = self._consumer
        if consumer is None:
            raise SourceError("the kafka source was not opened")
        topics = list(self.config.topics or []) or ["^" + (self.config.pattern or "")]
        with self._client_lock:
            consumer.subscribe(
                topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        started = time.monotonic()
        buffer: list[Any] = []
        first_at = 0.0
        stop = self.config.stop
        drain = getattr(self.context, "drain", None)
        while not self.context.stop.is_set():
            now = time.monotonic()
            ending = (
                (isinstance(drain, threading.Event) and drain.is_set())
                or (isinstance(stop, StopAfter) and now - started >= stop.after)
                or (stop == "caught_up" and self._caught_up(now - started))
            )
            if ending:
                if buffer:
                    yield self._emit(buffer)
                return
            if buffer and (
                len(buffer) >= self.batch_size or now - first_at >= self.config.max_batch_wait
            ):
                yield self._emit(buffer)
                buffer = []
                continue
            wait = (
                _POLL
                if not buffer
                else max(0.0, min(_POLL, first_at + self.config.max_batch_wait - now))
            )
            with self._client_lock:
                self._commit(consumer, self.book.pending(), why="poll")
                try:
                    messages = consumer.consume(
                        num_messages=self.batch_size - len(buffer), timeout=wait
                    )
                except self._kafka.KafkaException as exc:
                    raise source_error(exc, f"cannot consume from {self.servers}") from exc
            if self._assignment_changed:
                self._assignment_changed = False
                owned = self.book.assignment()
                buffer = [m for m in buffer if (m.topic(), m.partition()) in owned]
                if not buffer:
                    first_at = 0.0
            if not messages:
                continue
            good = [m for m in messages if m.error() is None]
            if len(good) != len(messages):
                self._errors(messages)
            if good:
                if not buffer:
                    first_at = time.monotonic()
                buffer.extend(good)

    def _errors(self, messages: list[Any]) -> None:
        kafka = self._kafka
        for m in messages:
            error = m.error()
            if error is None:
                continue
            if error.code() == kafka.KafkaError._PARTITION_EOF:
                self._eof[(m.topic(), m.partition())] = m.offset()
                continue
            if error.fatal() or (
                error.code() == kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
                and self.config.stop == "caught_up"
                and self.config.topics
            ):
                raise SourceError(f"kafka ({self.servers}): {error.str()}")
            _log.warning("kafka_consume_error", error=error.str(), code=error.name())

    def _caught_up(self, elapsed: float) -> bool:
        if not self._assigned_once:
            if elapsed > self.config.assignment_timeout:
                raise SourceError(
                    f"no partitions were assigned by group {self.group_id!r} within "
                    f"{self.config.assignment_timeout:g}s ({self.servers}); is the topic there?"
                )
            return False
        return all(self._eof.get(tp, -1) >= high for tp, high in self._targets.items())

    def _emit(self, messages: list[Any]) -> Batch:
        assert self._batcher is not None
        batch = self._batcher.build(messages)
        tps = [parse_partition(name) for name in batch.positions]
        self.book.hand_out(batch_key(batch), tps)
        self._record_lag(batch)
        if self._batcher.shadowed:
            _log.warning(
                "kafka_metadata_shadows_value_fields", columns=sorted(self._batcher.shadowed)
            )
            self._batcher.shadowed.clear()
        return batch

    def _record_lag(self, batch: Batch) -> None:
        """Consumer lag per partition: the high watermark last fetched minus the batch end."""
        kafka, consumer = self._kafka, self._consumer
        with self._client_lock:
            for name, span in batch.positions.items():
                topic, partition = parse_partition(name)
                try:
                    _, high = consumer.get_watermark_offsets(
                        kafka.TopicPartition(topic, partition), cached=True
                    )
                except kafka.KafkaException:
                    continue
                if high >= 0:
                    self.lag[name] = max(high - int(span.end), 0)
        total = sum(self.lag.values())
        now = time.monotonic()
        if now - self._lag_logged >= _LAG_LOG_INTERVAL:
            self._lag_logged = now
            _log.info("kafka_consumer_lag", lag=total, partitions=dict(self.lag))
        else:
            _log.debug("kafka_consumer_lag", lag=total, partitions=dict(self.lag))

    def metrics(self) -> dict[str, float]:
        """Source gauges: ``consumer_lag`` (messages behind, all partitions) and per partition."""
        out: dict[str, float] = {"consumer_lag": float(sum(self.lag.values()))}
        out.update({f"consumer_lag.{name}": float(v) for name, v in self.lag.items()})
        return out

    # -- replay -----------------------------------------------------------------------

    def replay(self, intent: Intent) -> Batch | None:
        """Re-read exactly the offsets ``[start, end)`` of each partition of the intent.

        None (the runner then re-reads from the committed offsets) when messages are
        gone (retention) or the same offsets no longer give the same rows.
        """
        kafka = self._kafka
        if kafka is None or not intent.positions:
            return None
        spans = {}
        for name, span in intent.positions.items():
            if not (isinstance(span.start, int) and isinstance(span.end, int)):
                return None
            spans[parse_partition(name)] = (span.start, span.end)
        conf = {k: v for k, v in self.client_config().items() if k not in ("error_cb",)}
        reader = kafka.Consumer(conf)
        messages: list[Any] = []
        try:
            reader.assign(
                [kafka.TopicPartition(t, p, start) for (t, p), (start, _) in spans.items()]
            )
            open_parts = set(spans)
            deadline = time.monotonic() + max(30.0, self.config.assignment_timeout)
            while open_parts and time.monotonic() < deadline:
                for m in reader.consume(num_messages=self.batch_size, timeout=0.5):
                    tp = (m.topic(), m.partition())
                    if tp not in open_parts:
                        continue
                    start, end = spans[tp]
                    error = m.error()
                    if error is not None:
                        if error.code() == kafka.KafkaError._PARTITION_EOF:
                            open_parts.discard(tp)
                        continue
                    if start <= m.offset() < end:
                        messages.append(m)
                    if m.offset() >= end - 1:
                        open_parts.discard(tp)
                        reader.pause([kafka.TopicPartition(*tp)])
        except kafka.KafkaException as exc:
            raise source_error(exc, f"cannot replay from {self.servers}") from exc
        finally:
            reader.close()
        if not messages:
            return None
        assert self._batcher is not None
        batch = self._batcher.build(messages)
        same = set(batch.positions) == set(intent.positions) and all(
            batch.positions[name].rows == span.rows and batch.positions[name].end <= span.end
            for name, span in intent.positions.items()
        )
        if not same:
            _log.warning("kafka_replay_mismatch", seq=intent.seq)
            return None
        return Batch.from_source(
            batch.to_arrow(),
            {name: intent.positions[name] for name in batch.positions},
            meta=batch.meta,
            rejected=batch.rejected,
        )


def _named(offsets: dict[TopicPartitionKey, int]) -> dict[str, int]:
    return {partition_name(*tp): end for tp, end in offsets.items()}
