"""Spec model of the Delta Lake sink (``sink: {type: delta, uri: …}``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluiceway.connectors.s3._options import S3Connection

__all__ = ["AfterRun", "DeltaMode", "DeltaSinkConfig", "SchemaMode"]

DeltaMode = Literal["append", "overwrite", "merge"]
SchemaMode = Literal["evolve", "strict"]


class AfterRun(BaseModel):
    """Table maintenance when a run succeeds (``after_run:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimize: bool = Field(False, description="compact small files")
    z_order: list[str] = Field(default_factory=list, description="Z-order by these columns")
    target_size: int | None = Field(None, gt=0, description="bytes per file after optimize")
    vacuum: bool = Field(False, description="delete files no longer referenced")
    retention_hours: int | None = Field(
        None, ge=0, description="keep removed files this long (default: the table's, 7 days)"
    )


class DeltaSinkConfig(S3Connection):
    """``sink: {type: delta, uri: s3://lake/orders or a local path, mode: …}``.

    ``keys``, ``order_by`` and ``delete_when`` belong to ``mode: merge``.
    ``delete_when`` is a SQL condition over the incoming row (DuckDB SQL, e.g.
    ``op = 'D'``): a matching row deletes its key from the table instead of
    upserting it. ``schema_mode: evolve`` adds new columns; ``strict`` dead-letters a
    batch whose columns or types differ from the table's. The connection keys
    (``endpoint_url``, ``region`` …) apply to ``s3://`` tables; ``storage_options``
    passes anything else to delta-rs.
    """

    type: Literal["delta"] = "delta"
    uri: str = Field(min_length=1, description="table location: s3://bucket/path or a local path")
    mode: DeltaMode = "append"
    keys: list[str] = Field(default_factory=list)
    order_by: str | None = None
    delete_when: str | None = Field(None, description="SQL condition: the row deletes its key")
    partition_by: list[str] = Field(default_factory=list)
    schema_mode: SchemaMode = "evolve"
    target_file_size: int | None = Field(None, gt=0, description="bytes per data file")
    storage_options: dict[str, str] = Field(default_factory=dict)
    commit_retries: int = Field(
        20, ge=0, description="retries of a commit that lost to a concurrent writer"
    )
    after_run: AfterRun = Field(default_factory=lambda: AfterRun.model_validate({}))

    @field_validator("keys")
    @classmethod
    def _keys_distinct(cls, value: list[str]) -> list[str]:
        if any(not key.strip() for key in value):
            raise ValueError("keys must be non-empty column names")
        if len(set(value)) != len(value):
            raise ValueError(f"keys must not repeat a column: {value}")
        return value

    @model_validator(mode="after")
    def _mode_options(self) -> DeltaSinkConfig:
        if self.mode == "merge" and not self.keys:
            raise ValueError("mode 'merge' needs keys: the column(s) that identify a row")
        merge_only = [
            name
            for name, value in (
                ("keys", self.keys),
                ("order_by", self.order_by),
                ("delete_when", self.delete_when),
            )
            if value
        ]
        if self.mode != "merge" and merge_only:
            raise ValueError(
                f"{', '.join(merge_only)} only apply to mode 'merge', not {self.mode!r}"
            )
        if self.order_by is not None and self.order_by in self.keys:
            raise ValueError(f"order_by {self.order_by!r} must not be one of the keys")
        return self
