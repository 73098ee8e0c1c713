"""The CSV source through the real pipeline: rows, dead letters, positions, resume, replay."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from structlog.testing import capture_logs
from tests.integration.files.support import Harness, balanced

from sluiceway.connectors.files import CsvExtractor
from sluiceway.core import (
    BaseTransformer,
    Intent,
    RunFailedError,
    SourceContext,
    SourceError,
)

Write = Callable[[str, str | bytes], Path]


def batches(extractor: CsvExtractor, positions: dict[str, object] | None = None) -> list:
    extractor.open(SourceContext("t", "run", positions=dict(positions or {})))
    return list(extractor.extract())


def test_rows_read_back_equal_the_input(harness: Harness, write: Write) -> None:
    lines = ["id,name,amount,day"] + [f"{i},n{i},{i}.5,2024-01-{i % 28 + 1:02d}" for i in range(25)]
    path = write("orders.csv", "\n".join(lines) + "\n")

    m = harness.run(CsvExtractor(str(path), batch_size=10))

    table = harness.written()
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("amount").type == pa.float64()
    assert table.schema.field("day").type == pa.date32()
    assert [r["id"] for r in harness.rows()] == list(range(25))
    assert harness.rows()[3]["name"] == "n3"
    assert (m.read, m.written, m.dead_lettered, m.batches) == (25, 25, 0, 3)


def test_malformed_rows_are_dead_lettered_with_physical_line_and_raw_text(
    harness: Harness, write: Write
) -> None:
    text = (
        "id,name,amount\n"  # 1
        "1,a,1.5\n"  # 2
        "2,b\n"  # 3  too few fields
        "\n"  # 4  empty line (skipped)
        '3,"multi\n'  # 5
        'line",2.5\n'  # 6
        "4,d,4,extra\n"  # 7  too many fields
        "5,e,5\n"  # 8
    )
    path = write("bad.csv", text)

    m = harness.run(CsvExtractor(str(path), batch_size=2))

    assert [r["id"] for r in harness.rows()] == [1, 3, 5]
    assert harness.rows()[1]["name"] == "multi\nline"
    dead = harness.dead_letters()
    assert [(d["line"], d["raw"], d["error_type"]) for d in dead] == [
        (3, "2,b", "DecodeError"),
        (7, "4,d,4,extra", "DecodeError"),
    ]
    assert all(d["partition"] == str(path) for d in dead)
    assert [d["position"] for d in dead] == ["1", "3"]
    assert f"{path}:3" in dead[0]["error_message"]
    assert "expected 3 field(s), found 2" in dead[0]["error_message"]
    assert (m.read, m.written, m.dead_lettered) == (5, 3, 2)


def test_line_numbers_with_crlf_and_leading_empty_lines(harness: Harness, write: Write) -> None:
    path = write("win.csv", b"\r\n\r\nid,v\r\n1,a\r\n\r\n2\r\n3,c\r\n")

    harness.run(CsvExtractor(str(path)))

    assert harness.rows() == [{"id": 1, "v": "a"}, {"id": 3, "v": "c"}]
    (dead,) = harness.dead_letters()
    assert (dead["line"], dead["raw"]) == (6, "2")


def test_a_file_of_only_malformed_rows_stops_with_a_hint_instead_of_filling_memory(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluiceway.connectors.files import _csv

    monkeypatch.setattr(_csv, "MAX_PENDING_BYTES", 100)
    path = write("shifted.csv", "a,b,c\n" + "".join(f"{i},{i}\n" for i in range(200)))

    with pytest.raises(SourceError, match="delimiter or the header"):
        batches(CsvExtractor(str(path)))


class Refuse(BaseTransformer[pa.Table, pa.Table]):
    """A row-wise transform that fails on any batch holding the name "boom"."""

    def transform(self, data: pa.Table) -> pa.Table:
        if "boom" in data.column("name").to_pylist():
            raise ValueError("boom")
        return data


def test_a_later_stage_dead_letter_says_which_file_and_line_the_row_came_from(
    harness: Harness, write: Write
) -> None:
    path = write("a.csv", 'id,name\n1,ok\n\n2,"two\nlines"\n3,boom\n4,ok\n')

    harness.run(CsvExtractor(str(path)), transformers=[Refuse()])

    (dead,) = harness.dead_letters()
    assert (dead["partition"], dead["position"], dead["line"]) == (str(path), "2", 6)
    assert dead["error_type"] == "ValueError"
    assert [r["id"] for r in harness.rows()] == [1, 2, 4]


def test_values_that_do_not_fit_the_declared_type_are_dead_lettered_not_nulled(
    harness: Harness, write: Write
) -> None:
    path = write("typed.csv", "id,amount\n1,1.5\n2,abc\n3,\n4,7\n")

    m = harness.run(CsvExtractor(str(path), schema={"amount": "double", "id": "int32"}))

    assert harness.rows() == [
        {"id": 1, "amount": 1.5},
        {"id": 3, "amount": None},
        {"id": 4, "amount": 7.0},
    ]
    assert harness.written().schema.field("id").type == pa.int32()
    (dead,) = harness.dead_letters()
    assert (dead["error_type"], dead["column"], dead["value"], dead["line"]) == (
        "CastError",
        "amount",
        "abc",
        3,
    )
    assert dead["raw"] == '{"id":"2","amount":"abc"}'
    assert f"{path}:3" in dead["error_message"]
    assert (m.read, m.written, m.dead_lettered) == (4, 3, 1)


def test_a_later_block_that_misfits_the_inferred_type_is_rejected_not_fatal(
    harness: Harness, write: Write
) -> None:
    lines = ["x,y"] + [f"{i},{i}" for i in range(300)] + ["oops,1", "301,301"]
    path = write("drift.csv", "\n".join(lines) + "\n")

    harness.run(CsvExtractor(str(path), batch_size=100, block_bytes=512))

    assert len(harness.rows()) == 301
    assert harness.written().schema.field("x").type == pa.int64()
    (dead,) = harness.dead_letters()
    assert (dead["column"], dead["value"], dead["line"]) == ("x", "oops", 302)


def test_invalid_utf8_is_a_decode_error_naming_the_column(harness: Harness, write: Write) -> None:
    path = write("latin.csv", b"id,name\n1,ok\n2,caf\xe9\n3,fine\n")

    harness.run(CsvExtractor(str(path)))

    assert [r["id"] for r in harness.rows()] == [1, 3]
    (dead,) = harness.dead_letters()
    assert (dead["error_type"], dead["column"], dead["line"]) == ("DecodeError", "name", 3)


def test_encoding_option_reads_latin1(harness: Harness, write: Write) -> None:
    path = write("latin.csv", b"id,name\n2,caf\xe9\n")

    harness.run(CsvExtractor(str(path), encoding="latin-1"))

    assert harness.rows() == [{"id": 2, "name": "café"}]


def test_headerless_file_with_names_delimiter_and_null_values(
    harness: Harness, write: Write
) -> None:
    path = write("plain.tsv", "1\tNA\n2\tb\n")

    harness.run(
        CsvExtractor(
            str(path), header=False, columns=["id", "v"], delimiter="\t", null_values=["NA"]
        )
    )

    assert harness.rows() == [{"id": 1, "v": None}, {"id": 2, "v": "b"}]


def test_second_run_reads_nothing_and_a_changed_file_is_read_again(
    harness: Harness, write: Write
) -> None:
    path = write("a.csv", "id\n1\n2\n")
    harness.run(CsvExtractor(str(path)))

    again = harness.run(CsvExtractor(str(path)))
    assert (again.read, again.batches) == (0, 0)

    path.write_text("id\n1\n2\n3\n", encoding="utf-8")
    os.utime(path, (1, 1))  # a new mtime even within the clock's resolution
    changed = harness.run(CsvExtractor(str(path)))
    assert changed.read == 3
    assert [r["id"] for r in harness.rows()] == [1, 2, 1, 2, 3]


def test_incremental_false_reads_everything_every_run(harness: Harness, write: Write) -> None:
    path = write("a.csv", "id\n1\n2\n")
    harness.run(CsvExtractor(str(path), incremental=False))
    again = harness.run(CsvExtractor(str(path), incremental=False))
    assert again.read == 2


def test_resume_after_a_partial_run_writes_every_row_exactly_once(
    harness: Harness, write: Write
) -> None:
    lines = ["id"] + [str(i) for i in range(10)]
    lines[4] = "3,extra"  # record 3 is malformed
    path = write("a.csv", "\n".join(lines) + "\n")

    first = harness.run(CsvExtractor(str(path), batch_size=4), limit=1)
    assert first.batches == 1
    second = harness.run(CsvExtractor(str(path), batch_size=4))

    assert first.read + second.read == 10
    assert [r["id"] for r in harness.rows()] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [d["line"] for d in harness.dead_letters()] == [5]


def test_replay_of_an_intent_gives_identical_rows_and_rejects(write: Write) -> None:
    lines = ["id,v"] + [f"{i},{i}" for i in range(12)]
    lines[5] = "4"  # malformed
    lines[9] = "8,x"  # does not fit int64
    path = write("a.csv", "\n".join(lines) + "\n")
    original = batches(CsvExtractor(str(path), batch_size=5, schema={"v": "int64"}))[1]

    replayed = CsvExtractor(str(path), batch_size=999, schema={"v": "int64"}).replay(
        Intent(seq=7, positions=dict(original.positions))
    )

    assert replayed is not None
    assert replayed.to_arrow().equals(original.to_arrow())
    assert replayed.meta is not None and original.meta is not None
    assert replayed.meta.equals(original.meta)
    assert replayed.rejected is not None and original.rejected is not None
    assert replayed.rejected.equals(original.rejected)
    assert replayed.positions == original.positions


def test_replay_is_refused_when_the_file_changed(write: Write) -> None:
    path = write("a.csv", "id\n1\n2\n")
    (batch,) = batches(CsvExtractor(str(path)))
    path.write_text("id\n9\n", encoding="utf-8")
    os.utime(path, (1, 1))

    assert CsvExtractor(str(path)).replay(Intent(0, dict(batch.positions))) is None


def test_positions_say_rows_consumed_done_and_fingerprint(write: Write) -> None:
    path = write("a.csv", "id\n1\nbad,1\n3\n")
    first, last = batches(CsvExtractor(str(path), batch_size=2))

    span = first.positions[str(path)]
    assert (span.start["row"], span.end["row"], span.end["done"], span.rows) == (0, 2, False, 1)
    end = last.positions[str(path)].end
    assert (end["row"], end["done"]) == (3, True)
    assert end["fp"] == span.start["fp"]


def test_gzip_input(harness: Harness, write: Write) -> None:
    path = write("a.csv.gz", gzip.compress(b"id,v\n1,a\n2,b\n"))

    harness.run(CsvExtractor(str(path)))

    assert harness.rows() == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


def test_a_glob_reads_each_file_as_its_own_partition_in_path_order(
    harness: Harness, write: Write
) -> None:
    b = write("in/b.csv", "id\n3\n4\n")
    a = write("in/a.csv", "id\n1\n2\n")
    write("in/skip.txt", "not csv")

    extractor = CsvExtractor(str(a.parent / "*.csv"), batch_size=10)
    found = batches(extractor)

    assert [list(x.positions) for x in found] == [[str(a)], [str(b)]]
    m = harness.run(CsvExtractor(str(a.parent / "*.csv"), batch_size=10))
    assert [r["id"] for r in harness.rows()] == [1, 2, 3, 4]
    assert m.batches == 2


def test_a_directory_skips_hidden_and_underscore_entries(write: Write) -> None:
    a = write("dir/a.csv", "id\n1\n")
    write("dir/_staging/x.csv", "id\n2\n")
    write("dir/.hidden.csv", "id\n3\n")

    found = batches(CsvExtractor(str(a.parent)))

    assert [list(x.positions) for x in found] == [[str(a)]]


def test_an_empty_file_is_committed_as_done(harness: Harness, write: Write) -> None:
    path = write("empty.csv", "")
    (batch,) = batches(CsvExtractor(str(path)))
    assert batch.num_rows == 0
    assert batch.positions[str(path)].end["done"] is True

    harness.run(CsvExtractor(str(path)))
    again = harness.run(CsvExtractor(str(path)))
    assert again.batches == 0


def test_a_missing_file_is_a_source_error_naming_it(harness: Harness, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"

    with pytest.raises(RunFailedError) as info:
        harness.run(CsvExtractor(str(missing)))

    assert isinstance(info.value.cause, SourceError)
    assert str(missing) in str(info.value.cause)


def test_a_corrupt_compressed_file_is_a_source_error_naming_it(write: Write) -> None:
    path = write("broken.csv.gz", b"this is not gzip data at all")

    with pytest.raises(SourceError, match=r"broken\.csv\.gz"):
        batches(CsvExtractor(str(path)))


def test_a_glob_matching_nothing_gives_no_batches_and_a_warning(
    harness: Harness, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        m = harness.run(CsvExtractor(str(tmp_path / "none-*.csv")))

    assert (m.read, m.batches) == (0, 0)
    assert any(e["event"] == "no_input_files" and e["log_level"] == "warning" for e in logs)


def test_declared_column_missing_from_the_file_is_a_source_error(write: Write) -> None:
    path = write("a.csv", "id\n1\n")

    with pytest.raises(SourceError, match="amount"):
        batches(CsvExtractor(str(path), schema={"amount": "double"}))


def test_metrics_balance_with_a_mix_of_everything(harness: Harness, write: Write) -> None:
    path = write("mix.csv", "id,v\n1,1\n2\n3,x\n\n4,4\n")

    m = harness.run(CsvExtractor(str(path), schema={"v": "int64"}, batch_size=2))

    assert balanced(m)
    assert m.read == 4
    assert m.written == len(harness.rows()) == 2
    assert m.dead_lettered == len(harness.dead_letters()) == 2
