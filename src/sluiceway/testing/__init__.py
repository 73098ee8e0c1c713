"""What users of sluiceway need to test their own pipelines.

- :class:`SequenceExtractor` / ``type: sequence``: a deterministic, replayable source.
- :func:`check_delivery`: finds rows lost, duplicated or invented between source, sink and DLQ.
- ``SLUICEWAY_CRASH_AT=<point>:<n>`` with :data:`CRASH_POINTS`: kill the process at a point.
"""

from sluiceway.core.crash import CRASH_POINTS, crash_point
from sluiceway.testing.harness import (
    SEQUENCE_SOURCE,
    DeliveryReport,
    SequenceExtractor,
    SequenceSourceConfig,
    check_delivery,
    expected_rows,
    payload_hash,
)

__all__ = [
    "CRASH_POINTS",
    "SEQUENCE_SOURCE",
    "DeliveryReport",
    "SequenceExtractor",
    "SequenceSourceConfig",
    "check_delivery",
    "crash_point",
    "expected_rows",
    "payload_hash",
]
