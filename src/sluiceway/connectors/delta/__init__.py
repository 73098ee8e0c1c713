"""Delta Lake sink (``sink: {type: delta}``): local or ``s3://`` tables, effectively once.

``append``, ``overwrite`` and ``merge`` (keys, ``order_by``, ``delete_when``) through
``deltalake`` (delta-rs); ``partition_by``; schema ``evolve`` or ``strict``. Every
commit carries a Delta ``txn`` action per source partition, so a rerun after a crash
skips what the table already holds. ``deltalake`` (the ``delta`` extra) is imported
when the sink opens, not here.
"""

from __future__ import annotations

from sluiceway.connectors.delta._config import AfterRun, DeltaSinkConfig
from sluiceway.connectors.delta._loader import (
    DeltaLoader,
    app_id,
    overwrite_app_ids,
    txn_versions,
)
from sluiceway.connectors.delta._maintenance import optimize_table, vacuum_table
from sluiceway.plugins import BuildContext, Plugin

__all__ = [
    "DELTA_SINK",
    "AfterRun",
    "DeltaLoader",
    "DeltaSinkConfig",
    "app_id",
    "build_loader",
    "optimize_table",
    "overwrite_app_ids",
    "txn_versions",
    "vacuum_table",
]


def build_loader(config: DeltaSinkConfig, ctx: BuildContext) -> DeltaLoader:
    """The loader of a spec's ``sink:``; a relative local ``uri`` is relative to the spec file."""
    return DeltaLoader(
        ctx.path(config.uri),
        mode=config.mode,
        keys=config.keys,
        order_by=config.order_by,
        delete_when=config.delete_when,
        partition_by=config.partition_by,
        schema_mode=config.schema_mode,
        target_file_size=config.target_file_size,
        options=config.s3_options(),
        storage_options=config.storage_options,
        after_run=config.after_run,
        commit_retries=config.commit_retries,
    )


DELTA_SINK = Plugin(
    kind="sink",
    type="delta",
    config=DeltaSinkConfig,
    build=build_loader,
    summary="Delta Lake table, local or s3:// (append, overwrite, merge); effectively-once "
    "through one Delta txn per source partition",
    extra="delta",
)
