"""One benchmark run in this (fresh) process: the file pipeline, observability on or off.

    python -m benchmarks.observability.pipeline SPEC.yaml off
    python -m benchmarks.observability.pipeline SPEC.yaml on      # DD_* env points it somewhere

Builds the hooks the way the CLI does once ``observability:`` is wired into the spec
(``build_hooks(..., around=[LogSubscriber()])``), runs, closes (flushes) and exits.
"""

from __future__ import annotations

import sys

from sluiceway.config import build_pipeline, load_spec
from sluiceway.observability.logging import LogSubscriber, configure_logging
from sluiceway.observability.setup import DatadogConfig, ObservabilityConfig, build_hooks


def main(spec_path: str, mode: str) -> None:
    configure_logging("warning", "json")
    spec, base_dir = load_spec(spec_path)
    config = ObservabilityConfig(datadog=DatadogConfig() if mode == "on" else False)
    with build_hooks(
        config,
        pipeline=spec.name,
        source_type=spec.source.type,
        sink_type=spec.sink.type,
        engine=spec.engine,
        around=[LogSubscriber()],
    ) as hooks:
        metrics = build_pipeline(spec, base_dir=base_dir, hooks=hooks).run()
    if not metrics.balanced or metrics.written == 0:
        raise SystemExit(f"bad run: {metrics.to_dict()}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
