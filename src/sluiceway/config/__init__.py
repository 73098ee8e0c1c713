"""The pipeline spec (YAML → Pydantic models), runtime settings, and building a pipeline.

Typical use::

    spec, base_dir = load_spec("pipeline.yaml")
    pipeline = build_pipeline(spec, base_dir=base_dir)
    metrics = pipeline.run()
"""

from sluiceway.config.build import (
    Locations,
    build_pipeline,
    build_stage,
    locate,
    registry_with,
    retry_policy,
    state_store,
)
from sluiceway.config.interpolate import Interpolated, interpolate
from sluiceway.config.loader import Problem, SpecError, format_path, load_spec, parse_spec
from sluiceway.config.settings import LogFormat, LogLevel, Settings, load_settings
from sluiceway.config.spec import (
    Duration,
    PipelineSpec,
    RetrySpec,
    parse_duration,
    spec_json_schema,
    spec_model,
)
from sluiceway.config.stores import LocalDLQConfig, LocalStateConfig, infer_store_type

__all__ = [
    "Duration",
    "Interpolated",
    "LocalDLQConfig",
    "LocalStateConfig",
    "Locations",
    "LogFormat",
    "LogLevel",
    "PipelineSpec",
    "Problem",
    "RetrySpec",
    "Settings",
    "SpecError",
    "build_pipeline",
    "build_stage",
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
    "spec_json_schema",
    "spec_model",
    "state_store",
]
