"""What every file source shares: listing, incremental resume, batches, exact replay.

Each file is one source partition keyed by its path (or URI). Its position is
``{"row": <records consumed, rejected ones included>, "done": <bool>, "fp":
<fingerprint>}``. A file whose committed position has the same fingerprint and
``done`` is skipped; same fingerprint, not done: reading resumes at ``row``; another
fingerprint (the file changed): it is read again from the start.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from sluiceway.connectors.files._fs import FileSet, SourceFile
from sluiceway.connectors.files._records import (
    Chunk,
    Piece,
    Targets,
    conform,
    pieces,
    rejects_table,
)
from sluiceway.core.batch import META_LINE, META_POSITION, Batch, PartitionSpan
from sluiceway.core.errors import SourceError
from sluiceway.core.stages import BaseExtractor, SourceContext
from sluiceway.core.state import Intent
from sluiceway.engines.types import parse_type

__all__ = ["FileExtractor", "FileReader", "file_position"]

_log = structlog.get_logger("sluiceway.connectors.files")

_READ_ERRORS = (OSError, pa.ArrowException, UnicodeError, EOFError)


def file_position(row: int, fp: str, *, done: bool = False) -> dict[str, Any]:
    """A file partition's position: records consumed, whether finished, fingerprint."""
    return {"row": row, "done": done, "fp": fp}


class FileReader(contextlib.AbstractContextManager["FileReader"]):
    """One open input file of one format.

    ``targets`` are the file's column types (None: as decoded); ``lines`` says
    whether rows carry physical line numbers.
    """

    targets: Targets
    lines: ClassVar[bool] = True

    @abstractmethod
    def chunks(self, start: int, batch_size: int, stop_at: int | None) -> Iterator[Chunk]:
        """The file's records from record ``start`` on (earlier ones may be included)."""

    def close(self) -> None:
        """Release the file."""

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileExtractor(BaseExtractor[dict[str, Any]]):
    """Reads every file under ``path`` (a file, a directory or a glob), file by file.

    ``schema`` declares column types (spec type names or Arrow types); values that
    do not fit are dead-lettered, never nulled. ``incremental=False`` ignores
    committed positions and reads everything on every run.
    """

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 50_000,
        schema: Mapping[str, str | pa.DataType] | None = None,
        incremental: bool = True,
    ) -> None:
        super().__init__(batch_size)
        self.path = path
        self.schema: dict[str, pa.DataType] = {
            name: parse_type(t) if isinstance(t, str) else t for name, t in (schema or {}).items()
        }
        self.incremental = incremental
        self._fileset: FileSet | None = None
        self._listing: list[SourceFile] | None = None

    # -- the format ------------------------------------------------------------------

    @abstractmethod
    def reader(self, fileset: FileSet, file: SourceFile) -> FileReader:
        """Open one file of this format."""

    # -- lifecycle -------------------------------------------------------------------

    @property
    def fileset(self) -> FileSet:
        if self._fileset is None:
            self._fileset = FileSet(self.path)
        return self._fileset

    def open(self, context: SourceContext) -> None:
        """Resolve the input files now, so a missing path fails before anything runs."""
        super().open(context)
        self._listing = self.fileset.list()

    def files(self) -> list[SourceFile]:
        """The input files, in sorted path order."""
        if self._listing is None:
            self._listing = self.fileset.list()
        return self._listing

    def extract(self) -> Iterator[Batch]:
        files = self.files()
        if not files:
            _log.warning("no_input_files", source=self.type_name, path=self.path)
        for file in files:
            if self.context.stop.is_set():
                return
            fp = self.fileset.fingerprint(file.path)
            start = self._resume_row(file, fp)
            if start is None:
                continue
            for batch in self._read(file, fp, start, self.batch_size):
                yield batch
                if self.context.stop.is_set():
                    return

    def _resume_row(self, file: SourceFile, fp: str) -> int | None:
        """Where to start reading a file; None to skip it (already read completely)."""
        if not self.incremental:
            return 0
        committed = self.context.positions.get(file.key)
        if not isinstance(committed, dict):
            return 0
        if committed.get("fp") != fp:
            _log.info("input_file_changed", source=self.type_name, file=file.key)
            return 0
        if committed.get("done"):
            _log.debug("input_file_unchanged", source=self.type_name, file=file.key)
            return None
        return int(committed.get("row", 0))

    def replay(self, intent: Intent) -> Batch | None:
        """Re-read exactly the records ``[start.row, end.row)`` the intent covered.

        None when the file changed or vanished since (its fingerprint differs), when
        the records no longer give the same row count, or with ``incremental=False``
        (then every run reads everything anyway).
        """
        if not self.incremental or len(intent.positions) != 1:
            return None
        ((key, span),) = intent.positions.items()
        start, end = span.start, span.end
        if not (isinstance(start, dict) and isinstance(end, dict)):
            return None
        try:
            file = SourceFile(key, self.fileset.locate(key))
            fp = self.fileset.fingerprint(file.path)
        except SourceError:
            return None
        if fp != end.get("fp") or fp != start.get("fp"):
            return None
        first, stop = int(start.get("row", 0)), int(end.get("row", 0))
        batches = list(self._read(file, fp, first, max(stop - first, 1), stop_at=stop))
        if len(batches) != 1 or batches[0].num_rows != span.rows:
            _log.warning(
                "replay_mismatch", source=self.type_name, file=key, expected_rows=span.rows
            )
            return None
        batch = batches[0]
        return Batch.from_source(
            batch.to_arrow(),
            {key: PartitionSpan(start, end, span.rows)},
            meta=batch.meta,
            rejected=batch.rejected,
        )

    # -- reading ---------------------------------------------------------------------

    def _read(
        self, file: SourceFile, fp: str, start: int, size: int, stop_at: int | None = None
    ) -> Iterator[Batch]:
        try:
            with self.reader(self.fileset, file) as reader:
                for piece, last in pieces(
                    reader.chunks(start, size, stop_at), start, size, stop_at
                ):
                    yield self._batch(file, fp, piece, reader, done=last and stop_at is None)
        except SourceError:
            raise
        except _READ_ERRORS as exc:
            raise SourceError(f"cannot read {file.key}: {exc}") from exc

    def _batch(
        self, file: SourceFile, fp: str, piece: Piece, reader: FileReader, *, done: bool
    ) -> Batch:
        out = conform(piece.rows, reader.targets, file.key, lines=reader.lines)
        columns: dict[str, pa.Array] = {META_POSITION: pc.cast(out.index, pa.string())}
        if out.line is not None:
            columns[META_LINE] = out.line
        rejects = [*piece.rejects, *out.rejects]
        return Batch.from_source(
            out.table,
            {
                file.key: PartitionSpan(
                    file_position(piece.start, fp),
                    file_position(piece.end, fp, done=done),
                    out.table.num_rows,
                )
            },
            meta=pa.table(columns),
            rejected=rejects_table(file.key, rejects) if rejects else None,
        )
