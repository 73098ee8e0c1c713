"""Where the input files are and how to open them: fsspec listing, fingerprints, codecs.

Any fsspec URL works (a local path, ``s3://…``, ``memory://…``). A file's partition
key is its local path, or its full URI on another filesystem. Errors of fsspec and
the OS are translated here into :class:`~sluiceway.core.errors.SourceError`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from sluiceway.core.errors import SourceError

__all__ = ["Compression", "FileSet", "SourceFile", "codec_for"]

Compression = Literal["infer", "gzip", "zstd", "bz2", "none"]

_MAGIC = re.compile(r"[*?\[]")
_SUFFIX_CODECS = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".bz2": "bz2",
}


def codec_for(path: str, compression: Compression) -> str | None:
    """The Arrow codec to decompress ``path`` with (None: read it as is)."""
    if compression == "none":
        return None
    if compression != "infer":
        return compression
    lowered = path.lower()
    for suffix, codec in _SUFFIX_CODECS.items():
        if lowered.endswith(suffix):
            return codec
    return None


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file: ``key`` names its source partition, ``path`` locates it in the fs."""

    key: str
    path: str


class FileSet:
    """The files a source ``path`` (file, directory or glob) stands for."""

    def __init__(self, url: str) -> None:
        # Imported here: a pipeline that only writes files never needs fsspec (its
        # import scans every installed distribution's entry points).
        from fsspec.core import url_to_fs

        self.url = url
        try:
            self.fs, self.root = url_to_fs(url)
        except (ImportError, ValueError, OSError) as exc:
            raise SourceError(f"cannot open input path {url}: {exc}") from exc
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        self.local = "file" in protocols or "local" in protocols

    def key(self, path: str) -> str:
        return path if self.local else str(self.fs.unstrip_protocol(path))

    def locate(self, key: str) -> str:
        """The fs path of a partition key (the inverse of :meth:`key`)."""
        return key if self.local else str(self.fs._strip_protocol(key))

    def list(self) -> list[SourceFile]:
        """The files in sorted path order.

        A directory is searched recursively, skipping names that start with ``.``
        or ``_`` (hidden files, ``_staging`` folders of sinks). A glob matching
        nothing gives an empty list; a plain path that does not exist is an error.
        """
        root = self.root
        try:
            if _MAGIC.search(root):
                found: dict[str, Any] = self.fs.glob(root, detail=True)
                paths = [p for p, info in found.items() if info.get("type") == "file"]
            elif self.fs.isdir(root):
                found = self.fs.find(root, detail=True, withdirs=False)
                paths = [p for p in found if not _hidden(p, root)]
            elif self.fs.exists(root):
                paths = [root]
            else:
                raise SourceError(f"input path {self.url} does not exist")
        except OSError as exc:
            raise SourceError(f"cannot list input path {self.url}: {exc}") from exc
        return [SourceFile(self.key(p), p) for p in sorted(paths)]

    def fingerprint(self, path: str) -> str:
        """What identifies a version of the file: its ETag, else its size and mtime."""
        try:
            info: dict[str, Any] = self.fs.info(path)
        except OSError as exc:
            raise SourceError(f"cannot read {self.key(path)}: {exc}") from exc
        etag = info.get("ETag") or info.get("etag")
        if etag:
            return f"etag:{str(etag).strip(chr(34))}"
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        return f"size:{info.get('size')}:mtime:{mtime}"

    @contextlib.contextmanager
    def open(self, path: str, compression: Compression = "none") -> Iterator[Any]:
        """The file's bytes, decompressed; any OS error names the file."""
        codec = codec_for(path, compression)
        try:
            with self.fs.open(path, "rb") as raw:
                yield pa.CompressedInputStream(raw, codec) if codec else raw
        except FileNotFoundError as exc:
            raise SourceError(f"input file {self.key(path)} does not exist") from exc
        except OSError as exc:
            raise SourceError(f"cannot read {self.key(path)}: {exc}") from exc


def _hidden(path: str, root: str) -> bool:
    relative = path[len(root) :] if path.startswith(root) else path
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)
