"""The built-in transforms: ``sql``, ``python``, ``select``, ``rename`` and ``cast``.

Each is a :class:`~sluiceway.plugins.Plugin` (``SQL_TRANSFORM`` …) published under
the ``sluiceway.transforms`` entry point group, with a Pydantic config model. Every
config takes an optional ``name`` (the stage name in DLQ entries and metrics;
default: the type) and ``row_wise`` (``false`` forbids bisecting on failure: the
whole batch is dead-lettered).

This module stays light: DuckDB and Polars are imported when a stage is built or
run, not when the registry loads the plugin. :class:`SQLTransformer` lives in
:mod:`sluiceway.engines.sql`, :class:`PythonTransformer` in
:mod:`sluiceway.engines.python_fn`; both are re-exported here.

``select``, ``rename`` and ``cast`` always keep the hidden row id, so rows keep their
lineage. A column they name that the batch does not have is a :class:`ConfigError`
(a typo would otherwise fail every batch). ``cast`` never nulls a value that does
not fit: it sends the row to the dead-letter queue with the column and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from sluiceway.core.batch import HIDDEN_PREFIX, ROW_ID
from sluiceway.core.errors import ConfigError
from sluiceway.core.stages import BaseTransformer, Frame, Routed
from sluiceway.engines.cast import checked_cast
from sluiceway.engines.python_fn import PythonTransformer, load_function
from sluiceway.engines.sql import SQLTransformer
from sluiceway.engines.types import parse_type
from sluiceway.plugins import BuildContext, Plugin, StageConfig

__all__ = [
    "CAST_TRANSFORM",
    "PYTHON_TRANSFORM",
    "RENAME_TRANSFORM",
    "SELECT_TRANSFORM",
    "SQL_TRANSFORM",
    "CastTransformConfig",
    "CastTransformer",
    "PythonTransformConfig",
    "PythonTransformer",
    "RenameTransformConfig",
    "RenameTransformer",
    "SQLTransformConfig",
    "SQLTransformer",
    "SelectTransformConfig",
    "SelectTransformer",
    "TransformConfig",
]


# -- config models ----------------------------------------------------------------


class TransformConfig(StageConfig):
    """Fields every built-in transform takes."""

    name: str | None = Field(
        default=None, description="Stage name in DLQ entries and metrics (default: the type)."
    )
    row_wise: bool | None = Field(
        default=None,
        description=(
            "Whether each output row derives from one input row. Default: judged from "
            "the output; false: a failure dead-letters the whole batch (no bisection)."
        ),
    )


class SQLTransformConfig(TransformConfig):
    """``type: sql`` — one query over the batch, a table named ``batch``."""

    type: Literal["sql"] = "sql"
    query: str = Field(min_length=1, description="A query over the table `batch`.")
    engine: Literal["duckdb", "polars"] | None = Field(
        default=None, description="SQL engine; default duckdb."
    )
    threads: int | None = Field(default=None, ge=1, description="DuckDB threads (default ≤ 4).")


class PythonTransformConfig(TransformConfig):
    """``type: python`` — ``function(frame, **args)`` on each batch."""

    type: Literal["python"] = "python"
    function: str = Field(description="'package.module:function', relative to the spec's folder.")
    frame: Frame = Field(default="polars", description="The frame the function takes.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")


class SelectTransformConfig(TransformConfig):
    """``type: select`` — keep only these columns, in this order."""

    type: Literal["select"] = "select"
    columns: list[str] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _visible(cls, value: list[str]) -> list[str]:
        _reject_hidden(value)
        if len(set(value)) != len(value):
            raise ValueError("columns are listed more than once")
        return value


class RenameTransformConfig(TransformConfig):
    """``type: rename`` — ``columns: {old: new}``."""

    type: Literal["rename"] = "rename"
    columns: dict[str, str] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _visible(cls, value: dict[str, str]) -> dict[str, str]:
        _reject_hidden([*value, *value.values()])
        if len(set(value.values())) != len(value):
            raise ValueError("two columns are renamed to the same name")
        return value


class CastTransformConfig(TransformConfig):
    """``type: cast`` — ``columns: {column: type}``; rows whose value does not fit go to the DLQ."""

    type: Literal["cast"] = "cast"
    columns: dict[str, str] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        _reject_hidden(list(value))
        for type_text in value.values():
            try:
                parse_type(type_text)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


def _reject_hidden(names: Sequence[str]) -> None:
    hidden = [n for n in names if n.startswith(HIDDEN_PREFIX)]
    if hidden:
        raise ValueError(f"{', '.join(hidden)}: names starting with {HIDDEN_PREFIX!r} are reserved")


# -- column transforms ------------------------------------------------------------


def _missing(table: pa.Table, names: Sequence[str], transform: str, kind: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        have = ", ".join(c for c in table.column_names if not c.startswith(HIDDEN_PREFIX))
        raise ConfigError(
            f"{kind} transform {transform!r}: unknown column(s) {', '.join(missing)} "
            f"(the batch has: {have})"
        )


class SelectTransformer(BaseTransformer[pa.Table, pa.Table]):
    """Keeps the given columns, in the given order (and the hidden row id)."""

    frame = "arrow"

    def __init__(
        self, columns: Sequence[str], *, name: str | None = None, row_wise: bool | None = None
    ) -> None:
        super().__init__(name or "select")
        self.columns = [c for c in columns if c != ROW_ID]
        self.row_wise = row_wise

    def transform(self, data: pa.Table) -> pa.Table:
        _missing(data, self.columns, self.name, "select")
        keep = [*self.columns, ROW_ID] if ROW_ID in data.column_names else self.columns
        return data.select(keep)


class RenameTransformer(BaseTransformer[pa.Table, pa.Table]):
    """Renames columns (``{old: new}``); the others keep their names and places."""

    frame = "arrow"

    def __init__(
        self,
        columns: Mapping[str, str],
        *,
        name: str | None = None,
        row_wise: bool | None = None,
    ) -> None:
        super().__init__(name or "rename")
        self.mapping = dict(columns)
        self.row_wise = row_wise

    def transform(self, data: pa.Table) -> pa.Table:
        _missing(data, list(self.mapping), self.name, "rename")
        names = [self.mapping.get(c, c) for c in data.column_names]
        if len(set(names)) != len(names):
            clash = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(
                f"rename transform {self.name!r}: renaming would give two columns named "
                f"{', '.join(clash)}"
            )
        return data.rename_columns(names)


class CastTransformer(BaseTransformer[pa.Table, Any]):
    """Casts columns to declared types with :func:`~sluiceway.engines.cast.checked_cast`.

    Rows with a value that does not fit are returned as :class:`Routed` rejects (as
    they entered, with the column, the value and the reason) and dead-lettered; the
    other rows go on, cast. A bad value is never turned into null.
    """

    frame = "arrow"

    def __init__(
        self,
        columns: Mapping[str, str | pa.DataType],
        *,
        name: str | None = None,
        row_wise: bool | None = None,
    ) -> None:
        super().__init__(name or "cast")
        self.types: dict[str, pa.DataType] = {}
        for column, target in columns.items():
            try:
                self.types[column] = parse_type(target) if isinstance(target, str) else target
            except ConfigError as exc:
                raise ConfigError(
                    f"cast transform {self.name!r}: column {column!r}: {exc}"
                ) from exc
        self.row_wise = row_wise

    def transform(self, data: pa.Table) -> Any:
        _missing(data, list(self.types), self.name, "cast")
        result = checked_cast(data, self.types)
        if result.ok:
            return result.table
        failures = result.failures
        return Routed(
            data=result.table,
            rejected=data.take(pa.array(result.bad_rows, type=pa.int64())),
            error_type="CastError",
            error_message=[f.message for f in failures],
            column=[f.column for f in failures],
            value=[f.value for f in failures],
        )


# -- plugins ----------------------------------------------------------------------


def _build_sql(config: SQLTransformConfig, context: BuildContext) -> BaseTransformer[Any, Any]:
    return SQLTransformer(
        config.query,
        engine=config.engine or "duckdb",
        name=config.name or "sql",
        row_wise=config.row_wise,
        threads=config.threads,
    )


def _build_python(
    config: PythonTransformConfig, context: BuildContext
) -> BaseTransformer[Any, Any]:
    function = load_function(config.function, context.base_dir)
    return PythonTransformer(
        function,
        frame=config.frame,
        args=config.args,
        name=config.name or "python",
        row_wise=config.row_wise,
        ref=config.function,
    )


def _build_select(
    config: SelectTransformConfig, context: BuildContext
) -> BaseTransformer[Any, Any]:
    return SelectTransformer(config.columns, name=config.name, row_wise=config.row_wise)


def _build_rename(
    config: RenameTransformConfig, context: BuildContext
) -> BaseTransformer[Any, Any]:
    return RenameTransformer(config.columns, name=config.name, row_wise=config.row_wise)


def _build_cast(config: CastTransformConfig, context: BuildContext) -> BaseTransformer[Any, Any]:
    return CastTransformer(config.columns, name=config.name, row_wise=config.row_wise)


SQL_TRANSFORM = Plugin(
    kind="transform",
    type="sql",
    config=SQLTransformConfig,
    build=_build_sql,
    summary="SQL over each batch (a table named `batch`) on DuckDB or Polars",
)
PYTHON_TRANSFORM = Plugin(
    kind="transform",
    type="python",
    config=PythonTransformConfig,
    build=_build_python,
    summary="A Python function module:function on a Polars (or pandas/Arrow/records) frame",
)
SELECT_TRANSFORM = Plugin(
    kind="transform",
    type="select",
    config=SelectTransformConfig,
    build=_build_select,
    summary="Keep only the listed columns",
)
RENAME_TRANSFORM = Plugin(
    kind="transform",
    type="rename",
    config=RenameTransformConfig,
    build=_build_rename,
    summary="Rename columns {old: new}",
)
CAST_TRANSFORM = Plugin(
    kind="transform",
    type="cast",
    config=CastTransformConfig,
    build=_build_cast,
    summary="Cast columns to types; values that do not fit are dead-lettered, never nulled",
)
