"""Consumed messages to a :class:`~sluiceway.core.Batch`: columns, grouping, positions.

Each topic-partition is a source partition named ``"<topic>/<partition>"``. Rows
are grouped by partition in offset order; a partition's span is
``[first offset, last offset + 1)`` over every message of the batch, the
undecodable ones included (they go to ``Batch.rejected`` with topic, partition,
offset and the raw bytes). Offsets are not contiguous (compaction, transaction
markers), so each row carries its offset as ``meta.position``.

Per-message Python is limited to reading the attributes confluent-kafka exposes
one message at a time; decoding, sorting and grouping run on Arrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.connectors.kafka._decode import ValueDecoder, raw_text
from sluiceway.connectors.kafka._offsets import BatchKey, TopicPartitionKey
from sluiceway.core.batch import META_POSITION, Batch, PartitionSpan
from sluiceway.core.dlq import reject_table

__all__ = [
    "MessageBatcher",
    "batch_key",
    "partition_name",
    "parse_partition",
]


def partition_name(topic: str, partition: int) -> str:
    """The source partition of a Kafka topic-partition: ``"<topic>/<partition>"``."""
    return f"{topic}/{partition}"


def parse_partition(name: str) -> TopicPartitionKey:
    """``"orders/3"`` → ``("orders", 3)`` (topic names cannot hold a ``/``)."""
    topic, _, partition = name.rpartition("/")
    return topic, int(partition)


def batch_key(batch: Batch) -> BatchKey:
    """What identifies a batch's offsets, the same before and after the runner numbers it."""
    return tuple((name, int(span.start), int(span.end)) for name, span in batch.positions.items())


@dataclass(frozen=True, slots=True)
class _Columns:
    topic: pa.Array
    partition: pa.Array
    offset: pa.Array
    timestamp: pa.Array
    key: pa.Array
    headers: pa.Array | None
    values: list[bytes | None]


class MessageBatcher:
    """Builds batches from confluent-kafka ``Message`` objects."""

    def __init__(
        self,
        decoder: ValueDecoder,
        *,
        metadata: Sequence[str],
        prefix: str,
        key_format: Literal["string", "raw"],
    ) -> None:
        self.decoder = decoder
        self.metadata = list(metadata)
        self.prefix = prefix
        self.key_format = key_format
        self.shadowed: set[str] = set()

    def _columns(self, messages: Sequence[Any]) -> _Columns:
        timestamps = pa.array([m.timestamp()[1] for m in messages], pa.int64())
        timestamps = pc.if_else(pc.less(timestamps, 0), None, timestamps)
        keys = pa.array([m.key() for m in messages], pa.binary())
        if self.key_format == "string":
            try:
                keys = keys.cast(pa.string())
            except pa.ArrowInvalid:
                keys = pa.array(
                    [None if k is None else k.decode("utf-8", "replace") for k in keys.to_pylist()],
                    pa.string(),
                )
        headers = None
        if "headers" in self.metadata:
            headers = pa.array([m.headers() for m in messages], pa.map_(pa.string(), pa.binary()))
        return _Columns(
            topic=pa.array([m.topic() for m in messages], pa.string()),
            partition=pa.array([m.partition() for m in messages], pa.int32()),
            offset=pa.array([m.offset() for m in messages], pa.int64()),
            timestamp=timestamps.cast(pa.timestamp("ms", tz="UTC")),
            key=keys,
            headers=headers,
            values=[m.value() for m in messages],
        )

    def build(self, messages: Sequence[Any]) -> Batch:
        """One batch of the messages (any order, any partitions)."""
        cols = self._columns(messages)
        decoded = self.decoder.decode(cols.values)
        kept = decoded.kept
        data = decoded.table
        meta_columns = {
            "key": cols.key,
            "headers": cols.headers,
            "topic": cols.topic,
            "partition": cols.partition,
            "offset": cols.offset,
            "timestamp": cols.timestamp,
        }
        for name in self.metadata:
            column = meta_columns[name]
            assert column is not None
            target = self.prefix + name
            values = pc.take(column, kept)
            if target in data.column_names:
                self.shadowed.add(target)
                data = data.set_column(data.column_names.index(target), target, values)
            else:
                data = data.append_column(target, values)

        kept_topic = pc.take(cols.topic, kept)
        kept_partition = pc.take(cols.partition, kept)
        kept_offset = pc.take(cols.offset, kept)
        order = pc.sort_indices(
            pa.table({"t": kept_topic, "p": kept_partition, "o": kept_offset}),
            sort_keys=[("t", "ascending"), ("p", "ascending"), ("o", "ascending")],
        )
        data = data.take(order)
        offsets = pc.take(kept_offset, order)
        positions = self._spans(cols, kept_topic, kept_partition)
        meta = pa.table({META_POSITION: offsets})
        rejected = self._rejects(cols, decoded.rejected) if decoded.rejected else None
        return Batch.from_source(data, positions, meta=meta, rejected=rejected)

    @staticmethod
    def _spans(
        cols: _Columns, kept_topic: pa.Array, kept_partition: pa.Array
    ) -> dict[str, PartitionSpan]:
        every = pa.table({"t": cols.topic, "p": cols.partition, "o": cols.offset})
        bounds = every.group_by(["t", "p"]).aggregate([("o", "min"), ("o", "max")])
        counts = (
            pa.table({"t": kept_topic, "p": kept_partition})
            .group_by(["t", "p"])
            .aggregate([([], "count_all")])
        )
        rows = {
            (t, p): n
            for t, p, n in zip(
                counts.column("t").to_pylist(),
                counts.column("p").to_pylist(),
                counts.column("count_all").to_pylist(),
                strict=True,
            )
        }
        spans = sorted(
            zip(
                bounds.column("t").to_pylist(),
                bounds.column("p").to_pylist(),
                bounds.column("o_min").to_pylist(),
                bounds.column("o_max").to_pylist(),
                strict=True,
            )
        )
        return {
            partition_name(t, p): PartitionSpan(lo, hi + 1, rows.get((t, p), 0))
            for t, p, lo, hi in spans
        }

    @staticmethod
    def _rejects(cols: _Columns, rejected: Sequence[Any]) -> pa.Table:
        rows = []
        for r in rejected:
            topic = cols.topic[r.index].as_py()
            partition = cols.partition[r.index].as_py()
            offset = cols.offset[r.index].as_py()
            rows.append(
                {
                    "partition": partition_name(topic, partition),
                    "position": str(offset),
                    "raw": raw_text(cols.values[r.index]),
                    "error_type": r.error_type,
                    "error_message": f"{topic}/{partition}@{offset}: {r.message}",
                    "column": r.column,
                    "value": r.value,
                }
            )
        return reject_table(rows)
