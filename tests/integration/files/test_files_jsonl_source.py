"""The JSON Lines source: malformed lines, type misfits, blank lines, resume and replay."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from tests.integration.files.support import Harness

from sluiceway.connectors.files import JsonlExtractor
from sluiceway.core import Batch, Intent, SourceContext, SourceError

Write = Callable[[str, str | bytes], Path]

BROKEN = (
    '{"id": 1, "name": "a"}\n'  # 1
    "\n"  # 2  empty: consumed, no row
    '{"id": 2, "name": "b"\n'  # 3  truncated
    "null\n"  # 4  not an object
    '{"id": "three", "name": "c"}\n'  # 5  id does not fit int64
    '{"id": 4}{"id": 5}\n'  # 6  two values on a line
    "[1, 2]\n"  # 7  not an object
    '{"id": 6, "name": "f"}'  # 8  no final newline
)


def batches(extractor: JsonlExtractor, positions: dict[str, object] | None = None) -> list[Batch]:
    extractor.open(SourceContext("t", "run", positions=dict(positions or {})))
    return list(extractor.extract())


def test_rows_read_back_equal_the_input(harness: Harness, write: Write) -> None:
    records = [
        {"id": i, "name": f"n{i}", "score": i / 2, "tags": ["x"] * (i % 3)} for i in range(7)
    ]
    path = write("a.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    m = harness.run(JsonlExtractor(str(path), batch_size=3))

    assert harness.rows() == records
    assert (m.read, m.written, m.batches) == (7, 7, 3)


def test_malformed_lines_are_dead_lettered_with_line_and_raw_text(
    harness: Harness, write: Write
) -> None:
    path = write("broken.jsonl", BROKEN)

    m = harness.run(JsonlExtractor(str(path), batch_size=3))

    assert harness.rows() == [{"id": 1, "name": "a"}, {"id": 6, "name": "f"}]
    dead = {d["line"]: d for d in harness.dead_letters()}
    assert sorted(dead) == [3, 4, 5, 6, 7]
    assert dead[3]["raw"] == '{"id": 2, "name": "b"'
    assert dead[3]["error_type"] == "DecodeError"
    assert f"{path}:3" in dead[3]["error_message"]
    assert "not an object" in dead[4]["error_message"]
    assert "more than one JSON value" in dead[6]["error_message"]
    assert "not a JSON object" in dead[7]["error_message"]
    assert (dead[5]["error_type"], dead[5]["column"], dead[5]["value"]) == (
        "CastError",
        "id",
        "three",
    )
    assert all(d["partition"] == str(path) for d in dead.values())
    assert (m.read, m.written, m.dead_lettered) == (7, 2, 5)


def test_lines_that_cannot_be_objects_are_rejected_before_the_parser_sees_them(
    harness: Harness, write: Write
) -> None:
    # pyarrow.json crashes the process on a buffer whose first value starts with
    # `null`, and turns a later bare `null` into an all-null row.
    path = write("nulls.jsonl", 'null\n{"id": 1}\n\rnull{"id": 2}\n  null\n{"id": 3}\r\n')

    m = harness.run(JsonlExtractor(str(path), batch_size=2))

    assert [r["id"] for r in harness.rows()] == [1, 3]
    assert [(d["line"], d["error_type"]) for d in harness.dead_letters()] == [
        (1, "DecodeError"),
        (3, "DecodeError"),
        (4, "DecodeError"),
    ]
    assert (m.read, m.written, m.dead_lettered) == (5, 2, 3)


def test_declared_schema_types_and_misfits(harness: Harness, write: Write) -> None:
    path = write("typed.jsonl", '{"at": "2024-01-02T03:04:05", "n": 1}\n{"at": "soon", "n": 2}\n')

    harness.run(JsonlExtractor(str(path), schema={"at": "timestamp[us]", "n": "int16"}))

    table = harness.written()
    assert table.schema.field("at").type == pa.timestamp("us")
    assert table.schema.field("n").type == pa.int16()
    assert table.column("n").to_pylist() == [1]
    (dead,) = harness.dead_letters()
    assert (dead["column"], dead["value"], dead["line"]) == ("at", "soon", 2)


def test_fields_missing_on_some_lines_are_null(harness: Harness, write: Write) -> None:
    path = write("sparse.jsonl", '{"a": 1, "b": "x"}\n{"a": 2}\n{"a": 3, "c": true}\n')

    harness.run(JsonlExtractor(str(path), batch_size=2))

    assert harness.rows() == [
        {"a": 1, "b": "x", "c": None},
        {"a": 2, "b": None, "c": None},
        {"a": 3, "b": None, "c": True},
    ]


def test_bisection_finds_one_bad_line_among_many(harness: Harness, write: Write) -> None:
    lines = [json.dumps({"i": i}) for i in range(1000)]
    lines[617] = '{"i": 617,,}'
    path = write("many.jsonl", "\n".join(lines) + "\n")

    m = harness.run(JsonlExtractor(str(path), batch_size=400, chunk_bytes=2048))

    assert m.written == 999
    assert [d["line"] for d in harness.dead_letters()] == [618]
    assert [r["i"] for r in harness.rows()] == [i for i in range(1000) if i != 617]


def test_resume_after_a_partial_run_and_incremental_second_run(
    harness: Harness, write: Write
) -> None:
    path = write("a.jsonl", BROKEN)

    first = harness.run(JsonlExtractor(str(path), batch_size=3), limit=1)
    second = harness.run(JsonlExtractor(str(path), batch_size=3))
    third = harness.run(JsonlExtractor(str(path), batch_size=3))

    assert first.batches == 1
    assert first.read + second.read == 7
    assert third.read == 0
    assert [r["id"] for r in harness.rows()] == [1, 6]
    assert sorted(d["line"] for d in harness.dead_letters()) == [3, 4, 5, 6, 7]


def test_replay_of_an_intent_gives_identical_rows_and_rejects(write: Write) -> None:
    path = write("a.jsonl", BROKEN)
    original = batches(JsonlExtractor(str(path), batch_size=3))[1]

    replayed = JsonlExtractor(str(path), batch_size=50).replay(
        Intent(seq=1, positions=dict(original.positions))
    )

    assert replayed is not None
    assert replayed.to_arrow().equals(original.to_arrow())
    assert replayed.meta is not None and replayed.meta.equals(original.meta)
    assert replayed.rejected is not None and original.rejected is not None
    assert replayed.rejected.equals(original.rejected)


def test_zstd_and_bz2_input(harness: Harness, write: Write) -> None:
    data = b'{"id": 1}\n{"id": 2}\n'
    zst = write("a.jsonl.zst", pa.compress(data, codec="zstd", asbytes=True))
    import bz2

    write("b.jsonl.bz2", bz2.compress(data))

    harness.run(JsonlExtractor(str(zst.parent / "*.jsonl.*")))

    assert [r["id"] for r in harness.rows()] == [1, 2, 1, 2]


def test_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        batches(JsonlExtractor(str(tmp_path / "nope.jsonl")))
