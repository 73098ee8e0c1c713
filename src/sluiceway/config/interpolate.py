"""``${VAR}`` and ``${VAR:-default}`` in spec strings, replaced from the environment.

Interpolation happens on the YAML values before validation, so a secret such as a
DSN can live in the environment and never in the file. ``$${`` writes a literal
``${``. A variable that is not set (and has no default) is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Interpolated", "interpolate"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(slots=True)
class Interpolated:
    """The result of interpolating one string."""

    value: str
    used: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    @property
    def from_env(self) -> bool:
        """True when part of the value came from the environment (maybe a secret)."""
        return bool(self.used)


def interpolate(text: str, env: Mapping[str, str]) -> Interpolated:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in ``text`` with values from ``env``.

    ``${VAR:-default}`` uses the default when VAR is unset or empty. Problems are
    collected (``missing``, ``invalid``) rather than raised, so a caller can report
    them all with their location.
    """
    result = Interpolated(text)
    if "${" not in text:
        return result
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
            continue
        if not text.startswith("${", i):
            out.append(text[i])
            i += 1
            continue
        end = text.find("}", i + 2)
        if end < 0:
            result.invalid.append(text[i:])
            out.append(text[i:])
            break
        body = text[i + 2 : end]
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            result.invalid.append("${" + body + "}")
            out.append(text[i : end + 1])
        else:
            value = env.get(name)
            if value is None or (sep and value == ""):
                if sep:
                    value = default
                else:
                    result.missing.append(name)
                    value = ""
            result.used.append(name)
            out.append(value)
        i = end + 1
    result.value = "".join(out)
    return result
