"""``type: soda`` — a Soda Core 4 data contract as a validator, failing rows to the DLQ.

::

    validators:
      - type: soda
        contract: contracts/orders.yaml       # a file, or the contract inline:
        # contract:
        #   columns:
        #     - {name: id, checks: [{missing: {}}, {duplicate: {}}]}
        #     - name: status
        #       checks: [{invalid: {valid_values: [new, paid, shipped]}}]
        #   checks: [{row_count: {threshold: {must_be_greater_than: 0}}}]
        on_fail: {default: dlq, "row_count": warn}

Each batch is registered (zero-copy Arrow) in a DuckDB connection held for the
run, and the contract, parsed once in :meth:`SodaValidator.open`, is verified
over it through the ``soda-duckdb`` data source. The contract's ``dataset`` is
replaced by the batch (``sluiceway/main/batch``), so a contract written for the
warehouse table runs unchanged on the rows about to be loaded.

Soda reports check outcomes and counts, not rows. For the checks that are
row-level by nature the validator finds the rows itself, from the SQL condition
Soda itself builds for the check (so ``missing_values``, ``valid_*``,
``invalid_*``, ``filter`` and column defaults mean exactly what they mean to
Soda): ``missing``, ``invalid``, ``failed_rows`` with an ``expression``, and
``duplicate`` (on one column or several; the first occurrence passes, later ones
fail, as Soda counts them). It then checks that it found as many rows as Soda
counted; if not (a scoped check, a reference-data check, a Soda feature this
does not reproduce), the check is reported batch-level, saying so. ``row_count``,
``schema``, ``freshness``, ``aggregate``, ``metric`` and ``failed_rows`` with a
``query`` are batch-level by nature.

Checks are named ``<column>.<type>`` (``id.missing``, ``status.invalid``), with
``.<qualifier>`` when the contract gives one, and dataset checks by their type
(``row_count``). A check that passes by its threshold passes here (its rows are
loaded); a check failing only its warn threshold is a ``warn``. A check Soda
could not evaluate (a missing column) fails batch-level with Soda's error.

Soda Core 3 (SodaCL checks files) is not supported: it is the same distribution
name (``soda-core``) at another major version, so it cannot be installed next to
Soda Core 4. Importing Soda Core 4 starts its anonymous usage telemetry, which
sends traces to Soda and installs its own global OpenTelemetry tracer provider;
this validator sets ``SODA_CORE_TELEMETRY_ENABLED=false`` before the import
unless the variable is already set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import Field

from sluiceway.core.batch import arange
from sluiceway.core.errors import ConfigError
from sluiceway.core.report import RuleResult, ValidationReport
from sluiceway.plugins import BuildContext, Plugin, require
from sluiceway.quality._adapter import (
    BATCH_LEVEL_NOTE,
    OnFailSetting,
    ToolValidator,
    ToolValidatorConfig,
    positions_mask,
)

__all__ = ["DATASET", "SODA_VALIDATOR", "SodaConfig", "SodaValidator"]

DATA_SOURCE = "sluiceway"
TABLE = "batch"
DATASET = f"{DATA_SOURCE}/main/{TABLE}"
_ROWS = "__sluiceway_rows"
_POS = "__sluiceway_pos"
_COUNT_KEYS = {
    "missing": "missing_count",
    "invalid": "invalid_count",
    "duplicate": "duplicate_count",
    "failed_rows": "failed_rows_count",
}
_DATASET_LINE = re.compile(r"^dataset:.*$", re.MULTILINE)


class SodaConfig(ToolValidatorConfig):
    """``type: soda`` — a Soda Core 4 data contract, as a file path or inline."""

    type: Literal["soda"] = "soda"
    contract: str | dict[str, Any] = Field(
        description="a contract YAML file, or the contract itself (a mapping, or YAML text)"
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="values for the contract's ${var.NAME} variables"
    )


@dataclass(slots=True)
class _Rule:
    """One check of the contract: its sluiceway name, column, and how to find its rows."""

    name: str
    column: str | None
    kind: str
    impl: Any
    rows_sql: str | None  # SELECT of failing row positions, or None: batch-level


class SodaValidator(ToolValidator):
    """Verifies a Soda data contract on each batch through DuckDB.

    ``contract`` is a contract mapping, YAML text, or a path to a YAML file (relative
    to ``base_dir``); it is parsed in :meth:`open`, where Soda is imported.
    """

    tool = "soda"

    def __init__(
        self,
        contract: str | Path | dict[str, Any],
        *,
        name: str | None = None,
        on_fail: OnFailSetting = "dlq",
        fail_on_error: bool = False,
        variables: dict[str, str] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name or "soda", on_fail=on_fail, fail_on_error=fail_on_error)
        self.source = contract
        self.variables = dict(variables or {})
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.rules: dict[str, _Rule] = {}  # by Soda check path
        self._contract: Any = None
        self._con: Any = None
        self._logs_type: Any = None

    def __repr__(self) -> str:
        shown = self.source if isinstance(self.source, str | Path) else "<inline>"
        return f"SodaValidator(name={self.name!r}, contract={str(shown)[:60]!r})"

    # -- setup --------------------------------------------------------------------

    def open(self) -> None:
        if self._contract is not None:
            return
        os.environ.setdefault("SODA_CORE_TELEMETRY_ENABLED", "false")
        require("soda_core", extra="soda", what=self.where)
        duckdb_source = require(
            "soda_duckdb.common.data_sources.duckdb_data_source", extra="soda", what=self.where
        )
        yaml_module = require("soda_core.common.yaml", extra="soda", what=self.where)
        logs_module = require("soda_core.common.logs", extra="soda", what=self.where)
        impl_module = require(
            "soda_core.contracts.impl.contract_verification_impl", extra="soda", what=self.where
        )
        contract_yaml = require(
            "soda_core.contracts.impl.contract_yaml", extra="soda", what=self.where
        )
        import duckdb

        from sluiceway.engines.sql import default_threads

        text = self._contract_text()
        self._logs_type = logs_module.Logs
        self._con = duckdb.connect(config={"threads": default_threads()})
        data_source = duckdb_source.DuckDBDataSourceImpl.from_existing_cursor(
            self._con, DATA_SOURCE
        )
        logs = logs_module.Logs()
        try:
            source = yaml_module.ContractYamlSource.from_str(text)
            parsed = contract_yaml.ContractYaml.parse(
                source, provided_variable_values=self.variables
            )
            contract = impl_module.ContractImpl(
                yaml=parsed, data_source_impl=data_source, logs=logs
            )
        except Exception as exc:  # Soda raises assorted errors for a malformed contract
            raise ConfigError(f"{self.where}: invalid contract: {exc}") from exc
        finally:
            logs.close()
        if logs.has_errors:
            raise ConfigError(f"{self.where}: invalid contract: {logs.get_errors_str()}")
        self._contract = contract
        self.rules = {}
        for impl in contract.all_check_impls:
            rule = self._rule(impl, data_source.sql_dialect, contract.filter)
            self.rules[impl.check_path] = rule
        columns = [r.column for r in self.rules.values() if r.column is not None]
        self.policy.check_keys([r.name for r in self.rules.values()], columns, where=self.where)

    def close(self) -> None:
        con, self._con = self._con, None
        self._contract = None
        if con is not None:
            con.close()

    def _contract_text(self) -> str:
        source = self.source
        if isinstance(source, dict):
            return yaml.safe_dump({**source, "dataset": DATASET}, sort_keys=False)
        text = str(source)
        if "\n" not in text:
            path = Path(self.base_dir, text)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"{self.where}: cannot read contract {str(path)!r}: {exc}"
                ) from exc
        # Keep the user's line numbers in Soda's messages: replace the line, or add one at the end.
        if _DATASET_LINE.search(text):
            return _DATASET_LINE.sub(f"dataset: {DATASET}", text, count=1)
        return text.rstrip("\n") + f"\ndataset: {DATASET}\n"

    def _rule(self, impl: Any, dialect: Any, contract_filter: str | None) -> _Rule:
        column = impl.column_impl.column_yaml.name if impl.column_impl else None
        kind = str(impl.type)
        qualifier = impl.check_yaml.qualifier
        name = kind if column is None else f"{column}.{kind}"
        if qualifier:
            name = f"{name}.{qualifier}"
        return _Rule(name, column, kind, impl, _rows_sql(impl, kind, dialect, contract_filter))

    # -- per batch ------------------------------------------------------------------

    def validate(self, data: pa.Table) -> ValidationReport:
        if self._contract is None:
            self.open()
        con = self._con
        con.register(TABLE, data)
        con.register(_ROWS, data.append_column(_POS, arange(data.num_rows)))
        try:
            return self._verify(data)
        finally:  # do not keep the batch alive until the next one
            con.unregister(_ROWS)
            con.unregister(TABLE)

    def _verify(self, data: pa.Table) -> ValidationReport:
        n = data.num_rows
        logs = self._logs_type()
        try:
            self._contract.logs = logs
            outcome = self._contract.verify()
        finally:
            logs.close()
        errors = logs.get_errors_str()
        report = ValidationReport(validator=self.name)
        by_path = {r.check.check_path: r for r in outcome.check_results}
        no_rows = pa.repeat(False, n)
        for path, rule in self.rules.items():
            result = by_path.get(path)
            state = getattr(getattr(result, "outcome", None), "name", "NOT_EVALUATED")
            if state == "EXCLUDED":
                continue
            if state == "PASSED":
                report.add(
                    self.row_result(rule.name, rule.column, no_rows, data, message="")
                    if rule.rows_sql is not None
                    else self.batch_result(rule.name, rule.column, passed=True, message="")
                )
                continue
            if state == "NOT_EVALUATED":
                reason = errors or "Soda did not evaluate the check"
                report.add(
                    self.batch_result(
                        rule.name,
                        rule.column,
                        passed=False,
                        message=f"soda could not evaluate it: {reason.splitlines()[0][:300]} "
                        f"({BATCH_LEVEL_NOTE})",
                    )
                )
                continue
            failed = self._failed(rule, result, data)
            if state == "WARN":
                failed.on_fail = "warn"
            report.add(failed)
        return report

    def _failed(self, rule: _Rule, result: Any, data: pa.Table) -> RuleResult:
        """A failed check: its rows when they can be found and match Soda's count."""
        diagnostics = result.diagnostic_metric_values or {}
        title = f"{result.check.name} ({rule.name})"
        counted = diagnostics.get(_COUNT_KEYS.get(rule.kind, ""))
        note = BATCH_LEVEL_NOTE
        if rule.rows_sql is not None:
            import duckdb

            try:
                positions = self._con.sql(rule.rows_sql).to_arrow_table().column(0)
            except duckdb.Error as exc:
                note = f"batch-level: finding its rows failed ({exc})"
            else:
                if counted is not None and len(positions) == int(counted):
                    mask = positions_mask(data.num_rows, positions.combine_chunks())
                    shown = f"{rule.column} " if rule.column else ""
                    return self.row_result(
                        rule.name, rule.column, mask, data, message=f"{shown}fails soda {title}"
                    )
                note = (
                    f"batch-level: found {len(positions)} rows but Soda counted {counted}, "
                    "so the rows are not trusted"
                )
        measured = ", ".join(f"{k}={v}" for k, v in diagnostics.items() if v is not None)
        return self.batch_result(
            rule.name,
            rule.column,
            passed=False,
            message=f"soda {title} failed" + (f" ({measured})" if measured else "") + f"; {note}",
            sample=[counted] if counted is not None else [],
        )


def _rows_sql(impl: Any, kind: str, dialect: Any, contract_filter: str | None) -> str | None:
    """A query for the positions of the rows failing this check, from Soda's own condition."""
    build = dialect.build_expression_sql
    filters = [f"({contract_filter})"] if contract_filter else []
    if kind in ("missing", "invalid") or (kind == "failed_rows" and impl.is_expression_check()):
        try:
            metric = impl.get_threshold_metric_impl()
            condition = metric.sql_condition_expression() if metric is not None else None
        except Exception:  # a check type without a row condition
            return None
        if condition is None:
            return None
        where = " AND ".join([*filters, f"({build(condition)})"])
        return f'SELECT "{_POS}" FROM "{_ROWS}" WHERE {where}'
    if kind == "duplicate":
        check_yaml = impl.check_yaml
        if impl.column_impl is not None:
            column = impl.column_expression
            keys = [build(column)]
            filters.append(f"NOT ({build(impl.missing_and_validity.is_missing_expr(column))})")
        elif getattr(check_yaml, "columns", None):
            keys = [dialect.quote_default(c) for c in check_yaml.columns]
        else:
            return None
        if check_yaml.filter:
            filters.append(f"({check_yaml.filter})")
        where = f"WHERE {' AND '.join(filters)}" if filters else ""
        partition = ", ".join(keys)
        return (
            f'SELECT "{_POS}" FROM (SELECT "{_POS}", row_number() OVER '
            f'(PARTITION BY {partition} ORDER BY "{_POS}") AS rn FROM "{_ROWS}" {where}) '
            "WHERE rn > 1"
        )
    return None


# -- plugin -----------------------------------------------------------------------------


def _build(config: SodaConfig, context: BuildContext) -> SodaValidator:
    return SodaValidator(
        config.contract,
        name=config.name,
        on_fail=config.on_fail,
        fail_on_error=config.fail_on_error,
        variables=config.variables,
        base_dir=context.base_dir,
    )


SODA_VALIDATOR = Plugin(
    kind="validator",
    type="soda",
    config=SodaConfig,
    build=_build,
    summary="A Soda Core 4 data contract over DuckDB; rows failing missing/invalid/duplicate/"
    "failed_rows checks to the DLQ",
    extra="soda",
)
