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

__all__ = ["from_frame", "normalize_large_types", "to_frame"]


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
            return normalize_large_types(data.to_arrow())
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, list):
        return pa.Table.from_pylist([_as_mapping(r) for r in data])
    raise TypeError(
        f"a stage returned {type(data).__name__}; expected a pyarrow Table, a Polars or "
        "pandas DataFrame, or a list of records"
    )


def _small(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype):
        return pa.binary()
    if pa.types.is_large_list(dtype):
        return pa.list_(pa.field(dtype.value_field.name, _small(dtype.value_type)))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _small(f.type), f.nullable) for f in dtype])
    return dtype


def normalize_large_types(table: pa.Table) -> pa.Table:
    """Polars hands out ``large_string``/``large_list``; turn them back into the plain types.

    Sources and sinks speak the plain types, and a schema check compares exact types,
    so a Polars transform must not change ``string`` into ``large_string``.
    """
    schema = pa.schema(
        [pa.field(f.name, _small(f.type), f.nullable, f.metadata) for f in table.schema],
        metadata=table.schema.metadata,
    )
    return table if schema == table.schema else table.cast(schema)


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
