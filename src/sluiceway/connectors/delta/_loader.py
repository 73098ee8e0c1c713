"""The Delta Lake loader: one Delta commit per batch, effectively-once through ``txn`` actions.

Every commit carries one ``txn`` action per source partition of its batch: app id
``<pipeline>/<partition>``, version = the batch's end position in that partition
when it is an integer (a Kafka offset + 1), else the batch's ``seq``. Data files and
``txn`` actions land in one atomic commit, so :meth:`DeltaLoader.committed` —
``transaction_version(app_id) >= version`` for every partition of the batch — tells
exactly whether the table already holds a batch. A rerun after a crash skips what
was committed and writes the rest; two writers on disjoint partitions have
disjoint app ids and never mask each other.

:meth:`load` prepares the batch (schema checks, merge deduplication, rows with a
null merge key refused) and :meth:`commit` writes it, because the runner commits
only after the refused rows are durable in the DLQ. A commit that loses the race
for the next table version is retried here (``commit_retries`` times) after
reading the table again: if its ``txn`` versions are there, the commit landed
although the store reported a failure, and it is not written twice (delta-rs's
own commit retries are off for that reason: its conflict check would let the
same append in again). Other failures a retry may fix are
:class:`TransientError` s for the runner's retry policy, whose next attempt
makes the same check first.

``mode: overwrite`` replaces the table with what a run writes: the run's first
commit overwrites, the rest append. A marker ``txn`` (app id
``sluiceway:overwrite/<pipeline>``, version = an overwrite generation) tells a rerun
after a crash to continue the interrupted overwrite instead of starting another;
the run's end records the generation as finished. Readers see the table grow
during the run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import structlog

from sluiceway.connectors.delta._config import AfterRun, DeltaMode, SchemaMode
from sluiceway.connectors.delta._errors import translate
from sluiceway.connectors.delta._maintenance import optimize_table, vacuum_table
from sluiceway.connectors.delta._merge import (
    DELETE_FLAG,
    both,
    delete_flags,
    last_per_key,
    merge_clauses,
    refuse_null_keys,
)
from sluiceway.connectors.delta._schema import (
    add_missing,
    check_strict,
    fill_null_types,
)
from sluiceway.connectors.s3._options import S3Options, is_s3_uri
from sluiceway.core.batch import Batch
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import DataError, SinkError, SluicewayError
from sluiceway.core.stages import BaseLoader, LoadResult, RowRejection, SinkContext
from sluiceway.plugins import require

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["DeltaLoader", "app_id", "overwrite_app_ids", "txn_versions"]

_log = structlog.get_logger("sluiceway.connectors.delta")


def app_id(pipeline: str, partition: str) -> str:
    """The Delta ``txn`` app id of one source partition of a pipeline."""
    return f"{pipeline}/{partition}"


def overwrite_app_ids(pipeline: str) -> tuple[str, str]:
    """App ids of the overwrite markers: (generation started, generation finished)."""
    return f"sluiceway:overwrite/{pipeline}", f"sluiceway:overwrite-done/{pipeline}"


def txn_versions(pipeline: str, batch: Batch) -> list[tuple[str, int]]:
    """(app id, version) per source partition: an integer end position, else the batch seq."""
    out = []
    for partition, span in batch.positions.items():
        end = span.end
        version = end if isinstance(end, int) and not isinstance(end, bool) else batch.seq
        out.append((app_id(pipeline, partition), int(version)))
    return out


@dataclass(slots=True)
class _Prepared:
    """A batch ``load`` made ready; ``commit`` writes it."""

    seq: int
    data: pa.Table
    txns: list[tuple[str, int]]


class DeltaLoader(BaseLoader[dict[str, Any]]):
    """Loads batches into one Delta table (local path or ``s3://``), effectively once."""

    type_name = "delta"

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        mode: DeltaMode = "append",
        keys: Sequence[str] = (),
        order_by: str | None = None,
        delete_when: str | None = None,
        partition_by: Sequence[str] = (),
        schema_mode: SchemaMode = "evolve",
        target_file_size: int | None = None,
        options: S3Options | None = None,
        storage_options: Mapping[str, str] | None = None,
        after_run: AfterRun | None = None,
        commit_retries: int = 20,
    ) -> None:
        super().__init__()
        if mode == "merge" and not keys:
            raise SinkError("delta sink: mode 'merge' needs keys")
        self.uri = os.fspath(uri)
        self.mode: DeltaMode = mode
        self.keys = list(keys)
        self.order_by = order_by
        self.delete_when = delete_when
        self.partition_by = list(partition_by)
        self.schema_mode: SchemaMode = schema_mode
        self.target_file_size = target_file_size
        self.options = options or S3Options()
        self.extra_storage = dict(storage_options or {})
        self.after_run = after_run or AfterRun.model_validate({})
        self.commit_retries = commit_retries
        self._table: DeltaTable | None = None
        self._pending: _Prepared | None = None
        self._stale = False
        self._generation: int | None = None
        # txn versions read (or written) at table version ``_known_at``; see _txn_version.
        self._known: dict[str, int | None] = {}
        self._known_at: int | None = None

    @property
    def storage_options(self) -> dict[str, str]:
        """What delta-rs is given: connection options for ``s3://``, plus ``storage_options``."""
        if is_s3_uri(self.uri):
            return self.options.delta_storage_options(self.extra_storage)
        return dict(self.extra_storage)

    def describe(self) -> Mapping[str, Any]:
        return {"type": self.type_name, "uri": self.uri, "mode": self.mode}

    @property
    def table(self) -> DeltaTable | None:
        """The table as this loader last saw it (None until its first commit)."""
        return self._table

    # -- lifecycle ----------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Load the table's current snapshot (a missing table is created by the first commit)."""
        super().open(context)
        require("deltalake", extra="delta", what="the delta sink")
        if "://" not in self.uri:
            try:
                Path(self.uri).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"cannot create delta table folder {self.uri}: {exc}") from exc
        self._pending = None
        self._generation = None
        self._table = self._load()
        self._stale = False

    def _load(self) -> DeltaTable | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        except Exception as exc:
            raise translate(exc, f"open delta table {self.uri}") from exc

    def _refresh(self) -> None:
        try:
            if self._table is None:
                self._table = self._load()
            else:
                self._table.update_incremental()
        except SluicewayError:
            raise
        except Exception as exc:
            raise translate(exc, f"read delta table {self.uri}") from exc
        self._stale = False

    def committed(self, batch: Batch) -> bool:
        """True when the table's ``txn`` versions cover every partition of ``batch``."""
        if self._stale:
            self._refresh()
        return self._holds(self.txns(batch))

    def txns(self, batch: Batch) -> list[tuple[str, int]]:
        return txn_versions(self.context.pipeline, batch)

    def _holds(self, txns: Sequence[tuple[str, int]]) -> bool:
        table = self._table
        if table is None or not txns:
            return False
        for app, version in txns:
            recorded = self._txn_version(table, app)
            if recorded is None or recorded < version:
                return False
        return True

    def _txn_version(self, table: DeltaTable, app: str) -> int | None:
        """``table.transaction_version(app)``, remembered while the table's version stands.

        delta-rs answers it by replaying the log: every commit file since the last
        checkpoint is fetched again, on each call (on S3, a list and one GET per
        commit: quadratic over a run). The answer holds for the version it was read
        at; after this loader's own commit (which lands exactly one version later,
        or fails as a conflict) the versions it wrote are added by :meth:`_wrote`.
        Any other change of version — a refresh, another writer's commit — forgets
        everything, and the next question goes to the table again.
        """
        version = table.version()
        if version != self._known_at:
            self._known = {}
            self._known_at = version
        if app not in self._known:
            self._known[app] = table.transaction_version(app)
        return self._known[app]

    def _wrote(self, before: int | None, txns: Sequence[tuple[str, int]]) -> None:
        """After a commit of ``txns`` on a table read at version ``before``."""
        table = self._table
        if table is None or before is None or self._known_at != before:
            return
        if table.version() != before + 1:  # not just this commit: read again when asked
            self._known, self._known_at = {}, None
            return
        self._known_at = before + 1
        for app, version in txns:
            self._known[app] = version

    # -- load: prepare ------------------------------------------------------------

    def load(self, batch: Batch) -> LoadResult:
        """Check and shape the batch for the table; nothing is written until :meth:`commit`."""
        if self._stale:
            self._refresh()
        data = batch.to_arrow()
        schema = self._schema()
        data = fill_null_types(data, schema)
        rejected: list[RowRejection] = []
        if self.mode == "merge":
            data, rejected = refuse_null_keys(data, self.keys, self.order_by, self.uri)
            data = last_per_key(data, self.keys, self.order_by)
        if schema is not None:
            if self.schema_mode == "strict":
                check_strict(data, schema, self.uri)
                data = _cast(data.select(schema.names), schema, self.uri)
            elif self.mode == "merge":
                data = add_missing(data, schema)
        if self.mode == "merge" and self.delete_when:
            data = data.append_column(DELETE_FLAG, delete_flags(data, self.delete_when))
        self._pending = _Prepared(batch.seq, data, self.txns(batch))
        return LoadResult(written=batch.num_rows - len(rejected), rejected=rejected)

    def _schema(self) -> pa.Schema | None:
        if self._table is None:
            return None
        return pa.schema(self._table.schema().to_arrow())

    # -- commit: write ------------------------------------------------------------

    def commit(self, batch: Batch) -> None:
        """Write the prepared batch in one Delta commit carrying its ``txn`` actions."""
        prepared, self._pending = self._pending, None
        if prepared is None or prepared.seq != batch.seq:
            raise SinkError(f"delta sink: commit of batch {batch.seq} without its load")
        if self._stale:
            # An earlier attempt failed; its commit may have landed all the same.
            self._refresh()
            if self._holds(prepared.txns):
                _log.info("batch_found_committed", seq=batch.seq, table=self.uri)
                return
        if prepared.data.num_rows == 0:
            return
        crash_point("mid_load")
        action = f"write batch {batch.seq} to delta table {self.uri}"
        for attempt in range(self.commit_retries + 1):
            try:
                self._write(prepared)
                return
            except SluicewayError:
                self._stale = True
                raise
            except Exception as exc:
                self._stale = True
                if not _lost_commit(exc) or attempt == self.commit_retries:
                    raise translate(exc, action) from exc
            # Another commit took the version this one wanted. It may be this very
            # commit, stored although the store reported a failure: look before writing.
            self._refresh()
            if self._holds(prepared.txns):
                _log.info("batch_found_committed", seq=batch.seq, table=self.uri)
                return
            time.sleep(random.uniform(0, min(0.05 * 2**attempt, 2.0)))

    def abort(self, batch: Batch) -> None:
        self._pending = None

    def _commit_properties(self, txns: Sequence[tuple[str, int]], seq: int) -> Any:
        from deltalake import CommitProperties, Transaction

        # No commit retries inside delta-rs: its conflict check lets an append through
        # on top of the same append when a stored commit was reported as failed.
        # ``commit`` retries instead, after checking the table's txn versions.
        return CommitProperties(
            max_commit_retries=0,
            app_transactions=[Transaction(app_id=app, version=v) for app, v in txns],
            custom_metadata={
                "sluiceway.pipeline": self.context.pipeline,
                "sluiceway.run_id": self.context.run_id,
                "sluiceway.seq": seq,
            },
        )

    def _write(self, prepared: _Prepared) -> None:
        from deltalake import write_deltalake

        txns = list(prepared.txns)
        data = prepared.data
        before = self._table.version() if self._table is not None else None
        if self.mode == "merge" and self._table is not None:
            self._merge(self._table, data, self._commit_properties(txns, prepared.seq))
            self._wrote(before, txns)
            return
        if DELETE_FLAG in data.column_names:
            # Merging into a table that does not exist yet: insert what is not deleted.
            import pyarrow.compute as pc

            data = data.filter(pc.invert(data.column(DELETE_FLAG))).drop_columns([DELETE_FLAG])
            if data.num_rows == 0:
                return
        write_mode = "append"
        generation: int | None = None
        if self.mode == "overwrite":
            write_mode, generation = self._overwrite_step()
            if generation is not None:
                txns.append((overwrite_app_ids(self.context.pipeline)[0], generation))
        # Schema merging costs delta-rs ~25 % more per append (measured on 500k-row
        # batches): ask for it only when the batch's columns are not the table's.
        evolve = (
            self.schema_mode == "evolve"
            and self._table is not None
            and not _same_columns(data.schema, self._schema())
        )
        target: Any = self._table if self._table is not None else self.uri
        options: dict[str, Any] = {
            "partition_by": self.partition_by or None,
            "schema_mode": "merge" if evolve else None,
            "storage_options": self.storage_options if self._table is None else None,
            "target_file_size": self.target_file_size,
            "commit_properties": self._commit_properties(txns, prepared.seq),
        }
        if write_mode == "overwrite":
            write_deltalake(target, data, mode="overwrite", **options)
        else:
            write_deltalake(target, data, mode="append", **options)
        if generation is not None:
            self._generation = generation
        if self._table is None:
            self._table = self._load()
        else:
            self._wrote(before, txns)

    def _merge(self, table: DeltaTable, data: pa.Table, properties: Any) -> None:
        deletes = DELETE_FLAG in data.column_names
        on, guard, delete = merge_clauses(self.keys, self.order_by, deletes)
        keep = f"NOT {delete}" if delete else None
        except_cols = [DELETE_FLAG] if deletes else None
        merger = table.merge(
            data,
            predicate=on,
            source_alias="s",
            target_alias="t",
            merge_schema=self.schema_mode == "evolve",
            commit_properties=properties,
        )
        if delete:
            merger = merger.when_matched_delete(predicate=both(delete, guard))
        merger = merger.when_matched_update_all(
            predicate=both(keep, guard), except_cols=except_cols
        )
        merger = merger.when_not_matched_insert_all(predicate=keep, except_cols=except_cols)
        merger.execute()

    # -- overwrite ----------------------------------------------------------------

    def _markers(self) -> tuple[int | None, int | None]:
        if self._table is None:
            return None, None
        started, finished = overwrite_app_ids(self.context.pipeline)
        table = self._table
        return self._txn_version(table, started), self._txn_version(table, finished)

    def _overwrite_step(self) -> tuple[str, int | None]:
        """("overwrite", new generation) for a run's first write, else ("append", None)."""
        if self._generation is not None:
            return "append", None
        started, finished = self._markers()
        if started is not None and (finished is None or finished < started):
            _log.info("overwrite_continued", table=self.uri, generation=started)
            self._generation = started
            return "append", None
        return "overwrite", (started or 0) + 1

    def finish(self) -> None:
        """Mark a finished overwrite; then optimize and vacuum if ``after_run`` asks."""
        if self.mode == "overwrite" and self._table is not None:
            self._refresh()
            started, finished = self._markers()
            if started is not None and (finished is None or finished < started):
                self._finish_overwrite(started)
        table = self._table
        if table is None:
            return
        run = self.after_run
        if run.optimize:
            metrics = optimize_table(table, z_order=run.z_order, target_size=run.target_size)
            _log.info("delta_optimized", table=self.uri, **_loggable(metrics))
        if run.vacuum:
            removed = vacuum_table(table, retention_hours=run.retention_hours, dry_run=False)
            _log.info("delta_vacuumed", table=self.uri, files_removed=len(removed))

    def _finish_overwrite(self, generation: int) -> None:
        """Record the overwrite generation as finished (a commit of one ``txn``, no data)."""
        marker = overwrite_app_ids(self.context.pipeline)[1]
        for attempt in range(self.commit_retries + 1):
            table = self._table
            assert table is not None
            if (self._txn_version(table, marker) or 0) >= generation:
                return
            try:
                table.create_write_transaction(
                    [],
                    mode="append",
                    schema=table.schema(),
                    partition_by=table.metadata().partition_columns,
                    commit_properties=self._commit_properties([(marker, generation)], -1),
                )
                return
            except Exception as exc:
                if not _lost_commit(exc) or attempt == self.commit_retries:
                    raise translate(exc, f"finish the overwrite of delta table {self.uri}") from exc
            self._refresh()

    def close(self) -> None:
        self._table = None
        self._pending = None


def _lost_commit(exc: BaseException) -> bool:
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, CommitFailedError)


def _cast(data: pa.Table, schema: pa.Schema, uri: str) -> pa.Table:
    try:
        return data.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"batch does not fit delta table {uri}: {exc}") from exc


def _loggable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}


def _same_columns(data: pa.Schema, table: pa.Schema | None) -> bool:
    """Whether ``data`` has exactly the table's columns, with types delta-rs casts to
    them itself (equal, or both text, or both binary): then a plain append needs no
    schema merge."""
    if table is None or sorted(data.names) != sorted(table.names):
        return False
    for field in data:
        ours, theirs = field.type, table.field(field.name).type
        if ours == theirs:
            continue
        if _text(ours) and _text(theirs):
            continue
        if _bytes(ours) and _bytes(theirs):
            continue
        return False
    return True


def _text(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _bytes(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
        or pa.types.is_binary_view(dtype)
    )
