"""CSV files, streamed block by block through ``pyarrow.csv.open_csv``.

Every column is read as bytes, then checked as UTF-8 and cast to the file's types:
declared ones, else those Arrow infers from the file's first block. So a value in
a later block that does not fit is dead-lettered with its column and value instead
of stopping the reader. A row with the wrong number of fields is dead-lettered
with its raw text; Arrow reports it through the invalid-row handler with its row
number, from which its record index follows exactly.

Line numbers are physical and 1-based: newlines inside quoted fields are counted
from the values, and empty lines (which Arrow skips) are spotted in the byte
stream. They are exact unless a quoted field holds an empty line, or the file's
encoding does not write newlines as ASCII bytes (UTF-16, UTF-32), or its lines end
in a lone carriage return.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sluiceway.connectors.files._fs import Compression, FileSet, SourceFile
from sluiceway.connectors.files._records import Chunk, Reject, Rows, fill_around, widen
from sluiceway.connectors.files._source import FileExtractor, FileReader
from sluiceway.core.errors import ConfigError, SourceError
from sluiceway.engines.cast import checked_cast

__all__ = ["CsvExtractor"]

#: Bytes Arrow parses at a time; a single row must fit in one block.
BLOCK_BYTES = 1 << 20
#: Malformed rows held while waiting for the next good row, at most (raw text bytes).
MAX_PENDING_BYTES = 64 << 20

_BLANK = re.compile(rb"\n(?=\r?\n)")


class CsvExtractor(FileExtractor):
    """CSV files: each file one partition, read in blocks with bounded memory.

    Without a header, ``columns`` names the columns (else ``f0``, ``f1``, …); with a
    header, ``columns`` renames them. Values listed in ``null_values`` are null.
    """

    type_name = "csv"

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 50_000,
        schema: dict[str, str | pa.DataType] | None = None,
        incremental: bool = True,
        compression: Compression = "infer",
        delimiter: str = ",",
        quote_char: str | None = '"',
        header: bool = True,
        columns: Sequence[str] | None = None,
        null_values: Sequence[str] = ("",),
        encoding: str = "utf-8",
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        super().__init__(path, batch_size=batch_size, schema=schema, incremental=incremental)
        if len(delimiter) != 1 or (quote_char is not None and len(quote_char) != 1):
            raise ConfigError("csv delimiter and quote_char must be single characters")
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ConfigError(f"unknown csv encoding {encoding!r}") from exc
        self.compression: Compression = compression
        self.delimiter = delimiter
        self.quote_char = quote_char
        self.header = header
        self.columns = list(columns) if columns is not None else None
        self.null_values = list(null_values)
        self.encoding = encoding
        self.block_bytes = block_bytes

    def reader(self, fileset: FileSet, file: SourceFile) -> FileReader:
        return _CsvReader(self, fileset, file)

    def read_options(self) -> pacsv.ReadOptions:
        options: dict[str, Any] = {
            "use_threads": False,
            "block_size": self.block_bytes,
            "encoding": self.encoding,
        }
        if self.columns is not None:
            options["column_names"] = self.columns
            options["skip_rows"] = 1 if self.header else 0
        elif not self.header:
            options["autogenerate_column_names"] = True
        return pacsv.ReadOptions(**options)

    def parse_options(self, handler: Any) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(
            delimiter=self.delimiter,
            quote_char=self.quote_char if self.quote_char is not None else False,
            newlines_in_values=True,
            ignore_empty_lines=True,
            invalid_row_handler=handler,
        )


@dataclass(frozen=True, slots=True)
class _Invalid:
    index: int
    text: str
    expected: int
    actual: int


class _Pending:
    """Malformed rows Arrow reported, held until the good rows around them arrive.

    Arrow parses ahead of the batches it returns and skips blocks without a good
    row, so these are bounded by :data:`MAX_PENDING_BYTES`: past it the handler
    stops the reader (``overflow``) rather than hold a whole broken file.
    """

    def __init__(self, rows_before_data: int) -> None:
        self.rows: list[_Invalid] = []
        self.size = 0
        self.overflow = False
        self._before = rows_before_data

    def handler(self, row: Any) -> str:
        # Arrow's row number is 1-based and counts the header, not empty lines.
        index = row.number - 1 - self._before
        self.rows.append(_Invalid(index, row.text, row.expected_columns, row.actual_columns))
        self.size += len(row.text)
        if self.size > MAX_PENDING_BYTES:
            self.overflow = True
            return "error"
        return "skip"

    def take(self, end: int) -> list[_Invalid]:
        """The held rows before record ``end``."""
        taken = [p for p in self.rows if p.index < end]
        del self.rows[: len(taken)]
        self.size -= sum(len(p.text) for p in taken)
        return taken


class _BlankLines:
    """The byte stream Arrow reads, noting the physical number of each empty line."""

    def __init__(self, raw: Any, *, enabled: bool) -> None:
        self._raw = raw
        self._enabled = enabled
        self._lines = 0
        self._tail = b"\n"  # the file starts as if after a newline
        self.blanks: list[int] = []

    @property
    def closed(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """The owner closes the underlying stream."""

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read(size)
        if data and self._enabled:
            self._scan(data)
        return data

    def _scan(self, data: bytes) -> None:
        tail = self._tail
        if (tail.endswith(b"\n") and data.startswith((b"\n", b"\r\n"))) or (
            tail.endswith(b"\n\r") and data.startswith(b"\n")
        ):
            self.blanks.append(self._lines + 1)
        last, seen = 0, 0
        for match in _BLANK.finditer(data):
            seen += data.count(b"\n", last, match.start() + 1)
            last = match.start() + 1
            self.blanks.append(self._lines + seen + 1)
        self._lines += data.count(b"\n")
        self._tail = (tail + data[-2:])[-2:]


class _LineMap:
    """Physical line numbers of consecutive records, from their extra newlines."""

    def __init__(self, first: int, blanks: _BlankLines) -> None:
        self._first = first  # non-empty line of record 0, counting newlines in values
        self._extra = 0  # newlines inside the records already mapped
        self._passed = 0  # empty lines before the records already mapped
        self._rank = 0
        self._pending: list[int] = []
        self._blanks = blanks

    def lines(self, cursor: int, extras: pa.Array | None, count: int) -> pa.Array:
        """Lines of records ``cursor .. cursor+count-1``; ``extras``: newlines in each."""
        import polars as pl

        for blank in self._blanks.blanks:
            self._pending.append(blank - self._rank)
            self._rank += 1
        self._blanks.blanks.clear()
        index = pl.int_range(cursor, cursor + count, dtype=pl.Int64, eager=True)
        compact = index + (self._first + self._extra)
        if extras is not None:
            series = pl.Series(extras).cast(pl.Int64)
            compact = compact + (series.cum_sum() - series)
            self._extra += int(series.sum())
        physical = compact + self._passed
        if self._pending and count:
            waiting = pl.Series(self._pending, dtype=pl.Int64)
            physical = physical + waiting.search_sorted(compact, side="right").cast(pl.Int64)
            top = int(compact[count - 1])
            gone = int(waiting.search_sorted(top, side="right"))
            self._passed += gone
            del self._pending[:gone]
        out: pa.Array = physical.to_arrow()
        return out.cast(pa.int64())


class _CsvReader(FileReader):
    def __init__(self, source: CsvExtractor, fileset: FileSet, file: SourceFile) -> None:
        self.source = source
        self.fileset = fileset
        self.file = file
        self.empty = False
        self.names: list[str] = []
        self._header_extra = 0
        self._probe()
        self.targets = self._targets()

    def _probe(self) -> None:
        """Column names and the types Arrow infers from the first block."""
        src = self.source
        convert = pacsv.ConvertOptions(null_values=src.null_values, strings_can_be_null=True)
        with self.fileset.open(self.file.path, src.compression) as stream:
            try:
                probe = pacsv.open_csv(
                    stream,
                    read_options=src.read_options(),
                    parse_options=src.parse_options(lambda _row: "skip"),
                    convert_options=convert,
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" not in str(exc):
                    raise
                self.empty = True
                return
            self.inferred: pa.Schema = probe.schema
        self.names = list(self.inferred.names)
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise SourceError(f"{self.file.key}: duplicate column names {duplicates}")
        if src.header and src.columns is None:
            self._header_extra = sum(name.count("\n") for name in self.names)

    def _targets(self) -> dict[str, pa.DataType | None]:
        declared = self.source.schema
        if self.empty:
            return dict(declared)
        missing = [name for name in declared if name not in self.names]
        if missing:
            raise SourceError(
                f"{self.file.key}: column(s) {missing} declared in schema are not in the file "
                f"(its columns: {self.names})"
            )
        targets: dict[str, pa.DataType | None] = {}
        for f in self.inferred:
            dtype = declared.get(f.name) or widen(f.type)
            if dtype is None or pa.types.is_binary(dtype) or pa.types.is_large_string(dtype):
                dtype = pa.string()
            targets[f.name] = dtype
        return targets

    def chunks(self, start: int, batch_size: int, stop_at: int | None) -> Iterator[Chunk]:
        if self.empty:
            return
        src = self.source
        before = 1 if src.header else 0  # rows Arrow numbers before the data
        pending = _Pending(before)
        ascii_newlines = "\n\n".encode(src.encoding) == b"\n\n"
        convert = pacsv.ConvertOptions(
            column_types={name: pa.binary() for name in self.names},
            null_values=src.null_values,
            strings_can_be_null=True,
        )
        with self.fileset.open(self.file.path, src.compression) as stream:
            blanks = _BlankLines(stream, enabled=ascii_newlines)
            lines = _LineMap(before + self._header_extra + 1, blanks)
            with self._overflow(pending):
                reader = pacsv.open_csv(
                    blanks,
                    read_options=src.read_options(),
                    parse_options=src.parse_options(pending.handler),
                    convert_options=convert,
                )
            cursor = 0
            while stop_at is None or cursor < stop_at:
                with self._overflow(pending):
                    try:
                        block = reader.read_next_batch()
                    except StopIteration:
                        break
                if block.num_rows:
                    chunk = self._chunk(pa.Table.from_batches([block]), pending, cursor, lines)
                    cursor = chunk.end
                    yield chunk
            if pending.rows and (stop_at is None or cursor < stop_at):
                yield self._chunk(None, pending, cursor, lines)

    @contextlib.contextmanager
    def _overflow(self, pending: _Pending) -> Iterator[None]:
        """Explain the error Arrow raises when the handler stopped it on too many bad rows."""
        try:
            yield
        except pa.ArrowInvalid as exc:
            if not pending.overflow:
                raise
            raise SourceError(
                f"{self.file.key}: more than {MAX_PENDING_BYTES >> 20} MiB of consecutive "
                "rows with the wrong number of fields; is the delimiter or the header wrong?"
            ) from exc

    def _chunk(
        self, table: pa.Table | None, pending: _Pending, cursor: int, lines: _LineMap
    ) -> Chunk:
        """The records from ``cursor`` through the block's last good row."""
        count = table.num_rows if table is not None else 0
        index = fill_around(cursor, count, [p.index for p in pending.rows])
        end = int(index[count - 1].as_py()) + 1 if count else pending.rows[-1].index + 1
        invalid = pending.take(end)

        good = _newlines(table) if table is not None else None
        extras: pa.Array | None = good
        if invalid:
            multiline = good is not None or any("\n" in p.text for p in invalid)
            extras = _dense(cursor, end, index, good, invalid) if multiline else None
        physical = lines.lines(cursor, extras, end - cursor)

        rejects = [self._malformed(p, int(physical[p.index - cursor].as_py())) for p in invalid]
        rows: list[Rows] = []
        if table is not None:
            line = physical.take(pc.subtract(index, cursor))
            decoded, bad = _decode(table, index, line, self.file.key)
            rejects.extend(bad)
            rows.append(decoded)
        return Chunk(rows, rejects, end)

    def _malformed(self, row: _Invalid, line: int) -> Reject:
        return Reject(
            index=row.index,
            line=line,
            raw=row.text,
            error_type="DecodeError",
            message=(
                f"{self.file.key}:{line}: malformed CSV row: expected {row.expected} "
                f"field(s), found {row.actual}"
            ),
        )


def _newlines(table: pa.Table) -> pa.Array | None:
    """Newlines inside each row's values (None when there are none)."""
    total: pa.Array | None = None
    for column in table.columns:
        found = pc.count_substring(column, "\n")
        counts = pc.coalesce(found, pa.scalar(0, found.type))
        if pc.max(counts).as_py():
            total = counts if total is None else pc.add(total, counts)
    return pc.cast(total, pa.int64()) if total is not None else None


def _dense(
    cursor: int,
    end: int,
    index: pa.Array,
    extras: pa.Array | None,
    invalid: list[_Invalid],
) -> pa.Array:
    """Extra newlines of every record in ``[cursor, end)``, good rows and malformed ones."""
    import polars as pl

    good = pl.DataFrame(
        {
            "i": pl.Series(index, dtype=pl.Int64),
            "e": pl.Series(extras, dtype=pl.Int64) if extras is not None else 0,
        }
    )
    bad = pl.DataFrame(
        {
            "i": pl.Series([p.index for p in invalid], dtype=pl.Int64),
            "e": pl.Series([p.text.count("\n") for p in invalid], dtype=pl.Int64),
        }
    )
    merged = pl.concat([good.with_columns(pl.col("e").cast(pl.Int64)), bad]).sort("i")
    if merged.height != end - cursor:  # pragma: no cover - records fill the span exactly
        raise AssertionError("record numbering out of step")
    out: pa.Array = merged["e"].to_arrow()
    return out.cast(pa.int64())


def _decode(
    table: pa.Table, index: pa.Array, line: pa.Array, key: str
) -> tuple[Rows, list[Reject]]:
    """Bytes to UTF-8 strings; rows holding invalid UTF-8 are rejected."""
    result = checked_cast(table, {name: pa.string() for name in table.column_names})
    if result.ok:
        return Rows(result.table, index, line), []
    rejects: list[Reject] = []
    for failure in result.failures:
        row = table.slice(failure.row, 1).to_pylist()[0]
        raw = json.dumps(
            {
                k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                for k, v in row.items()
            },
            ensure_ascii=False,
        )
        at = int(index[failure.row].as_py())
        ln = int(line[failure.row].as_py())
        value = row[failure.column]
        rejects.append(
            Reject(
                index=at,
                line=ln,
                raw=raw,
                error_type="DecodeError",
                message=f"{key}:{ln}: value in column {failure.column!r} is not valid UTF-8",
                column=failure.column,
                value=value.decode("utf-8", "replace") if isinstance(value, bytes) else None,
            )
        )
    bad = pa.array(result.bad_rows, type=pa.int64())
    keep = pc.invert(pc.is_in(fill_around(0, table.num_rows, ()), value_set=bad))
    return Rows(result.table, index.filter(keep), line.filter(keep)), rejects
