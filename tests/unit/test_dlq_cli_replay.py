"""DLQ replay in the core: rows re-enter where they failed, once, and the books balance."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from tests.support import ListLoader
from tests.unit.test_pipeline_core import IdBelow, RaiseOn, RangeExtractor

from sluiceway.core import (
    BaseExtractor,
    BaseTransformer,
    Batch,
    ConfigError,
    FatalError,
    LoadResult,
    LocalStateStore,
    PartitionSpan,
    Pipeline,
    RowRejection,
    RunFailedError,
    read_dead_letters,
)
from sluiceway.core._rows import rebuild_rows
from sluiceway.core.dlq import reject_table, rows_to_json
from sluiceway.core.replay import REPLAY_STATE_KEY


class Tag(BaseTransformer[pa.Table, pa.Table]):
    """Appends ``tag = 1``; counts the rows it saw (a replayed row must not pass twice)."""

    def __init__(self) -> None:
        super().__init__("tag")
        self.seen: list[int] = []

    def transform(self, data: pa.Table) -> pa.Table:
        self.seen += data.column("id").to_pylist()
        return data.append_column("tag", pa.array([1] * data.num_rows, pa.int64()))


def build(home: Path, bad_transform: set[int], limit: int, loader: ListLoader | None = None):
    return Pipeline(
        "again",
        RangeExtractor(30, 10),
        [Tag(), RaiseOn(bad_transform)],
        [IdBelow(limit)],
        loader or ListLoader(),
        home=home,
    )


def entries(home: Path) -> list[dict]:
    return read_dead_letters(home / "dlq" / "again").to_pylist()


def test_rows_re_enter_at_the_stage_where_they_failed_and_only_once(tmp_path: Path) -> None:
    first = build(tmp_path, {7}, 25).run()
    assert (first.written, first.dead_lettered) == (24, 6)

    fixed = build(tmp_path, set(), 100)
    m = fixed.replay_dead_letters()
    assert m.status == "succeeded" and m.balanced
    assert (m.read, m.replayed, m.written, m.dead_lettered) == (0, 6, 6, 0)
    assert fixed.transformers[0].seen == []  # no row went through transform 0 again
    rows = sorted(fixed.loader.rows, key=lambda r: r["id"])  # type: ignore[attr-defined]
    assert [r["id"] for r in rows] == [7, 25, 26, 27, 28, 29]
    # Row 7 re-entered at transform 1 (it gains ``double``); 25..29 only re-validated.
    assert all(r["tag"] == 1 and r["double"] == 2 * r["id"] for r in rows)

    state, _ = LocalStateStore(tmp_path / "state", "again").read()
    assert state.positions == {"r": 30}  # a replay moves no source position
    assert len(state.extra[REPLAY_STATE_KEY]["replayed"]) == 6

    again = build(tmp_path, set(), 100).replay_dead_letters()
    assert (again.replayed, again.written) == (0, 0)
    assert again.replay_skipped == {"already_replayed": 6}


def test_rows_that_fail_again_get_new_entries_and_wait_for_refailed(tmp_path: Path) -> None:
    build(tmp_path, set(), 27).run()  # 27, 28, 29 dead-lettered by the validator
    original = {e["dlq_id"]: e for e in entries(tmp_path)}

    still_bad = build(tmp_path, set(), 28)  # a partial fix: 27 passes now
    m = still_bad.replay_dead_letters()
    assert (m.replayed, m.written, m.dead_lettered) == (3, 1, 2)
    refailed = [e for e in entries(tmp_path) if e["run_id"] == m.run_id]
    # Same row, same stage: the same dlq_id, under the replay's own seq and run.
    assert {e["dlq_id"] for e in refailed} <= set(original)
    assert all(e["seq"] == 3 and e["position"] in ("28", "29") for e in refailed)
    assert refailed[0]["partition"] == "r"

    unchanged = build(tmp_path, set(), 28).replay_dead_letters()
    assert unchanged.replayed == 0
    assert unchanged.replay_skipped == {"already_replayed": 3, "refailed": 2}

    fixed = build(tmp_path, set(), 100)
    m = fixed.replay_dead_letters(include_refailed=True)
    assert (m.replayed, m.written) == (2, 2)
    assert sorted(r["id"] for r in fixed.loader.rows) == [28, 29]  # type: ignore[attr-defined]


def test_extract_rejects_and_load_refusals(tmp_path: Path) -> None:
    class WithRejects(BaseExtractor[dict]):
        def extract(self) -> Iterator[Batch]:
            yield Batch.from_source(
                pa.table({"id": [1, 2, 3]}),
                {"f": PartitionSpan(0, 4, 3)},
                rejected=reject_table(
                    [{"partition": "f", "position": "3", "error_type": "E", "error_message": "x"}]
                ),
            )

    class Refuses(ListLoader):
        def __init__(self, refuse: set[int]) -> None:
            super().__init__()
            self.refuse = refuse

        def load(self, batch: Batch) -> LoadResult:
            ids = batch.data.column("id").to_pylist()
            bad = [i for i, v in enumerate(ids) if v in self.refuse]
            keep = [i for i in range(len(ids)) if i not in bad]
            self.tables.append(batch.to_arrow().take(pa.array(keep, pa.int64())))
            return LoadResult(len(keep), [RowRejection(i, "no") for i in bad])

    tag = Tag()
    Pipeline("mixed", WithRejects(), [tag], [], Refuses({2}), home=tmp_path).run()
    stages = sorted(e["stage"] for e in read_dead_letters(tmp_path / "dlq" / "mixed").to_pylist())
    assert stages == ["extract", "load"]

    loader, tag = Refuses(set()), Tag()
    m = Pipeline("mixed", WithRejects(), [tag], [], loader, home=tmp_path).replay_dead_letters()
    assert (m.replayed, m.written) == (1, 1) and m.replay_skipped == {"no_row": 1}
    assert tag.seen == [] and loader.rows == [{"id": 2, "tag": 1}]


def test_an_interrupted_replay_is_redone_with_the_same_seq(tmp_path: Path) -> None:
    build(tmp_path, set(), 27).run()

    class Down(ListLoader):
        def load(self, batch: Batch) -> None:
            raise FatalError("the sink went away")

    with pytest.raises(RunFailedError):
        build(tmp_path, set(), 100, Down()).replay_dead_letters()
    state, _ = LocalStateStore(tmp_path / "state", "again").read()
    (pending,) = state.extra[REPLAY_STATE_KEY]["pending"]
    assert pending["seq"] == 3 and len(pending["keys"]) == 3

    class Ledger(ListLoader):
        def committed(self, batch: Batch) -> bool:
            return False

    loader = Ledger()
    m = build(tmp_path, set(), 100, loader).replay_dead_letters()
    assert m.replayed == 3 and [b.seq for b in loader.batches] == [3]
    state, _ = LocalStateStore(tmp_path / "state", "again").read()
    assert state.extra[REPLAY_STATE_KEY]["pending"] == [] and state.next_seq == 4


def test_a_replace_mode_sink_refuses_a_replay(tmp_path: Path) -> None:
    class Replacing(ListLoader):
        def describe(self) -> dict[str, str]:
            return {"type": "list", "mode": "replace"}

    p = Pipeline("r", RangeExtractor(3, 3), [], [], Replacing(), home=tmp_path)
    with pytest.raises(RunFailedError) as info:
        p.replay_dead_letters()
    assert isinstance(info.value.cause, ConfigError)


def test_rows_round_trip_through_their_dlq_form() -> None:
    table = pa.table(
        {
            "i": pa.array([1, None], pa.int32()),
            "s": ["a", 'b"'],
            "d": pa.array([dt.date(2024, 1, 2), None]),
            "ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6), None], pa.timestamp("us", "UTC")),
            "ns": pa.array([1_704_164_645_123_456_789, None], pa.timestamp("ns")),
            "dec": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(10, 2)),
            "l": pa.array([[1, 2], None], pa.list_(pa.int64())),
            "st": pa.array([{"x": 1, "y": "z"}, None]),
            "dic": pa.array(["a", "b"]).dictionary_encode(),
            "t": pa.array([dt.time(1, 2, 3), None]),
            "dur": pa.array([dt.timedelta(seconds=3), None]),
            "u": pa.array([2**64 - 1, None], pa.uint64()),
        }
    )
    types = json.dumps({f.name: str(f.type) for f in table.schema})
    assert rebuild_rows(rows_to_json(table), types).equals(table)
    binary = pa.table(
        {
            "b": pa.array([b"\x00\xff", None]),
            "m": pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
        }
    )
    types = json.dumps({f.name: str(f.type) for f in binary.schema})
    assert rebuild_rows(rows_to_json(binary), types).equals(binary)
    with pytest.raises(ValueError, match="cannot rebuild"):
        rebuild_rows(['{"a": "x"}'], '{"a": "int64"}')
