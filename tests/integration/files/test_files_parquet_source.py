"""The Parquet source: row-group resume, column subsets, declared types, replay."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.integration.files.support import Harness

from sluiceway.connectors.files import ParquetExtractor
from sluiceway.core import Batch, Intent, SourceContext, SourceError


def source_file(tmp_path: Path, rows: int = 10, name: str = "a.parquet") -> Path:
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": pa.array(range(rows), type=pa.int64()),
            "code": [str(i) if i != 7 else "seven" for i in range(rows)],
            "note": [f"n{i}" for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=3)
    return path


def batches(extractor: ParquetExtractor, positions: dict[str, object] | None = None) -> list[Batch]:
    extractor.open(SourceContext("t", "run", positions=dict(positions or {})))
    return list(extractor.extract())


def test_rows_read_back_equal_the_input(harness: Harness, tmp_path: Path) -> None:
    path = source_file(tmp_path)

    m = harness.run(ParquetExtractor(str(path), batch_size=4))

    assert harness.written().equals(pq.read_table(path))
    assert (m.read, m.written, m.batches) == (10, 10, 3)


def test_declared_type_misfits_are_dead_lettered_with_column_and_value(
    harness: Harness, tmp_path: Path
) -> None:
    path = source_file(tmp_path)

    m = harness.run(ParquetExtractor(str(path), schema={"code": "int32"}))

    assert harness.written().column("id").to_pylist() == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert harness.written().schema.field("code").type == pa.int32()
    (dead,) = harness.dead_letters()
    assert (dead["error_type"], dead["column"], dead["value"], dead["position"]) == (
        "CastError",
        "code",
        "seven",
        "7",
    )
    assert dead["line"] is None
    assert '"note":"n7"' in dead["raw"]
    assert (m.read, m.written, m.dead_lettered) == (10, 9, 1)


def test_resume_mid_file_starts_in_the_right_row_group(harness: Harness, tmp_path: Path) -> None:
    path = source_file(tmp_path)

    first = harness.run(ParquetExtractor(str(path), batch_size=4), limit=1)
    second = harness.run(ParquetExtractor(str(path), batch_size=4))
    third = harness.run(ParquetExtractor(str(path), batch_size=4))

    assert (first.read, second.read, third.read) == (4, 6, 0)
    assert harness.written().column("id").to_pylist() == list(range(10))


def test_resume_position_inside_a_row_group(tmp_path: Path) -> None:
    path = source_file(tmp_path)
    (whole,) = batches(ParquetExtractor(str(path)))
    fp = whole.positions[str(path)].end["fp"]

    rest = batches(ParquetExtractor(str(path)), {str(path): {"row": 5, "done": False, "fp": fp}})

    assert [b.to_arrow().column("id").to_pylist() for b in rest] == [[5, 6, 7, 8, 9]]
    assert rest[0].meta is not None
    assert rest[0].meta.column("position").to_pylist() == ["5", "6", "7", "8", "9"]


def test_column_subset(harness: Harness, tmp_path: Path) -> None:
    path = source_file(tmp_path, rows=3)

    harness.run(ParquetExtractor(str(path), columns=["note", "id"]))

    assert harness.rows() == [{"note": f"n{i}", "id": i} for i in range(3)]


def test_unknown_column_is_a_source_error(tmp_path: Path) -> None:
    path = source_file(tmp_path, rows=3)

    with pytest.raises(SourceError, match="nope"):
        batches(ParquetExtractor(str(path), columns=["id", "nope"]))


def test_replay_of_an_intent_gives_identical_rows(tmp_path: Path) -> None:
    path = source_file(tmp_path)
    original = batches(ParquetExtractor(str(path), batch_size=4, schema={"code": "int64"}))[1]

    replayed = ParquetExtractor(str(path), schema={"code": "int64"}).replay(
        Intent(seq=3, positions=dict(original.positions))
    )

    assert replayed is not None
    assert replayed.to_arrow().equals(original.to_arrow())
    assert replayed.rejected is not None and original.rejected is not None
    assert replayed.rejected.equals(original.rejected)


def test_an_empty_file_gives_one_empty_batch_marked_done(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], type=pa.int64())}), path)

    (batch,) = batches(ParquetExtractor(str(path)))

    assert batch.num_rows == 0
    assert batch.to_arrow().schema.names == ["id"]
    assert batch.positions[str(path)].end == {
        "row": 0,
        "done": True,
        "fp": batch.positions[str(path)].start["fp"],
    }


def test_a_file_that_is_not_parquet_is_a_source_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("id\n1\n", encoding="utf-8")

    with pytest.raises(SourceError, match="fake"):
        batches(ParquetExtractor(str(path)))
