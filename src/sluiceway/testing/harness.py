"""The crash harness: a deterministic source and a checker for lost, duplicated or phantom rows.

:class:`SequenceExtractor` (``type: sequence``) emits rows ``(partition, n, payload,
payload_hash, amount)`` for ``partitions`` partitions of ``rows`` rows each. Batches
take a slice of every partition, so one batch spans several partitions, and any
batch can be re-read exactly from its positions. Every ``bad_every``-th row has a
negative ``amount``, for validators to reject.

:func:`check_delivery` compares what reached the sink and the dead-letter queue
with what the source emitted. Together with ``SLUICEWAY_CRASH_AT`` (see
:mod:`sluiceway.core.crash`) it proves that a crash at any point, then a rerun,
loses nothing and — with an idempotent sink — duplicates nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
from pydantic import Field

from sluiceway.core.batch import Batch, PartitionSpan
from sluiceway.core.stages import BaseExtractor
from sluiceway.core.state import Intent
from sluiceway.plugins import BuildContext, Plugin, StageConfig

__all__ = [
    "SEQUENCE_SOURCE",
    "DeliveryReport",
    "SequenceExtractor",
    "SequenceSourceConfig",
    "check_delivery",
    "expected_rows",
    "payload_hash",
]

ROW_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
        pa.field("payload_hash", pa.string(), nullable=False),
        pa.field("amount", pa.int64(), nullable=False),
    ]
)


def payload_hash(partition: str, n: int, payload: str) -> str:
    return hashlib.sha256(f"{partition}|{n}|{payload}".encode()).hexdigest()[:16]


def _rows(partition: str, start: int, end: int, bad_every: int) -> dict[str, list[object]]:
    ns: list[object] = list(range(start, end))
    payloads: list[object] = [f"{partition}-{n}" for n in range(start, end)]
    return {
        "partition": [partition] * len(ns),
        "n": ns,
        "payload": payloads,
        "payload_hash": [payload_hash(partition, n, f"{partition}-{n}") for n in range(start, end)],
        "amount": [
            -1 if bad_every and (n + 1) % bad_every == 0 else n % 1000 for n in range(start, end)
        ],
    }


class SequenceExtractor(BaseExtractor[dict[str, object]]):
    """Deterministic multi-partition rows, resumable and exactly replayable."""

    type_name = "sequence"

    def __init__(
        self, *, partitions: int = 3, rows: int = 1000, batch_size: int = 300, bad_every: int = 0
    ) -> None:
        super().__init__(batch_size=batch_size)
        self.partitions = [f"p{i}" for i in range(partitions)]
        self.rows = rows
        self.bad_every = bad_every

    def _batch(self, spans: dict[str, tuple[int, int]]) -> Batch:
        columns: dict[str, list[object]] = {name: [] for name in ROW_SCHEMA.names}
        positions: dict[str, PartitionSpan] = {}
        for partition, (start, end) in spans.items():
            part = _rows(partition, start, end, self.bad_every)
            for name in ROW_SCHEMA.names:
                columns[name].extend(part[name])
            positions[partition] = PartitionSpan(start, end, end - start)
        return Batch.from_source(pa.Table.from_pydict(columns, schema=ROW_SCHEMA), positions)

    def extract(self) -> Iterator[Batch]:
        cursor = {p: int(self.context.positions.get(p, 0)) for p in self.partitions}
        share = max(1, self.batch_size // len(self.partitions))
        while True:
            spans = {
                p: (cursor[p], min(cursor[p] + share, self.rows))
                for p in self.partitions
                if cursor[p] < self.rows
            }
            if not spans:
                return
            yield self._batch(spans)
            for p, (_, end) in spans.items():
                cursor[p] = end

    def replay(self, intent: Intent) -> Batch:
        return self._batch({p: (int(s.start), int(s.end)) for p, s in intent.positions.items()})


class SequenceSourceConfig(StageConfig):
    """``type: sequence`` — the crash harness's deterministic source."""

    type: Literal["sequence"] = "sequence"
    partitions: int = Field(default=3, ge=1)
    rows: int = Field(default=1000, ge=0, description="rows per partition")
    batch_size: int = Field(default=300, ge=1)
    bad_every: int = Field(default=0, ge=0, description="every n-th row gets amount = -1")


def _build(config: SequenceSourceConfig, ctx: BuildContext) -> SequenceExtractor:
    return SequenceExtractor(
        partitions=config.partitions,
        rows=config.rows,
        batch_size=config.batch_size,
        bad_every=config.bad_every,
    )


SEQUENCE_SOURCE = Plugin(
    kind="source",
    type="sequence",
    config=SequenceSourceConfig,
    build=_build,
    summary="Deterministic multi-partition rows for crash and delivery tests",
)


def expected_rows(partitions: int, rows: int) -> set[tuple[str, int, str]]:
    """(partition, n, payload_hash) of every row a SequenceExtractor emits."""
    return {
        (f"p{i}", n, payload_hash(f"p{i}", n, f"p{i}-{n}"))
        for i in range(partitions)
        for n in range(rows)
    }


@dataclass(slots=True)
class DeliveryReport:
    """What went wrong between source and sink + DLQ; ``ok`` when nothing did."""

    missing: list[tuple[str, int]] = field(default_factory=list)
    duplicated: list[tuple[str, int]] = field(default_factory=list)
    phantom: list[tuple[str, int]] = field(default_factory=list)
    delivered: int = 0
    dead_lettered: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.phantom)

    def summary(self) -> str:
        return (
            f"delivered={self.delivered} dead_lettered={self.dead_lettered} "
            f"missing={len(self.missing)} {self.missing[:5]} "
            f"duplicated={len(self.duplicated)} {self.duplicated[:5]} "
            f"phantom={len(self.phantom)} {self.phantom[:5]}"
        )


def _dlq_keys(dead_letters: pa.Table) -> Iterable[tuple[str, int, str]]:
    for row in dead_letters.column("row").to_pylist():
        if row is None:
            continue
        data = json.loads(row)
        yield str(data["partition"]), int(data["n"]), str(data.get("payload_hash", ""))


def check_delivery(
    expected: set[tuple[str, int, str]],
    delivered: pa.Table,
    dead_letters: pa.Table,
) -> DeliveryReport:
    """Every expected row exactly once in ``delivered`` (sink rows) or ``dead_letters``.

    ``delivered`` needs the columns ``partition``, ``n`` and ``payload_hash``;
    ``dead_letters`` is a DLQ envelope table whose ``row`` JSON carries the same.
    """
    seen: Counter[tuple[str, int, str]] = Counter()
    sink_keys = list(
        zip(
            delivered.column("partition").to_pylist(),
            delivered.column("n").to_pylist(),
            delivered.column("payload_hash").to_pylist(),
            strict=True,
        )
    )
    dlq_keys = list(_dlq_keys(dead_letters))
    seen.update(sink_keys)
    seen.update(dlq_keys)
    report = DeliveryReport(delivered=len(sink_keys), dead_lettered=len(dlq_keys))
    expected_keys = {(p, n) for p, n, _ in expected}
    for key, count in sorted(seen.items()):
        if key not in expected:
            report.phantom.append((key[0], key[1]))
        elif count > 1:
            report.duplicated.append((key[0], key[1]))
    got = {(p, n) for p, n, _ in seen}
    report.missing = sorted(expected_keys - got)
    return report
