"""Checkpoints: committed positions, pending intents, and the stores that keep them.

A store is compare-and-swap: ``read()`` returns the state with its version, and
``commit(state, expected_version)`` only succeeds if nobody committed since. A run
also holds the store's run lock for its whole life, so two runs of one pipeline
cannot both proceed. :class:`LocalStateStore` keeps a JSON file replaced atomically;
other stores (S3, PostgreSQL) implement the same protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sluiceway.core.batch import PartitionSpan, Position
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import RunLockedError, StateConflictError, StateError

__all__ = ["Intent", "LocalStateStore", "PipelineState", "StateStore"]


@dataclass(slots=True)
class Intent:
    """A batch about to be loaded: enough to re-read exactly the same rows after a crash."""

    seq: int
    positions: dict[str, PartitionSpan]
    upper_bound: Position = None
    run_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "positions": {k: v.to_json() for k, v in self.positions.items()},
            "upper_bound": self.upper_bound,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intent:
        return cls(
            seq=int(data["seq"]),
            positions={k: PartitionSpan.from_json(v) for k, v in data["positions"].items()},
            upper_bound=data.get("upper_bound"),
            run_id=str(data.get("run_id", "")),
        )


@dataclass(slots=True)
class PipelineState:
    """Everything a pipeline remembers between runs."""

    pipeline: str
    next_seq: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    intents: list[Intent] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    last_run: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "next_seq": self.next_seq,
            "positions": self.positions,
            "intents": [i.to_json() for i in self.intents],
            "extra": self.extra,
            "last_run": self.last_run,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PipelineState:
        return cls(
            pipeline=str(data["pipeline"]),
            next_seq=int(data.get("next_seq", 0)),
            positions=dict(data.get("positions", {})),
            intents=[Intent.from_json(i) for i in data.get("intents", [])],
            extra=dict(data.get("extra", {})),
            last_run=data.get("last_run"),
        )


@runtime_checkable
class StateStore(Protocol):
    """Compare-and-swap storage of one pipeline's :class:`PipelineState`, plus a run lock."""

    def read(self) -> tuple[PipelineState, int]:
        """The state and its version (0 when nothing was ever committed)."""
        ...

    def commit(self, state: PipelineState, expected_version: int) -> int:
        """Store ``state`` if the stored version is still ``expected_version``; return the new one.

        Raises :class:`StateConflictError` otherwise.
        """
        ...

    def lock(self, run_id: str) -> contextlib.AbstractContextManager[None]:
        """Hold the pipeline's run lock; raises :class:`RunLockedError` if another run has it."""
        ...

    def reset(self) -> bool:
        """Delete the state (call under :meth:`lock`); True if there was any."""
        ...

    def describe(self) -> str: ...


class LocalStateStore:
    """State in ``<directory>/<pipeline>.state.json``, replaced atomically.

    Each commit writes a temporary file, fsyncs it, renames it over the old one and
    fsyncs the directory. The run lock is an ``flock`` that dies with the process.
    """

    def __init__(self, directory: str | os.PathLike[str], pipeline: str) -> None:
        self.directory = Path(directory)
        self.pipeline = pipeline
        self.path = self.directory / f"{pipeline}.state.json"
        self._lock_path = self.directory / f"{pipeline}.lock"
        self._cas_path = self.directory / f".{pipeline}.cas"

    def describe(self) -> str:
        return str(self.path)

    def reset(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"cannot delete state file {self.path}: {exc}") from exc
        return True

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.directory}: {exc}") from exc

    def read(self) -> tuple[PipelineState, int]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return PipelineState(pipeline=self.pipeline), 0
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from exc
        try:
            doc = json.loads(raw)
            return PipelineState.from_json(doc["state"]), int(doc["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"state file {self.path} is corrupt: {exc}") from exc

    def commit(self, state: PipelineState, expected_version: int) -> int:
        self._ensure_dir()
        with self._flock(self._cas_path, blocking=True):
            _, current = self.read()
            if current != expected_version:
                raise StateConflictError(
                    f"state of {self.pipeline!r} moved from version {expected_version} "
                    f"to {current} under this run"
                )
            version = current + 1
            body = json.dumps({"version": version, "state": state.to_json()}, indent=1, default=str)
            self._atomic_write(body.encode("utf-8"))
            return version

    def _atomic_write(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.pipeline}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            crash_point("mid_state_write")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        self._ensure_dir()
        fh = open(self._lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RunLockedError(
                    f"pipeline {self.pipeline!r} is already running ({holder}); "
                    f"lock file {self._lock_path}"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"run {run_id}, pid {os.getpid()}")
            fh.flush()
            yield
        finally:
            # Closing the descriptor releases the flock; a killed process releases it too.
            fh.close()

    @contextlib.contextmanager
    def _flock(self, path: Path, *, blocking: bool) -> Iterator[None]:
        with open(path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
