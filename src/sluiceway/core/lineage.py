"""Running one transform on a batch while keeping each row's lineage.

After the transform, the hidden row id is restored: kept if the output carries it
(and only names input rows), re-attached by position if the output has exactly as
many rows as the input, and otherwise replaced by fresh "derived" ids — the
transform is then not row-wise (an aggregate, a join) and its rows have no single
source position.

When a transform raises, a row-wise transform is bisected: each half is retried
until the failing rows stand alone and are dead-lettered one by one, while the
other rows go on. A transform declared ``row_wise = False``, or one whose output
proves not to be row-wise during the bisection, dead-letters the whole batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.batch import ROW_ID
from sluiceway.core.dlq import DeadLetters
from sluiceway.core.errors import ConfigError, FatalError
from sluiceway.core.frames import from_frame, to_frame
from sluiceway.core.stages import BaseTransformer, Routed

__all__ = ["TransformOutcome", "run_transform"]

_MAX_MESSAGE = 2000


@dataclass(slots=True)
class TransformOutcome:
    data: pa.Table
    letters: DeadLetters | None
    filtered: int
    expanded: int
    calls: int = 1
    row_wise: bool = True


class _NotRowWiseError(Exception):
    pass


@dataclass(slots=True)
class _Failure:
    rows: pa.Table
    error: BaseException
    isolated: bool


@dataclass(slots=True)
class _Run:
    transformer: BaseTransformer[object, object]
    derived: Iterator[int]
    budget: int
    calls: int = 0
    outs: list[pa.Table] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    routed: list[Routed] = field(default_factory=list)


def _call(run: _Run, part: pa.Table) -> tuple[pa.Table, bool]:
    run.calls += 1
    result = run.transformer.transform(to_frame(part, run.transformer.frame))
    if isinstance(result, Routed):
        if ROW_ID not in result.rejected.column_names:
            raise FatalError(
                f"transform {run.transformer.name!r} rejected rows without the {ROW_ID} column"
            )
        if result.rejected.num_rows:
            run.routed.append(result)
        result = result.data
    out = from_frame(result)
    return _restore_ids(part, out, run.derived)


def _restore_ids(part: pa.Table, out: pa.Table, derived: Iterator[int]) -> tuple[pa.Table, bool]:
    in_ids = part.column(ROW_ID)
    if ROW_ID in out.column_names:
        ids = out.column(ROW_ID)
        if ids.type != pa.int64():
            ids = pc.cast(ids, pa.int64())
        # Fast path: a map that kept every row in order carries the very same ids.
        if (
            out.num_rows == 0
            or ids.equals(in_ids)
            or (ids.null_count == 0 and pc.all(pc.is_in(ids, value_set=in_ids)).as_py())
        ):
            index = out.column_names.index(ROW_ID)
            return out.set_column(index, ROW_ID, ids), True
        out = out.drop_columns([ROW_ID])
    if out.num_rows == part.num_rows:
        return out.append_column(ROW_ID, in_ids), True
    fresh = pa.array(list(itertools.islice(derived, out.num_rows)), type=pa.int64())
    return out.append_column(ROW_ID, fresh), False


def _bisect(run: _Run, part: pa.Table, error: BaseException) -> None:
    """Isolate the failing rows of ``part`` (which raised ``error``), keeping row order."""
    if part.num_rows == 1:
        run.failures.append(_Failure(part, error, isolated=True))
        return
    if run.calls >= run.budget:
        run.failures.append(_Failure(part, error, isolated=False))
        return
    mid = part.num_rows // 2
    for half in (part.slice(0, mid), part.slice(mid)):
        try:
            out, row_wise = _call(run, half)
        except (ConfigError, FatalError):
            raise
        except Exception as exc:
            _bisect(run, half, exc)
            continue
        if not row_wise:
            raise _NotRowWiseError
        run.outs.append(out)


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def _counts(rows_in: int, out: pa.Table, row_wise: bool, dead: int) -> tuple[int, int]:
    """(filtered, expanded) for a transform that took ``rows_in`` rows."""
    if not row_wise:
        survivors = rows_in - dead
        return max(survivors - out.num_rows, 0), max(out.num_rows - survivors, 0)
    distinct = int(pc.count_distinct(out.column(ROW_ID)).as_py()) if out.num_rows else 0
    return rows_in - dead - distinct, out.num_rows - distinct


def _letters(stage: str, failures: list[_Failure], routed: list[Routed]) -> DeadLetters | None:
    """One DeadLetters for the stage from bisected failures and rows the transform routed."""
    if not failures and not routed:
        return None
    rows: list[pa.Table] = []
    types: list[str] = []
    messages: list[str] = []
    columns: list[str | None] = []
    values: list[str | None] = []
    for failure in failures:
        n = failure.rows.num_rows
        text = _message(failure.error)
        if not failure.isolated:
            text = f"{text} (batch of {n} rows not split further)"
        rows.append(failure.rows)
        types += [type(failure.error).__name__] * n
        messages += [text] * n
        columns += [None] * n
        values += [None] * n
    for item in routed:
        n = item.rejected.num_rows
        rows.append(item.rejected)
        types += _spread(item.error_type, n)
        messages += _spread(item.error_message, n)
        columns += _spread(item.column, n)
        values += _spread(item.value, n)
    return DeadLetters(
        stage=stage,
        rows=pa.concat_tables(rows, promote_options="permissive"),
        error_type=types,
        error_message=messages,
        column=columns,
        value=values,
    )


def _spread(value: Any, n: int) -> list[Any]:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise FatalError(f"a transform gave {len(values)} error values for {n} rejected rows")
    return values


def run_transform(
    transformer: BaseTransformer[object, object],
    table: pa.Table,
    *,
    stage: str,
    derived_ids: Iterator[int],
    budget: int = 4096,
) -> TransformOutcome:
    """Run ``transformer`` on ``table`` (which carries ``ROW_ID``), routing failures."""
    run = _Run(transformer=transformer, derived=derived_ids, budget=budget)
    try:
        out, row_wise = _call(run, table)
    except (ConfigError, FatalError):
        raise
    except Exception as exc:
        first_error: BaseException = exc
    else:
        letters = _letters(stage, [], run.routed)
        dead = len(letters) if letters else 0
        if letters is None and out.column(ROW_ID).equals(table.column(ROW_ID)):
            filtered, expanded = 0, 0  # every row kept once, in order: nothing to count
        else:
            filtered, expanded = _counts(table.num_rows, out, row_wise, dead)
        return TransformOutcome(out, letters, filtered, expanded, run.calls, row_wise)

    whole_batch = transformer.row_wise is False or table.num_rows == 1
    if not whole_batch:
        try:
            _bisect(run, table, first_error)
        except _NotRowWiseError:
            whole_batch = True
    if whole_batch:
        run.outs = []
        run.routed = []
        run.failures = [_Failure(table, first_error, isolated=table.num_rows == 1)]

    letters = _letters(stage, run.failures, run.routed)
    assert letters is not None
    dead = len(letters)
    if run.outs:
        out = pa.concat_tables(run.outs, promote_options="permissive")
        filtered, expanded = _counts(table.num_rows, out, True, dead)
    else:
        out = table.slice(0, 0)
        filtered, expanded = 0, 0
    return TransformOutcome(out, letters, filtered, expanded, run.calls, not whole_batch)
