"""What the job is, in one place: the checks, and the spec sluiceway runs (no heavy imports).

The benchmark's parent process imports only this and the harness: the kernel
counts the parent's peak RSS into each child's ``ru_maxrss`` (Linux records the
pre-exec address space at ``execve``), so the parent must stay small.
"""

from __future__ import annotations

__all__ = ["CURRENCIES", "QUERY", "ROW_GROUP", "SPEC", "STATUSES", "source_name"]

#: Rows per row group of the input: Polars' default (DuckDB writes 122,880). With
#: pyarrow's 1Mi default a 1M-row file would be one row group and its run would
#: never hold two row groups' buffers at once, which a 5M-row run does.
ROW_GROUP = 262_144

STATUSES = ["new", "paid", "shipped", "refunded", "cancelled"]
CURRENCIES = ["EUR", "USD", "GBP"]
QUERY = "SELECT *, amount_cents / 100.0 AS amount, unit_price * quantity AS total FROM batch"

SPEC = """\
version: 1
name: bench-files
source: {{type: parquet, path: "{source}", batch_size: {batch_size}, incremental: false}}
transforms:
  - type: sql
    query: {query}
validators:
  - type: expectations
    name: amounts
    rules:
      - {{column: amount, between: [0, 100000]}}
      - {{column: quantity, between: [1, 100]}}
  - type: expectations
    name: codes
    rules:
      - {{column: status, accepted_values: [{statuses}]}}
      - {{column: currency, accepted_values: [{currencies}]}}
sink: {{type: parquet, path: "{target}"}}
home: "{home}"
"""


def source_name(rows: int) -> str:
    """The input file's name for a row count."""
    return f"orders-{rows}-rg{ROW_GROUP}.parquet"


def spec(source: str, target: str, home: str, batch_size: int) -> str:
    """The pipeline spec for one benchmark run."""
    return SPEC.format(
        source=source,
        target=target,
        home=home,
        batch_size=batch_size,
        query=QUERY,
        statuses=", ".join(STATUSES),
        currencies=", ".join(CURRENCIES),
    )
