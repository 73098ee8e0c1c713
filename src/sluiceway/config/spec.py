"""The pipeline spec as Pydantic models, with stage unions built from the plugin registry.

:class:`PipelineSpec` holds what every spec has (``version``, ``name``, ``dlq``,
``state``, ``retry``, ``engine`` …). Its stage fields are typed with the base
:class:`~sluiceway.plugins.StageConfig`; :func:`spec_model` derives, per registry,
a subclass whose ``source``, ``transforms``, ``validators`` and ``sink`` are unions
discriminated on ``type`` over the registered plugins' config models. That derived
model validates specs and produces the JSON Schema editors complete against, so a
third-party plugin shows up in both without touching this module.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    SecretStr,
    create_model,
    field_validator,
)

from sluiceway.config.stores import BUILTIN_STORES, LocalDLQConfig, LocalStateConfig
from sluiceway.core.errors import ConfigError
from sluiceway.observability.alerts import ALERT_EVENTS, AlertEvent
from sluiceway.observability.setup import ObservabilityConfig
from sluiceway.plugins import KINDS, Duration, Kind, Plugin, Registry, StageConfig, parse_duration

__all__ = [
    "ALERT_EVENTS",
    "AlertEvent",
    "AlertSpec",
    "Duration",
    "LogAlertSpec",
    "PipelineSpec",
    "RetrySpec",
    "ThresholdsSpec",
    "WebhookAlertSpec",
    "STAGE_FIELDS",
    "parse_duration",
    "plugin_problem",
    "spec_json_schema",
    "spec_model",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Section):
    """``retry:`` — how transient load errors are retried (see ``RetryPolicy``)."""

    attempts: int = Field(default=5, ge=1, description="tries in all, the first one included")
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: Duration = 0.5
    max_delay: Duration = 60.0
    jitter: Duration = 0.5
    deadline: Duration | None = Field(
        default=None, description="give up once this much time has passed since the first try"
    )


class ThresholdsSpec(_Section):
    """``thresholds:`` — limits whose crossing fails the run (exit code 6).

    Checked after each batch commit (committed work is kept) and at the end of the run.
    """

    max_dead_letter_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="fail when dead-lettered / (read + replayed + expanded) exceeds this",
    )
    max_dead_letter_rows: int | None = Field(
        default=None, ge=0, description="fail when more rows than this are dead-lettered"
    )
    min_rows: int = Field(
        default=0,
        ge=0,
        description="judge the ratio after a batch only once this many rows came in "
        "(the end-of-run check always applies)",
    )


class _AlertBase(_Section):
    on: list[AlertEvent] = Field(
        default_factory=lambda: list(ALERT_EVENTS),
        min_length=1,
        description="what alerts: rows reaching the DLQ, a failed run, a crossed threshold",
    )
    min_interval: Duration = Field(
        default=600.0,
        description="at most one dead-letter alert per interval; counts in between are "
        "aggregated into the next one (and a summary at the end of the run)",
    )


class WebhookAlertSpec(_AlertBase):
    """``{type: webhook, url: ${SLACK_WEBHOOK}}`` — POST a Slack message or a JSON body."""

    type: Literal["webhook"]
    url: SecretStr = Field(description="http(s) URL; a secret, never logged")
    format: Literal["slack", "json"] = Field(
        default="slack", description="slack: incoming-webhook text + blocks; json: plain body"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra HTTP headers (e.g. Authorization); secret"
    )
    timeout: Duration = Field(default=10.0, description="per request")
    attempts: int = Field(default=3, ge=1, le=10, description="tries per alert, the first included")

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        if not text.lower().startswith(("http://", "https://")) or len(text) < 10:
            raise ValueError("must be an http:// or https:// URL")
        return SecretStr(text)


class LogAlertSpec(_AlertBase):
    """``{type: log}`` — an ``alert`` log line (for log-based alerting)."""

    type: Literal["log"]
    level: Literal["info", "warning", "error"] = "warning"
    min_interval: Duration = Field(
        default=0.0, description="at most one dead-letter alert line per interval"
    )


AlertSpec = Annotated[Union[WebhookAlertSpec, LogAlertSpec], Field(discriminator="type")]  # noqa: UP007
"""One entry of ``alerts:``, discriminated by ``type``."""


class PipelineSpec(BaseModel):
    """A whole pipeline spec (``version: 1``).

    The stage fields are typed with the base ``StageConfig`` here; the model
    returned by :func:`spec_model` narrows them to the registered plugins' models.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(description="spec format version; only 1 exists")
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="pipeline name: lowercase letters, digits, '-' and '_'",
    )
    source: StageConfig
    transforms: list[StageConfig] = Field(default_factory=list)
    validators: list[StageConfig] = Field(default_factory=list)
    sink: StageConfig
    dlq: StageConfig = Field(
        default_factory=LocalDLQConfig,
        description="where dead letters go (type from the uri's scheme; default local folder)",
    )
    state: StageConfig = Field(
        default_factory=LocalStateConfig,
        description="where checkpoints live (type from the uri's scheme; default local folder)",
    )
    retry: RetrySpec = RetrySpec()
    engine: Literal["polars", "pandas", "duckdb"] = "polars"
    prefetch: int = Field(
        default=2, ge=1, description="batches extracted ahead of the one in flight"
    )
    load_ahead: bool = Field(
        default=True,
        description="the sink writes a batch on a worker thread while the next one is "
        "transformed and validated (in order; false: everything on one thread)",
    )
    home: str = Field(
        default=".sluiceway", description="folder for default DLQ and state, relative to this file"
    )
    alerts: list[AlertSpec] = Field(
        default_factory=list, description="where to tell people about dead letters and failures"
    )
    thresholds: ThresholdsSpec = Field(
        default_factory=ThresholdsSpec, description="limits whose crossing fails the run"
    )
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig,
        description="Datadog traces, metrics and events, or OpenTelemetry traces (off by default)",
    )


#: Spec field → (plugin kind, whether the field is a list of stages).
STAGE_FIELDS: dict[str, tuple[Kind, bool]] = {
    "source": ("source", False),
    "transforms": ("transform", True),
    "validators": ("validator", True),
    "sink": ("sink", False),
    "dlq": ("dlq", False),
    "state": ("state", False),
}

_CacheKey = tuple[tuple[Kind, tuple[type[StageConfig], ...]], ...]
_cache: dict[_CacheKey, type[PipelineSpec]] = {}


def _union(configs: tuple[type[StageConfig], ...]) -> Any:
    if not configs:
        # Nothing registered: the loader reports the unknown type before validating.
        return StageConfig
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007


def plugin_problem(plugin: Plugin) -> str | None:
    """Why a plugin's config model cannot join the spec (None when it can).

    Such a plugin is left out of the spec model, so one broken third-party package
    does not stop every other pipeline; a spec that uses it gets this message.
    """
    field = plugin.config.model_fields.get("type")
    annotation = field.annotation if field is not None else None
    if typing.get_origin(annotation) is Literal and typing.get_args(annotation) == (plugin.type,):
        return None
    return (
        f"the {plugin.kind} plugin {plugin.type!r} is broken: its config model "
        f"{plugin.config.__name__} must declare type: Literal[{plugin.type!r}]"
    )


def spec_model(
    registry: Registry, types: Mapping[Kind, Iterable[str]] | None = None
) -> type[PipelineSpec]:
    """The :class:`PipelineSpec` subclass whose stage fields accept the registry's types.

    With ``types``, only those (the ones a spec names; unknown or broken ones left out,
    the loader reports them), so validating a spec imports no other plugin.
    """

    def plugins(kind: Kind) -> list[Plugin]:
        if types is None:
            return registry.plugins(kind)
        # The built-in stores always: a spec that leaves dlq/state to their defaults
        # and its dump, which names them, then validate to the same model.
        builtin = {p.type for p in BUILTIN_STORES if p.kind == kind}
        found = []
        for type_ in sorted({*types.get(kind, ()), *builtin}):
            try:
                found.append(registry.get(kind, type_))
            except ConfigError:
                continue
        return found

    key: _CacheKey = tuple(
        (kind, tuple(p.config for p in plugins(kind) if plugin_problem(p) is None))
        for kind in KINDS
    )
    cached = _cache.get(key)
    if cached is not None:
        return cached
    unions = {kind: _union(configs) for kind, configs in key}
    fields: dict[str, Any] = {}
    for name, (kind, many) in STAGE_FIELDS.items():
        base = PipelineSpec.model_fields[name]
        if many:
            items: Any = list.__class_getitem__(unions[kind])
            fields[name] = (items, Field(default_factory=list, description=base.description))
        elif base.default_factory is not None:
            fields[name] = (
                unions[kind],
                Field(default_factory=base.default_factory, description=base.description),
            )
        else:
            fields[name] = (unions[kind], Field(description=base.description))
    try:
        model = create_model("PipelineSpec", __base__=PipelineSpec, **fields)
    except PydanticUserError as exc:
        raise ConfigError(f"the registered plugins do not form a valid spec model: {exc}") from exc
    model.__doc__ = PipelineSpec.__doc__
    _cache[key] = model
    return model


def spec_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a pipeline spec, listing every registered ``type:``."""
    schema = spec_model(registry).model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sluiceway pipeline spec",
        **{k: v for k, v in schema.items() if k != "title"},
    }
