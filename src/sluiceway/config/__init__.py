"""The pipeline spec (YAML → Pydantic models), runtime settings, and building a pipeline.

Typical use::

    spec, base_dir = load_spec("pipeline.yaml")
    pipeline = build_pipeline(spec, base_dir=base_dir)
    metrics = pipeline.run()
"""

from sluiceway.config.build import (
    Locations,
    build_alerts,
    build_pipeline,
    build_stage,
    dead_letter_queue,
    locate,
    registry_with,
    retry_policy,
    run_thresholds,
    state_store,
)
from sluiceway.config.interpolate import Interpolated, interpolate
from sluiceway.config.loader import Problem, SpecError, format_path, load_spec, parse_spec
from sluiceway.config.settings import LogFormat, LogLevel, Settings, load_settings
from sluiceway.config.spec import (
    AlertSpec,
    Duration,
    LogAlertSpec,
    PipelineSpec,
    RetrySpec,
    ThresholdsSpec,
    WebhookAlertSpec,
    parse_duration,
    spec_json_schema,
    spec_model,
)
from sluiceway.config.stores import LocalDLQConfig, LocalStateConfig, infer_store_type

__all__ = [
    "AlertSpec",
    "Duration",
    "Interpolated",
    "LocalDLQConfig",
    "LocalStateConfig",
    "LogAlertSpec",
    "Locations",
    "LogFormat",
    "LogLevel",
    "PipelineSpec",
    "Problem",
    "RetrySpec",
    "Settings",
    "SpecError",
    "ThresholdsSpec",
    "WebhookAlertSpec",
    "build_alerts",
    "build_pipeline",
    "build_stage",
    "dead_letter_queue",
    "format_path",
    "infer_store_type",
    "interpolate",
    "load_settings",
    "load_spec",
    "locate",
    "parse_duration",
    "parse_spec",
    "registry_with",
    "retry_policy",
    "run_thresholds",
    "spec_json_schema",
    "spec_model",
    "state_store",
]
