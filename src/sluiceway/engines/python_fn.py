"""A user's Python function as a transform: ``function: package.module:function``.

The function is imported when the pipeline is built, with the spec file's folder
first on ``sys.path``, so ``transforms.py`` next to ``pipeline.yaml`` works as
``function: transforms:enrich``. A reference that cannot be resolved is a
:class:`ConfigError` at build time, not a failure on every batch.

The function takes the batch as a Polars DataFrame (or pandas, Arrow, records, as
``frame`` asks) plus the spec's ``args`` as keyword arguments, and returns the same
kind of frame. The frame carries the hidden row id column
(``_sluiceway_row_id``): keep it and filtered or exploded rows keep their lineage.
An exception the function raises is a data failure (the runner bisects the batch to
find the failing rows), except a Polars ``ColumnNotFoundError``, which is a typo in
the code and stops the run.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from sluiceway.core.errors import ConfigError
from sluiceway.core.frames import from_frame, to_frame
from sluiceway.core.stages import BaseTransformer, Frame, Routed

__all__ = ["PythonTransformer", "load_function"]

_REF = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def load_function(ref: str, base_dir: str | Path | None = None) -> Callable[..., Any]:
    """Import ``package.module:attr`` (``attr`` may be dotted) and check it is callable.

    ``base_dir`` goes first on ``sys.path`` (and stays there, so the module's own
    lazy imports of its neighbours work later). Raises :class:`ConfigError` naming
    the reference and the reason.
    """
    if not _REF.match(ref):
        raise ConfigError(
            f"python function {ref!r}: expected 'package.module:function' "
            "(a module path, a colon, then the function name)"
        )
    module_name, attr_path = ref.split(":", 1)
    if base_dir is not None:
        folder = str(Path(base_dir).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            where = f" (looked in {base_dir} and on sys.path)" if base_dir is not None else ""
            raise ConfigError(
                f"python function {ref!r}: module {module_name!r} not found{where}"
            ) from exc
        raise ConfigError(
            f"python function {ref!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"python function {ref!r}: importing {module_name!r} raised {exc!r}"
        ) from exc
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"python function {ref!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise ConfigError(
            f"python function {ref!r}: {attr_path!r} is a {type(target).__name__}, not a callable"
        )
    return target  # type: ignore[no-any-return]


class PythonTransformer(BaseTransformer[pa.Table, Any]):
    """Calls ``function(frame, **args)`` on each batch, in the frame kind it asks for.

    The runner hands this transformer Arrow; the conversion to ``frame`` (Polars by
    default) and back happens here, so errors of the user's function can be
    classified in one place. A function may also return
    :class:`~sluiceway.core.stages.Routed` to refuse some rows itself.
    """

    frame = "arrow"

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        frame: Frame = "polars",
        args: Mapping[str, Any] | None = None,
        name: str | None = None,
        row_wise: bool | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__(name or "python")
        if frame not in ("arrow", "polars", "pandas", "records"):
            raise ConfigError(f"python transform {self.name!r}: unknown frame {frame!r}")
        self.function = function
        self.user_frame: Frame = frame
        self.args = dict(args or {})
        self.row_wise = row_wise
        self.ref = ref or _describe(function)

    def __repr__(self) -> str:
        return (
            f"PythonTransformer(name={self.name!r}, function={self.ref!r}, "
            f"frame={self.user_frame!r})"
        )

    def transform(self, data: pa.Table) -> Any:
        try:
            result = self.function(to_frame(data, self.user_frame), **self.args)
        except Exception as exc:
            if _is_column_not_found(exc):
                raise ConfigError(
                    f"python transform {self.name!r} ({self.ref}): a column it uses does "
                    f"not exist: {exc}"
                ) from exc
            raise
        if isinstance(result, Routed):
            return result
        try:
            return from_frame(result)
        except TypeError as exc:
            raise ConfigError(
                f"python transform {self.name!r} ({self.ref}) returned "
                f"{type(result).__name__}; expected a {self.user_frame} frame like it was given"
            ) from exc


def _is_column_not_found(exc: BaseException) -> bool:
    if "polars" not in sys.modules:
        return False
    import polars as pl

    return isinstance(exc, pl.exceptions.ColumnNotFoundError)


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}:{qualname}"
