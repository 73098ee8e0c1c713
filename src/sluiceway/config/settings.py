"""Runtime settings: how this process runs a pipeline, as opposed to what the pipeline is.

Read from ``SLUICEWAY_*`` environment variables and a ``.env`` file in the working
directory (the environment wins). The spec says what to move; settings say where
this machine keeps its files and how it logs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluiceway.core.errors import ConfigError

__all__ = ["LogFormat", "LogLevel", "Settings", "load_settings"]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["auto", "json", "console"]


class Settings(BaseSettings):
    """``SLUICEWAY_HOME``, ``SLUICEWAY_LOG_LEVEL``, ``SLUICEWAY_LOG_FORMAT``, ``SLUICEWAY_PLUGINS``.

    ``home`` overrides the spec's ``home`` (a relative value is taken from the
    working directory). ``log_format: auto`` renders for people on a terminal and
    JSON lines otherwise. ``plugins`` lists ``module:ATTRIBUTE`` references to
    :class:`~sluiceway.plugins.Plugin` objects (or iterables of them), comma
    separated, registered without packaging them as entry points.
    """

    model_config = SettingsConfigDict(
        env_prefix="SLUICEWAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    home: str | None = None
    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"
    plugins: str = ""

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def plugin_refs(self) -> list[str]:
        return [ref.strip() for ref in self.plugins.split(",") if ref.strip()]


def load_settings() -> Settings:
    """Settings from the environment and ``.env``; a bad value is a :class:`ConfigError`."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "SLUICEWAY_" + "_".join(str(p) for p in error["loc"]).upper()
            lines.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None
