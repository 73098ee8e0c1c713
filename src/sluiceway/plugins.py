"""Plugins: how a ``type:`` in a pipeline spec becomes a stage, a state store or a DLQ.

Every source, transform, validator and sink type, state store and dead-letter
queue is a :class:`Plugin` published under a Python entry point group
(``sluiceway.sources``, ``sluiceway.transforms``, ``sluiceway.validators``,
``sluiceway.sinks``, ``sluiceway.state_stores``, ``sluiceway.dlqs``). A third-party package adds
``type: my-system`` by publishing its own entry point; nothing in this repository
changes. A plugin module must stay light: it holds the config model and a
``build`` function that imports the heavy client library only when called.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from sluiceway.core.errors import ConfigError, MissingExtraError

__all__ = [
    "GROUPS",
    "Duration",
    "KINDS",
    "BuildContext",
    "Kind",
    "Plugin",
    "Registry",
    "StageConfig",
    "default_registry",
    "parse_duration",
    "require",
]

Kind = Literal["source", "transform", "validator", "sink", "state", "dlq"]
KINDS: tuple[Kind, ...] = ("source", "transform", "validator", "sink", "state", "dlq")
GROUPS: dict[Kind, str] = {
    "source": "sluiceway.sources",
    "transform": "sluiceway.transforms",
    "validator": "sluiceway.validators",
    "sink": "sluiceway.sinks",
    "state": "sluiceway.state_stores",
    "dlq": "sluiceway.dlqs",
}


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string like ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``.

    Anything else is passed through for Pydantic to reject with its own message.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            return float(text)
        except ValueError:
            pass
        parts = _PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNITS[u] for n, u in parts)
        raise ValueError(
            f"invalid duration {value!r}: use seconds (30) or a number with a unit "
            "(500ms, 30s, 5m, 1h, 1d)"
        )
    return value


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)\s*)+$"},
            ],
            "description": "seconds, or a duration such as 500ms, 30s, 5m, 1h",
        }
    ),
]
"""A duration in seconds; accepts numbers or strings like ``"500ms"``, ``"5m"``, ``"1h"``."""


class StageConfig(BaseModel):
    """Base of every stage's config model; subclasses narrow ``type`` to a Literal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a plugin's ``build`` needs beyond its own config."""

    pipeline: str
    base_dir: Path = field(default_factory=Path.cwd)
    engine: str = "polars"
    index: int = 0
    home: Path | None = None
    """Folder for the pipeline's own files (default DLQ and state), already resolved."""

    def path(self, value: str) -> str:
        """A local path relative to the spec file's folder; URIs (``s3://…``) unchanged."""
        if "://" in value:
            return value
        candidate = Path(value).expanduser()
        if not candidate.is_absolute():
            candidate = self.base_dir / candidate
        return str(candidate)


@dataclass(frozen=True, slots=True)
class Plugin:
    """One ``type:`` of one kind of stage."""

    kind: Kind
    type: str
    config: builtins.type[StageConfig]
    build: Callable[[Any, BuildContext], Any]
    summary: str = ""
    extra: str | None = None


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """Import an optional dependency or fail naming the ``pip install`` that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(what, extra, module) from exc


class Registry:
    """Plugins by kind and type, fed by entry points (and :meth:`register` for code).

    The installed entry points are read once, and each is imported the first time its
    type is asked for: a run imports the config modules of the types its spec names,
    not every connector installed (all 29 entry points imported up front made a
    1,000-row PostgreSQL run 1.42 s instead of 1.28 s, medians of 10). Listing a kind
    (:meth:`plugins`, :attr:`broken`) imports all of it.
    """

    def __init__(self, plugins: Iterable[Plugin] = (), *, entry_points: bool = True) -> None:
        self._plugins: dict[Kind, dict[str, Plugin]] = {kind: {} for kind in KINDS}
        self._pending: dict[Kind, dict[str, importlib.metadata.EntryPoint]] = {
            kind: {} for kind in KINDS
        }
        self._broken: dict[tuple[Kind, str], str] = {}
        from sluiceway.config.stores import BUILTIN_STORES

        for builtin in BUILTIN_STORES:
            self.register(builtin)
        if entry_points:
            self._find_entry_points()
        for plugin in plugins:
            self.register(plugin)

    def _find_entry_points(self) -> None:
        # One pass over the installed distributions for every group (a pass per group
        # read each distribution's metadata six times).
        installed = importlib.metadata.entry_points()
        for kind, group in GROUPS.items():
            for ep in installed.select(group=group):
                self._pending[kind][ep.name] = ep

    def _load(self, kind: Kind, name: str) -> None:
        ep = self._pending[kind].pop(name, None)
        if ep is None:
            return
        try:
            plugin = ep.load()
        except Exception as exc:
            self._broken[(kind, ep.name)] = f"{ep.value}: {exc!r}"
            return
        if not isinstance(plugin, Plugin) or plugin.kind != kind:
            self._broken[(kind, ep.name)] = f"{ep.value} is not a {kind} Plugin"
            return
        self._plugins[kind][plugin.type] = plugin

    def _load_all(self, kind: Kind) -> None:
        for name in list(self._pending[kind]):
            self._load(kind, name)

    def register(self, plugin: Plugin) -> None:
        """Add a plugin; it replaces an entry point or plugin of the same kind and type."""
        self._pending[plugin.kind].pop(plugin.type, None)
        self._plugins[plugin.kind][plugin.type] = plugin

    def extend(self, other: Registry) -> None:
        """Add ``other``'s plugins and entry points (those not imported yet stay so)."""
        for kind in KINDS:
            for plugin in other._plugins[kind].values():
                self.register(plugin)
            self._pending[kind].update(other._pending[kind])
        self._broken.update(other._broken)

    def plugins(self, kind: Kind) -> list[Plugin]:
        """Every plugin of ``kind`` (importing the entry points not imported yet)."""
        self._load_all(kind)
        return sorted(self._plugins[kind].values(), key=lambda p: p.type)

    def names(self, kind: Kind) -> list[str]:
        """The type names of ``kind``, without importing anything.

        An entry point not imported yet is listed under its name, which for every
        well-formed plugin is its type.
        """
        return sorted(set(self._plugins[kind]) | set(self._pending[kind]))

    def get(self, kind: Kind, type_: str) -> Plugin:
        self._load(kind, type_)
        plugin = self._plugins[kind].get(type_)
        if plugin is None and self._pending[kind]:
            self._load_all(kind)  # an entry point named otherwise than its type
            plugin = self._plugins[kind].get(type_)
        if plugin is not None:
            return plugin
        broken = self._broken.get((kind, type_))
        if broken:
            raise ConfigError(f"{kind} type {type_!r} failed to load: {broken}")
        known = ", ".join(sorted(self._plugins[kind])) or "none"
        raise ConfigError(
            f"unknown {kind} type {type_!r} (known: {known}); a third-party type needs "
            "its package installed"
        )

    def problem(self, kind: Kind, type_: str) -> str | None:
        """Why the installed ``type_`` of ``kind`` failed to load (None if it did not)."""
        self._load(kind, type_)
        return self._broken.get((kind, type_))

    @property
    def broken(self) -> dict[tuple[Kind, str], str]:
        """Every entry point that failed to load (importing all of them)."""
        for kind in KINDS:
            self._load_all(kind)
        return dict(self._broken)


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry built from installed entry points."""
    global _default  # noqa: PLW0603 - one lazily built registry per process
    if _default is None:
        _default = Registry()
    return _default
