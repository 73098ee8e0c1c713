"""Which objects a source path stands for, their ETags, and their Hive partition values.

:class:`S3FileSet` is the file connectors' :class:`~sluiceway.connectors.files.FileSet`
over an ``s3fs`` filesystem built from the spec's connection options. It keeps the
ETag of every object its listing returned, so fingerprints (which decide whether an
object is new, changed or already read) cost no extra request per object.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from sluiceway.connectors.files import Compression, FileSet, SourceFile, codec_for
from sluiceway.connectors.s3._errors import is_transient
from sluiceway.core.errors import SourceError

__all__ = ["HIVE_NULL", "S3FileSet", "hive_values"]

#: The value Hive (and Spark) write for a null partition value.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"

_MAGIC = re.compile(r"[*?\[]")
_SEGMENT = re.compile(r"^([^=]+)=(.*)$")


def hive_values(path: str) -> dict[str, str | None]:
    """``name=value`` directories of an object path, outermost first; values unescaped."""
    values: dict[str, str | None] = {}
    for segment in path.split("/")[:-1]:
        match = _SEGMENT.match(segment)
        if match:
            value = unquote(match.group(2))
            values[unquote(match.group(1))] = None if value == HIVE_NULL else value
    return values


class _ArrowReads:
    """``s3fs`` for listing and metadata, pyarrow's S3 client for opening objects.

    Readers open objects with ``fs.open(path, "rb")``; this answers with a pyarrow
    random-access file (what ``pyarrow.parquet`` reads best).
    """

    def __init__(self, fs: Any, arrow: Any) -> None:
        self._fs = fs
        self._arrow = arrow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb" or kwargs:
            return self._fs.open(path, mode, **kwargs)
        return self._arrow.open_input_file(path)


def _hidden(path: str, root: str) -> bool:
    relative = path[len(root) :] if path.startswith(root) else path
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


class S3FileSet(FileSet):
    """The objects under an ``s3://`` prefix or glob, listed once with their ETags."""

    def __init__(self, url: str, fs: Any, arrow: Any = None) -> None:
        # FileSet.__init__ would build a filesystem from the URL alone; this one comes
        # configured with endpoint and credentials.
        self.url = url
        self.root = str(fs._strip_protocol(url))
        self.local = False
        self._info: dict[str, dict[str, Any]] = {}
        self._arrow = arrow
        self.fs = fs if arrow is None else _ArrowReads(fs, arrow)

    def list(self) -> list[SourceFile]:
        """The objects in sorted key order.

        A prefix is searched recursively, skipping names that start with ``.`` or
        ``_`` below it (``_SUCCESS``, ``_delta_log``, sinks' manifests). An empty
        prefix or a glob matching nothing gives an empty list (S3 has no
        directories); a missing bucket is an error.
        """
        root = self.root
        try:
            if _MAGIC.search(root):
                found: dict[str, dict[str, Any]] = self.fs.glob(root, detail=True)
                items = {p: i for p, i in found.items() if i.get("type") == "file"}
            else:
                found = self.fs.find(root, detail=True, withdirs=False)
                items = {p: i for p, i in found.items() if p == root or not _hidden(p, root)}
        except FileNotFoundError as exc:
            raise SourceError(f"cannot list {self.url}: the bucket does not exist ({exc})") from exc
        except Exception as exc:
            if (
                isinstance(exc, OSError)
                or is_transient(exc)
                or type(exc).__module__.startswith("botocore")
            ):
                raise SourceError(f"cannot list {self.url}: {exc}") from exc
            raise
        self._info.update(items)
        return [SourceFile(self.key(p), p) for p in sorted(items)]

    @contextlib.contextmanager
    def open(self, path: str, compression: Compression = "none") -> Iterator[Any]:
        """The object's bytes as one streaming GET (pyarrow's client when there is one)."""
        if self._arrow is None:
            with super().open(path, compression) as stream:
                yield stream
            return
        codec = codec_for(path, compression)
        try:
            raw = self._arrow.open_input_stream(path, compression=None)
        except FileNotFoundError as exc:
            raise SourceError(f"input file {self.key(path)} does not exist") from exc
        except OSError as exc:
            raise SourceError(f"cannot read {self.key(path)}: {exc}") from exc
        try:
            yield pa.CompressedInputStream(raw, codec) if codec else raw
        finally:
            raw.close()

    def fingerprint(self, path: str) -> str:
        """``etag:<ETag>`` from the listing (a HEAD request for an object not listed)."""
        info = self._info.get(path)
        etag = (info or {}).get("ETag")
        if etag:
            return f"etag:{str(etag).strip(chr(34))}"
        try:
            return super().fingerprint(path)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"cannot read {self.key(path)}: {exc}") from exc
