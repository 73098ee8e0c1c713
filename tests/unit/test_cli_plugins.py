"""Small test-only plugins for the spec, CLI and logging tests (no tests in this module).

A child process registers them through ``SLUICEWAY_PLUGINS`` (:data:`ENV_PLUGINS`) with
:data:`PYTHONPATH` on its path; in-process tests use :func:`registry`. Type names start
with ``test-`` so they never clash with the built-in connectors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, SecretStr

from sluiceway.core.errors import SourceError, TransientError
from sluiceway.core.report import OnFail, RuleResult, ValidationReport
from sluiceway.core.stages import BaseExtractor, BaseLoader, BaseTransformer, BaseValidator
from sluiceway.plugins import BuildContext, Plugin, Registry, StageConfig, require

HERE = Path(__file__).resolve().parent
MODULE = __name__
ENV_PLUGINS = f"{MODULE}:PLUGINS"
_DEPTH = len(MODULE.split("."))
#: The folder a child process needs on its path to import this module by ``MODULE``.
PYTHONPATH = str(HERE.parents[_DEPTH - 2]) if _DEPTH > 1 else str(HERE)


# -- source -----------------------------------------------------------------------------


class RowsSourceConfig(StageConfig):
    type: Literal["test-rows"]
    rows: int = 10
    batch_size: int = 4
    negative: list[int] = Field(default_factory=list)
    fail_after: int | None = None
    sleep: float = 0.0
    dsn: SecretStr | None = None


class RowsSource(BaseExtractor[dict[str, Any]]):
    """Rows ``{id, value}`` with ``value = id`` (or ``-id`` for ids in ``negative``)."""

    type_name = "test-rows"

    def __init__(self, config: RowsSourceConfig) -> None:
        super().__init__(config.batch_size)
        self.config = config

    def extract(self) -> Iterator[pa.Table]:
        c = self.config
        start = int(self.context.positions.get(self.name) or 0)
        for number, low in enumerate(range(start, c.rows, c.batch_size)):
            if c.fail_after is not None and number >= c.fail_after:
                raise SourceError("the test source went away")
            if c.sleep:
                time.sleep(c.sleep)
            if self.context.stop.is_set():
                return
            ids = list(range(low, min(low + c.batch_size, c.rows)))
            values = [-i if i in c.negative else i for i in ids]
            yield pa.table({"id": pa.array(ids, pa.int64()), "value": pa.array(values, pa.int64())})


# -- transform --------------------------------------------------------------------------


class LabelConfig(StageConfig):
    type: Literal["test-label"]
    drop_multiples_of: int | None = None


class Label(BaseTransformer[pa.Table, pa.Table]):
    """Adds ``label = "row-<id>"``; optionally drops ids divisible by a number."""

    def __init__(self, config: LabelConfig) -> None:
        super().__init__("test-label")
        self.config = config

    def transform(self, data: pa.Table) -> pa.Table:
        n = self.config.drop_multiples_of
        if n:
            keep = [i % n != 0 for i in data["id"].to_pylist()]
            data = data.filter(pa.array(keep, pa.bool_()))
        labels = pa.array([f"row-{i}" for i in data["id"].to_pylist()], pa.string())
        return data.append_column("label", labels)


# -- validator --------------------------------------------------------------------------


class PositiveConfig(StageConfig):
    type: Literal["test-positive"]
    on_fail: OnFail = "dlq"
    fail_on_error: bool = False


class Positive(BaseValidator[pa.Table]):
    """One rule, ``positive(value)``: value >= 0."""

    def __init__(self, config: PositiveConfig) -> None:
        super().__init__("test-positive", fail_on_error=config.fail_on_error)
        self.on_fail: OnFail = config.on_fail

    def validate(self, data: pa.Table) -> ValidationReport:
        mask = pc.less(data["value"], 0)
        rule = RuleResult.from_mask(
            "positive(value)",
            mask,
            values=data["value"],
            column="value",
            on_fail=self.on_fail,
            message="value must be >= 0",
        )
        return ValidationReport(self.name, [rule])


# -- sinks ------------------------------------------------------------------------------


class FileSinkConfig(StageConfig):
    type: Literal["test-file"]
    path: str
    mode: Literal["append", "replace"] = "append"
    lie: bool = False
    transient_failures: int = 0
    password: SecretStr | None = None


class FileSink(BaseLoader[dict[str, Any]]):
    """Appends each row as a JSON line; ``lie`` under-reports, ``transient_failures`` flakes."""

    type_name = "test-file"

    def __init__(self, config: FileSinkConfig, path: str) -> None:
        super().__init__()
        self.config = config
        self.path = Path(path)
        self._failures_left = config.transient_failures

    def load(self, batch: Any) -> Any:
        if self._failures_left > 0:
            self._failures_left -= 1
            raise TransientError("the test sink is busy")
        rows = batch.to_records()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        if self.config.lie:
            from sluiceway.core.stages import LoadResult

            return LoadResult(written=max(0, len(rows) - 1))
        return None


class NeedsExtraConfig(StageConfig):
    type: Literal["test-needs-extra"]


def _build_needs_extra(config: NeedsExtraConfig, ctx: BuildContext) -> Any:
    require("sluiceway_test_no_such_module", extra="nothing", what="the test-needs-extra sink")
    raise AssertionError("unreachable")


BUILT: list[BuildContext] = []


def _build_source(config: RowsSourceConfig, ctx: BuildContext) -> RowsSource:
    BUILT.append(ctx)
    return RowsSource(config)


def _build_file(config: FileSinkConfig, ctx: BuildContext) -> FileSink:
    BUILT.append(ctx)
    return FileSink(config, ctx.path(config.path))


PLUGINS = [
    Plugin("source", "test-rows", RowsSourceConfig, _build_source, summary="numbered test rows"),
    Plugin("transform", "test-label", LabelConfig, lambda c, ctx: Label(c), summary="adds label"),
    Plugin("validator", "test-positive", PositiveConfig, lambda c, ctx: Positive(c)),
    Plugin("sink", "test-file", FileSinkConfig, _build_file, summary="JSON lines file"),
    Plugin("sink", "test-needs-extra", NeedsExtraConfig, _build_needs_extra, extra="nothing"),
]


def registry() -> Registry:
    """A registry holding only the test plugins."""
    return Registry(PLUGINS, entry_points=False)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
