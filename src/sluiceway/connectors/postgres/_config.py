"""Spec models of the PostgreSQL source, sink and state store (``type: postgres``).

Every model takes the same connection keys: a ``dsn`` (URI or ``key=value``
string) and/or ``host``, ``port``, ``user``, ``password``, ``dbname``, the TLS keys
``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, and ``params`` for any other
libpq keyword. ``dsn`` and ``password`` are secrets: never printed or logged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from sluiceway.connectors.postgres._connection import PostgresConnection, names_a_file
from sluiceway.core.batch import HIDDEN_PREFIX
from sluiceway.core.errors import ConfigError
from sluiceway.engines.types import parse_type
from sluiceway.plugins import BuildContext, StageConfig, parse_duration

__all__ = [
    "IncrementalConfig",
    "PostgresConnectionConfig",
    "PostgresSinkConfig",
    "PostgresSourceConfig",
    "PostgresStateConfig",
]

_SSLMODES = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def _relation(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2 or not all(part.strip() for part in parts):
        raise ValueError(f"expected 'table' or 'schema.table', got {value!r}")
    return value


class PostgresConnectionConfig(BaseModel):
    """Connection keys shared by the PostgreSQL source, sink and state store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: SecretStr | None = Field(
        None, description="libpq URI or key=value string (a secret); explicit keys override it"
    )
    host: str | None = None
    port: int | None = Field(None, gt=0, lt=65536)
    user: str | None = None
    password: SecretStr | None = Field(None, description="a secret, never logged")
    dbname: str | None = None
    sslmode: _SSLMODES | None = None
    sslrootcert: str | None = Field(None, description="CA file (relative to the spec file)")
    sslcert: str | None = Field(None, description="client certificate file")
    sslkey: str | None = Field(None, description="client key file")
    connect_timeout: int | None = Field(10, ge=0, description="seconds")
    params: dict[str, str] = Field(
        default_factory=dict,
        description="other libpq keywords, e.g. {target_session_attrs: read-write}",
    )
    adbc_driver: str | None = Field(
        None,
        description="ADBC PostgreSQL driver for bulk reads and writes: a path to its shared "
        "library (relative to the spec file) or a name the ADBC driver manager resolves; "
        "default (also when empty): the adbc-driver-postgresql package's",
    )

    @field_validator("adbc_driver")
    @classmethod
    def _default_when_empty(cls, value: str | None) -> str | None:
        # ``adbc_driver: ${ADBC_DRIVER:-}``: an image may set it for every spec, or not.
        return value or None

    def connection(self, ctx: BuildContext | None = None) -> PostgresConnection:
        """The connection these keys describe (TLS file paths relative to the spec file)."""

        def path(value: str | None) -> str | None:
            return ctx.path(value) if value is not None and ctx is not None else value

        return PostgresConnection(
            dsn=self.dsn,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            sslmode=self.sslmode,
            sslrootcert=path(self.sslrootcert),
            sslcert=path(self.sslcert),
            sslkey=path(self.sslkey),
            connect_timeout=self.connect_timeout,
            params=dict(self.params),
            adbc_driver=(
                path(self.adbc_driver)
                if self.adbc_driver is not None and names_a_file(self.adbc_driver)
                else self.adbc_driver
            ),
        )


class IncrementalConfig(BaseModel):
    """``incremental: {cursor: updated_at, lag: 5m}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: str = Field(min_length=1, description="a column that grows when a row changes")
    lag: float = Field(0.0, ge=0, description="stay this far behind now() (seconds or 30s, 5m …)")

    @field_validator("lag", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


class PostgresSourceConfig(StageConfig, PostgresConnectionConfig):
    """``source: {type: postgres, dsn: …, table: … | query: …}``."""

    type: Literal["postgres"] = "postgres"
    table: str | None = Field(None, description="'table' or 'schema.table'")
    query: str | None = Field(None, description="a SELECT (instead of table)")
    columns: list[str] | None = Field(None, description="read only these columns of the table")
    key: list[str] | None = Field(
        None, description="unique key ordering the read (default: the table's primary key)"
    )
    incremental: IncrementalConfig | None = None
    batch_size: int = Field(100_000, gt=0, description="rows per batch, at most")
    partitions: int = Field(1, ge=1, le=64, description="ranges read concurrently")
    partition_by: str | None = Field(
        None, description="column the partitions split (default: the first key column)"
    )
    numeric_precision: int = Field(
        38, ge=1, le=38, description="decimal precision of unconstrained numeric columns"
    )
    numeric_scale: int = Field(
        9, ge=0, le=38, description="decimal scale of unconstrained numeric columns"
    )
    types: dict[str, str] = Field(
        default_factory=dict, description="declared column types (checked casts)"
    )
    reconnect_attempts: int = Field(
        5, ge=1, description="tries to (re)connect and read on when the connection is lost"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return _relation(value) if value is not None else None

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        for column, name in value.items():
            try:
                parse_type(name)
            except ConfigError as exc:
                raise ValueError(f"column {column!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PostgresSourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table or query")
        if self.columns is not None and self.table is None:
            raise ValueError("columns applies to table; select the columns in the query")
        if self.numeric_scale > self.numeric_precision:
            raise ValueError("numeric_scale must not exceed numeric_precision")
        if self.partition_by is not None and self.partitions == 1:
            raise ValueError("partition_by needs partitions > 1")
        return self


class PostgresSinkConfig(StageConfig, PostgresConnectionConfig):
    """``sink: {type: postgres, dsn: …, table: …, mode: append | replace | merge}``."""

    type: Literal["postgres"] = "postgres"
    table: str = Field(description="'table' or 'schema.table'")
    mode: Literal["append", "replace", "merge"] = "append"
    keys: list[str] = Field(default_factory=list, description="merge keys (mode merge)")
    order_by: str | None = Field(
        None, description="merge: a row never overwrites one with a greater value of this column"
    )
    schema_mode: Literal["evolve", "freeze"] = "evolve"
    create: bool = Field(True, description="create the table when it does not exist")
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="PostgreSQL types of columns the sink creates, e.g. {id: uuid, doc: jsonb}",
    )
    isolation_budget: int = Field(
        512,
        ge=1,
        description="statements spent isolating refused rows before the batch is dead-lettered",
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        value = _relation(value)
        if value.split(".")[-1].startswith(HIDDEN_PREFIX):
            raise ValueError(f"table names starting with {HIDDEN_PREFIX!r} are sluiceway's own")
        return value

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        if any(not key.strip() for key in value):
            raise ValueError("keys must be non-empty column names")
        if len(set(value)) != len(value):
            raise ValueError(f"keys must not repeat a column: {value}")
        return value

    @model_validator(mode="after")
    def _mode_options(self) -> PostgresSinkConfig:
        if self.mode == "merge" and not self.keys:
            raise ValueError("mode 'merge' needs keys: the column(s) that identify a row")
        if self.mode != "merge" and (self.keys or self.order_by is not None):
            raise ValueError(f"keys and order_by only apply to mode 'merge', not {self.mode!r}")
        if self.order_by is not None and self.order_by in self.keys:
            raise ValueError(f"order_by {self.order_by!r} must not be one of the keys")
        return self


class PostgresStateConfig(StageConfig, PostgresConnectionConfig):
    """``state: {uri: postgresql://…}`` (or ``{type: postgres, dsn: …}``)."""

    type: Literal["postgres"] = "postgres"
    uri: SecretStr | None = Field(None, description="postgresql:// URI (a secret; same as dsn)")
    table: str = Field("sluiceway_state", description="'table' or 'schema.table' holding states")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return _relation(value)

    @model_validator(mode="after")
    def _one_uri(self) -> PostgresStateConfig:
        if self.uri is not None and self.dsn is not None:
            raise ValueError("give uri or dsn, not both")
        return self

    def connection(self, ctx: BuildContext | None = None) -> PostgresConnection:
        base = super().connection(ctx)
        if self.uri is None:
            return base
        from dataclasses import replace

        return replace(base, dsn=self.uri)
