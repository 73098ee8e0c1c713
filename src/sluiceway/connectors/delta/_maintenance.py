"""Delta table maintenance: ``optimize`` (compaction, optionally Z-order) and ``vacuum``.

Used by the sink's ``after_run`` options and by ``sluiceway delta optimize|vacuum``.
Both are ordinary Delta commits, safe next to running writers: compaction only
rewrites files of appends, and vacuum deletes only files removed from the table
longer ago than the retention (7 days unless the table or the caller says otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sluiceway.connectors.delta._errors import translate

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["optimize_table", "vacuum_table"]


def optimize_table(
    table: DeltaTable, *, z_order: Sequence[str] = (), target_size: int | None = None
) -> dict[str, Any]:
    """Compact small files (Z-ordered by ``z_order`` when given); delta-rs's metrics."""
    try:
        if z_order:
            return dict(table.optimize.z_order(list(z_order), target_size=target_size))
        return dict(table.optimize.compact(target_size=target_size))
    except Exception as exc:
        raise translate(exc, f"optimize delta table {table.table_uri}") from exc


def vacuum_table(
    table: DeltaTable,
    *,
    retention_hours: int | None = None,
    dry_run: bool = True,
    enforce_retention: bool = True,
) -> list[str]:
    """Files no longer referenced and older than the retention; deleted unless ``dry_run``."""
    try:
        return list(
            table.vacuum(
                retention_hours=retention_hours,
                dry_run=dry_run,
                enforce_retention_duration=enforce_retention,
            )
        )
    except Exception as exc:
        raise translate(exc, f"vacuum delta table {table.table_uri}") from exc
