"""The seed's four stage contracts: extractor, transformer, validator, loader.

Built-in stages exchange Arrow; a user stage may ask for another frame by setting
``frame`` ("arrow", "polars", "pandas" or "records"), and the runner converts at the
boundary. ``batch_size``, ``records_read``, ``fail_on_error`` and ``records_written``
keep the seed's names.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pyarrow as pa

from sluiceway.core.batch import Batch, Position
from sluiceway.core.report import ValidationReport
from sluiceway.core.state import Intent

__all__ = [
    "BaseExtractor",
    "BaseLoader",
    "BaseTransformer",
    "BaseValidator",
    "Frame",
    "LoadResult",
    "RowRejection",
    "Routed",
    "SinkContext",
    "SourceContext",
]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the seed's name for a transformer's input type
O = TypeVar("O")  # noqa: E741

Frame = Literal["arrow", "polars", "pandas", "records"]


@dataclass(slots=True)
class SourceContext:
    """What an extractor is told when a run opens it."""

    pipeline: str
    run_id: str
    positions: Mapping[str, Position] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    limit: int | None = None
    drain: threading.Event = field(default_factory=threading.Event)
    """Set on a graceful stop (SIGTERM): emit what is buffered, then end ``extract()``."""


@dataclass(slots=True)
class SinkContext:
    pipeline: str
    run_id: str


@dataclass(frozen=True, slots=True)
class RowRejection:
    """One row a sink refused (by index into the batch's rows), with the sink's reason."""

    row_index: int
    message: str
    error_type: str = "RowRejected"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A sink's acknowledgement: how many rows it wrote and which it refused."""

    written: int
    rejected: Sequence[RowRejection] = ()


@dataclass(frozen=True, slots=True)
class Routed:
    """What a transform returns when it refuses some rows itself instead of raising.

    ``data`` goes on (any frame kind); ``rejected`` are the refused rows as they
    entered the transform, carrying the hidden row id, and are dead-lettered with
    the per-row (or shared) error type, message, column and value.
    """

    data: Any
    rejected: pa.Table
    error_type: str | Sequence[str]
    error_message: str | Sequence[str]
    column: str | Sequence[str | None] | None = None
    value: str | Sequence[str | None] | None = None


class BaseExtractor(ABC, Generic[T]):
    """Reads a source in batches of at most ``batch_size`` rows.

    ``extract()`` yields :class:`Batch` objects (with positions), or — for simple user
    extractors — Arrow tables or ``list[T]`` records, which the runner wraps with
    positions counted in rows.
    """

    type_name: ClassVar[str] = "custom"

    def __init__(self, batch_size: int = 50_000) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.batch_size = batch_size
        self.records_read = 0
        self.context = SourceContext(pipeline="", run_id="")

    @property
    def name(self) -> str:
        return self.type_name

    def open(self, context: SourceContext) -> None:
        """Called once per run, before ``replay`` and ``extract``."""
        self.context = context

    @abstractmethod
    def extract(self) -> Iterator[Batch | pa.Table | pa.RecordBatch | list[T]]:
        """Yield batches from the committed positions in ``self.context.positions`` on."""

    def replay(self, intent: Intent) -> Batch | None:
        """Re-read exactly the rows an unfinished batch covered, or None if impossible.

        When None, the runner drops the intent and re-reads from committed positions
        (at-least-once instead of exactly the same batch).
        """
        return None

    def acknowledge(self, batch: Batch) -> None:
        """The batch is loaded and its state committed (e.g. commit Kafka offsets)."""

    def is_stale(self, batch: Batch) -> bool:
        """True if a batch read earlier must not be processed any more.

        E.g. its Kafka partitions were revoked by a rebalance and another consumer
        now owns them; the runner then drops it uncommitted (nothing is lost: the
        new owner reads those offsets again).
        """
        return False

    def metrics(self) -> Mapping[str, float]:
        """Source gauges (e.g. ``consumer_lag``) attached to each ``batch_extracted`` event."""
        return {}

    def close(self) -> None:
        """Release connections; called once at the end of the run, even on failure."""


class BaseTransformer(ABC, Generic[I, O]):
    """Maps a batch to a batch.

    ``row_wise`` says whether each output row derives from one input row. ``None``
    (default) lets the runner judge from the hidden row id; ``False`` forbids
    bisecting on failure (the whole batch is dead-lettered).
    """

    frame: ClassVar[Frame] = "arrow"
    row_wise: bool | None = None

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__

    def open(self) -> None:
        """Called once per run before the first batch."""

    @abstractmethod
    def transform(self, data: I) -> O:
        """Return the transformed rows in the same frame kind as given."""

    def close(self) -> None:
        """Called once at the end of the run."""


class BaseValidator(ABC, Generic[T]):
    """Checks a batch and says, row by row where it can, what failed."""

    frame: ClassVar[Frame] = "arrow"

    def __init__(self, name: str | None = None, *, fail_on_error: bool = False) -> None:
        self.name = name or type(self).__name__
        self.fail_on_error = fail_on_error

    def open(self) -> None:
        """Called once per run before the first batch."""

    @abstractmethod
    def validate(self, data: T) -> ValidationReport:
        """Return one result per rule; row masks align with the rows of ``data``."""

    def close(self) -> None:
        """Called once at the end of the run."""


class BaseLoader(ABC, Generic[T]):
    """Writes batches to a sink and acknowledges what it wrote."""

    type_name: ClassVar[str] = "custom"

    def __init__(self) -> None:
        self.records_written = 0
        self.context = SinkContext(pipeline="", run_id="")

    @property
    def name(self) -> str:
        return self.type_name

    def open(self, context: SinkContext) -> None:
        self.context = context

    def committed(self, batch: Batch) -> bool:
        """True if an idempotent sink already holds this batch (then it is skipped)."""
        return False

    @abstractmethod
    def load(self, batch: Batch) -> LoadResult | None:
        """Write the batch; None means every row was written.

        Raise :class:`~sluiceway.core.errors.TransientError` for what a retry may fix,
        :class:`~sluiceway.core.errors.FatalError` to stop the run. Rows the sink
        refuses individually go in ``LoadResult.rejected`` and are dead-lettered.
        """

    def commit(self, batch: Batch) -> None:
        """Make the batch ``load`` wrote durable.

        The runner calls it after ``load`` returned and after the rows ``load``
        refused are durably in the DLQ. A sink that refuses rows must commit here,
        not in ``load``: otherwise a crash between its commit and the DLQ write
        would let a rerun skip the batch as loaded while the refused rows are lost.
        A sink that never refuses rows may commit in ``load`` and leave this empty.
        """

    def abort(self, batch: Batch) -> None:
        """Undo an uncommitted ``load`` (called when the DLQ write or ``commit`` failed)."""

    def finish(self) -> None:
        """The run succeeded: publish what it staged (e.g. swap a replaced table)."""

    def close(self) -> None:
        """Release connections; called once at the end of the run, even on failure."""

    def describe(self) -> Mapping[str, Any]:
        return {"type": self.type_name}
