"""The engine: stages, batches, the pipeline loop, dead letters, state and accounting.

Depends on pyarrow, structlog and tenacity only; it knows no connector.
"""

from sluiceway.core.batch import ROW_ID, Batch, PartitionSpan, Position
from sluiceway.core.dlq import (
    ENVELOPE_SCHEMA,
    DeadLetterQueue,
    DeadLetterReader,
    DeadLetters,
    LocalParquetDLQ,
    read_dead_letters,
)
from sluiceway.core.errors import (
    AccountingError,
    CastError,
    ConfigError,
    DataError,
    DecodeError,
    FatalError,
    MissingExtraError,
    RunLockedError,
    SinkError,
    SluicewayError,
    SourceError,
    StateConflictError,
    StateError,
    TransformError,
    TransientError,
    ValidationFailedError,
)
from sluiceway.core.events import EventBus, EventKind, Hook, StageEvent
from sluiceway.core.metrics import PipelineMetrics, RuleStats
from sluiceway.core.pipeline import Pipeline, RunFailedError, new_run_id
from sluiceway.core.report import OnFail, RuleResult, ValidationReport
from sluiceway.core.retry import RetryPolicy
from sluiceway.core.stages import (
    BaseExtractor,
    BaseLoader,
    BaseTransformer,
    BaseValidator,
    Frame,
    LoadResult,
    Routed,
    RowRejection,
    SinkContext,
    SourceContext,
)
from sluiceway.core.state import Intent, LocalStateStore, PipelineState, StateStore
from sluiceway.core.thresholds import ThresholdExceededError, Thresholds

__all__ = [
    "ENVELOPE_SCHEMA",
    "ROW_ID",
    "AccountingError",
    "BaseExtractor",
    "BaseLoader",
    "BaseTransformer",
    "BaseValidator",
    "Batch",
    "CastError",
    "ConfigError",
    "DataError",
    "DeadLetterQueue",
    "DeadLetterReader",
    "DeadLetters",
    "DecodeError",
    "EventBus",
    "EventKind",
    "FatalError",
    "Frame",
    "Hook",
    "Intent",
    "LoadResult",
    "LocalParquetDLQ",
    "LocalStateStore",
    "MissingExtraError",
    "OnFail",
    "PartitionSpan",
    "Pipeline",
    "PipelineMetrics",
    "PipelineState",
    "Position",
    "RetryPolicy",
    "RowRejection",
    "Routed",
    "RuleResult",
    "RuleStats",
    "RunFailedError",
    "RunLockedError",
    "SinkContext",
    "SinkError",
    "SluicewayError",
    "SourceContext",
    "SourceError",
    "StageEvent",
    "StateConflictError",
    "StateError",
    "StateStore",
    "ThresholdExceededError",
    "Thresholds",
    "TransformError",
    "TransientError",
    "ValidationFailedError",
    "ValidationReport",
    "new_run_id",
    "read_dead_letters",
]
