"""The core's state store on PostgreSQL (``state: {uri: postgresql://…}``).

One row per pipeline in a table (default ``sluiceway_state``): ``pipeline`` (the
primary key), ``version``, ``state`` (jsonb) and ``updated_at``. A commit is a
compare-and-swap on the version — ``UPDATE … WHERE pipeline = $1 AND version =
$2`` (an ``INSERT … ON CONFLICT DO NOTHING`` for the first) — so a run that lost
the race gets :class:`StateConflictError` instead of overwriting.

The run lock is ``pg_try_advisory_lock`` on a key derived from the table and the
pipeline, held by a dedicated session for the whole run: it is released when the
session ends, so a killed process leaves no stale lock. While the lock is held,
state commits go through that same session; if it is lost (the server
restarted), the store reconnects and takes the lock again before committing —
or fails with :class:`RunLockedError` if another run took it meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from sluiceway.connectors.postgres._connection import (
    PostgresConnection,
    connect_psycopg,
    translating,
)
from sluiceway.core.crash import crash_point
from sluiceway.core.errors import (
    RunLockedError,
    StateConflictError,
    StateError,
    TransientError,
)
from sluiceway.core.state import PipelineState

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["PostgresStateStore"]

_WHAT = "the postgres state store"
R = TypeVar("R")
_ATTEMPTS = 5


class PostgresStateStore:
    """Compare-and-swap state of one pipeline in a PostgreSQL table, plus a run lock."""

    def __init__(
        self, connection: PostgresConnection, pipeline: str, *, table: str = "sluiceway_state"
    ) -> None:
        self.connection = connection
        self.pipeline = pipeline
        self.table = table
        digest = hashlib.blake2b(f"sluiceway\x1f{table}\x1f{pipeline}".encode(), digest_size=8)
        self.lock_key = int.from_bytes(digest.digest(), "big", signed=True)
        self._session: psycopg.Connection[Any] | None = None
        self._run_id: str | None = None
        self._ready = False

    def describe(self) -> str:
        return f"{self.connection.describe()} table {self.table} (pipeline {self.pipeline})"

    # -- protocol -------------------------------------------------------------------

    def read(self) -> tuple[PipelineState, int]:
        from psycopg import sql

        def go(con: psycopg.Connection[Any]) -> tuple[PipelineState, int]:
            row = con.execute(
                sql.SQL("SELECT version, state FROM {} WHERE pipeline = %s").format(self._ident()),
                [self.pipeline],
            ).fetchone()
            if row is None:
                return PipelineState(pipeline=self.pipeline), 0
            doc = row[1] if isinstance(row[1], dict) else json.loads(row[1])
            try:
                return PipelineState.from_json(doc), int(row[0])
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(
                    f"state of {self.pipeline!r} in {self.table} is corrupt: {exc}"
                ) from exc

        return self._retrying("read the state", go)

    def commit(self, state: PipelineState, expected_version: int) -> int:
        """Store ``state`` if the stored version is still ``expected_version``.

        When the connection breaks during the commit its outcome is unknown: the
        store reconnects and reads the row back — our state at the next version
        means it landed; the old version means it did not (it is retried).
        """
        from psycopg import sql

        document = state.to_json()
        body = json.dumps(document, default=str)

        def go(con: psycopg.Connection[Any]) -> int:
            with con.transaction():
                if expected_version == 0:
                    row = con.execute(
                        sql.SQL(
                            "INSERT INTO {} (pipeline, version, state) VALUES (%s, 1, %s::jsonb) "
                            "ON CONFLICT (pipeline) DO NOTHING RETURNING version"
                        ).format(self._ident()),
                        [self.pipeline, body],
                    ).fetchone()
                else:
                    row = con.execute(
                        sql.SQL(
                            "UPDATE {} SET version = version + 1, state = %s::jsonb, "
                            "updated_at = now() WHERE pipeline = %s AND version = %s "
                            "RETURNING version"
                        ).format(self._ident()),
                        [body, self.pipeline, expected_version],
                    ).fetchone()
                if row is None:
                    current = con.execute(
                        sql.SQL("SELECT version FROM {} WHERE pipeline = %s").format(self._ident()),
                        [self.pipeline],
                    ).fetchone()
                    raise StateConflictError(
                        f"state of {self.pipeline!r} moved from version {expected_version} to "
                        f"{current[0] if current else 0} under this run"
                    )
                crash_point("mid_state_write")
            return int(row[0])

        for attempt in range(_ATTEMPTS):
            try:
                return self._once("commit the state", go)
            except _Lost:
                self._pause(attempt)
                stored, version = self.read()
                if version == expected_version + 1 and stored.to_json() == json.loads(body):
                    return version
                if version != expected_version:
                    raise StateConflictError(
                        f"state of {self.pipeline!r} moved from version {expected_version} to "
                        f"{version} under this run"
                    ) from None
        raise StateError(f"could not commit the state of {self.pipeline!r} in {self.describe()}")

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Hold the pipeline's advisory lock on a dedicated session for the block."""
        self._run_id = run_id
        try:
            self._session = self._locked_session()
            yield
        finally:
            session, self._session = self._session, None
            self._run_id = None
            if session is not None:
                with contextlib.suppress(Exception):
                    session.execute("SELECT pg_advisory_unlock(%s)", [self.lock_key])
                with contextlib.suppress(Exception):
                    session.close()

    def reset(self) -> bool:
        from psycopg import sql

        def go(con: psycopg.Connection[Any]) -> bool:
            deleted = con.execute(
                sql.SQL("DELETE FROM {} WHERE pipeline = %s").format(self._ident()),
                [self.pipeline],
            )
            return deleted.rowcount > 0

        return self._retrying("reset the state", go)

    # -- sessions -------------------------------------------------------------------

    def _ident(self) -> sql.Identifier:
        from psycopg import sql

        return sql.Identifier(*self.table.split(".", 1))

    def _connect(self) -> psycopg.Connection[Any]:
        con = connect_psycopg(self.connection, autocommit=True, error=StateError, what=_WHAT)
        if not self._ready:
            from psycopg import sql

            try:
                with translating("create the state table", StateError):
                    name = self._ident().as_string(con)
                    found = con.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
                    if not (found and found[0]):  # creating needs a privilege using does not
                        con.execute(
                            sql.SQL(
                                "CREATE TABLE IF NOT EXISTS {} (pipeline text PRIMARY KEY, "
                                "version bigint NOT NULL, state jsonb NOT NULL, "
                                "updated_at timestamptz NOT NULL DEFAULT now())"
                            ).format(self._ident())
                        )
            except BaseException:
                con.close()
                raise
            self._ready = True
        return con

    def _locked_session(self) -> psycopg.Connection[Any]:
        con = self._connect()
        try:
            with translating("take the run lock", StateError):
                con.execute(
                    "SELECT set_config('application_name', %s, false)",
                    [f"sluiceway {self.pipeline} run {self._run_id}"[:63]],
                )
                row = con.execute("SELECT pg_try_advisory_lock(%s)", [self.lock_key]).fetchone()
                if row and row[0]:
                    return con
                holder = con.execute(
                    "SELECT a.application_name, a.pid, a.client_addr::text "
                    "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a USING (pid) "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    "AND ((l.classid::int8 << 32) | l.objid::int8) = %s LIMIT 1",
                    [self.lock_key],
                ).fetchone()
        except BaseException:
            con.close()
            raise
        con.close()
        who = f"{holder[0] or 'a session'} (pid {holder[1]})" if holder else "another session"
        raise RunLockedError(
            f"pipeline {self.pipeline!r} is already running: {who} holds its lock in "
            f"{self.describe()}"
        )

    def _retrying(self, action: str, go: Callable[[psycopg.Connection[Any]], R]) -> R:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._once(action, go)
            except _Lost as exc:
                if attempt == _ATTEMPTS:
                    raise StateError(f"could not {action} in {self.describe()}: {exc}") from exc
                self._pause(attempt - 1)
        raise AssertionError("unreachable")

    def _once(self, action: str, go: Callable[[psycopg.Connection[Any]], R]) -> R:
        """``go(connection)`` on the lock session (or a short one); :class:`_Lost` if it broke.

        A lost lock session is replaced, and the lock taken again, before raising
        (:class:`RunLockedError` if another run took it meanwhile).
        """
        own = self._session is None
        con: psycopg.Connection[Any] | None = None
        try:
            con = self._connect() if own else self._session
            assert con is not None
            with translating(action, StateError):
                return go(con)
        except TransientError as exc:
            if not own:
                if con is not None:
                    with contextlib.suppress(Exception):
                        con.close()
                self._session = None
                self._session = self._wait(self._locked_session)
            raise _Lost(str(exc)) from exc
        finally:
            if own and con is not None:
                with contextlib.suppress(Exception):
                    con.close()

    def _wait(self, connect: Callable[[], psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
        """Reconnect, waiting out a server restart (a few seconds, growing)."""
        for attempt in range(_ATTEMPTS):
            try:
                return connect()
            except TransientError:
                if attempt == _ATTEMPTS - 1:
                    raise
                self._pause(attempt)
        raise AssertionError("unreachable")

    def _pause(self, attempt: int = 0) -> None:
        time.sleep(min(0.5 * 2**attempt, 5.0))


class _Lost(Exception):
    """The session broke during an operation (its outcome is unknown)."""
