"""From a validated spec to a runnable :class:`~sluiceway.core.Pipeline`.

Each stage is built by its plugin's ``build(config, BuildContext)``; the DLQ, the
state store, the retry policy, the thresholds and the alert subscribers come from
the spec's own sections. Paths in the spec are relative to the spec file's folder
(``base_dir``); ``SLUICEWAY_HOME`` overrides the spec's ``home``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluiceway.config.settings import Settings
from sluiceway.config.spec import AlertSpec, PipelineSpec, WebhookAlertSpec
from sluiceway.core.dlq import DeadLetterQueue
from sluiceway.core.errors import ConfigError, SluicewayError
from sluiceway.core.events import Hook
from sluiceway.core.pipeline import Pipeline
from sluiceway.core.retry import RetryPolicy
from sluiceway.core.stages import BaseExtractor, BaseLoader, BaseTransformer, BaseValidator
from sluiceway.core.state import StateStore
from sluiceway.core.thresholds import Thresholds
from sluiceway.observability.alerts import AlertChannel, AlertSubscriber, LogChannel, WebhookChannel
from sluiceway.observability.setup import build_hooks
from sluiceway.plugins import (
    BuildContext,
    Kind,
    Plugin,
    Registry,
    StageConfig,
    default_registry,
)

__all__ = [
    "Locations",
    "build_alerts",
    "build_pipeline",
    "build_stage",
    "dead_letter_queue",
    "locate",
    "registry_with",
    "retry_policy",
    "sink_config",
    "state_store",
    "run_thresholds",
]


@dataclass(frozen=True, slots=True)
class Locations:
    """Where a pipeline keeps its files on this machine (as the stores describe themselves)."""

    home: Path
    dlq: str
    state: str


def _local(value: str, base: Path) -> Path:
    if value.startswith("file://"):
        value = value[len("file://") :]
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _home(spec: PipelineSpec, base_dir: Path, settings: Settings | None) -> Path:
    if settings is not None and settings.home:
        return _local(settings.home, Path.cwd())
    return _local(spec.home, base_dir)


def _context(
    spec: PipelineSpec, base_dir: Path, settings: Settings | None, index: int = 0
) -> BuildContext:
    return BuildContext(
        pipeline=spec.name,
        base_dir=base_dir,
        engine=spec.engine,
        index=index,
        home=_home(spec, base_dir, settings),
    )


def locate(
    spec: PipelineSpec,
    base_dir: Path,
    settings: Settings | None = None,
    registry: Registry | None = None,
) -> Locations:
    """Resolve ``home`` and describe where the DLQ and the state store keep their data."""
    registry = registry or default_registry()
    ctx = _context(spec, base_dir, settings)
    dlq = build_stage("dlq", spec.dlq, ctx, registry)
    state = build_stage("state", spec.state, ctx, registry)
    assert ctx.home is not None
    return Locations(home=ctx.home, dlq=dlq.describe(), state=state.describe())


def state_store(
    spec: PipelineSpec,
    base_dir: Path,
    settings: Settings | None = None,
    registry: Registry | None = None,
) -> StateStore:
    """The spec's state store, built by its plugin (nothing is opened)."""
    ctx = _context(spec, base_dir, settings)
    store: StateStore = build_stage("state", spec.state, ctx, registry or default_registry())
    return store


def dead_letter_queue(
    spec: PipelineSpec,
    base_dir: Path,
    settings: Settings | None = None,
    registry: Registry | None = None,
) -> DeadLetterQueue:
    """The spec's DLQ, built by its plugin (nothing is opened)."""
    ctx = _context(spec, base_dir, settings)
    dlq: DeadLetterQueue = build_stage("dlq", spec.dlq, ctx, registry or default_registry())
    return dlq


def retry_policy(spec: PipelineSpec) -> RetryPolicy:
    r = spec.retry
    return RetryPolicy(
        attempts=r.attempts,
        backoff=r.backoff,
        initial_delay=r.initial_delay,
        max_delay=r.max_delay,
        jitter=r.jitter,
        deadline=r.deadline,
    )


def run_thresholds(spec: PipelineSpec) -> Thresholds:
    """The spec's ``thresholds:`` as the runner's :class:`Thresholds`."""
    t = spec.thresholds
    return Thresholds(
        max_dead_letter_ratio=t.max_dead_letter_ratio,
        max_dead_letter_rows=t.max_dead_letter_rows,
        min_rows=t.min_rows,
    )


def _channel(alert: AlertSpec) -> AlertChannel:
    if isinstance(alert, WebhookAlertSpec):
        return WebhookChannel(
            alert.url.get_secret_value(),
            format=alert.format,
            headers={k: v.get_secret_value() for k, v in alert.headers.items()},
            timeout=alert.timeout,
            attempts=alert.attempts,
        )
    return LogChannel(alert.level)


def build_alerts(spec: PipelineSpec) -> list[AlertSubscriber]:
    """One :class:`AlertSubscriber` per entry of the spec's ``alerts:`` (nothing is sent yet)."""
    return [
        AlertSubscriber(_channel(alert), on=alert.on, min_interval=alert.min_interval)
        for alert in spec.alerts
    ]


_EXPECTED: dict[Kind, type] = {
    "source": BaseExtractor,
    "transform": BaseTransformer,
    "validator": BaseValidator,
    "sink": BaseLoader,
    "state": StateStore,
    "dlq": DeadLetterQueue,
}


def build_stage(kind: Kind, config: StageConfig, context: BuildContext, registry: Registry) -> Any:
    """Build one stage through its plugin, translating failures into :class:`ConfigError`."""
    where = kind if kind not in ("transform", "validator") else f"{kind}s[{context.index}]"
    plugin = registry.get(kind, config.type)
    try:
        stage = plugin.build(config, context)
    except SluicewayError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where} (type {config.type!r}) cannot be built: {exc}") from exc
    expected = _EXPECTED[kind]
    if not isinstance(stage, expected):
        raise ConfigError(
            f"{where}: plugin {config.type!r} built a {type(stage).__name__}, "
            f"not a {expected.__name__}"
        )
    return stage


def sink_config(spec: PipelineSpec) -> StageConfig:
    """The sink's config; a merge's ``order_by`` defaults to the source's incremental cursor."""
    sink = spec.sink
    cursor = getattr(getattr(spec.source, "incremental", None), "cursor", None)
    if (
        isinstance(cursor, str)
        and getattr(sink, "mode", None) == "merge"
        and "order_by" in type(sink).model_fields
        and getattr(sink, "order_by", None) is None
        and cursor not in (getattr(sink, "keys", None) or [])
    ):
        return sink.model_copy(update={"order_by": cursor})
    return sink


def build_pipeline(
    spec: PipelineSpec,
    *,
    base_dir: str | os.PathLike[str],
    registry: Registry | None = None,
    hooks: Sequence[Hook] = (),
    limit: int | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
    alerts: bool = True,
) -> Pipeline:
    """A :class:`Pipeline` for ``spec``, its stages built by the registry's plugins.

    Building opens nothing: stages connect in ``open()`` when the run starts. A
    plugin that cannot build its stage (a missing extra, a bad reference) raises a
    :class:`ConfigError` naming the stage. The spec's ``alerts:`` are subscribed
    after ``hooks`` unless ``alerts=False``; ``dry_run`` builds a pipeline that
    writes nothing (see :class:`Pipeline`).
    """
    registry = registry or default_registry()
    base = Path(base_dir)
    ctx = _context(spec, base, settings)

    def at(index: int) -> BuildContext:
        return _context(spec, base, settings, index)

    return Pipeline(
        spec.name,
        build_stage("source", spec.source, ctx, registry),
        [build_stage("transform", t, at(i), registry) for i, t in enumerate(spec.transforms)],
        [build_stage("validator", v, at(i), registry) for i, v in enumerate(spec.validators)],
        build_stage("sink", sink_config(spec), ctx, registry),
        dlq=build_stage("dlq", spec.dlq, ctx, registry),
        state=build_stage("state", spec.state, ctx, registry),
        retry=retry_policy(spec),
        prefetch=spec.prefetch,
        hooks=build_hooks(
            spec.observability,
            pipeline=spec.name,
            source_type=spec.source.type,
            sink_type=spec.sink.type,
            engine=spec.engine,
            around=[*hooks, *(build_alerts(spec) if alerts else [])],
        ),
        limit=limit,
        home=ctx.home or base,
        dry_run=dry_run,
        thresholds=run_thresholds(spec),
        load_ahead=spec.load_ahead,
    )


def _import(module_name: str) -> Any:
    """Import a module, also from the working directory (as ``python -m`` would)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name is None or not module_name.startswith(exc.name) or cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(module_name)


def _plugins_from(ref: str) -> Iterable[Plugin]:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"SLUICEWAY_PLUGINS: {ref!r} is not of the form module:ATTRIBUTE")
    try:
        obj: Any = _import(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ConfigError(f"SLUICEWAY_PLUGINS: cannot load {ref!r}: {exc!r}") from exc
    plugins = [obj] if isinstance(obj, Plugin) else list(obj) if isinstance(obj, Iterable) else []
    if not plugins or not all(isinstance(p, Plugin) for p in plugins):
        raise ConfigError(f"SLUICEWAY_PLUGINS: {ref!r} is not a Plugin or a list of Plugins")
    return plugins


def registry_with(refs: Sequence[str], base: Registry | None = None) -> Registry:
    """The registry of installed entry points plus the plugins ``refs`` point to.

    ``refs`` are ``module:ATTRIBUTE`` strings (from ``SLUICEWAY_PLUGINS``); with none,
    ``base`` (default: the process-wide registry) is returned unchanged.
    """
    if not refs:
        return base or default_registry()
    registry = Registry(entry_points=base is None)
    if base is not None:
        registry.extend(base)
    for ref in refs:
        for plugin in _plugins_from(ref):
            registry.register(plugin)
    return registry
