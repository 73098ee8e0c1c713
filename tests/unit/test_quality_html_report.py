"""The HTML data-quality report: what a reader sees for each validator and check of a run."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
from tests.support import ListLoader

from sluiceway.core import BaseExtractor, Pipeline, PipelineMetrics
from sluiceway.quality.expectations import ExpectationsValidator
from sluiceway.quality.html_report import render_dq_report, write_dq_report


class Slices(BaseExtractor[Any]):
    def __init__(self, table: pa.Table, batch_size: int) -> None:
        super().__init__(batch_size)
        self.table = table

    def extract(self) -> Iterator[pa.Table]:
        for i in range(0, self.table.num_rows, self.batch_size):
            yield self.table.slice(i, self.batch_size)


class Tables(HTMLParser):
    """Sections (by their h2) and the text of each table row's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._in_h2, self._section = True, ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
            self.sections[self._section] = []
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.sections[self._section].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self._section += data
        elif self._cell is not None:
            self._cell.append(data)


def run_orders(tmp_path: Path) -> PipelineMetrics:
    table = pa.table(
        {
            "id": [1, 2, 2, 4, 5, 6],
            "amount": [5, -1, 3, 4, 2000, 6],
            "note": ["ok", "ok", "ok", "<script>alert(1)</script>", "ok", "ok"],
        }
    )
    validators = [
        ExpectationsValidator(
            [
                {"column": "id", "not_null": True, "unique": True},
                {"column": "amount", "between": [0, 1000]},
                {"column": "note", "accepted_values": ["ok"], "on_fail": "warn"},
                {"row_count": [4, None], "on_fail": "warn"},
            ],
            name="orders-quality",
        )
    ]
    sink = ListLoader()
    return Pipeline("orders", Slices(table, 4), [], validators, sink, home=tmp_path).run()


def test_each_check_is_a_row_with_its_counts_rate_outcome_and_sample(tmp_path):
    metrics = run_orders(tmp_path)
    path = tmp_path / "report" / "dq.html"

    write_dq_report(metrics, path)

    page = path.read_text(encoding="utf-8")
    assert path.stat().st_mode & 0o777 == 0o644  # readable by whoever it is shared with
    parser = Tables()
    parser.feed(page)
    header, *rows = parser.sections["orders-quality"]
    assert header[:8] == [
        "check",
        "column",
        "level",
        "on_fail",
        "outcome",
        "checked",
        "failed",
        "failure rate",
    ]
    by_check = {row[0]: row for row in rows}
    # Failing checks come first, the most failing first; passing ones after.
    assert [row[0] for row in rows][-1] == "id.not_null"
    assert by_check["amount.between"] == [
        "amount.between",
        "amount",
        "row-level",
        "dlq",
        "dead-lettered",
        "6 rows",
        "2",
        "33.33%",
        "2",
        "2",
        "-1, 2000",
    ]
    assert by_check["note.accepted_values"][3:7] == ["warn", "warned", "6 rows", "1"]
    assert by_check["row_count"][2:9] == [
        "batch-level",
        "warn",
        "warned",
        "2 batches",
        "1",
        "50.00%",
        "1",
    ]
    assert by_check["id.not_null"][4:7] == ["passed", "6 rows", "0"]
    assert by_check["id.unique"][9] == "1"
    # Values are escaped, never markup.
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_header_cards_show_the_books(tmp_path):
    metrics = run_orders(tmp_path)

    page = render_dq_report(metrics)

    assert "Data quality — orders" in page
    assert ">3</div><div class=k>dead-lettered" in page
    assert ">4 / 5</div><div class=k>checks failing" in page
    assert ">yes</div><div class=k>books balance" in page


def test_dead_letters_outside_validation_are_listed_apart():
    metrics = PipelineMetrics(pipeline="p", run_id="r", read=3, dead_lettered=3, written=0)
    metrics.dead_lettered_by = {"decode": 2, "transform.0.sql": 1}

    parser = Tables()
    parser.feed(render_dq_report(metrics))

    assert parser.sections["Other dead letters"][1:] == [["decode", "2"], ["transform.0.sql", "1"]]
    assert "No validator ran in this run." in render_dq_report(metrics)
