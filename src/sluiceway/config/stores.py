"""The built-in state store and dead-letter queue: local folders.

``state:`` and ``dlq:`` in a spec are plugins like stages (kinds ``state`` and
``dlq``), so a package can add ``state: {uri: s3://…}`` or ``dlq: {type: kafka}``.
When ``type`` is left out it is taken from the ``uri``'s scheme: no scheme (or
``file://``) is ``local``, ``s3://`` is ``s3``, ``postgresql://`` is ``postgres``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from sluiceway.core.dlq import LocalParquetDLQ
from sluiceway.core.state import LocalStateStore
from sluiceway.plugins import BuildContext, Plugin, StageConfig

__all__ = [
    "BUILTIN_STORES",
    "LOCAL_DLQ",
    "LOCAL_STATE",
    "LocalDLQConfig",
    "LocalStateConfig",
    "infer_store_type",
]

_SCHEMES = {"file": "local", "postgresql": "postgres", "s3a": "s3"}


def infer_store_type(value: Any) -> Any:
    """Fill in ``type`` of a ``state:``/``dlq:`` mapping from its ``uri`` scheme."""
    if not isinstance(value, dict) or "type" in value:
        return value
    uri = value.get("uri")
    scheme = uri.split("://", 1)[0].lower() if isinstance(uri, str) and "://" in uri else "local"
    return {"type": _SCHEMES.get(scheme, scheme), **value}


def _local_path(uri: str | None, default: Path, ctx: BuildContext) -> Path:
    if uri is None:
        return default
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return Path(ctx.path(uri))


def _home(ctx: BuildContext) -> Path:
    return ctx.home if ctx.home is not None else ctx.base_dir / ".sluiceway"


class LocalStateConfig(StageConfig):
    """``state: {uri: <folder>}`` — a JSON file per pipeline replaced atomically, and a lock."""

    type: Literal["local"] = "local"
    uri: str | None = Field(default=None, description="folder; default <home>/state")


class LocalDLQConfig(StageConfig):
    """``dlq: {uri: <folder>}`` — one Parquet file per batch and stage."""

    type: Literal["local"] = "local"
    uri: str | None = Field(default=None, description="folder; default <home>/dlq/<pipeline>")


def _build_state(config: LocalStateConfig, ctx: BuildContext) -> LocalStateStore:
    return LocalStateStore(_local_path(config.uri, _home(ctx) / "state", ctx), ctx.pipeline)


def _build_dlq(config: LocalDLQConfig, ctx: BuildContext) -> LocalParquetDLQ:
    return LocalParquetDLQ(_local_path(config.uri, _home(ctx) / "dlq" / ctx.pipeline, ctx))


LOCAL_STATE = Plugin(
    kind="state",
    type="local",
    config=LocalStateConfig,
    build=_build_state,
    summary="JSON file per pipeline in a local folder, atomic replace, flock run lock",
)
LOCAL_DLQ = Plugin(
    kind="dlq",
    type="local",
    config=LocalDLQConfig,
    build=_build_dlq,
    summary="Parquet file per batch and stage in a local folder",
)
BUILTIN_STORES = (LOCAL_STATE, LOCAL_DLQ)
