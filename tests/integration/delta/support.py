"""Reading Delta tables back without the writer's library, and small test sources.

:func:`read_delta_log` is an independent Delta reader: it replays ``_delta_log``
(the last Parquet checkpoint, then the JSON commits after it) with plain JSON and
pyarrow, and reads the live data files with pyarrow — no delta-rs involved, so a
table the sink wrote wrongly cannot be read back "right" by the same code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from sluiceway.core import BaseExtractor, Batch, PartitionSpan

_PRIMITIVES = {
    "string": pa.string(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "short": pa.int16(),
    "byte": pa.int8(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}


@dataclass
class DeltaLog:
    """The replayed log: live files, app transactions, partition columns, schema."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    txns: dict[str, int] = field(default_factory=dict)
    partition_columns: list[str] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)
    version: int = -1


def _apply(log: DeltaLog, action: dict[str, Any]) -> None:
    if action.get("add"):
        add = action["add"]
        log.files[unquote(add["path"])] = add
    elif action.get("remove"):
        log.files.pop(unquote(action["remove"]["path"]), None)
    elif action.get("txn"):
        log.txns[action["txn"]["appId"]] = int(action["txn"]["version"])
    elif action.get("metaData"):
        meta = action["metaData"]
        log.partition_columns = list(meta.get("partitionColumns", []))
        log.schema = json.loads(meta["schemaString"])


def _rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    for row in table.to_pylist():
        yield {k: v for k, v in row.items() if v is not None}


def replay_log(
    uri: str, storage_options: dict[str, Any] | None = None
) -> tuple[Any, str, DeltaLog]:
    fs, root = url_to_fs(uri, **(storage_options or {}))
    root = root.rstrip("/")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/_delta_log", detail=False))
    log = DeltaLog()
    checkpoints = [n for n in names if n.endswith(".checkpoint.parquet")]
    start = -1
    if checkpoints:
        last = checkpoints[-1]
        start = int(last.split(".")[0])
        with fs.open(f"{root}/_delta_log/{last}", "rb") as fh:
            table = pq.read_table(fh)
        for column in ("metaData", "txn", "add", "remove"):
            if column in table.column_names:
                for value in _rows(table.select([column])):
                    if value:
                        _apply(log, value)
    for name in names:
        if name.endswith(".json") and name[:20].isdigit() and int(name[:20]) > start:
            with fs.open(f"{root}/_delta_log/{name}", "rb") as fh:
                for line in fh.read().decode().splitlines():
                    if line.strip():
                        _apply(log, json.loads(line))
            log.version = int(name[:20])
    return fs, root, log


def _plain(table: pa.Table) -> pa.Table:
    """View types (delta-rs's MERGE writes them into the Arrow schema) as plain ones."""
    views = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    schema = pa.schema([f.with_type(views.get(f.type, f.type)) for f in table.schema])
    return table.cast(schema) if schema != table.schema else table


def read_delta_log(uri: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The table's live rows, read from its log and data files with pyarrow only."""
    fs, root, log = replay_log(uri, storage_options)
    fields = {f["name"]: f["type"] for f in log.schema.get("fields", [])}
    tables = []
    for path, add in sorted(log.files.items()):
        with fs.open(f"{root}/{path}", "rb") as fh:
            table = _plain(pq.read_table(fh))
        for column in log.partition_columns:
            value = add.get("partitionValues", {}).get(column)
            dtype = _PRIMITIVES.get(fields.get(column, "string"), pa.string())
            scalar = pa.scalar(value, pa.string()).cast(dtype) if value is not None else None
            table = table.append_column(
                column, pa.repeat(scalar or pa.scalar(None, dtype), table.num_rows)
            )
        tables.append(table)
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def txns(uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """The table's app transaction versions, from its log."""
    return replay_log(uri, storage_options)[2].txns


def sorted_rows(table: pa.Table, *keys: str) -> list[dict[str, Any]]:
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


class ListExtractor(BaseExtractor[dict[str, Any]]):
    """Yields the given batches: (partition, start, rows) with integer positions."""

    type_name = "list"

    def __init__(self, batches: Sequence[tuple[str, int, list[dict[str, Any]]]]) -> None:
        super().__init__()
        self.batches = list(batches)

    def extract(self) -> Iterator[Batch]:
        for partition, start, rows in self.batches:
            committed = self.context.positions.get(partition)
            if isinstance(committed, int) and committed >= start + len(rows):
                continue
            yield Batch.from_source(
                pa.Table.from_pylist(rows),
                {partition: PartitionSpan(start, start + len(rows), len(rows))},
            )
