"""Read a contender's output back and compare it with the expected result (a subprocess).

``python -m benchmarks.files.verify KIND SOURCE OUT_DIR`` with KIND ``floor``,
``pandas`` or ``sluiceway``. The expected rows are computed from SOURCE with
pyarrow alone; rows that pass must match exactly (sorted by id, every column;
floats within 1e-9), and the rows set aside must be as many as fail the checks.
Exits non-zero with the difference on failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks.files.job import CURRENCIES, STATUSES


def expected(source: Path) -> tuple[pa.Table, int]:
    """The rows that pass (sorted by id) and how many fail."""
    table = pq.read_table(source)
    amount = pc.divide(pc.cast(table["amount_cents"], pa.float64()), 100.0)
    total = pc.multiply(table["unit_price"], pc.cast(table["quantity"], pa.float64()))
    table = table.append_column("amount", amount).append_column("total", total)
    checks = [
        pc.and_(pc.greater_equal(amount, 0), pc.less_equal(amount, 100_000)),
        pc.and_(pc.greater_equal(table["quantity"], 1), pc.less_equal(table["quantity"], 100)),
        pc.is_in(table["status"], pa.array(STATUSES)),
        pc.is_in(table["currency"], pa.array(CURRENCIES)),
    ]
    ok = checks[0]
    for check in checks[1:]:
        ok = pc.and_(ok, check)
    valid = table.filter(ok).sort_by("id")
    return valid, table.num_rows - valid.num_rows


def _normalised(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        return pc.cast(column, pa.string())
    return column


def same_rows(got: pa.Table, want: pa.Table, who: str) -> None:
    if got.num_rows != want.num_rows:
        raise AssertionError(f"{who}: {got.num_rows} rows, expected {want.num_rows}")
    got = got.sort_by("id")
    for name in want.column_names:
        x, y = _normalised(got[name]), _normalised(want[name])
        if pa.types.is_floating(y.type):
            diff = pc.max(pc.abs(pc.subtract(pc.cast(x, pa.float64()), y))).as_py() or 0.0
            if diff > 1e-9:
                raise AssertionError(f"{who}: column {name} differs by up to {diff}")
        elif not x.equals(y):
            raise AssertionError(f"{who}: column {name} differs")


def verify(kind: str, source: Path, out: Path) -> None:
    if kind == "floor":
        got = pq.read_table(out / "floor")
        rows = pq.read_metadata(source).num_rows
        if got.num_rows != rows or not got.equals(pq.read_table(source)):
            raise AssertionError(f"floor: {got.num_rows} rows differ from the {rows} read")
        return
    want, rejected = expected(source)
    if kind == "pandas":
        got = pq.read_table(out / "pandas" / "valid.parquet")
        aside = pq.read_metadata(out / "pandas" / "rejected.parquet").num_rows
    else:
        got = ds.dataset(out / "sluiceway", format="parquet").to_table()
        aside = ds.dataset(out / "sluiceway-home" / "dlq" / "bench-files").count_rows()
    if aside != rejected:
        raise AssertionError(f"{kind}: {aside} rows set aside, expected {rejected}")
    same_rows(got, want, kind)


if __name__ == "__main__":
    try:
        verify(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
    except AssertionError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
