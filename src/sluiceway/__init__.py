"""sluiceway: data pipelines that are correct under failure.

Extractor → Transformers → Validators → Loader, with a record-level dead-letter
queue, retries, checkpoints that survive crashes, and books that balance::

    from sluiceway import build_pipeline, load_spec

    spec, base_dir = load_spec("pipeline.yaml")
    metrics = build_pipeline(spec, base_dir=base_dir).run()

or in code, with the seed's classes::

    from sluiceway import Pipeline
    metrics = Pipeline("orders", extractor, [transform], [validator], loader).run()
"""

from importlib.metadata import PackageNotFoundError, version

from sluiceway.config import build_pipeline, load_spec
from sluiceway.core import (
    AccountingError,
    BaseExtractor,
    BaseLoader,
    BaseTransformer,
    BaseValidator,
    Batch,
    ConfigError,
    DataError,
    FatalError,
    LoadResult,
    PartitionSpan,
    Pipeline,
    PipelineMetrics,
    RetryPolicy,
    Routed,
    RowRejection,
    RuleResult,
    RunFailedError,
    SluicewayError,
    StageEvent,
    TransientError,
    ValidationReport,
)
from sluiceway.plugins import BuildContext, Plugin, StageConfig

try:
    __version__ = version("sluiceway")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AccountingError",
    "BaseExtractor",
    "BaseLoader",
    "BaseTransformer",
    "BaseValidator",
    "Batch",
    "BuildContext",
    "ConfigError",
    "DataError",
    "FatalError",
    "LoadResult",
    "PartitionSpan",
    "Pipeline",
    "PipelineMetrics",
    "Plugin",
    "RetryPolicy",
    "RowRejection",
    "Routed",
    "RuleResult",
    "RunFailedError",
    "SluicewayError",
    "StageConfig",
    "StageEvent",
    "TransientError",
    "ValidationReport",
    "__version__",
    "build_pipeline",
    "load_spec",
]
