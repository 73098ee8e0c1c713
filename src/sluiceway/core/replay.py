"""Putting dead-lettered rows back into the pipeline, each at the stage where it failed.

A DLQ entry keeps the row as it entered the failing stage (``row`` + ``row_types``)
and names that stage. A replay rebuilds those rows and sends them in there: a row
a validator refused is validated again from that validator on and is not
transformed a second time; a row transform *k* refused re-enters at transform *k*;
a row the sink refused goes straight to the load. Records the source could not
decode (stage ``extract``) carry no row and cannot be replayed.

The state remembers what was replayed (``PipelineState.extra["dlq_replay"]``): per
``dlq_id`` the highest ``seq`` of an entry replayed, and the ids of the replay
runs. Replaying again does nothing: entries already replayed are skipped, and so
are rows that failed again during a replay (new entries written by a replay run,
under its own ``seq``) — replaying those unchanged would only fail them again.
After another fix, ``include_refailed`` (``dlq replay --refailed``) puts them back
too. Each replay batch is recorded as pending before it is loaded, like an
intent: a replay interrupted by a crash is redone first, with the same ``seq`` and
rows, so an idempotent sink skips what it already holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from sluiceway.core._rows import rebuild_rows
from sluiceway.core.batch import Batch, PartitionSpan, RowOrigin
from sluiceway.core.state import PipelineState

__all__ = [
    "REPLAY_PARTITION",
    "REPLAY_STATE_KEY",
    "ReplayBatch",
    "ReplayGroup",
    "ReplayLedger",
    "ReplayPlan",
    "SKIP_REASONS",
    "plan_replay",
    "select_keys",
]

#: Key of the replay ledger in ``PipelineState.extra``.
REPLAY_STATE_KEY = "dlq_replay"
#: The partition name replay batches carry (never a source partition; never committed).
REPLAY_PARTITION = "_sluiceway_dlq_replay"

#: Why a selected entry was not replayed, with what the summary says about it.
SKIP_REASONS: dict[str, str] = {
    "already_replayed": "already replayed",
    "refailed": "failed again in a replay (--refailed)",
    "no_row": "no row (extract-stage reject)",
    "stage_missing": "stage no longer in the pipeline",
    "unreadable": "row could not be rebuilt",
}

Key = tuple[str, int]
"""An entry's identity: (``dlq_id``, ``seq`` of the batch that wrote it)."""


@dataclass(slots=True)
class PendingReplay:
    seq: int
    keys: list[Key]


@dataclass(slots=True)
class ReplayLedger:
    """What the state says was replayed, and replay batches interrupted before their commit."""

    replayed: dict[str, int] = field(default_factory=dict)
    pending: list[PendingReplay] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: PipelineState) -> ReplayLedger:
        doc: dict[str, Any] = state.extra.get(REPLAY_STATE_KEY) or {}
        return cls(
            replayed={str(k): int(v) for k, v in (doc.get("replayed") or {}).items()},
            pending=[
                PendingReplay(int(p["seq"]), [(str(k), int(s)) for k, s in p["keys"]])
                for p in doc.get("pending") or []
            ],
            runs=[str(r) for r in doc.get("runs") or []],
        )

    def store(self, state: PipelineState) -> None:
        state.extra[REPLAY_STATE_KEY] = {
            "replayed": dict(self.replayed),
            "pending": [{"seq": p.seq, "keys": [list(k) for k in p.keys]} for p in self.pending],
            "runs": list(self.runs),
        }

    def refailed(self, run_id: str) -> bool:
        """True for entries a replay run wrote: rows that failed again when replayed."""
        return run_id in self.runs

    def done(self, key: Key) -> bool:
        """True if this entry (or a later one of the same row) was replayed."""
        seen = self.replayed.get(key[0])
        return seen is not None and seen >= key[1]

    def in_flight(self) -> set[Key]:
        return {key for pending in self.pending for key in pending.keys}

    def mark(self, keys: Sequence[Key]) -> None:
        for dlq_id, seq in keys:
            self.replayed[dlq_id] = max(seq, self.replayed.get(dlq_id, seq))


@dataclass(frozen=True, slots=True)
class ReplayBatch(Batch):
    """A batch of rows put back from the DLQ; each row keeps its original source origin.

    Its ``positions`` name :data:`REPLAY_PARTITION` (start ``seq<n>``, end a digest of
    the entries), so an idempotent sink's ledger recognises a redone replay batch and
    never confuses it with source positions.
    """

    replay_origins: tuple[RowOrigin, ...] = field(default=(), repr=False, compare=False)

    def origins(self, row_ids: Sequence[int]) -> list[RowOrigin]:
        out: list[RowOrigin] = []
        for rid in row_ids:
            if 0 <= rid < len(self.replay_origins):
                out.append(self.replay_origins[rid])
            else:
                out.append(RowOrigin(None, f"seq{self.seq}/derived{rid}", None, None))
        return out


@dataclass(slots=True)
class ReplayGroup:
    """Rows that re-enter at the same stage with the same column types."""

    stage: str
    transforms_from: int
    validators_from: int
    rows: pa.Table
    origins: list[RowOrigin]
    keys: list[Key]

    def __len__(self) -> int:
        return len(self.keys)

    def chunks(self, size: int) -> Iterator[ReplayGroup]:
        for start in range(0, len(self.keys), max(size, 1)):
            stop = start + size
            yield ReplayGroup(
                self.stage,
                self.transforms_from,
                self.validators_from,
                self.rows.slice(start, stop - start),
                self.origins[start:stop],
                self.keys[start:stop],
            )

    def batch(self, seq: int) -> ReplayBatch:
        digest = hashlib.sha256("\x1f".join(f"{k}@{s}" for k, s in self.keys).encode()).hexdigest()[
            :32
        ]
        n = self.rows.num_rows
        base = ReplayBatch.from_source(
            self.rows, {REPLAY_PARTITION: PartitionSpan(f"seq{seq}", digest, n)}, seq=seq
        )
        assert isinstance(base, ReplayBatch)
        return replace(base, replay_origins=tuple(self.origins))


@dataclass(slots=True)
class ReplayPlan:
    """The groups to replay, and how many selected entries were left out and why."""

    groups: list[ReplayGroup] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(g) for g in self.groups)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count


def _entry_point(
    stage: str, transformers: Sequence[str], validators: Sequence[str]
) -> tuple[int, int] | None:
    """(first transform, first validator) for rows that failed at ``stage``; None if gone."""
    if stage == "load":
        return len(transformers), len(validators)
    kind, _, rest = stage.partition(".")
    index_text, _, name = rest.partition(".")
    if not index_text.isdigit():
        return None
    index = int(index_text)
    names = transformers if kind == "transform" else validators if kind == "validate" else None
    if names is None or index >= len(names) or names[index] != name:
        return None
    return (index, 0) if kind == "transform" else (len(transformers), index)


_COLUMNS = (
    "dlq_id",
    "seq",
    "run_id",
    "stage",
    "row",
    "row_types",
    "partition",
    "position",
    "line",
    "raw",
)


def plan_replay(
    entries: pa.Table,
    *,
    transformers: Sequence[str],
    validators: Sequence[str],
    ledger: ReplayLedger,
    redo: bool = False,
    include_refailed: bool = False,
) -> ReplayPlan:
    """Group ``entries`` (DLQ envelopes) by the stage their rows re-enter at.

    ``transformers`` and ``validators`` are the pipeline's stage names in order; an
    entry whose stage is not at its index any more is skipped. Entries already
    replayed (or in a pending replay batch) are skipped unless ``redo`` (used to redo
    a pending batch exactly); entries a replay wrote unless ``include_refailed``.
    """
    plan = ReplayPlan()
    cols = {name: entries.column(name).to_pylist() for name in _COLUMNS}
    in_flight = set() if redo else ledger.in_flight()
    groups: dict[tuple[str, str], tuple[tuple[int, int], list[int]]] = {}
    for i in range(entries.num_rows):
        key: Key = (cols["dlq_id"][i], int(cols["seq"][i]))
        if not redo and (ledger.done(key) or key in in_flight):
            plan.skip("already_replayed")
            continue
        if not redo and not include_refailed and ledger.refailed(cols["run_id"][i]):
            plan.skip("refailed")
            continue
        stage, row, types = cols["stage"][i], cols["row"][i], cols["row_types"][i]
        if row is None or types is None or stage == "extract":
            plan.skip("no_row")
            continue
        entry = _entry_point(stage, transformers, validators)
        if entry is None:
            plan.skip("stage_missing")
            continue
        groups.setdefault((stage, types), (entry, []))[1].append(i)
    for (stage, types), ((t_from, v_from), index) in groups.items():
        try:
            rows = rebuild_rows([cols["row"][i] for i in index], types)
        except ValueError as exc:
            plan.skip("unreadable", len(index))
            plan.problems.append(f"{len(index)} entries of stage {stage}: {exc}")
            continue
        origins = [
            RowOrigin(cols["partition"][i], cols["position"][i], cols["line"][i], cols["raw"][i])
            for i in index
        ]
        keys = [(cols["dlq_id"][i], int(cols["seq"][i])) for i in index]
        plan.groups.append(ReplayGroup(stage, t_from, v_from, rows, origins, keys))
    return plan


def select_keys(entries: pa.Table, keys: Sequence[Key]) -> pa.Table:
    """The entries whose (dlq_id, seq) is among ``keys``, in ``keys`` order."""
    wanted = {key: n for n, key in enumerate(keys)}
    ids, seqs = entries.column("dlq_id").to_pylist(), entries.column("seq").to_pylist()
    found: dict[int, int] = {}
    for i, key in enumerate(zip(ids, seqs, strict=True)):
        n = wanted.get((key[0], int(key[1])))
        if n is not None and n not in found:
            found[n] = i
    return entries.take(pa.array([found[n] for n in sorted(found)], pa.int64()))
