"""``type: great_expectations`` — an Expectation Suite as a validator, failing rows to the DLQ.

::

    validators:
      - type: great_expectations
        suite: expectations/orders.json        # a suite saved by GX 1.x
        # suite: orders.quality:suite          # or module:function returning one
        on_fail: {default: dlq, "email.expect_column_values_to_match_regex": warn}

The suite runs on each batch (as a pandas DataFrame) in an ephemeral GX context:
no project folder, nothing written, analytics and progress bars off. The context,
the pandas data source, its batch definition and the suite are built once in
:meth:`GreatExpectationsValidator.open`; per batch only the DataFrame is swapped.

Each expectation is one result named ``<column>.<expectation type>``
(``id.expect_column_values_to_not_be_null``); pair and multicolumn expectations
are named by their columns joined with ``+``, table-level ones by their type;
a second expectation of the same name gets ``#2``. Map expectations (column,
column pair, multicolumn) are row-level: the validator asks for
``result_format: COMPLETE`` and reads ``unexpected_index_list``, which on the
batch's default index are the failing row positions, so exactly those rows are
dead-lettered. Aggregate and table expectations (mean, row count, …) are
batch-level. An expectation that passes by its own ``mostly`` passes here too,
and an expectation GX could not evaluate (a missing column) fails batch-level
with GX's reason. Suites in the 0.x format (``expectation_type`` keys) are not
read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

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

__all__ = ["GX_VALIDATOR", "GreatExpectationsConfig", "GreatExpectationsValidator"]

_RESULT_FORMAT = {"result_format": "COMPLETE"}


class GreatExpectationsConfig(ToolValidatorConfig):
    """``type: great_expectations`` — ``suite`` is a JSON file or ``module:function``."""

    type: Literal["great_expectations"] = "great_expectations"
    suite: str = Field(
        min_length=1,
        description="an Expectation Suite as a .json file (GX 1.x), or module:function "
        "returning an ExpectationSuite",
    )


@dataclass(slots=True)
class _Rule:
    name: str
    column: str | None
    row_level: bool


class GreatExpectationsValidator(ToolValidator):
    """Validates each batch with an Expectation Suite in an ephemeral GX context.

    ``suite`` is an ``ExpectationSuite``, a suite dict, or a reference (a ``.json``
    path or ``module:function``) resolved against ``base_dir`` in :meth:`open`,
    where Great Expectations is imported.
    """

    tool = "great_expectations"

    def __init__(
        self,
        suite: Any,
        *,
        name: str | None = None,
        on_fail: OnFailSetting = "dlq",
        fail_on_error: bool = False,
        base_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name or "great_expectations", on_fail=on_fail, fail_on_error=fail_on_error)
        self.source = suite
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.suite: Any = None
        self.rules: dict[str, _Rule] = {}  # by expectation id
        self._batch_definition: Any = None

    def __repr__(self) -> str:
        shown = self.source if isinstance(self.source, str) else type(self.source).__name__
        return f"GreatExpectationsValidator(name={self.name!r}, suite={shown!r})"

    # -- setup --------------------------------------------------------------------

    def open(self) -> None:
        if self._batch_definition is not None:
            return
        gx = require("great_expectations", extra="great-expectations", what=self.where)
        require("pandas", extra="pandas", what=self.where)
        suite = self._load_suite(gx)
        expectation_types = require(
            "great_expectations.expectations.expectation",
            extra="great-expectations",
            what=self.where,
        )
        row_level = (
            expectation_types.ColumnMapExpectation,
            expectation_types.ColumnPairMapExpectation,
            expectation_types.MulticolumnMapExpectation,
        )
        names: dict[str, int] = {}
        self.rules = {}
        for expectation in suite.expectations:
            if not expectation.id:
                expectation.id = str(uuid.uuid4())
            name, column = _rule_name(expectation)
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}#{names[name]}"
            self.rules[expectation.id] = _Rule(name, column, isinstance(expectation, row_level))
        columns = [r.column for r in self.rules.values() if r.column is not None]
        self.policy.check_keys([r.name for r in self.rules.values()], columns, where=self.where)
        self.suite = suite
        self._batch_definition = _ephemeral_batch_definition(gx, self.name)

    def _load_suite(self, gx: Any) -> Any:
        source = self.source
        if isinstance(source, str | Path) and str(source).lower().endswith(".json"):
            path = Path(self.base_dir, source)
            try:
                source = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.where}: cannot read suite {str(path)!r}: {exc}") from exc
        elif isinstance(source, str):
            factory = load_reference(source, self.base_dir, what=f"{self.where}: suite")
            source = _call(factory, self.where)
        if isinstance(source, gx.ExpectationSuite):
            return source
        if not isinstance(source, dict):
            raise ConfigError(
                f"{self.where}: the suite is a {type(source).__name__}, not an "
                "ExpectationSuite or its JSON"
            )
        return _suite_from_dict(gx, source, self.where)

    # -- per batch ------------------------------------------------------------------

    def validate(self, data: pa.Table) -> ValidationReport:
        if self._batch_definition is None:
            self.open()
        n = data.num_rows
        frame = data.to_pandas()  # a RangeIndex: GX's unexpected indexes are row positions
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(self.suite, result_format=_RESULT_FORMAT)
        results = {r.expectation_config.id: r for r in outcome.results}
        report = ValidationReport(validator=self.name)
        no_rows = pa.repeat(False, n)
        for expectation_id, rule in self.rules.items():  # in suite order
            result = results.get(expectation_id)
            raised = "GX returned no result" if result is None else _raised(result.exception_info)
            if raised is not None or result is None:
                report.add(
                    self.batch_result(
                        rule.name,
                        rule.column,
                        passed=False,
                        message=f"great_expectations could not evaluate it: {raised} "
                        f"({BATCH_LEVEL_NOTE})",
                    )
                )
                continue
            details = result.result or {}
            if result.success:
                report.add(
                    self.row_result(rule.name, rule.column, no_rows, data, message="")
                    if rule.row_level
                    else self.batch_result(rule.name, rule.column, passed=True, message="")
                )
            elif "unexpected_index_list" in details:
                failing = positions_mask(n, _positions(details["unexpected_index_list"]))
                report.add(
                    self.row_result(
                        rule.name,
                        rule.column,
                        failing,
                        data,
                        message=_row_message(result.expectation_config),
                        sample=_plain(list(details.get("unexpected_list") or [])[:5]),
                    )
                )
            else:
                observed = _plain([details.get("observed_value")])[0]
                report.add(
                    self.batch_result(
                        rule.name,
                        rule.column,
                        passed=False,
                        message=f"great_expectations {_describe(result.expectation_config)} "
                        "failed"
                        + (f" (observed {observed!r})" if observed is not None else "")
                        + f"; {BATCH_LEVEL_NOTE}",
                        sample=[] if observed is None else [observed],
                    )
                )
        return report


# -- helpers ------------------------------------------------------------------------


def _ephemeral_batch_definition(gx: Any, name: str) -> Any:
    """An in-memory context with one pandas data source whose batch is a whole DataFrame."""
    types = require(
        "great_expectations.data_context.types.base",
        extra="great-expectations",
        what="an ephemeral Great Expectations context",
    )
    config = types.DataContextConfig(
        store_backend_defaults=types.InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=types.ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    source = context.data_sources.add_pandas(name=f"sluiceway-{name}")
    asset = source.add_dataframe_asset(name="batch")
    return asset.add_batch_definition_whole_dataframe(name="batch")


def _call(factory: Callable[..., Any], where: str) -> Any:
    try:
        return factory()
    except Exception as exc:  # the user's function, reported with its reason
        raise ConfigError(f"{where}: building the suite raised {exc!r}") from exc


def _suite_from_dict(gx: Any, data: dict[str, Any], where: str) -> Any:
    """A suite from its JSON; GX drops an invalid expectation with a log line, we refuse it."""
    config_module = require(
        "great_expectations.expectations.expectation_configuration",
        extra="great-expectations",
        what=where,
    )
    expectations = data.get("expectations")
    if not isinstance(expectations, list):
        raise ConfigError(f"{where}: the suite has no 'expectations' list")
    for index, item in enumerate(expectations):
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(
                f"{where}: expectation {index} has no 'type' (a GX 0.x suite? "
                "only GX 1.x suites are read)"
            )
        try:
            config_module.ExpectationConfiguration(
                type=item["type"], kwargs=item.get("kwargs", {}), meta=item.get("meta")
            ).to_domain_obj()
        except Exception as exc:  # GX raises several types for a bad expectation
            raise ConfigError(
                f"{where}: expectation {index} ({item['type']}) is invalid: {exc}"
            ) from exc
    fields = {k: v for k, v in data.items() if k in ("name", "expectations", "meta", "notes", "id")}
    fields.setdefault("name", "suite")
    try:
        return gx.ExpectationSuite(**fields)
    except Exception as exc:
        raise ConfigError(f"{where}: invalid suite: {exc}") from exc


def _rule_name(expectation: Any) -> tuple[str, str | None]:
    kind = expectation.expectation_type
    column = getattr(expectation, "column", None)
    if isinstance(column, str):
        return f"{column}.{kind}", column
    pair = [getattr(expectation, k, None) for k in ("column_A", "column_B")]
    columns = getattr(expectation, "column_list", None) or [c for c in pair if c]
    if columns:
        return f"{'+'.join(str(c) for c in columns)}.{kind}", None
    return kind, None


def _raised(info: dict[str, Any] | None) -> str | None:
    """GX's exception message for an expectation it could not evaluate, if any."""
    info = info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "an exception")
    for value in info.values():  # keyed by metric when a metric failed
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "an exception")
    return None


def _positions(index_list: list[Any]) -> pa.Array:
    """Row positions from ``unexpected_index_list`` (ints, or dicts naming index columns)."""
    if index_list and isinstance(index_list[0], dict):
        index_list = [next(iter(item.values())) for item in index_list]
    return pa.array(index_list, pa.int64())


def _plain(values: list[Any]) -> list[Any]:
    """NumPy scalars (GX hands them out) as Python values, for samples and JSON."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, tuple | list):
            out.append(type(value)(_plain(list(value))))
        elif hasattr(value, "item") and callable(value.item):
            out.append(value.item())
        else:
            out.append(value)
    return out


def _describe(config: Any) -> str:
    kwargs = {k: v for k, v in (config.kwargs or {}).items() if k != "batch_id"}
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{config.type}({shown})"


def _row_message(config: Any) -> str:
    column = (config.kwargs or {}).get("column")
    shown = f"{column} " if column else ""
    return f"{shown}fails great_expectations {_describe(config)}"


# -- plugin -----------------------------------------------------------------------------


def _build(config: GreatExpectationsConfig, context: BuildContext) -> GreatExpectationsValidator:
    return GreatExpectationsValidator(
        config.suite,
        name=config.name,
        on_fail=config.on_fail,
        fail_on_error=config.fail_on_error,
        base_dir=context.base_dir,
    )


GX_VALIDATOR = Plugin(
    kind="validator",
    type="great_expectations",
    config=GreatExpectationsConfig,
    build=_build,
    summary="A Great Expectations suite (JSON or module:function) in an ephemeral context; "
    "failing rows to the DLQ",
    extra="great-expectations",
)
