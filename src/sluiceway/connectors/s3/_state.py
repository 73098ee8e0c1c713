"""The state store on S3 (``state: {uri: s3://bucket/prefix}``), for stateless containers.

``<prefix>/<pipeline>.state.json`` holds ``{"version": n, "state": …}``. Every commit
is a conditional PUT: ``If-None-Match: *`` for the first version, ``If-Match: <ETag
of the version this run read>`` after that. S3 refuses the write (412) when anybody
else committed meanwhile, so compare-and-swap holds across machines without a
database.

The run lock is a lease, ``<prefix>/<pipeline>.lock.json``, created with
``If-None-Match: *`` and renewed by a background thread every ``ttl / 3`` seconds
with ``If-Match``. A run that was killed stops renewing it: the next run takes it
over once ``ttl`` seconds passed since the last renewal (measured by S3's clock,
not the local one), or at once when the holder ran on the same host and its
process is gone. Should a paused run lose its lease, its next state commit still
fails the compare-and-swap, so two runs can never both commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import structlog

from sluiceway.connectors.s3._errors import error_code, not_found, status_code, translate
from sluiceway.connectors.s3._options import S3Options, split_uri
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import RunLockedError, StateConflictError, StateError
from sluiceway.core.state import PipelineState

__all__ = ["S3StateStore"]

_log = structlog.get_logger("sluiceway.connectors.s3")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lost_race(exc: BaseException) -> bool:
    return error_code(exc) in {"PreconditionFailed", "ConditionalRequestConflict"} or (
        status_code(exc) in (409, 412)
    )


class S3StateStore:
    """Compare-and-swap state and a lease run lock in one S3 prefix (see the module doc)."""

    def __init__(
        self,
        uri: str,
        pipeline: str,
        *,
        options: S3Options | None = None,
        lock_ttl: float = 60.0,
    ) -> None:
        self.location = split_uri(uri)
        self.pipeline = pipeline
        self.options = options or S3Options()
        self.lock_ttl = lock_ttl
        self.key = self.location.key(f"{pipeline}.state.json")
        self.lock_key = self.location.key(f"{pipeline}.lock.json")
        self._client: Any = None
        self._etags: dict[int, str] = {}

    def describe(self) -> str:
        return f"s3://{self.location.bucket}/{self.key}"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.options.client(f"state store {self.describe()}")
        return self._client

    # -- state --------------------------------------------------------------------

    def read(self) -> tuple[PipelineState, int]:
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=self.key)
            raw = response["Body"].read()
        except Exception as exc:
            if not_found(exc) and error_code(exc) != "NoSuchBucket":
                return PipelineState(pipeline=self.pipeline), 0
            raise translate(exc, f"cannot read state {self.describe()}", StateError) from exc
        try:
            doc = json.loads(raw)
            state, version = PipelineState.from_json(doc["state"]), int(doc["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"state {self.describe()} is corrupt: {exc}") from exc
        self._etags[version] = str(response["ETag"])
        return state, version

    def commit(self, state: PipelineState, expected_version: int) -> int:
        version = expected_version + 1
        body = json.dumps({"version": version, "state": state.to_json()}, indent=1, default=str)
        condition: dict[str, str]
        if expected_version == 0:
            condition = {"IfNoneMatch": "*"}
        else:
            etag = self._etags.get(expected_version)
            if etag is None:
                _, current = self.read()
                if current != expected_version:
                    raise self._conflict(expected_version, current)
                etag = self._etags[expected_version]
            condition = {"IfMatch": etag}
        crash_point("mid_state_write")
        try:
            response = self.client.put_object(
                Bucket=self.location.bucket,
                Key=self.key,
                Body=body.encode("utf-8"),
                ContentType="application/json",
                **condition,
            )
        except Exception as exc:
            if _lost_race(exc):
                try:
                    _, current = self.read()
                except StateError:
                    current = -1
                raise self._conflict(expected_version, current) from exc
            raise translate(exc, f"cannot write state {self.describe()}", StateError) from exc
        self._etags = {version: str(response["ETag"])}
        return version

    def _conflict(self, expected: int, current: int) -> StateConflictError:
        return StateConflictError(
            f"state of {self.pipeline!r} moved from version {expected} to {current} under "
            f"this run ({self.describe()})"
        )

    def reset(self) -> bool:
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self.key)
        except Exception as exc:
            if not_found(exc):
                return False
            raise translate(exc, f"cannot read state {self.describe()}", StateError) from exc
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self.key)
        except Exception as exc:
            raise translate(exc, f"cannot delete state {self.describe()}", StateError) from exc
        self._etags.clear()
        return True

    # -- run lock -----------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        etag = self._acquire(run_id)
        lease = _Lease(self, run_id, etag)
        lease.start()
        try:
            yield
        finally:
            lease.stop()
            self._release(lease.etag)

    def _holder(self, run_id: str) -> bytes:
        return json.dumps(
            {
                "run_id": run_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "boot_id": _boot_id(),
                "ttl": self.lock_ttl,
                "renewed_at": time.time(),
            }
        ).encode("utf-8")

    def _put_lock(self, run_id: str, **condition: str) -> str:
        response = self.client.put_object(
            Bucket=self.location.bucket,
            Key=self.lock_key,
            Body=self._holder(run_id),
            ContentType="application/json",
            **condition,
        )
        return str(response["ETag"])

    def _acquire(self, run_id: str) -> str:
        where = f"s3://{self.location.bucket}/{self.lock_key}"
        for _ in range(3):
            try:
                return self._put_lock(run_id, IfNoneMatch="*")
            except Exception as exc:
                if not _lost_race(exc):
                    raise translate(exc, f"cannot take the run lock {where}", StateError) from exc
            try:
                response = self.client.get_object(Bucket=self.location.bucket, Key=self.lock_key)
                holder = json.loads(response["Body"].read())
            except Exception as exc:
                if not_found(exc):
                    continue  # released meanwhile: try to create it again
                raise translate(exc, f"cannot read the run lock {where}", StateError) from exc
            stale, why = self._stale(holder, response)
            if not stale:
                raise RunLockedError(
                    f"pipeline {self.pipeline!r} is already running (run {holder.get('run_id')}, "
                    f"pid {holder.get('pid')} on {holder.get('host')}); lock {where} "
                    f"expires {why}"
                )
            _log.warning(
                "stale_run_lock_taken_over",
                pipeline=self.pipeline,
                previous_run=holder.get("run_id"),
                reason=why,
            )
            try:
                return self._put_lock(run_id, IfMatch=str(response["ETag"]))
            except Exception as exc:
                if not _lost_race(exc):
                    raise translate(exc, f"cannot take the run lock {where}", StateError) from exc
        raise RunLockedError(f"pipeline {self.pipeline!r}: another run took the lock {where}")

    def _stale(self, holder: dict[str, Any], response: dict[str, Any]) -> tuple[bool, str]:
        """Whether the lease's holder is gone, and why (or when it expires)."""
        if (
            holder.get("host") == socket.gethostname()
            and holder.get("boot_id") == _boot_id()
            and isinstance(holder.get("pid"), int)
            and not _alive(holder["pid"])
        ):
            return True, "its process is gone"
        ttl = float(holder.get("ttl") or self.lock_ttl)
        modified = response.get("LastModified")
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        now_text = headers.get("date")
        if modified is None or now_text is None:
            return False, f"when not renewed for {ttl:.0f} s"
        age = (parsedate_to_datetime(now_text) - modified).total_seconds()
        if age > ttl:
            return True, f"not renewed for {age:.0f} s"
        return False, f"in {ttl - age:.0f} s unless renewed"

    def _release(self, etag: str | None) -> None:
        try:
            if etag is None:
                return
            self.client.delete_object(Bucket=self.location.bucket, Key=self.lock_key, IfMatch=etag)
        except Exception as exc:
            # Someone took the lease over (or the network is down): nothing of ours to free.
            _log.warning("run_lock_release_failed", pipeline=self.pipeline, error=str(exc))


class _Lease(threading.Thread):
    """Renews the lock every ttl/3 seconds until stopped."""

    def __init__(self, store: S3StateStore, run_id: str, etag: str) -> None:
        super().__init__(name=f"sluiceway-lease-{store.pipeline}", daemon=True)
        self.store = store
        self.run_id = run_id
        self.etag: str | None = etag
        self._stopped = threading.Event()

    def run(self) -> None:
        interval = max(self.store.lock_ttl / 3.0, 0.2)
        while not self._stopped.wait(interval):
            if self.etag is None:
                return
            try:
                self.etag = self.store._put_lock(self.run_id, IfMatch=self.etag)
            except Exception as exc:
                if _lost_race(exc):
                    _log.error(
                        "run_lock_lost",
                        pipeline=self.store.pipeline,
                        detail="another run took the lease over; this run's commits will conflict",
                    )
                    self.etag = None
                    return
                _log.warning(
                    "run_lock_renewal_failed", pipeline=self.store.pipeline, error=str(exc)
                )

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=30)
