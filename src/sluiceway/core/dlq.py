"""The dead-letter queue: rows that failed, with why, where they came from and a stable id.

Every entry is an envelope (see :data:`ENVELOPE_SCHEMA`). ``dlq_id`` hashes the
pipeline, source partition, position, an ordinal (for rows a transform expanded)
and the stage, so the same failure in a rerun gets the same id. The local store
writes one Parquet file per batch and stage, named by ``seq``: a rerun that replays
the batch overwrites the file instead of adding a duplicate. Files are written to a
temporary name, fsynced and renamed, so a reader never sees half an entry set.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.core.batch import (
    ROW_ID,
    Batch,
    drop_hidden,
)
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import FatalError

__all__ = [
    "ENVELOPE_SCHEMA",
    "ENVELOPE_VERSION",
    "DeadLetterQueue",
    "DeadLetterReader",
    "DeadLetters",
    "LocalParquetDLQ",
    "REJECT_SCHEMA",
    "build_reject_envelopes",
    "dlq_file_name",
    "reject_table",
    "build_envelopes",
    "read_dead_letters",
    "rows_to_json",
]

ENVELOPE_VERSION = 1

ENVELOPE_SCHEMA = pa.schema(
    [
        pa.field("envelope_version", pa.int16(), nullable=False),
        pa.field("dlq_id", pa.string(), nullable=False),
        pa.field("pipeline", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("partition", pa.string()),
        pa.field("position", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("rule", pa.string()),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
        pa.field("column", pa.string()),
        pa.field("value", pa.string()),
        pa.field("row", pa.string()),
        pa.field("row_types", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


#: Source records an extractor could not decode or cast, carried by ``Batch.rejected``.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string()),
        pa.field("position", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("raw", pa.string()),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
        pa.field("column", pa.string()),
        pa.field("value", pa.string()),
    ]
)


def reject_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A :data:`REJECT_SCHEMA` table from dicts (missing keys are null)."""
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in REJECT_SCHEMA.names} for row in rows],
        schema=REJECT_SCHEMA,
    )


@dataclass(slots=True)
class DeadLetters:
    """Rows one stage rejected, before the DLQ writes them.

    ``rows`` are the rows as they entered the failing stage and carry ``ROW_ID``;
    the per-row lists (or a single value for all rows) say what went wrong.
    """

    stage: str
    rows: pa.Table
    error_type: str | Sequence[str]
    error_message: str | Sequence[str]
    rule: str | Sequence[str | None] | None = None
    column: str | Sequence[str | None] | None = None
    value: str | Sequence[str | None] | None = None
    attempt: int = 1

    def __len__(self) -> int:
        return int(self.rows.num_rows)


@runtime_checkable
class DeadLetterQueue(Protocol):
    def write(self, seq: int, stage: str, entries: pa.Table) -> None:
        """Store the entries of one batch and stage durably; writing again replaces them."""
        ...

    def describe(self) -> str: ...


@runtime_checkable
class DeadLetterReader(Protocol):
    """A DLQ that can hand its entries back (for ``sluiceway dlq show`` and ``replay``)."""

    def read(self) -> pa.Table:
        """Every stored envelope (:data:`ENVELOPE_SCHEMA`), oldest batch first."""
        ...


def _per_row(value: Any, n: int) -> list[Any]:
    if isinstance(value, str) or value is None or not isinstance(value, Sequence):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"expected {n} values, got {len(values)}")
    return values


def has_binary(dtype: pa.DataType) -> bool:
    """True if ``dtype`` is or holds a binary type (written as base64 in ``row``)."""
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return True
    if pa.types.is_fixed_size_binary(dtype) or pa.types.is_binary_view(dtype):
        return True
    return any(has_binary(dtype.field(i).type) for i in range(dtype.num_fields))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def rows_to_json(table: pa.Table) -> list[str]:
    """Each row as a JSON object.

    Dates, times, decimals and timestamps are ISO strings, binary values base64;
    ``row_types`` beside it lets :func:`sluiceway.core.replay.rebuild_rows` restore them.
    """
    if table.num_rows == 0:
        return []
    if not any(has_binary(f.type) for f in table.schema):  # Polars cannot write binary
        try:
            import polars as pl

            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            lines = frame.write_ndjson().splitlines()
            if len(lines) == table.num_rows:
                return lines
        except Exception:
            pass
        except BaseException as exc:  # a Rust panic in Polars is a BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
                raise
    return [
        json.dumps(row, default=_json_default, ensure_ascii=False, separators=(",", ":"))
        for row in table.to_pylist()
    ]


def build_envelopes(
    batch: Batch,
    letters: DeadLetters,
    *,
    pipeline: str,
    run_id: str,
    now: datetime | None = None,
) -> pa.Table:
    """Turn one stage's rejected rows into DLQ envelopes with stable ids."""
    n = len(letters)
    row_ids = letters.rows.column(ROW_ID).to_pylist() if n else []
    origins = batch.origins(row_ids)
    visible = drop_hidden(letters.rows)
    row_json = rows_to_json(visible)
    row_types = json.dumps({f.name: str(f.type) for f in visible.schema})
    seen: dict[tuple[str | None, str], int] = {}
    ids: list[str] = []
    for origin in origins:
        key = (origin.partition, origin.position)
        ordinal = seen.get(key, 0)
        seen[key] = ordinal + 1
        digest = hashlib.sha256(
            "\x1f".join(
                [pipeline, origin.partition or "", origin.position, str(ordinal), letters.stage]
            ).encode()
        ).hexdigest()[:32]
        ids.append(digest)
    ts = now or datetime.now(UTC)
    columns: dict[str, Any] = {
        "envelope_version": [ENVELOPE_VERSION] * n,
        "dlq_id": ids,
        "pipeline": [pipeline] * n,
        "run_id": [run_id] * n,
        "seq": [batch.seq] * n,
        "partition": [o.partition for o in origins],
        "position": [o.position for o in origins],
        "line": [o.line for o in origins],
        "stage": [letters.stage] * n,
        "rule": _per_row(letters.rule, n),
        "error_type": _per_row(letters.error_type, n),
        "error_message": _per_row(letters.error_message, n),
        "column": _per_row(letters.column, n),
        "value": _per_row(letters.value, n),
        "row": row_json if visible.num_columns else [None] * n,
        "row_types": [row_types] * n,
        "raw": [o.raw for o in origins],
        "attempt": [letters.attempt] * n,
        "ts": [ts] * n,
    }
    return pa.Table.from_pydict(columns, schema=ENVELOPE_SCHEMA)


def build_reject_envelopes(
    batch: Batch,
    *,
    pipeline: str,
    run_id: str,
    stage: str = "extract",
    now: datetime | None = None,
) -> pa.Table:
    """DLQ envelopes for the source records a batch carries in ``rejected``."""
    rejected = batch.rejected
    if rejected is None or rejected.num_rows == 0:
        return ENVELOPE_SCHEMA.empty_table()
    n = rejected.num_rows
    cols = {name: rejected.column(name).to_pylist() for name in REJECT_SCHEMA.names}
    ids = [
        hashlib.sha256("\x1f".join([pipeline, part or "", pos, "0", stage]).encode()).hexdigest()[
            :32
        ]
        for part, pos in zip(cols["partition"], cols["position"], strict=True)
    ]
    ts = now or datetime.now(UTC)
    columns: dict[str, Any] = {
        "envelope_version": [ENVELOPE_VERSION] * n,
        "dlq_id": ids,
        "pipeline": [pipeline] * n,
        "run_id": [run_id] * n,
        "seq": [batch.seq] * n,
        "partition": cols["partition"],
        "position": cols["position"],
        "line": cols["line"],
        "stage": [stage] * n,
        "rule": [None] * n,
        "error_type": cols["error_type"],
        "error_message": cols["error_message"],
        "column": cols["column"],
        "value": cols["value"],
        "row": [None] * n,
        "row_types": [None] * n,
        "raw": cols["raw"],
        "attempt": [1] * n,
        "ts": [ts] * n,
    }
    return pa.Table.from_pydict(columns, schema=ENVELOPE_SCHEMA)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def dlq_file_name(seq: int, stage: str) -> str:
    """The name of one batch-and-stage DLQ file: ``<seq:012d>.<stage>.parquet``."""
    return f"{seq:012d}.{_UNSAFE.sub('-', stage)}.parquet"


class LocalParquetDLQ:
    """One Parquet file per batch and stage under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return str(self.directory)

    def read(self) -> pa.Table:
        """Every entry in the folder, oldest batch first (see :func:`read_dead_letters`)."""
        return read_dead_letters(self.directory)

    def write(self, seq: int, stage: str, entries: pa.Table) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            target = self.directory / dlq_file_name(seq, stage)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".dlq-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    pq.write_table(entries, fh, compression="zstd")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise FatalError(f"cannot write dead letters to {self.directory}: {exc}") from exc
        crash_point("after_dlq_write")


def read_dead_letters(directory: str | os.PathLike[str]) -> pa.Table:
    """All envelopes under a local DLQ directory, oldest batch first."""
    path = Path(directory)
    files = sorted(p for p in path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        return ENVELOPE_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f).cast(ENVELOPE_SCHEMA) for f in files])
