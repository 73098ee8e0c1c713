"""Fixtures of the PostgreSQL tests: a reachable server, and a schema per test.

The server is ``SLUICEWAY_TEST_PG_DSN`` when set, else the machine's at
127.0.0.1:5432 when it answers, else a throwaway cluster started from the installed
PostgreSQL binaries. A server that cannot be reached or started fails the tests
(never skips them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tests.integration.postgres.support import (
    DEFAULT_DSN,
    Cluster,
    Pg,
    Server,
    drop_schema,
    new_schema,
    reachable,
    throwaway_cluster,
)

TEST_DATABASE = "sluiceway_test"


def _ensure_database(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as con:
        exists = con.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [TEST_DATABASE]
        ).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                con.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    return psycopg.conninfo.make_conninfo(dsn, dbname=TEST_DATABASE)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """A reachable server (see the module docstring), with a test database."""
    configured = os.environ.get("SLUICEWAY_TEST_PG_DSN")
    if configured:
        if not reachable(configured):
            pytest.fail("SLUICEWAY_TEST_PG_DSN is set but the server does not answer")
        yield Server(_ensure_database(configured))
        return
    if reachable(DEFAULT_DSN):
        yield Server(_ensure_database(DEFAULT_DSN))
        return
    try:
        cluster_context = throwaway_cluster()
        cluster = cluster_context.__enter__()
    except Exception as exc:
        pytest.fail(f"no PostgreSQL server reachable and none could be started: {exc}")
    try:
        yield Server(_ensure_database(cluster.dsn))
    finally:
        cluster_context.__exit__(None, None, None)


@pytest.fixture
def pg(pg_server: Server) -> Iterator[Pg]:
    """A schema of this test's own (dropped afterwards) in the test database."""
    schema = new_schema(pg_server.dsn)
    try:
        yield Pg(pg_server.dsn, schema)
    finally:
        drop_schema(pg_server.dsn, schema)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A throwaway cluster for this test alone (it may restart it)."""
    try:
        context = throwaway_cluster()
        cluster = context.__enter__()
    except Exception as exc:
        pytest.fail(f"cannot start a throwaway PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        context.__exit__(None, None, None)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"
