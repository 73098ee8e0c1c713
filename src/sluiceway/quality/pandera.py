"""``type: pandera`` — a Pandera schema as a validator, failing rows to the DLQ.

::

    validators:
      - type: pandera
        schema: orders.schemas:Order          # a DataFrameModel (or DataFrameSchema)
        # schema: schemas/orders.yaml         # or a schema file (to_yaml / to_json)
        on_fail: {default: dlq, "email.str_matches": warn}

The schema's flavour picks the frame: a ``pandera.polars`` schema runs on a Polars
DataFrame of the batch (zero-copy from Arrow; the default to prefer), a
``pandera.pandas`` one on a pandas DataFrame (integer columns with nulls become
float64 there, pandas' rule). Validation is lazy (``lazy=True``), so every failure
is collected, and is forced on with data-level checks whatever
``PANDERA_VALIDATION_*`` says.

Each of the schema's checks becomes one result named ``<column>.<check>`` in
Pandera's vocabulary: ``id.not_nullable``, ``id.field_uniqueness``,
``amount.greater_than_or_equal_to``, ``qty.coerce_dtype``, ``status.isin``, custom
checks by their name, dataframe-wide checks as ``dataframe.<check>``. Where Pandera
gives the failing rows (its check output, or failure cases with an index) the
result is row-level and only those rows are dead-lettered; column presence,
dtype, and checks that return one boolean for the whole frame are batch-level
(the message says so). When ``coerce`` fails on some rows, those rows fail
``<column>.coerce_dtype`` and the rest are validated again, so one bad value does
not turn every other check into a batch-level dtype failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field

from sluiceway.core.errors import ConfigError
from sluiceway.core.report import ValidationReport
from sluiceway.plugins import BuildContext, Plugin, require
from sluiceway.quality._adapter import (
    BATCH_LEVEL_NOTE,
    OnFailSetting,
    ToolValidator,
    ToolValidatorConfig,
    load_reference,
    positions_mask,
)

__all__ = ["PANDERA_VALIDATOR", "PanderaConfig", "PanderaValidator"]

Flavour = Literal["polars", "pandas"]
DATAFRAME = "dataframe"
_FILE_SUFFIXES = (".yaml", ".yml", ".json")
# Reasons Pandera reports per column without meaningful rows, whatever its failure cases hold.
_BATCH_REASONS = {
    "WRONG_DATATYPE",
    "COLUMN_NOT_IN_DATAFRAME",
    "COLUMN_NOT_IN_SCHEMA",
    "COLUMN_NOT_ORDERED",
    "DUPLICATE_COLUMN_LABELS",
    "CHECK_ERROR",
    "INVALID_COLUMN_NAME",
    "MISMATCH_INDEX",
    "ADD_MISSING_COLUMN_NO_DEFAULT",
}
_REASON_CHECK = {
    "SERIES_CONTAINS_NULLS": "not_nullable",
    "SERIES_CONTAINS_DUPLICATES": "field_uniqueness",
    "WRONG_DATATYPE": "dtype",
    "DATATYPE_COERCION": "coerce_dtype",
    "COLUMN_NOT_IN_DATAFRAME": "column_in_dataframe",
    "COLUMN_NOT_IN_SCHEMA": "column_in_schema",
    "DUPLICATES": "multiple_fields_uniqueness",
}


class PanderaConfig(ToolValidatorConfig):
    """``type: pandera`` — ``schema`` is ``module:Class`` or a YAML/JSON schema file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["pandera"] = "pandera"
    schema_: str = Field(
        alias="schema",
        min_length=1,
        description=(
            "module:Class of a DataFrameModel (or module:attribute of a DataFrameSchema), "
            "or a .yaml/.yml/.json schema file written by Pandera"
        ),
    )


@dataclass(slots=True)
class _Rule:
    """One check of the schema: its column (None: dataframe-wide) and whether it has rows."""

    column: str | None
    row_level: bool
    check: Any = None  # a Check whose output shape is learnt on the first batch


@dataclass(slots=True)
class _Outcome:
    """What one validation pass said about one rule."""

    mask: pa.Array | None = None
    batch_failed: bool = False
    messages: list[str] = field(default_factory=list)
    sample: list[Any] = field(default_factory=list)


class PanderaValidator(ToolValidator):
    """Validates each batch with a Pandera ``DataFrameSchema`` (Polars or pandas flavour).

    ``schema`` is a schema object, a ``DataFrameModel`` class, or a reference
    (``module:Class`` or a schema file path) resolved against ``base_dir`` in
    :meth:`open`, where Pandera is imported.
    """

    tool = "pandera"

    def __init__(
        self,
        schema: Any,
        *,
        name: str | None = None,
        on_fail: OnFailSetting = "dlq",
        fail_on_error: bool = False,
        base_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name or "pandera", on_fail=on_fail, fail_on_error=fail_on_error)
        self.source = schema
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.schema: Any = None
        self.flavour: Flavour = "polars"
        self.rules: dict[str, _Rule] = {}
        self._errors: Any = None

    def __repr__(self) -> str:
        shown = self.source if isinstance(self.source, str) else type(self.source).__name__
        return f"PanderaValidator(name={self.name!r}, schema={shown!r})"

    # -- setup --------------------------------------------------------------------

    def open(self) -> None:
        if self.schema is not None:
            return
        require("pandera", extra="pandera", what=self.where)
        errors = require("pandera.errors", extra="pandera", what=self.where)
        self._errors = errors
        try:
            schema = self._load(self.source)
        except (errors.SchemaDefinitionError, errors.SchemaInitError) as exc:
            raise ConfigError(f"{self.where}: invalid schema: {exc}") from exc
        self.flavour = _flavour(schema, self.where)
        self.schema = schema
        self.rules = dict(_enumerate_rules(schema))
        columns = [r.column for r in self.rules.values() if r.column is not None]
        self.policy.check_keys(self.rules, columns, where=self.where)

    def _load(self, source: Any) -> Any:
        if isinstance(source, str | Path) and Path(source).suffix.lower() in _FILE_SUFFIXES:
            return _from_file(Path(self.base_dir, source), self.where)
        obj = (
            load_reference(source, self.base_dir, what=f"{self.where}: schema")
            if isinstance(source, str)
            else source
        )
        if isinstance(obj, type) and hasattr(obj, "to_schema"):
            return obj.to_schema()
        if hasattr(obj, "validate") and hasattr(obj, "columns"):
            return obj
        raise ConfigError(
            f"{self.where}: schema {source!r} is a {type(obj).__name__}, not a Pandera "
            "DataFrameModel or DataFrameSchema"
        )

    # -- per batch ------------------------------------------------------------------

    def validate(self, data: pa.Table) -> ValidationReport:
        if self.schema is None:
            self.open()
        n = data.num_rows
        outcomes = self._pass(data)
        coerced = [
            o.mask
            for rule, o in outcomes.items()
            if rule.endswith(".coerce_dtype") and o.mask is not None
        ]
        if coerced:
            # Rows that cannot be coerced fail coerce_dtype; check the others again.
            bad = coerced[0]
            for mask in coerced[1:]:
                bad = pc.or_(bad, mask)
            kept = pc.indices_nonzero(pc.invert(bad))
            second = self._pass(data.take(kept))
            for rule, outcome in second.items():
                if rule.endswith(".coerce_dtype"):
                    continue
                if outcome.mask is not None:
                    outcome.mask = positions_mask(n, kept.filter(outcome.mask))
                outcomes[rule] = outcome
            for rule in [r for r in outcomes if r not in second]:
                if not rule.endswith(".coerce_dtype"):
                    del outcomes[rule]
        return self._report(data, outcomes)

    def _pass(self, data: pa.Table) -> dict[str, _Outcome]:
        """Validate once; the failures by rule (a rule absent from the dict passed)."""
        from pandera.config import config_context

        frame = _to_frame(data, self.flavour)
        if data.num_rows >= 2:
            self._learn_levels(frame)
        errors = self._errors
        outcomes: dict[str, _Outcome] = {}
        try:
            with config_context(validation_enabled=True, validation_depth="SCHEMA_AND_DATA"):
                self.schema.validate(frame, lazy=True)
        except errors.SchemaErrors as exc:
            for err in exc.schema_errors:
                self._collect(err, data.num_rows, outcomes)
        except errors.SchemaError as exc:  # raised eagerly despite lazy=True
            self._collect(exc, data.num_rows, outcomes)
        except (errors.SchemaDefinitionError, errors.BackendNotFoundError) as exc:
            raise ConfigError(f"{self.where}: cannot run the schema: {exc}") from exc
        return outcomes

    def _learn_levels(self, frame: Any) -> None:
        """A check may return one boolean for the whole frame: run each once on two rows.

        Then a check that passes is reported at the level it has (rows or batches)
        from the first batch on, not only once it fails.
        """
        sample = frame.head(2)
        if self.flavour == "polars":
            sample = sample.lazy()
        for spec in self.rules.values():
            check, spec.check = spec.check, None
            if check is None:
                continue
            try:
                output = check(sample, spec.column).check_output
                if hasattr(output, "collect"):
                    output = output.collect()
            except Exception:  # Pandera reports the check's error when it validates
                continue
            spec.row_level = hasattr(output, "__len__") and len(output) == 2

    def _collect(self, err: Any, n: int, outcomes: dict[str, _Outcome]) -> None:
        reason = getattr(err.reason_code, "name", str(err.reason_code))
        for rule, column in self._rule_names(err, reason):
            outcome = outcomes.setdefault(rule, _Outcome())
            if rule not in self.rules:
                self.rules[rule] = _Rule(column, row_level=reason not in _BATCH_REASONS)
            mask = None if reason in _BATCH_REASONS else self._rows(err, n)
            if mask is None:
                outcome.batch_failed = True
            else:
                outcome.mask = mask if outcome.mask is None else pc.or_(outcome.mask, mask)
            outcome.messages.append(_message(err, reason, column))
            if column is None and not outcome.sample:
                outcome.sample = _failure_values(err)

    def _rule_names(self, err: Any, reason: str) -> Iterator[tuple[str, str | None]]:
        on_column = type(err.schema).__name__ != "DataFrameSchema"
        check = _REASON_CHECK.get(reason)
        if check is None:
            check = _check_name(err.check, err.check_index, self.rules, err.schema, on_column)
        if on_column:
            yield f"{err.schema.name}.{check}", err.schema.name
        elif reason == "COLUMN_NOT_IN_DATAFRAME":
            missing = err.failure_cases
            yield f"{missing}.{check}", str(missing)
        elif reason == "DATATYPE_COERCION" and len(_frame_columns(err.failure_cases)) == 1:
            column = _frame_columns(err.failure_cases)[0]
            yield f"{column}.{check}", column
        else:
            yield f"{DATAFRAME}.{check}", None

    def _rows(self, err: Any, n: int) -> pa.Array | None:
        """The failing rows of one error as a mask, or None when Pandera does not say."""
        output = err.check_output
        if self.flavour == "polars":
            if output is None or not hasattr(output, "to_series") or len(output) != n:
                return None
            passed = output.to_series(0).to_arrow()
            return pc.invert(pc.fill_null(passed, False))
        import pandas as pd

        if isinstance(output, pd.Series) and output.dtype == bool:
            labels = output.index[~output.to_numpy()]
            return positions_mask(n, pa.array(labels.to_numpy(), pa.int64()))
        cases = err.failure_cases
        if isinstance(cases, pd.DataFrame) and "index" in cases.columns:
            index = cases["index"].dropna()
            if len(index) or len(cases) == 0:
                return positions_mask(n, pa.array(index.to_numpy(), pa.int64()))
        return None

    def _report(self, data: pa.Table, outcomes: dict[str, _Outcome]) -> ValidationReport:
        report = ValidationReport(validator=self.name)
        n = data.num_rows
        no_rows = pa.repeat(False, n)
        for rule, spec in self.rules.items():
            outcome = outcomes.get(rule)
            if outcome is not None and outcome.batch_failed:
                message = "; ".join(dict.fromkeys(outcome.messages))
                report.add(
                    self.batch_result(
                        rule,
                        spec.column,
                        passed=False,
                        message=f"{message} ({BATCH_LEVEL_NOTE})",
                        sample=outcome.sample,
                    )
                )
            elif outcome is not None and outcome.mask is not None:
                report.add(
                    self.row_result(
                        rule,
                        spec.column,
                        outcome.mask,
                        data,
                        message=outcome.messages[0],
                        sample=outcome.sample,
                    )
                )
            elif spec.row_level:
                report.add(self.row_result(rule, spec.column, no_rows, data, message=""))
            else:
                report.add(self.batch_result(rule, spec.column, passed=True, message=""))
        return report


# -- the schema ----------------------------------------------------------------------


def _from_file(path: Path, where: str) -> Any:
    """A schema written by Pandera's ``to_yaml``/``to_json``; its ``api`` picks the flavour."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read schema file {str(path)!r}: {exc}") from exc
    try:
        header = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: schema file {str(path)!r} is not valid: {exc}") from exc
    if not isinstance(header, dict):
        raise ConfigError(f"{where}: schema file {str(path)!r} does not hold a schema mapping")
    polars = header.get("api") == "polars" or header.get("schema_type") == "polars_dataframe"
    module = "pandera.io.polars_io" if polars else "pandera.io.pandas_io"
    io = require(module, extra="pandera", what=where)
    try:
        if path.suffix.lower() == ".json":
            return io.from_json(text)
        return io.from_yaml(text)
    except Exception as exc:  # Pandera raises assorted errors for a malformed file
        raise ConfigError(f"{where}: cannot load schema file {str(path)!r}: {exc}") from exc


def _flavour(schema: Any, where: str) -> Flavour:
    module = type(schema).__module__
    if module.startswith("pandera.api.polars"):
        return "polars"
    if module.startswith("pandera.api.pandas"):
        return "pandas"
    raise ConfigError(
        f"{where}: a {module} schema is not supported; use a pandera.polars or "
        "pandera.pandas schema"
    )


def _to_frame(data: pa.Table, flavour: Flavour) -> Any:
    if flavour == "polars":
        import polars as pl

        return pl.from_arrow(data)
    require("pandas", extra="pandas", what="a pandas-flavoured Pandera schema")
    return data.to_pandas()


def _enumerate_rules(schema: Any) -> Iterator[tuple[str, _Rule]]:
    """Every check the schema declares, so passing checks are reported (and counted) too."""
    coerce_all = bool(getattr(schema, "coerce", False))
    for name, column in schema.columns.items():
        if getattr(column, "required", True):
            yield f"{name}.column_in_dataframe", _Rule(name, row_level=False)
        if getattr(column, "dtype", None) is not None:
            yield f"{name}.dtype", _Rule(name, row_level=False)
            if coerce_all or getattr(column, "coerce", False):
                yield f"{name}.coerce_dtype", _Rule(name, row_level=True)
        if not getattr(column, "nullable", True):
            yield f"{name}.not_nullable", _Rule(name, row_level=True)
        if getattr(column, "unique", False):
            yield f"{name}.field_uniqueness", _Rule(name, row_level=True)
        for index, check in enumerate(column.checks):
            rule = f"{name}.{_unique_check_name(check, index, column.checks)}"
            yield rule, _Rule(name, row_level=True, check=check)
    for index, check in enumerate(getattr(schema, "checks", None) or []):
        rule = f"{DATAFRAME}.{_unique_check_name(check, index, schema.checks)}"
        yield rule, _Rule(None, row_level=True, check=check)
    if getattr(schema, "unique", None):
        yield f"{DATAFRAME}.multiple_fields_uniqueness", _Rule(None, row_level=True)
    if getattr(schema, "strict", False) is True:
        yield f"{DATAFRAME}.column_in_schema", _Rule(None, row_level=False)


def _base_name(check: Any) -> str:
    name = getattr(check, "name", None) or str(check)
    return str(name).split("(", 1)[0]


def _unique_check_name(check: Any, index: int, checks: list[Any]) -> str:
    """The check's name; a second check of the same name on one column gets ``#2`` and so on."""
    base = _base_name(check)
    same = [i for i, c in enumerate(checks) if _base_name(c) == base]
    return base if len(same) == 1 else f"{base}#{same.index(index) + 1}"


def _check_name(
    check: Any, index: int | None, rules: dict[str, _Rule], schema: Any, on_column: bool
) -> str:
    if check is None:
        return "check"
    if isinstance(check, str):
        return check.split("(", 1)[0]
    checks = list(schema.checks) if hasattr(schema, "checks") else []
    if index is not None and index < len(checks):
        return _unique_check_name(checks[index], index, checks)
    return _base_name(check)


def _frame_columns(cases: Any) -> list[str]:
    columns = getattr(cases, "columns", None)
    return [str(c) for c in columns] if columns is not None else []


def _failure_values(err: Any) -> list[Any]:
    cases = err.failure_cases
    if cases is None or isinstance(cases, str | int | float | bool):
        return [] if cases is None else [cases]
    try:
        if hasattr(cases, "to_dicts"):  # polars
            rows = cases.head(5).to_dicts()
        else:
            rows = cases.head(5).to_dict("records")
    except Exception:
        return []
    return [row.get("failure_case", row) for row in rows]


def _message(err: Any, reason: str, column: str | None) -> str:
    what = column or DATAFRAME
    if reason == "SERIES_CONTAINS_NULLS":
        return f"{what} is null (pandera: not nullable)"
    if reason == "SERIES_CONTAINS_DUPLICATES":
        return f"{what} is a duplicate (pandera: unique; every occurrence fails)"
    if reason == "DATATYPE_COERCION":
        return f"{what} cannot be coerced to the schema's dtype"
    if reason in _BATCH_REASONS:
        text = str(err).strip().splitlines()
        return f"pandera: {text[0][:300] if text else reason.lower()}"
    check = err.check
    shown = getattr(check, "error", None) or getattr(check, "name", None) or str(check)
    return f"{what} fails pandera check {shown}"


# -- plugin -----------------------------------------------------------------------------


def _build(config: PanderaConfig, context: BuildContext) -> PanderaValidator:
    return PanderaValidator(
        config.schema_,
        name=config.name,
        on_fail=config.on_fail,
        fail_on_error=config.fail_on_error,
        base_dir=context.base_dir,
    )


PANDERA_VALIDATOR = Plugin(
    kind="validator",
    type="pandera",
    config=PanderaConfig,
    build=_build,
    summary="A Pandera schema (DataFrameModel or YAML/JSON) on Polars or pandas; failing rows "
    "to the DLQ",
    extra="pandera",
)
