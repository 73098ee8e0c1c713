"""The pipeline loop: accounting, dead-letter routing, retries, state, replay, locking."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tests.support import ListLoader

from sluiceway.core import (
    BaseExtractor,
    BaseLoader,
    BaseTransformer,
    BaseValidator,
    Batch,
    EventKind,
    FatalError,
    Intent,
    LoadResult,
    LocalStateStore,
    PartitionSpan,
    Pipeline,
    RetryPolicy,
    RowRejection,
    RuleResult,
    RunFailedError,
    RunLockedError,
    StageEvent,
    StateConflictError,
    TransientError,
    ValidationReport,
    read_dead_letters,
)
from sluiceway.core.dlq import reject_table
from sluiceway.testing import SequenceExtractor, check_delivery, expected_rows

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.001, max_delay=0.002, jitter=0.0)


class RangeExtractor(BaseExtractor[dict]):
    """Rows id=0..total-1 in one partition, resumable from committed positions."""

    type_name = "range"

    def __init__(self, total: int, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.total = total

    def _batch(self, start: int, end: int) -> Batch:
        table = pa.table({"id": pa.array(range(start, end), pa.int64())})
        return Batch.from_source(table, {"r": PartitionSpan(start, end, end - start)})

    def extract(self) -> Iterator[Batch]:
        start = int(self.context.positions.get("r", 0))
        while start < self.total:
            end = min(start + self.batch_size, self.total)
            yield self._batch(start, end)
            start = end

    def replay(self, intent: Intent) -> Batch:
        span = intent.positions["r"]
        return self._batch(span.start, span.end)


class RaiseOn(BaseTransformer[pa.Table, pa.Table]):
    """Row-wise transform that fails whenever a batch contains one of ``bad`` ids."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__("raise_on")
        self.bad = bad
        self.calls = 0

    def transform(self, data: pa.Table) -> pa.Table:
        self.calls += 1
        hit = set(data.column("id").to_pylist()) & self.bad
        if hit:
            raise ValueError(f"cannot handle id {sorted(hit)[0]}")
        return data.append_column("double", pc.multiply(data.column("id"), 2))


class SumByParity(BaseTransformer[pa.Table, pa.Table]):
    """Not row-wise: one row per parity; fails if the batch has id 13."""

    def transform(self, data: pa.Table) -> pa.Table:
        ids = data.column("id").to_pylist()
        if 13 in ids:
            raise ZeroDivisionError("boom")
        return pa.table(
            {"parity": [0, 1], "total": [sum(i for i in ids if i % 2 == p) for p in (0, 1)]}
        )


class Explode(BaseTransformer[list, list]):
    frame = "records"

    def transform(self, data: list) -> list:
        return [dict(r, copy=c) for r in data for c in range(2)]


class EvenOnly(BaseTransformer[pa.Table, pa.Table]):
    frame = "polars"

    def transform(self, data):  # type: ignore[no-untyped-def]
        import polars as pl

        return data.filter(pl.col("id") % 2 == 0)


class IdBelow(BaseValidator[pa.Table]):
    def __init__(self, limit: int, on_fail: str = "dlq", **kw: object) -> None:
        super().__init__("id_below", **kw)  # type: ignore[arg-type]
        self.limit = limit
        self.on_fail = on_fail

    def validate(self, data: pa.Table) -> ValidationReport:
        report = ValidationReport(self.name)
        mask = pc.greater_equal(data.column("id"), self.limit)
        report.add(
            RuleResult.from_mask(
                "id.below",
                mask,
                values=data.column("id"),
                column="id",
                on_fail=self.on_fail,  # type: ignore[arg-type]
            )
        )
        return report


def run(p: Pipeline):
    return p.run()


def test_rows_flow_and_books_balance(tmp_path: Path, list_loader: ListLoader) -> None:
    metrics = Pipeline("flow", RangeExtractor(1000, 100), [], [], list_loader, home=tmp_path).run()
    assert metrics.status == "succeeded"
    assert metrics.read == metrics.written == 1000
    assert metrics.batches == 10
    assert sorted(r["id"] for r in list_loader.rows) == list(range(1000))
    assert metrics.balanced


def test_second_run_resumes_from_committed_positions(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    Pipeline("resume", RangeExtractor(500, 100), [], [], list_loader, home=tmp_path).run()
    again = ListLoader()
    metrics = Pipeline("resume", RangeExtractor(700, 100), [], [], again, home=tmp_path).run()
    assert metrics.read == 200
    assert [r["id"] for r in again.rows] == list(range(500, 700))


def test_row_wise_transform_failure_is_bisected_to_the_bad_rows(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    bad = {3, 517, 998}
    transform = RaiseOn(bad)
    metrics = Pipeline(
        "bisect", RangeExtractor(1000, 500), [transform], [], list_loader, home=tmp_path
    ).run()
    assert sorted(r["id"] for r in list_loader.rows) == sorted(set(range(1000)) - bad)
    assert all(r["double"] == 2 * r["id"] for r in list_loader.rows)
    dlq = read_dead_letters(tmp_path / "dlq" / "bisect").to_pylist()
    assert sorted(int(e["position"]) for e in dlq) == sorted(bad)
    for entry in dlq:
        assert entry["stage"] == "transform.0.raise_on"
        assert entry["error_type"] == "ValueError"
        assert f"cannot handle id {entry['position']}" in entry["error_message"]
        assert entry["partition"] == "r"
    assert metrics.dead_lettered == 3 and metrics.written == 997 and metrics.balanced
    # bisection costs O(bad * log n) calls, not O(n)
    assert transform.calls < 3 * 2 * 10 + 2


def test_non_row_wise_transform_failure_dead_letters_the_whole_batch(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    metrics = Pipeline(
        "agg", RangeExtractor(40, 20), [SumByParity("agg")], [], list_loader, home=tmp_path
    ).run()
    dlq = read_dead_letters(tmp_path / "dlq" / "agg")
    assert sorted(int(p) for p in dlq.column("position").to_pylist()) == list(range(20))
    assert set(dlq.column("error_type").to_pylist()) == {"ZeroDivisionError"}
    # the healthy batch aggregated 20 rows into 2: 18 counted as filtered (net), 2 written
    assert metrics.written == 2 and metrics.dead_lettered == 20 and metrics.filtered == 18
    assert metrics.balanced


def test_filter_and_expand_are_counted(tmp_path: Path, list_loader: ListLoader) -> None:
    metrics = Pipeline(
        "fx", RangeExtractor(100, 30), [EvenOnly(), Explode()], [], list_loader, home=tmp_path
    ).run()
    assert metrics.read == 100
    assert metrics.filtered == 50
    assert metrics.expanded == 50
    assert metrics.written == 100
    assert metrics.balanced


def test_validation_failures_go_to_dlq_tagged_with_rule(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    metrics = Pipeline(
        "val", RangeExtractor(100, 40), [], [IdBelow(95)], list_loader, home=tmp_path
    ).run()
    assert metrics.written == 95 and metrics.dead_lettered == 5
    dlq = read_dead_letters(tmp_path / "dlq" / "val").to_pylist()
    assert {e["rule"] for e in dlq} == {"id.below"}
    assert sorted(e["value"] for e in dlq) == [str(i) for i in range(95, 100)]
    assert metrics.dead_lettered_by == {"validate.0.id_below:id.below": 5}
    assert metrics.rules["id_below:id.below"].failed == 5


def test_validation_warn_lets_rows_through(tmp_path: Path, list_loader: ListLoader) -> None:
    metrics = Pipeline(
        "warn",
        RangeExtractor(100, 40),
        [],
        [IdBelow(95, on_fail="warn")],
        list_loader,
        home=tmp_path,
    ).run()
    assert metrics.written == 100 and metrics.warned == 5 and metrics.dead_lettered == 0


def test_fail_on_error_stops_the_run_and_keeps_the_intent(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    pipeline = Pipeline(
        "fail",
        RangeExtractor(100, 40),
        [],
        [IdBelow(50, fail_on_error=True)],
        list_loader,
        home=tmp_path,
    )
    with pytest.raises(RunFailedError) as info:
        pipeline.run()
    assert "id.below" in str(info.value)
    state, _ = LocalStateStore(tmp_path / "state", "fail").read()
    assert state.positions == {"r": 40}
    assert [i.seq for i in state.intents] == [1]


def test_transient_load_errors_are_retried(tmp_path: Path) -> None:
    class Flaky(ListLoader):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 2

        def load(self, batch: Batch) -> LoadResult | None:
            if self.failures:
                self.failures -= 1
                raise TransientError("connection reset")
            return super().load(batch)

    events: list[StageEvent] = []
    loader = Flaky()
    metrics = Pipeline(
        "flaky",
        RangeExtractor(10, 10),
        [],
        [],
        loader,
        retry=FAST_RETRY,
        hooks=[events.append],
        home=tmp_path,
    ).run()
    assert metrics.written == 10 and metrics.retries == 2
    assert [e.kind for e in events].count(EventKind.LOAD_RETRIED) == 2


def test_spent_retries_dead_letter_the_batch_with_attempt_count(tmp_path: Path) -> None:
    class Down(ListLoader):
        def load(self, batch: Batch) -> LoadResult | None:
            raise TransientError("sink unreachable")

    metrics = Pipeline(
        "down", RangeExtractor(10, 5), [], [], Down(), retry=FAST_RETRY, home=tmp_path
    ).run()
    assert metrics.dead_lettered == 10 and metrics.written == 0 and metrics.balanced
    dlq = read_dead_letters(tmp_path / "dlq" / "down").to_pylist()
    assert {(e["stage"], e["attempt"], e["error_message"]) for e in dlq} == {
        ("load", 3, "sink unreachable")
    }


def test_unclassified_loader_error_is_fatal(tmp_path: Path) -> None:
    class Broken(ListLoader):
        def load(self, batch: Batch) -> LoadResult | None:
            raise RuntimeError("bug in sink")

    with pytest.raises(RunFailedError) as info:
        Pipeline("broken", RangeExtractor(10, 5), [], [], Broken(), home=tmp_path).run()
    assert isinstance(info.value.cause, FatalError)
    assert info.value.metrics.status == "failed"


def test_rows_rejected_by_sink_are_dead_lettered(tmp_path: Path) -> None:
    class Picky(ListLoader):
        def load(self, batch: Batch) -> LoadResult | None:
            ids = batch.data.column("id").to_pylist()
            bad = [i for i, v in enumerate(ids) if v % 4 == 0]
            self.tables.append(batch.to_arrow().take([i for i in range(len(ids)) if i not in bad]))
            return LoadResult(
                written=len(ids) - len(bad),
                rejected=[RowRejection(i, f"duplicate key {ids[i]}") for i in bad],
            )

    loader = Picky()
    metrics = Pipeline("picky", RangeExtractor(20, 10), [], [], loader, home=tmp_path).run()
    assert metrics.written == 15 and metrics.dead_lettered == 5 and metrics.balanced
    dlq = read_dead_letters(tmp_path / "dlq" / "picky").to_pylist()
    assert sorted(e["error_message"] for e in dlq) == sorted(
        f"duplicate key {i}" for i in range(0, 20, 4)
    )


def test_source_rejects_are_read_and_dead_lettered(tmp_path: Path, list_loader: ListLoader) -> None:
    class WithBadLines(BaseExtractor[dict]):
        def extract(self) -> Iterator[Batch]:
            rejected = reject_table(
                [
                    {
                        "partition": "f.csv",
                        "position": "1",
                        "line": 3,
                        "raw": "x,,",
                        "error_type": "DecodeError",
                        "error_message": "3 fields, expected 2",
                    }
                ]
            )
            yield Batch.from_source(
                pa.table({"id": [1, 2]}),
                {"f.csv": PartitionSpan({"row": 0}, {"row": 3}, 2)},
                rejected=rejected,
            )

    metrics = Pipeline("rej", WithBadLines(), [], [], list_loader, home=tmp_path).run()
    assert metrics.read == 3 and metrics.written == 2 and metrics.dead_lettered == 1
    (entry,) = read_dead_letters(tmp_path / "dlq" / "rej").to_pylist()
    assert (entry["stage"], entry["line"], entry["raw"], entry["partition"]) == (
        "extract",
        3,
        "x,,",
        "f.csv",
    )


def test_dlq_ids_are_stable_across_reruns(tmp_path: Path) -> None:
    def ids(home: Path) -> list[str]:
        Pipeline(
            "ids", RangeExtractor(50, 25), [RaiseOn({7, 31})], [], ListLoader(), home=home
        ).run()
        return sorted(read_dead_letters(home / "dlq" / "ids").column("dlq_id").to_pylist())

    assert ids(tmp_path / "a") == ids(tmp_path / "b")
    assert len(set(ids(tmp_path / "c"))) == 2


def test_pending_intent_is_replayed_exactly_and_skipped_by_idempotent_sink(tmp_path: Path) -> None:
    """Crash after the sink committed, before the state did: rerun replays, sink skips."""

    class Ledger(ListLoader):
        def __init__(self) -> None:
            super().__init__()
            self.loaded: set[int] = set()

        def committed(self, batch: Batch) -> bool:
            return batch.seq in self.loaded

        def load(self, batch: Batch) -> LoadResult | None:
            self.loaded.add(batch.seq)
            return super().load(batch)

    store = LocalStateStore(tmp_path / "state", "replay")
    state, version = store.read()
    state.intents.append(Intent(0, {"r": PartitionSpan(0, 30, 30)}, run_id="crashed"))
    state.next_seq = 1
    store.commit(state, version)
    loader = Ledger()
    loader.loaded = {0}
    loader.tables.append(pa.table({"id": list(range(30))}))  # what the crashed run loaded

    metrics = Pipeline("replay", RangeExtractor(100, 30), [], [], loader, home=tmp_path).run()
    assert metrics.replayed_batches == 1
    assert metrics.skipped_committed == 30
    assert sorted(r["id"] for r in loader.rows) == list(range(100))
    state, _ = store.read()
    assert state.intents == [] and state.positions == {"r": 100}


def test_run_lock_keeps_a_second_run_out(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    class Slow(ListLoader):
        def load(self, batch: Batch) -> LoadResult | None:
            started.set()
            release.wait(10)
            return super().load(batch)

    first = Pipeline("locked", RangeExtractor(10, 10), [], [], Slow(), home=tmp_path)
    thread = threading.Thread(target=first.run)
    thread.start()
    try:
        assert started.wait(10)
        with pytest.raises(RunFailedError) as info:
            Pipeline("locked", RangeExtractor(10, 10), [], [], ListLoader(), home=tmp_path).run()
        assert isinstance(info.value.cause, RunLockedError)
    finally:
        release.set()
        thread.join()


def test_state_store_is_compare_and_swap(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path, "cas")
    state, version = store.read()
    assert version == 0
    assert store.commit(state, 0) == 1
    with pytest.raises(StateConflictError):
        store.commit(state, 0)


def test_limit_stops_after_the_batch_reaching_it(tmp_path: Path, list_loader: ListLoader) -> None:
    metrics = Pipeline(
        "lim", RangeExtractor(1000, 100), [], [], list_loader, limit=250, home=tmp_path
    ).run()
    assert metrics.read == 300
    rest = ListLoader()
    Pipeline("lim", RangeExtractor(1000, 100), [], [], rest, home=tmp_path).run()
    assert sorted(r["id"] for r in list_loader.rows + rest.rows) == list(range(1000))


def test_events_cover_each_stage(tmp_path: Path, list_loader: ListLoader) -> None:
    events: list[StageEvent] = []
    Pipeline(
        "ev",
        RangeExtractor(20, 10),
        [RaiseOn({5})],
        [IdBelow(19)],
        list_loader,
        hooks=[events.append],
        home=tmp_path,
    ).run()
    kinds = [e.kind for e in events]
    assert kinds[0] == EventKind.RUN_STARTED and kinds[-1] == EventKind.RUN_FINISHED
    for kind in (
        EventKind.BATCH_EXTRACTED,
        EventKind.BATCH_TRANSFORMED,
        EventKind.BATCH_VALIDATED,
        EventKind.BATCH_LOADED,
        EventKind.ROWS_DEAD_LETTERED,
        EventKind.BATCH_COMMITTED,
    ):
        assert kinds.count(kind) >= 1, kind
    assert all(e.run_id == events[0].run_id for e in events)


def test_a_failing_event_hook_does_not_break_the_run(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    def bad_hook(event: StageEvent) -> None:
        raise RuntimeError("observer bug")

    metrics = Pipeline(
        "hook", RangeExtractor(10, 5), [], [], list_loader, hooks=[bad_hook], home=tmp_path
    ).run()
    assert metrics.written == 10


def test_extractor_error_fails_the_run_without_committing(
    tmp_path: Path, list_loader: ListLoader
) -> None:
    class Dies(RangeExtractor):
        def extract(self) -> Iterator[Batch]:
            yield self._batch(0, 10)
            raise OSError("disk gone")

    with pytest.raises(RunFailedError) as info:
        Pipeline("dies", Dies(100, 10), [], [], list_loader, home=tmp_path).run()
    assert "disk gone" in str(info.value)
    state, _ = LocalStateStore(tmp_path / "state", "dies").read()
    assert state.positions.get("r", 0) in (0, 10)


def test_sequence_source_delivers_every_row_once(tmp_path: Path, list_loader: ListLoader) -> None:
    source = SequenceExtractor(partitions=3, rows=200, batch_size=90, bad_every=10)
    metrics = Pipeline("seq", source, [], [IdBelowAmount()], list_loader, home=tmp_path).run()
    sink = pa.concat_tables(list_loader.tables)
    report = check_delivery(
        expected_rows(3, 200), sink, read_dead_letters(tmp_path / "dlq" / "seq")
    )
    assert report.ok, report.summary()
    assert report.dead_lettered == 60 and metrics.dead_lettered == 60


class IdBelowAmount(BaseValidator[pa.Table]):
    def validate(self, data: pa.Table) -> ValidationReport:
        report = ValidationReport("amount")
        report.add(
            RuleResult.from_mask(
                "amount.positive", pc.less(data.column("amount"), 0), column="amount"
            )
        )
        return report


class _Unused(BaseLoader[dict]):
    def load(self, batch: Batch) -> LoadResult | None:  # pragma: no cover
        return None


def test_refused_rows_are_durable_before_the_sink_commits(tmp_path: Path) -> None:
    """The sink commits only after its refused rows are in the DLQ; a failed commit retries all."""
    order: list[str] = []

    class TwoPhase(ListLoader):
        def __init__(self) -> None:
            super().__init__()
            self.commit_failures = 1

        def load(self, batch: Batch) -> LoadResult | None:
            order.append("load")
            return LoadResult(written=batch.num_rows - 1, rejected=[RowRejection(0, "null key")])

        def commit(self, batch: Batch) -> None:
            dlq_files = list((tmp_path / "dlq" / "twophase").glob("*.parquet"))
            order.append(f"commit:{len(dlq_files)}")
            if self.commit_failures:
                self.commit_failures -= 1
                raise TransientError("commit lost")

        def abort(self, batch: Batch) -> None:
            order.append("abort")

    metrics = Pipeline(
        "twophase", RangeExtractor(5, 5), [], [], TwoPhase(), retry=FAST_RETRY, home=tmp_path
    ).run()
    assert order == ["load", "commit:1", "abort", "load", "commit:1"]
    assert metrics.written == 4
    assert metrics.dead_lettered == 1
    assert metrics.retries == 1
    assert metrics.balanced
    (entry,) = read_dead_letters(tmp_path / "dlq" / "twophase").to_pylist()
    assert (entry["stage"], entry["error_message"], entry["attempt"]) == ("load", "null key", 2)


def test_the_sink_writes_a_batch_while_the_next_is_transformed_commits_stay_in_order(
    tmp_path: Path,
) -> None:
    """Load-ahead: batch N loads on a worker thread while N+1 is transformed; order is kept."""
    timeline: list[str] = []
    release = threading.Event()

    class SlowSink(ListLoader):
        def load(self, batch: Batch) -> LoadResult | None:
            timeline.append(f"load {batch.seq} on {threading.current_thread().name[:14]}")
            if batch.seq == 0:
                assert release.wait(5), "batch 1 was not transformed while batch 0 loaded"
            return super().load(batch)

    class Watch(BaseTransformer[pa.Table, pa.Table]):
        def transform(self, data: pa.Table) -> pa.Table:
            timeline.append(f"transform {data.column('id')[0].as_py() // 10}")
            if data.column("id")[0].as_py() == 10:
                release.set()
            return data

    events: list[StageEvent] = []
    loader = SlowSink()
    p = Pipeline(
        "ahead",
        RangeExtractor(30, 10),
        [Watch()],
        [],
        loader,
        home=tmp_path,
        hooks=[events.append],
        load_ahead=True,
    )
    m = p.run()
    assert m.written == 30 and m.balanced
    assert timeline[:3] == ["transform 0", "load 0 on sluiceway-load", "transform 1"]
    committed = [e.seq for e in events if e.kind is EventKind.BATCH_COMMITTED]
    assert committed == [0, 1, 2]
    assert [b.seq for b in loader.batches] == [0, 1, 2]

    # A sink that must stay on the run's thread opts out (load_ahead=False is the default).
    class Pinned(ListLoader):
        load_ahead = False

        def load(self, batch: Batch) -> LoadResult | None:
            assert threading.current_thread() is threading.main_thread()
            return super().load(batch)

    pinned = Pipeline(
        "pinned", RangeExtractor(30, 10), [], [], Pinned(), home=tmp_path, load_ahead=True
    )
    assert pinned.run().written == 30


def test_a_failure_in_the_next_batch_keeps_the_batch_already_loaded(tmp_path: Path) -> None:
    loader = ListLoader()
    p = Pipeline(
        "keep",
        RangeExtractor(30, 10),
        [RaiseOn(set())],
        [IdBelow(100, on_fail="fail")],
        loader,
        home=tmp_path,
        load_ahead=True,
    )
    p.validators[0].limit = 15  # batch 1 (ids 10..19) fails the run while batch 0 is loading
    with pytest.raises(RunFailedError):
        p.run()
    state, _ = LocalStateStore(tmp_path / "state", "keep").read()
    assert state.positions == {"r": 10}  # batch 0 was loaded and is committed
    assert [i.seq for i in state.intents] == [1]  # batch 1 stays pending for the next run
    assert sorted(r["id"] for r in loader.rows) == list(range(10))
