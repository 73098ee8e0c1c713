"""The Parquet sink dictionary-encodes repeated text only, decided once per column."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.connectors.files import ParquetLoader


def _encodings(buffer: io.BytesIO) -> dict[str, set[str]]:
    meta = pq.ParquetFile(io.BytesIO(buffer.getvalue())).metadata.row_group(0)
    return {
        meta.column(i).path_in_schema: set(meta.column(i).encodings)
        for i in range(meta.num_columns)
    }


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "status": pa.array(
                [("new", "paid", "shipped")[i % 3] for i in range(start, start + n)]
            ),
            "email": pa.array([f"user{i}@example.com" for i in range(start, start + n)]),
            "amount": pa.array(range(start, start + n), pa.int64()),
        }
    )


def test_repeated_text_gets_a_dictionary_unique_text_and_numbers_do_not(tmp_path: Path) -> None:
    loader = ParquetLoader(tmp_path)
    first = io.BytesIO()
    loader.write(_table(20_000), first)
    encodings = _encodings(first)
    assert "RLE_DICTIONARY" in encodings["status"]
    assert "RLE_DICTIONARY" not in encodings["email"]
    assert "RLE_DICTIONARY" not in encodings["amount"]
    # Decided once: a later batch keeps the first batch's choice for each column.
    later = io.BytesIO()
    loader.write(_table(20_000, start=20_000), later)
    assert _encodings(later) == encodings
    assert pq.read_table(io.BytesIO(later.getvalue())).equals(_table(20_000, start=20_000))


def test_a_small_first_batch_does_not_decide_for_the_run(tmp_path: Path) -> None:
    loader = ParquetLoader(tmp_path)
    small = io.BytesIO()
    loader.write(_table(50), small)  # too few values to judge: the writer's own choice
    assert "RLE_DICTIONARY" in _encodings(small)["email"]
    big = io.BytesIO()
    loader.write(_table(20_000, start=50), big)
    assert "RLE_DICTIONARY" not in _encodings(big)["email"]
