"""Test-only plugins for the observability tests (no tests in this module).

A child process registers them through ``SLUICEWAY_PLUGINS`` (:data:`ENV_PLUGINS`,
with :data:`PYTHONPATH` on its path). Together they make a run with everything an
operator watches: a transform failing on some rows (bisected into the DLQ), a
validation rule dead-lettering rows, a sink that fails transiently (retried),
optional consumer lag, a slow source to stop with SIGTERM, and a source that dies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from sluiceway.core.errors import SourceError, TransientError
from sluiceway.core.report import RuleResult, ValidationReport
from sluiceway.core.stages import BaseExtractor, BaseLoader, BaseTransformer, BaseValidator
from sluiceway.plugins import BuildContext, Plugin, StageConfig

MODULE = __name__
ENV_PLUGINS = f"{MODULE}:PLUGINS"
#: The folder a child process needs on its path to import this module by ``MODULE``.
PYTHONPATH = str(Path(__file__).resolve().parents[len(MODULE.split(".")) - 1])


class ObsRowsConfig(StageConfig):
    type: Literal["obs-rows"]
    rows: int = 12
    batch_size: int = 4
    negative: list[int] = Field(default_factory=list)
    fail_after: int | None = None
    sleep: float = 0.0
    lag: bool = False


class ObsRows(BaseExtractor[dict[str, Any]]):
    """Rows ``{id, value}``; ``value = -id`` for ids in ``negative``.

    With ``lag``, ``metrics()`` reports ``consumer_lag``: the rows not yet read (what a
    Kafka source reports as its lag).
    """

    type_name = "obs-rows"

    def __init__(self, config: ObsRowsConfig) -> None:
        super().__init__(config.batch_size)
        self.config = config
        self.consumer_lag: int | None = None

    def metrics(self) -> dict[str, float]:
        return {} if self.consumer_lag is None else {"consumer_lag": float(self.consumer_lag)}

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
            if c.lag:
                self.consumer_lag = c.rows - ids[-1] - 1
            values = [-i if i in c.negative else i for i in ids]
            yield pa.table({"id": pa.array(ids, pa.int64()), "value": pa.array(values, pa.int64())})


class ExplodeConfig(StageConfig):
    type: Literal["obs-explode"]
    ids: list[int] = Field(default_factory=list)
    drop: list[int] = Field(default_factory=list)


class Explode(BaseTransformer[pa.Table, pa.Table]):
    """Row-wise: raises ``ValueError`` on a batch holding one of ``ids`` (bisected to rows);
    filters out the rows whose id is in ``drop``."""

    row_wise = True

    def __init__(self, config: ExplodeConfig) -> None:
        super().__init__("explode")
        self.ids = set(config.ids)
        self.drop = pa.array(config.drop, pa.int64())

    def transform(self, data: pa.Table) -> pa.Table:
        bad = self.ids.intersection(data["id"].to_pylist())
        if bad:
            raise ValueError(f"cannot explode id {min(bad)}")
        if len(self.drop):
            data = data.filter(pc.invert(pc.is_in(data["id"], value_set=self.drop)))
        return data.append_column("double", pc.multiply(data["value"], 2))


class PositiveConfig(StageConfig):
    type: Literal["obs-positive"]
    warn_above: int | None = None


class Positive(BaseValidator[pa.Table]):
    """``positive(value)`` (dead-letters); with ``warn_above``, ``small(value)`` warns."""

    def __init__(self, warn_above: int | None = None) -> None:
        super().__init__("positive")
        self.warn_above = warn_above

    def validate(self, data: pa.Table) -> ValidationReport:
        rules = [
            RuleResult.from_mask(
                "positive(value)",
                pc.less(data["value"], 0),
                values=data["value"],
                column="value",
                message="value must be >= 0",
            )
        ]
        if self.warn_above is not None:
            rules.append(
                RuleResult.from_mask(
                    "small(value)",
                    pc.greater(data["value"], self.warn_above),
                    column="value",
                    on_fail="warn",
                    message=f"value above {self.warn_above}",
                )
            )
        return ValidationReport(self.name, rules)


class FlakyConfig(StageConfig):
    type: Literal["obs-flaky"]
    path: str
    transient_failures: int = 0


class Flaky(BaseLoader[dict[str, Any]]):
    """JSON lines; the first ``transient_failures`` loads raise :class:`TransientError`."""

    type_name = "obs-flaky"

    def __init__(self, config: FlakyConfig, path: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.failures_left = config.transient_failures

    def load(self, batch: Any) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise TransientError("the test sink is busy")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for row in batch.to_records():
                fh.write(json.dumps(row) + "\n")


def _flaky(config: FlakyConfig, ctx: BuildContext) -> Flaky:
    return Flaky(config, ctx.path(config.path))


PLUGINS = [
    Plugin("source", "obs-rows", ObsRowsConfig, lambda c, ctx: ObsRows(c)),
    Plugin("transform", "obs-explode", ExplodeConfig, lambda c, ctx: Explode(c)),
    Plugin("validator", "obs-positive", PositiveConfig, lambda c, ctx: Positive(c.warn_above)),
    Plugin("sink", "obs-flaky", FlakyConfig, _flaky),
]
