"""Conversions between Arrow and the frame a user stage asks for, at the stage boundary.

Arrow → Polars is zero-copy for most types; pandas and records copy. Polars and
pandas are imported only when a stage asks for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from sluiceway.core.stages import Frame

__all__ = ["from_frame", "to_frame"]


def to_frame(table: pa.Table, frame: Frame) -> Any:
    if frame == "arrow":
        return table
    if frame == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if frame == "pandas":
        return table.to_pandas()
    if frame == "records":
        return table.to_pylist()
    raise ValueError(f"unknown frame kind {frame!r}")


def from_frame(data: Any) -> pa.Table:
    """Arrow table from whatever a stage returned: Arrow, Polars, pandas or records."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__.split(".", 1)[0]
    if module == "polars":
        import polars as pl

        if isinstance(data, pl.LazyFrame):
            data = data.collect()
        if isinstance(data, pl.DataFrame):
            return data.to_arrow()
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, list):
        return pa.Table.from_pylist([_as_mapping(r) for r in data])
    raise TypeError(
        f"a stage returned {type(data).__name__}; expected a pyarrow Table, a Polars or "
        "pandas DataFrame, or a list of records"
    )


def _as_mapping(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    dump = getattr(record, "model_dump", None)
    if callable(dump):
        result = dump()
        assert isinstance(result, Mapping)
        return result
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    raise TypeError(f"cannot turn a {type(record).__name__} into a row; use dicts")
