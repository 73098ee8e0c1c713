"""Reading a spec file: YAML → interpolated values → validated :class:`PipelineSpec`.

The YAML is composed into its node tree first, so every value keeps the line and
column it came from; a Pydantic error location (``('sink', 'duckdb', 'mode')``) is
mapped back to the YAML (``pipeline.yaml:14:9: sink.mode: …``). Every problem is
collected and reported at once in a :class:`SpecError`, one line each, with no
traceback. Values that came from the environment, keys that look secret and
``SecretStr`` fields are never echoed back in a message.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sluiceway.config.interpolate import interpolate
from sluiceway.config.spec import STAGE_FIELDS, PipelineSpec, plugin_problem, spec_model
from sluiceway.config.stores import infer_store_type
from sluiceway.core.errors import ConfigError
from sluiceway.observability.logging import looks_secret
from sluiceway.plugins import KINDS, Kind, Registry, default_registry

__all__ = ["Problem", "SpecError", "format_path", "load_spec", "parse_spec"]

Loc = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a spec, located in its file."""

    file: str
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(ConfigError):
    """A spec that cannot be used; ``problems`` lists each one with its location."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(loc: Loc) -> str:
    """A location as a user writes it: ``('transforms', 0, 'query')`` → ``transforms[0].query``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass(slots=True)
class _Document:
    """YAML data plus, for each path, where its value (and its key) starts."""

    file: str
    data: Any = None
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    from_env: set[Loc] = field(default_factory=set)
    unresolved: set[Loc] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def where(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        marks = self.keys if key and loc in self.keys else self.values
        while loc not in marks and loc:
            loc = loc[:-1]
            marks = self.values
        return marks.get(loc, (1, 1))

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> None:
        line, column = self.where(loc, key=key)
        self.problems.append(Problem(self.file, format_path(loc), message, line, column))


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Composer:
    """Builds Python data from a YAML node tree, recording marks and interpolating."""

    def __init__(self, doc: _Document, loader: yaml.SafeLoader, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.loader = loader
        self.env = env

    def build(self, node: Node, loc: Loc) -> Any:
        self.doc.values[loc] = _mark(node)
        if isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        if isinstance(node, ScalarNode) and node.tag == _STR_TAG and isinstance(value, str):
            return self._interpolate(value, loc)
        return value

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        self.loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if isinstance(key, bool) and isinstance(key_node, ScalarNode):
                # YAML 1.1 reads `on:`, `off:`, `yes:`, `no:` as booleans; a key means the word.
                key = key_node.value
            if not isinstance(key, str):
                line, column = _mark(key_node)
                self.doc.problems.append(
                    Problem(
                        self.doc.file,
                        format_path(loc),
                        f"keys must be strings, got {key!r}",
                        line,
                        column,
                    )
                )
                continue
            child = (*loc, key)
            if key in out:
                first = self.doc.keys[child][0]
                line, column = _mark(key_node)
                self.doc.problems.append(
                    Problem(
                        self.doc.file,
                        format_path(child),
                        f"duplicate key (first given on line {first})",
                        line,
                        column,
                    )
                )
                continue
            self.doc.keys[child] = _mark(key_node)
            out[key] = self.build(value_node, child)
        return out

    def _interpolate(self, value: str, loc: Loc) -> str:
        result = interpolate(value, self.env)
        if result.from_env:
            self.doc.from_env.add(loc)
        if result.missing or result.invalid:
            self.doc.unresolved.add(loc)
        for name in result.missing:
            self.doc.problem(
                loc,
                f"environment variable {name} is not set "
                f"(set it, or give a default: ${{{name}:-default}})",
            )
        for ref in result.invalid:
            self.doc.problem(
                loc, f"invalid reference {ref!r}: write ${{NAME}} or ${{NAME:-default}}"
            )
        return result.value


def _compose(text: str, file: str, env: Mapping[str, str]) -> _Document:
    doc = _Document(file)
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                doc.problems.append(
                    Problem(file, "", "the file is empty; a pipeline spec starts with 'version: 1'")
                )
                return doc
            doc.data = _Composer(doc, loader, env).build(root, ())
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "cannot parse"
        lines = text.splitlines()
        if mark is not None and mark.line < len(lines) and "${" in lines[mark.line]:
            what += '; inside [...] or {...}, quote values that use ${VAR}: "${VAR}"'
        doc.problems.append(
            Problem(
                file,
                "",
                f"invalid YAML: {what}",
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
            )
        )
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, "", f"invalid YAML: {exc}"))
    if not doc.problems and not isinstance(doc.data, dict):
        kind = (
            "a list"
            if isinstance(doc.data, list)
            else "nothing"
            if doc.data is None
            else f"the {type(doc.data).__name__} {doc.data!r}"
        )
        doc.problem((), f"a pipeline spec is a mapping of keys (version, name, …), got {kind}")
    return doc


# -- type checks and error translation --------------------------------------------------


def _stage_locs(data: Mapping[str, Any]) -> list[tuple[Loc, Kind]]:
    locs: list[tuple[Loc, Kind]] = []
    for name, (kind, many) in STAGE_FIELDS.items():
        value = data.get(name)
        if many and isinstance(value, list):
            locs.extend(((name, i), kind) for i in range(len(value)))
        elif not many and value is not None:
            locs.append(((name,), kind))
    return locs


def _at(data: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
            continue
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _used_types(data: Any) -> dict[Kind, set[str]]:
    """The ``type:`` each stage of the document names, by kind."""
    used: dict[Kind, set[str]] = {kind: set() for kind in KINDS}
    if isinstance(data, dict):
        for loc, kind in _stage_locs(data):
            stage = _at(data, loc)
            if isinstance(stage, dict) and isinstance(stage.get("type"), str):
                used[kind].add(stage["type"])
    return used


def _check_types(doc: _Document, registry: Registry) -> set[Loc]:
    """Report missing and unknown ``type:`` keys; return the stage locations that failed."""
    failed: set[Loc] = set()
    for loc, kind in _stage_locs(doc.data):
        stage = _at(doc.data, loc)
        known = registry.names(kind)
        listing = ", ".join(known) or "none installed"
        if not isinstance(stage, dict):
            doc.problem(
                loc, f"expected a mapping with a 'type' key (known {kind} types: {listing})"
            )
            failed.add(loc)
            continue
        if "type" not in stage or stage["type"] is None:
            what = "missing 'type'" if "type" not in stage else "'type' is empty"
            doc.problem(loc, f"{what} (known {kind} types: {listing})")
            failed.add(loc)
            continue
        type_ = stage["type"]
        broken = registry.problem(kind, type_) if isinstance(type_, str) else None
        if isinstance(type_, str) and type_ in registry.names(kind):
            problem = plugin_problem(registry.get(kind, type_))
            if problem is not None:
                doc.problem((*loc, "type"), problem)
                failed.add(loc)
        else:
            if broken:
                message = f"{kind} type {type_!r} is installed but failed to load: {broken}"
            else:
                known = registry.names(kind)
                listing = ", ".join(known) or "none installed"
                close = difflib.get_close_matches(str(type_), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                message = (
                    f"unknown {kind} type {type_!r}{hint}; known: {listing}; a third-party "
                    "type needs its package installed (or listed in SLUICEWAY_PLUGINS)"
                )
            doc.problem((*loc, "type"), message)
            failed.add(loc)
    return failed


def _unwrap_model(annotation: Any) -> Any:
    """The model or container inside Optional/Annotated, when there is a single one."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


class _Schema:
    """Finds the model and field annotation a spec location refers to (best effort)."""

    def __init__(self, data: Any, registry: Registry) -> None:
        self.data = data
        self.registry = registry

    def model_at(self, loc: Loc) -> type[BaseModel] | None:
        model: type[BaseModel] = PipelineSpec
        annotation: Any = model
        i = 0
        while i < len(loc):
            part = loc[i]
            stage = STAGE_FIELDS.get(str(part)) if i == 0 else None
            if stage is not None:
                kind, many = stage
                i += 2 if many else 1
                type_ = _at(self.data, (*loc[:i], "type"))
                try:
                    annotation = self.registry.get(kind, str(type_)).config
                except ConfigError:
                    return None
                continue
            annotation = _pick_member(_unwrap_model(annotation), _at(self.data, loc[:i]))
            origin = typing.get_origin(annotation)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                info = annotation.model_fields.get(str(part))
                if info is None:
                    return None
                annotation = info.annotation
            elif origin in (list, tuple, Sequence) and isinstance(part, int):
                annotation = typing.get_args(annotation)[0]
            elif origin in (dict, Mapping):
                annotation = typing.get_args(annotation)[-1]
            else:
                return None
            i += 1
        annotation = _pick_member(_unwrap_model(annotation), _at(self.data, loc))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return None

    def is_secret(self, loc: Loc) -> bool:
        if any(isinstance(p, str) and looks_secret(p) for p in loc):
            return True
        if not loc:
            return False
        parent = self.model_at(loc[:-1])
        if parent is None:
            return False
        info = parent.model_fields.get(str(loc[-1]))
        return info is not None and SecretStr in _flatten(info.annotation)


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    """The models of a union of models (e.g. the ``alerts:`` entry types), else []."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members = [_unwrap_model(a) for a in typing.get_args(annotation)]
    if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
        return members
    return []


def _pick_member(annotation: Any, data: Any) -> Any:
    """The member of a ``type``-discriminated union of models that ``data`` names."""
    type_ = data.get("type") if isinstance(data, dict) else None
    for member in _union_members(annotation):
        field = member.model_fields.get("type")
        if field is not None and typing.get_args(field.annotation) == (type_,):
            return member
    return annotation


def _flatten(annotation: Any) -> set[Any]:
    out = {annotation}
    for arg in typing.get_args(annotation):
        out |= _flatten(arg)
    return out


#: Lists of ``type``-discriminated sections that are not plugin stages.
_TAGGED_LISTS = ("alerts",)


def _strip_tags(loc: Loc, data: Any) -> Loc:
    """Drop the discriminator tag Pydantic inserts after a stage's (or an alert's) location."""
    if not loc or (str(loc[0]) not in STAGE_FIELDS and loc[0] not in _TAGGED_LISTS):
        return loc
    many = STAGE_FIELDS[str(loc[0])][1] if str(loc[0]) in STAGE_FIELDS else True
    n = 2 if many else 1
    if len(loc) > n:
        type_ = _at(data, (*loc[:n], "type"))
        if loc[n] == type_:
            return loc[:n] + loc[n + 1 :]
    return loc


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: Mapping[str, Any], loc: Loc, doc: _Document, schema: _Schema) -> str:
    kind = error["type"]
    msg = str(error["msg"])
    if kind == "missing":
        return "required, but missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = ", ".join(sorted(str(t).strip("'") for t in _expected_tags(error)))
        if kind == "union_tag_not_found":
            return f"missing 'type' (known types: {expected})"
        given = _at(doc.data, (*loc, "type"))
        return f"unknown type {given!r} (known types: {expected})"
    if kind == "extra_forbidden":
        model = schema.model_at(loc[:-1])
        if model is None:
            return "unknown key"
        allowed = sorted(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if loc == ("version",):
        return "only 'version: 1' exists; start the spec with 'version: 1'"
    if loc == ("name",) and kind == "string_pattern_mismatch":
        msg = "must be lowercase letters, digits, '-' or '_', starting with a letter or digit"
    if kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    value = error.get("input")
    secret = loc in doc.from_env or schema.is_secret(loc)
    shown = value is None or isinstance(value, str | int | float | bool)
    if shown and not secret and repr(value) not in msg:
        msg += f" (got {_describe(value)})"
    return msg


def _expected_tags(error: Mapping[str, Any]) -> list[str]:
    ctx = error.get("ctx") or {}
    tags = str(ctx.get("expected_tags", ""))
    return [t.strip() for t in tags.split(",") if t.strip()]


def _validate(doc: _Document, registry: Registry) -> PipelineSpec | None:
    if isinstance(doc.data, dict):
        for name in ("dlq", "state"):
            if name in doc.data:
                doc.data[name] = infer_store_type(doc.data[name])
    failed = _check_types(doc, registry) | doc.unresolved
    schema = _Schema(doc.data, registry)
    try:
        # Only the types this spec names: the others are not even imported.
        return spec_model(registry, _used_types(doc.data)).model_validate(doc.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = _strip_tags(tuple(error["loc"]), doc.data)
            if any(loc[: len(f)] == f for f in failed):
                continue  # already reported: unknown type or unset variable
            doc.problem(
                loc,
                _message(error, loc, doc, schema),
                key=error["type"] == "extra_forbidden",
            )
    return None


# -- public -----------------------------------------------------------------------------


def parse_spec(
    text: str,
    *,
    file: str = "<spec>",
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
) -> PipelineSpec:
    """Validate a spec given as YAML text; raises :class:`SpecError` listing every problem.

    ``file`` names the text in messages; ``env`` (default ``os.environ``) feeds
    ``${VAR}`` interpolation.
    """
    registry = registry or default_registry()
    doc = _compose(text, file, os.environ if env is None else env)
    spec: PipelineSpec | None = None
    if not doc.problems:
        spec = _validate(doc, registry)
    elif isinstance(doc.data, dict):
        # Interpolation problems: still validate to report everything in one go.
        _validate(doc, registry)
    if doc.problems or spec is None:
        raise SpecError(sorted(doc.problems, key=lambda p: (p.line or 0, p.column or 0)))
    return spec


def load_spec(
    path: str | os.PathLike[str],
    registry: Registry | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> tuple[PipelineSpec, Path]:
    """Read and validate a spec file; return it with the folder relative paths start from."""
    file = os.fspath(path)
    target = Path(file)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(file, "", "no such file")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(file, "", "is a directory, not a spec file")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(file, "", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise SpecError([Problem(file, "", f"cannot read: {exc.strerror or exc}")]) from None
    spec = parse_spec(text, file=file, registry=registry, env=env)
    return spec, target.resolve().parent
