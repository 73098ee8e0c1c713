"""Message values to Arrow columns: JSON (vectorised), Avro, Protobuf, raw bytes, text.

A decoder takes the values of one batch (``bytes`` or ``None`` for a tombstone)
and returns the decoded rows plus the indexes of the values it could not decode,
each with a reason. JSON values are joined into one NDJSON buffer and parsed by
``pyarrow.json`` in one call; only when that fails is the buffer bisected until the
undecodable values stand alone (and pieces whose column types differ are unified).
Avro and Protobuf have no vectorised decoder: they decode value by value
(fastavro, the generated Protobuf class) and build Arrow from the records.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from sluiceway.core.errors import FatalError, TransientError
from sluiceway.engines.cast import checked_cast

__all__ = [
    "AvroDecoder",
    "Decoded",
    "JsonDecoder",
    "ProtobufDecoder",
    "RawDecoder",
    "Rejected",
    "TextDecoder",
    "ValueDecoder",
    "raw_text",
    "raw_bytes",
]

_ARROW_NOISE = re.compile(r"^JSON parse error: |\s+in row \d+$")
_NOT_OBJECT = re.compile(r"^Column\(\) changed from object to (\w+)")
_CONFLUENT_MAGIC = 0
_BASE64 = "base64:"


def raw_text(value: bytes | None) -> str | None:
    """A message value for the DLQ's ``raw`` text: UTF-8 as is, anything else ``base64:…``.

    A text that itself starts with ``base64:`` is base64-encoded too, so
    :func:`raw_bytes` always gets the original bytes back.
    """
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not text.startswith(_BASE64) and "\x00" not in text:
        return text
    return _BASE64 + base64.b64encode(value).decode("ascii")


def raw_bytes(text: str | None) -> bytes | None:
    """The original bytes of a :func:`raw_text` value."""
    if text is None:
        return None
    if text.startswith(_BASE64):
        return base64.b64decode(text[len(_BASE64) :])
    return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Rejected:
    """One value that did not decode: its index in the batch, why, and where it went wrong."""

    index: int
    error_type: str
    message: str
    column: str | None = None
    value: str | None = None


@dataclass(slots=True)
class Decoded:
    """``table`` holds the decoded rows of the values at ``kept`` (ascending indexes)."""

    table: pa.Table
    kept: pa.Array
    rejected: list[Rejected] = field(default_factory=list)


class ValueDecoder(Protocol):
    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode one batch of message values."""
        ...


def _all_kept(table: pa.Table) -> Decoded:
    return Decoded(table, pa.array(range(table.num_rows), pa.int64()))


class RawDecoder:
    """The value as bytes, in one ``value`` column (tombstones are null)."""

    def __init__(self, column: str = "value") -> None:
        self.column = column

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        return _all_kept(pa.table({self.column: pa.array(values, pa.binary())}))


class TextDecoder:
    """The value as UTF-8 text in one ``value`` column; invalid UTF-8 is dead-lettered."""

    def __init__(self, column: str = "value") -> None:
        self.column = column

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        binary = pa.array(values, pa.binary())
        try:
            return _all_kept(pa.table({self.column: binary.cast(pa.string())}))
        except pa.ArrowInvalid:
            pass
        rejected: list[Rejected] = []
        kept: list[int] = []
        for i, value in enumerate(values):
            try:
                if value is not None:
                    value.decode("utf-8")
                kept.append(i)
            except UnicodeDecodeError as exc:
                rejected.append(Rejected(i, "DecodeError", f"value is not UTF-8 text: {exc}"))
        index = pa.array(kept, pa.int64())
        column = pc.take(binary, index).cast(pa.string())
        return Decoded(pa.table({self.column: column}), index, rejected)


# -- JSON ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Piece:
    table: pa.Table
    index: list[int]


class JsonDecoder:
    """JSON objects, parsed by ``pyarrow.json`` as one NDJSON buffer per batch.

    A tombstone (null value) is an empty object: a row whose value columns are null.
    ``types`` declares column types; values that do not fit are rejected as
    ``CastError`` with column and value, never nulled. Undeclared columns take the
    types Arrow infers; when pieces of a batch disagree, types are unified (an int
    column meeting floats becomes double) or, where they cannot be, the first
    piece's type wins and misfits are rejected.
    """

    def __init__(self, types: Mapping[str, pa.DataType] | None = None) -> None:
        self.types = dict(types or {})

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        n = len(values)
        if n == 0:
            return Decoded(pa.table({}), pa.array([], pa.int64()))
        lines: list[bytes] = [b"{}" if v is None else v for v in values]
        buffer = b"\n".join(lines)
        fast = (
            buffer.count(b"\n") == n - 1
            and buffer.count(b"\n{") + (1 if buffer.startswith(b"{") else 0) == n
        )
        rejected: list[Rejected] = []
        pieces: list[_Piece] = []
        if fast:
            table = self._parse(buffer, max(map(len, lines)))
            if isinstance(table, pa.Table) and table.num_rows == n:
                pieces.append(_Piece(table, list(range(n))))
            else:
                self._bisect(lines, list(range(n)), pieces, rejected)
        else:
            index, clean = self._normalise(lines, rejected)
            self._bisect(clean, index, pieces, rejected)
        table, kept = self._combine(pieces, rejected)
        rejected.sort(key=lambda r: r.index)
        return Decoded(table, kept, rejected)

    @staticmethod
    def _normalise(lines: list[bytes], rejected: list[Rejected]) -> tuple[list[int], list[bytes]]:
        """Whitespace newlines to spaces; values that cannot be objects rejected up front.

        A raw newline can only be whitespace in valid JSON (inside strings it must be
        escaped), so replacing it keeps every valid document intact. ``pyarrow.json``
        turns a bare ``null`` into a row and crashes on some non-objects: anything not
        starting with ``{`` is rejected before it sees them.
        """
        index: list[int] = []
        clean: list[bytes] = []
        for i, line in enumerate(lines):
            text = line.replace(b"\r", b" ").replace(b"\n", b" ").strip()
            if not text.startswith(b"{"):
                why = (
                    "empty value"
                    if not text
                    else "a JSON null is not an object"
                    if text == b"null"
                    else "not a JSON object"
                )
                rejected.append(Rejected(i, "DecodeError", f"invalid JSON: {why}"))
                continue
            index.append(i)
            clean.append(text)
        return index, clean

    @staticmethod
    def _parse(buffer: bytes, longest: int) -> pa.Table | str:
        block = max(1 << 20, longest + 2)
        try:
            return pajson.read_json(
                pa.BufferReader(buffer),
                read_options=pajson.ReadOptions(
                    use_threads=len(buffer) > 4 * block, block_size=block
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            error = _ARROW_NOISE.sub("", str(exc))
            found = _NOT_OBJECT.search(error)
            return f"not a JSON object (found a JSON {found.group(1)})" if found else error

    def _bisect(
        self,
        lines: list[bytes],
        index: list[int],
        pieces: list[_Piece],
        rejected: list[Rejected],
    ) -> None:
        if not lines:
            return
        parsed = self._parse(b"\n".join(lines), max(map(len, lines)))
        if isinstance(parsed, pa.Table) and parsed.num_rows == len(lines):
            pieces.append(_Piece(parsed, index))
            return
        if len(lines) == 1:
            why = parsed if isinstance(parsed, str) else "more than one JSON value"
            rejected.append(Rejected(index[0], "DecodeError", f"invalid JSON: {why}"))
            return
        mid = len(lines) // 2
        self._bisect(lines[:mid], index[:mid], pieces, rejected)
        self._bisect(lines[mid:], index[mid:], pieces, rejected)

    def _combine(self, pieces: list[_Piece], rejected: list[Rejected]) -> tuple[pa.Table, pa.Array]:
        """One table from the pieces (in index order), declared types checked."""
        if not pieces:
            empty = pa.schema([pa.field(n, t) for n, t in self.types.items()])
            return empty.empty_table(), pa.array([], pa.int64())
        targets = _unified(pieces)
        tables: list[pa.Table] = []
        indexes: list[list[int]] = []
        for piece in pieces:
            table, kept = _conform(piece.table, piece.index, targets, rejected)
            tables.append(table)
            indexes.append(kept)
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        flat = [i for part in indexes for i in part] if len(indexes) > 1 else indexes[0]
        if self.types:
            for name, dtype in self.types.items():
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(table.num_rows, dtype))
            result = checked_cast(table, self.types)
            if not result.ok:
                for failure in result.failures:
                    rejected.append(
                        Rejected(
                            flat[failure.row],
                            "CastError",
                            failure.message,
                            failure.column,
                            failure.value,
                        )
                    )
                bad = set(result.bad_rows)
                flat = [i for k, i in enumerate(flat) if k not in bad]
            table = result.table
        return table, pa.array(flat, pa.int64())


def _unified(pieces: list[_Piece]) -> pa.Schema:
    """The schema all pieces can be cast to: permissive unification, else the first type."""
    if len(pieces) == 1:
        return pieces[0].table.schema
    try:
        return pa.unify_schemas([p.table.schema for p in pieces], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    fields: dict[str, pa.DataType] = {}
    for piece in pieces:
        for f in piece.table.schema:
            current = fields.get(f.name)
            if current is None or pa.types.is_null(current):
                fields[f.name] = f.type
    return pa.schema([pa.field(n, t) for n, t in fields.items()])


def _conform(
    table: pa.Table, index: list[int], targets: pa.Schema, rejected: list[Rejected]
) -> tuple[pa.Table, list[int]]:
    """``table`` with every target column, in target order and types; misfits rejected."""
    columns = []
    for f in targets:
        if f.name in table.column_names:
            columns.append(table.column(f.name))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    table = pa.table(columns, names=targets.names)
    casts = {f.name: f.type for f in targets if table.schema.field(f.name).type != f.type}
    if not casts:
        return table, index
    try:
        return table.cast(targets), index
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    result = checked_cast(table, casts)
    for failure in result.failures:
        rejected.append(
            Rejected(
                index[failure.row], "CastError", failure.message, failure.column, failure.value
            )
        )
    bad = set(result.bad_rows)
    return result.table.select(targets.names), [i for k, i in enumerate(index) if k not in bad]


# -- Avro and Protobuf ----------------------------------------------------------------


def _records(
    values: Sequence[bytes | None], decode_one: Callable[[bytes], dict[str, Any]], kind: str
) -> tuple[list[dict[str, Any]], list[int], list[Rejected]]:
    """Decode value by value: records (``{}`` for a tombstone), kept indexes, rejects."""
    records: list[dict[str, Any]] = []
    kept: list[int] = []
    rejected: list[Rejected] = []
    for i, value in enumerate(values):
        if value is None:
            records.append({})
            kept.append(i)
            continue
        try:
            records.append(decode_one(value))
            kept.append(i)
        except (FatalError, TransientError):
            raise  # the registry is unreachable: not the record's fault
        except Exception as exc:  # any decoder failure is a bad record, not a bad run
            rejected.append(Rejected(i, "DecodeError", f"invalid {kind} value: {exc}"))
    return records, kept, rejected


def _table(records: list[dict[str, Any]], schema: pa.Schema | None) -> pa.Table:
    if schema is not None:
        try:
            return pa.Table.from_pylist(records, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return pa.Table.from_pydict({n: [r.get(n) for r in records] for n in names})


def _confluent_header(value: bytes) -> tuple[int, bytes]:
    if len(value) < 5 or value[0] != _CONFLUENT_MAGIC:
        raise ValueError("not in the Schema Registry wire format (magic byte 0 + schema id)")
    (schema_id,) = struct.unpack(">I", value[1:5])
    return schema_id, value[5:]


def _zigzag_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated Protobuf message index")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


class AvroDecoder:
    """Avro values: Schema Registry framed (writer schema fetched by id) or plain binary.

    ``registry`` maps a schema id to the writer schema (a parsed fastavro schema);
    ``writer_schema`` decodes unframed values. Columns follow the Avro schema.
    """

    def __init__(
        self,
        *,
        registry: Callable[[int], Any] | None = None,
        writer_schema: Any = None,
    ) -> None:
        import fastavro

        self._fastavro = fastavro
        self._registry = registry
        self._writer = fastavro.parse_schema(writer_schema) if writer_schema is not None else None
        self._arrow: dict[int, pa.Schema | None] = {}

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        schemas: list[pa.Schema | None] = []

        def one(value: bytes) -> dict[str, Any]:
            if self._registry is not None:
                schema_id, payload = _confluent_header(value)
                writer = self._registry(schema_id)
                if schema_id not in self._arrow:
                    self._arrow[schema_id] = avro_to_arrow(writer)
                schemas.append(self._arrow[schema_id])
            else:
                writer, payload = self._writer, value
                if -1 not in self._arrow:
                    self._arrow[-1] = avro_to_arrow(writer)
                schemas.append(self._arrow[-1])
            record = self._fastavro.schemaless_reader(io.BytesIO(payload), writer, None)
            if not isinstance(record, dict):
                return {"value": record}
            return record

        records, kept, rejected = _records(values, one, "Avro")
        distinct = {id(s): s for s in schemas if s is not None}
        schema = next(iter(distinct.values())) if len(distinct) == 1 else None
        return Decoded(_table(records, schema), pa.array(kept, pa.int64()), rejected)


class ProtobufDecoder:
    """Protobuf values of one generated message class, plain or Schema Registry framed.

    Framed values (magic byte, schema id, message indexes) are unwrapped first; the
    message is turned into a dict with the proto field names.
    """

    def __init__(self, message_type: Any, *, framed: bool) -> None:
        from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]

        self._type = message_type
        self._framed = framed
        self._to_dict = MessageToDict

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        def one(value: bytes) -> dict[str, Any]:
            payload = value
            if self._framed:
                _, rest = _confluent_header(value)
                count, pos = _zigzag_varint(rest, 0)
                for _ in range(count):
                    _, pos = _zigzag_varint(rest, pos)
                payload = rest[pos:]
            message = self._type.FromString(payload)
            result: dict[str, Any] = self._to_dict(
                message,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
            return result

        records, kept, rejected = _records(values, one, "Protobuf")
        return Decoded(_table(records, None), pa.array(kept, pa.int64()), rejected)


# -- Avro schema → Arrow ----------------------------------------------------------------

_AVRO_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_AVRO_LOGICAL: dict[str, pa.DataType] = {
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "uuid": pa.string(),
}


def avro_to_arrow(schema: Any) -> pa.Schema | None:
    """The Arrow schema of an Avro record schema (None when it is not a record)."""
    try:
        dtype = _avro_type(schema, {})
    except (KeyError, TypeError, ValueError):
        return None
    if not pa.types.is_struct(dtype):
        return None
    return pa.schema([dtype.field(i) for i in range(dtype.num_fields)])


def _avro_type(schema: Any, named: dict[str, pa.DataType]) -> pa.DataType:
    if isinstance(schema, str):
        if schema in _AVRO_PRIMITIVES:
            return _AVRO_PRIMITIVES[schema]
        return named[schema]
    if isinstance(schema, list):
        branches = [s for s in schema if s != "null"]
        if len(branches) == 1:
            return _avro_type(branches[0], named)
        raise ValueError("unions of several non-null types have no Arrow column type")
    if not isinstance(schema, dict):
        raise TypeError(f"unexpected Avro schema {schema!r}")
    logical = schema.get("logicalType")
    if logical == "decimal":
        return pa.decimal128(int(schema["precision"]), int(schema.get("scale", 0)))
    if logical in _AVRO_LOGICAL:
        return _AVRO_LOGICAL[logical]
    kind = schema["type"]
    if kind == "record":
        fields = [
            pa.field(f["name"], _avro_type(f["type"], named)) for f in schema.get("fields", [])
        ]
        dtype = pa.struct(fields)
        named[schema["name"]] = dtype
        return dtype
    if kind == "array":
        return pa.list_(_avro_type(schema["items"], named))
    if kind == "map":
        return pa.map_(pa.string(), _avro_type(schema["values"], named))
    if kind == "enum":
        named[schema["name"]] = pa.string()
        return pa.string()
    if kind == "fixed":
        named[schema["name"]] = pa.binary(int(schema["size"]))
        return named[schema["name"]]
    return _avro_type(kind, named)


def load_avro_schema(text: str) -> Any:
    """An Avro schema from its JSON text."""
    return json.loads(text)
