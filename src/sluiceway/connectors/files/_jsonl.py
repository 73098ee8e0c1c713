"""JSON Lines files, parsed by ``pyarrow.json`` in bounded chunks of whole lines.

For JSON Lines a record is a line: a file's position counts lines, and an empty
line is consumed without giving a row. A chunk that fails to parse is bisected by
lines until the malformed lines stand alone; each goes to the dead-letter queue
with its line number and text. Memory stays bounded by the chunk size (plus the
longest line).

Chunks never cross a batch boundary and restart at each one, so a batch read again
(a replay) is parsed exactly as it was the first time. Column types come from the
declared schema, else from the file's first chunk; a value that does not fit them
later is dead-lettered as a CastError with its column and value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from sluiceway.connectors.files._fs import Compression, FileSet, SourceFile
from sluiceway.connectors.files._records import (
    Chunk,
    Hint,
    Reject,
    Rows,
    conform,
    fill_around,
    widen,
)
from sluiceway.connectors.files._source import FileExtractor, FileReader
from sluiceway.core.errors import SourceError

__all__ = ["JsonlExtractor"]

#: Bytes of whole lines parsed at a time.
CHUNK_BYTES = 1 << 20
_READ_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"

_BLANK_LINE = re.compile(rb"^[ \t\r]*\n", re.MULTILINE)
# A non-empty line whose first character is not `{`.
_NOT_OBJECT_LINE = re.compile(rb"^[ \t\r]*[^{ \t\r\n][^\n]*", re.MULTILINE)
_NOT_OBJECT = re.compile(r"^Column\(\) changed from object to (\w+)")
_ARROW_NOISE = re.compile(r"^JSON parse error: |\s+in row \d+$")


class JsonlExtractor(FileExtractor):
    """JSON Lines files: one JSON object per line, each file one partition."""

    type_name = "jsonl"

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 50_000,
        schema: dict[str, str | pa.DataType] | None = None,
        incremental: bool = True,
        compression: Compression = "infer",
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        super().__init__(path, batch_size=batch_size, schema=schema, incremental=incremental)
        self.compression: Compression = compression
        self.chunk_bytes = chunk_bytes

    def reader(self, fileset: FileSet, file: SourceFile) -> FileReader:
        return _JsonlReader(self, fileset, file)


class _LineReader:
    """Whole lines from a byte stream, a bounded chunk at a time."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False
        self._started = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data: bytes = self._stream.read(_READ_BYTES)
        if not self._started:
            self._started = True
            data = data.removeprefix(_BOM)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def take(self, max_lines: int, max_bytes: int) -> bytes | None:
        """Up to ``max_lines`` whole lines, about ``max_bytes`` long, each ending in a newline."""
        buf = self._buf
        while len(buf) < max_bytes and self._fill():
            pass
        if not buf:
            return None
        cut = buf.rfind(b"\n", 0, max_bytes) + 1
        while cut == 0:  # a line longer than max_bytes
            cut = buf.find(b"\n") + 1
            if cut == 0 and not self._fill():
                cut = len(buf)
        if buf.count(b"\n", 0, cut) > max_lines:
            cut = _nth_newline(buf, max_lines, cut) + 1
        chunk = bytes(buf[:cut])
        del buf[:cut]
        return chunk if chunk.endswith(b"\n") else chunk + b"\n"


def _nth_newline(buf: bytearray, n: int, hi: int) -> int:
    """Offset of the ``n``-th newline (1-based) in ``buf[:hi]``, which holds more than n."""
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if buf.count(b"\n", 0, mid + 1) >= n:
            hi = mid
        else:
            lo = mid + 1
    return lo


class _JsonlReader(FileReader):
    def __init__(self, source: JsonlExtractor, fileset: FileSet, file: SourceFile) -> None:
        self.source = source
        self.fileset = fileset
        self.file = file
        self.targets = self._targets()

    def _targets(self) -> dict[str, pa.DataType | Hint | None]:
        """Declared types, else those of the first chunk (nested ones as hints only)."""
        with self.fileset.open(self.file.path, self.source.compression) as stream:
            first = _LineReader(stream).take(1 << 62, self.source.chunk_bytes)
        targets: dict[str, pa.DataType | Hint | None] = {}
        if first is not None:
            rows, _ = self._parse(first, 1)
            sample = conform(rows, {}, self.file.key, lines=True).table
            for f in sample.schema:
                nested = pa.types.is_nested(f.type)
                targets[f.name] = Hint(f.type) if nested else widen(f.type)
        targets.update(self.source.schema)
        return targets

    def chunks(self, start: int, batch_size: int, stop_at: int | None) -> Iterator[Chunk]:
        limit = self.source.chunk_bytes
        with self.fileset.open(self.file.path, self.source.compression) as stream:
            lines = _LineReader(stream)
            done = 0
            while done < start:
                skipped = lines.take(start - done, limit)
                if skipped is None:
                    raise SourceError(
                        f"{self.file.key} has {done} lines, fewer than the committed "
                        f"position {start} though its fingerprint did not change"
                    )
                done += skipped.count(b"\n")
            boundary = start + batch_size
            while stop_at is None or done < stop_at:
                room = boundary - done if stop_at is None else min(boundary, stop_at) - done
                chunk = lines.take(room, limit)
                if chunk is None:
                    return
                count = chunk.count(b"\n")
                rows, rejects = self._parse(chunk, done + 1)
                done += count
                if done >= boundary:
                    boundary += batch_size
                yield Chunk(rows, rejects, done)

    def _parse(self, chunk: bytes, first: int) -> tuple[list[Rows], list[Reject]]:
        """Rows and rejected lines of whole lines starting at line ``first``."""
        rejects: list[Reject] = []
        starts = chunk.count(b"\n{") + (1 if chunk.startswith(b"{") else 0)
        if starts != chunk.count(b"\n"):
            # Lines that cannot be objects are rejected before pyarrow sees them: it
            # turns a bare `null` into an all-null row, and crashes the process on a
            # buffer whose first value starts with `null`.
            last, seen = 0, 0
            for match in _NOT_OBJECT_LINE.finditer(chunk):
                seen += chunk.count(b"\n", last, match.start())
                last = match.start()
                text = match.group().strip()
                why = "a JSON null is not an object" if text == b"null" else "not a JSON object"
                rejects.append(self._reject(first + seen, match.group(), why))
            if rejects:
                chunk = _NOT_OBJECT_LINE.sub(b"", chunk)
        rows: list[Rows] = []
        self._bisect(chunk, first, rows, rejects)
        rejects.sort(key=lambda r: r.index)
        return rows, rejects

    def _bisect(self, buf: bytes, first: int, rows: list[Rows], rejects: list[Reject]) -> None:
        count = buf.count(b"\n")
        blanks: list[int] = []
        last, seen = 0, 0
        for match in _BLANK_LINE.finditer(buf):
            seen += buf.count(b"\n", last, match.start())
            last = match.start()
            blanks.append(first + seen)
        expected = count - len(blanks)
        if expected == 0:
            return
        error: str
        try:
            table = pajson.read_json(
                pa.BufferReader(buf),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(buf) + 1),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            error = _ARROW_NOISE.sub("", str(exc))
            found = _NOT_OBJECT.search(error)
            if found:
                error = f"not a JSON object (found a JSON {found.group(1)})"
        else:
            if table.num_rows == expected:
                line = fill_around(first, expected, blanks)
                rows.append(Rows(table, pc.subtract(line, 1), line))
                return
            error = "more than one JSON value on the line"
        if count == 1:
            rejects.append(self._reject(first, buf, error))
            return
        mid = buf.find(b"\n", len(buf) // 2) + 1
        if mid in (0, len(buf)):
            mid = buf.rfind(b"\n", 0, len(buf) // 2) + 1
        self._bisect(buf[:mid], first, rows, rejects)
        self._bisect(buf[mid:], first + buf.count(b"\n", 0, mid), rows, rejects)

    def _reject(self, line: int, raw: bytes, error: str) -> Reject:
        return Reject(
            index=line - 1,
            line=line,
            raw=raw.decode("utf-8", "replace").rstrip("\r\n"),
            error_type="DecodeError",
            message=f"{self.file.key}:{line}: invalid JSON line: {error}",
        )
