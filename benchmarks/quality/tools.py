"""One contender of the validation benchmark: one tool, five checks, over a Parquet file.

    python -m benchmarks.quality.tools TOOL DATA.parquet OUT.json

Reads the data into memory in batches of 100,000 rows (not timed); imports the
tool, builds and opens its validator and validates 1,000 rows once (timed as
``setup``: the tools import more on their first call); then times ``validate()``
on every batch (``validate``: conversion to the tool's frame included). Writes the timings
and the rows each check failed to ``OUT.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.quality.data import BATCH, EMAIL, STATUSES
from sluiceway.core import BaseValidator

TOOLS = ("expectations", "pandera", "great_expectations", "soda")

SUITE: dict[str, Any] = {
    "name": "bench",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "amount", "min_value": 0, "max_value": 1000},
        },
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "email", "regex": EMAIL},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "status", "value_set": STATUSES},
        },
    ],
}

CONTRACT = {
    "columns": [
        {"name": "id", "checks": [{"missing": None}, {"duplicate": None}]},
        {"name": "amount", "checks": [{"invalid": {"valid_min": 0, "valid_max": 1000}}]},
        {"name": "email", "checks": [{"invalid": {"valid_format": {"regex": EMAIL, "name": "e"}}}]},
        {"name": "status", "checks": [{"invalid": {"valid_values": STATUSES}}]},
    ]
}

# Which of the five checks each result name is.
KINDS = {
    "id.not_null": "not_null",
    "id.unique": "unique",
    "amount.between": "between",
    "email.regex": "regex",
    "status.accepted_values": "accepted",
    "id.not_nullable": "not_null",
    "id.field_uniqueness": "unique",
    "amount.in_range": "between",
    "email.str_matches": "regex",
    "status.isin": "accepted",
    "id.expect_column_values_to_not_be_null": "not_null",
    "id.expect_column_values_to_be_unique": "unique",
    "amount.expect_column_values_to_be_between": "between",
    "email.expect_column_values_to_match_regex": "regex",
    "status.expect_column_values_to_be_in_set": "accepted",
    "id.missing": "not_null",
    "id.duplicate": "unique",
    "amount.invalid": "between",
    "email.invalid": "regex",
    "status.invalid": "accepted",
}


def pandera_schema() -> Any:
    import pandera.polars as pa

    class Order(pa.DataFrameModel):
        id: int = pa.Field(nullable=False, unique=True)
        amount: float = pa.Field(in_range={"min_value": 0, "max_value": 1000})
        email: str = pa.Field(str_matches=EMAIL)
        status: str = pa.Field(isin=STATUSES)

    return Order


def build(tool: str) -> BaseValidator[Any]:
    if tool == "expectations":
        from sluiceway.quality.expectations import ExpectationsValidator

        return ExpectationsValidator(
            [
                {"column": "id", "not_null": True, "unique": True},
                {"column": "amount", "between": [0, 1000]},
                {"column": "email", "regex": EMAIL},
                {"column": "status", "accepted_values": STATUSES},
            ]
        )
    if tool == "pandera":
        from sluiceway.quality.pandera import PanderaValidator

        return PanderaValidator(pandera_schema())
    if tool == "great_expectations":
        from sluiceway.quality.great_expectations import GreatExpectationsValidator

        return GreatExpectationsValidator(SUITE)
    if tool == "soda":
        from sluiceway.quality.soda import SodaValidator

        return SodaValidator(CONTRACT)
    raise SystemExit(f"unknown tool {tool!r}; one of {TOOLS}")


def main() -> None:
    tool, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    parquet = pq.ParquetFile(data)
    columns = ["id", "amount", "email", "status"]
    batches = [
        pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=BATCH, columns=columns)
    ]
    t0 = time.perf_counter()
    validator = build(tool)
    validator.open()
    validator.validate(batches[0].slice(0, 1000))  # first-call lazy imports belong to setup
    setup = time.perf_counter() - t0
    failed: dict[str, int] = {}
    elapsed = 0.0
    for batch in batches:
        t1 = time.perf_counter()
        report = validator.validate(batch)
        elapsed += time.perf_counter() - t1
        for result in report.results:
            kind = KINDS.get(result.rule)
            if kind is not None:
                failed[kind] = failed.get(kind, 0) + result.failed
    validator.close()
    rows = sum(b.num_rows for b in batches)
    result = {"tool": tool, "rows": rows, "setup": setup, "validate": elapsed, "failed": failed}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
