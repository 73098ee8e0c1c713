"""PostgreSQL servers for the tests, tables of every type, and a source of Arrow tables.

:func:`find_server` returns a reachable server: the DSN in ``SLUICEWAY_TEST_PG_DSN``
if set, else ``postgres@127.0.0.1:5432`` if it answers, else a cluster started with
the installed PostgreSQL binaries (``initdb`` + ``pg_ctl``) on a free port in a
temporary folder. :class:`Cluster` is that throwaway cluster; the restart test
uses one of its own so it can ``pg_ctl restart`` it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from sluiceway.connectors.postgres import PostgresConnection
from sluiceway.core import (
    BaseExtractor,
    Batch,
    Intent,
    PartitionSpan,
    RetryPolicy,
)

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))]
FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, jitter=0.0)
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


def _binary(name: str) -> str:
    for directory in BIN_DIRS:
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL binary {name!r} not found in {BIN_DIRS} or PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as con:
            con.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@dataclass
class Cluster:
    """A PostgreSQL cluster of our own, in a temporary folder, on a free port."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=3"

    def init(self) -> Cluster:
        if self._owner is not None:  # PostgreSQL refuses to run as root
            os.chown(self.root, *self._owner)
        self._run(
            [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        )
        return self

    @property
    def _owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root and there is no 'postgres' user to own a cluster"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _run(self, argv: list[str]) -> None:
        owner = self._owner
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
            cwd=self.root,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
        )

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c max_connections=60 -c shared_buffers=64MB"
        )
        self._run([_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "60", *args])

    def start(self) -> Cluster:
        self._ctl("-l", str(self.root / "log"), "start")
        return self

    def restart(self) -> None:
        self._ctl("-m", "fast", "-l", str(self.root / "log"), "restart")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="sluiceway-pg-"))
    cluster = Cluster(root).init().start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Server:
    """A reachable server and the admin DSN to it."""

    dsn: str

    def database_dsn(self, dbname: str) -> str:
        return psycopg.conninfo.make_conninfo(self.dsn, dbname=dbname)


@dataclass
class Pg:
    """One test's corner of the server: a schema of its own in the test database."""

    dsn: str
    schema: str

    def connection(self) -> PostgresConnection:
        return PostgresConnection(dsn=_secret(self.dsn), connect_timeout=5)

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def execute(self, statement: str | sql.Composable, params: Sequence[Any] | None = None) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(f"SET search_path TO {self.schema}, public")
            con.execute(statement, params)  # type: ignore[arg-type]

    def rows(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(f"SET search_path TO {self.schema}, public")
            return list(con.execute(statement, params).fetchall())  # type: ignore[arg-type]

    def scalar(self, statement: str, params: Sequence[Any] | None = None) -> Any:
        return self.rows(statement, params)[0][0]


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def new_schema(dsn: str) -> str:
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name


def drop_schema(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class TablesExtractor(BaseExtractor[dict[str, Any]]):
    """Serves Arrow tables, one batch each, as consecutive row offsets of partition ``p0``."""

    type_name = "tables"

    def __init__(self, tables: Sequence[pa.Table]) -> None:
        super().__init__(batch_size=max([t.num_rows for t in tables] + [1]))
        self.tables = list(tables)
        self.starts: list[int] = []
        total = 0
        for table in self.tables:
            self.starts.append(total)
            total += table.num_rows

    def batch(self, index: int) -> Batch:
        start, table = self.starts[index], self.tables[index]
        return Batch.from_source(
            table, {"p0": PartitionSpan(start, start + table.num_rows, table.num_rows)}
        )

    def extract(self) -> Iterator[Batch]:
        done = int(self.context.positions.get("p0", 0))
        for index, start in enumerate(self.starts):
            if start >= done:
                yield self.batch(index)

    def replay(self, intent: Intent) -> Batch:
        return self.batch(self.starts.index(intent.positions["p0"].start))


ALL_TYPES_DDL = """
CREATE TYPE {schema}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN {schema}.positive AS integer CHECK (VALUE > 0);
CREATE TABLE {schema}.all_types (
    id bigint PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, pos {schema}.positive,
    n numeric(12, 2), n_free numeric, r real, d double precision, b boolean,
    t text, vc varchar(10), ch char(3),
    u uuid, dt date, tm time, ts timestamp, tstz timestamptz, iv interval,
    by bytea, j json, jb jsonb,
    a_int integer[], a_text text[], a_num numeric[],
    m {schema}.mood, ip inet
);
INSERT INTO {schema}.all_types VALUES
 (1, -32768, 2147483647, 9223372036854775807, 7,
  1234567890.12, 12345678901234567890.123456789, 2.5, 1.0e308, true,
  'héllo ✓', 'abc', 'ab',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.999999',
  '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02',
  '1 year 2 mons 3 days 04:05:06.789',
  '\\xdeadbeef', '{"a": 1}', '{"b": [1, 2]}',
  '{1,NULL,3}', '{"x","y z"}', '{1.5,2}',
  'happy', '10.0.0.1'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, -1, -9223372036854775808, 1,
  -0.01, -0.5, -1.25, -0.0, false,
  '', '', '',
  '00000000-0000-0000-0000-000000000000', '1970-01-01', '00:00:00',
  '1900-01-01 00:00:00', '2262-04-11 23:47:16.854775+00', '-3 days -00:00:01',
  '\\x', '[]', '{}',
  '{}', '{}', '{}',
  'sad', '::1');
"""

#: Columns as the source delivers them to Arrow (rows 1, 2 and 3 of ALL_TYPES_DDL).
ALL_TYPES_ARROW = {
    "id": pa.int64(),
    "i2": pa.int16(),
    "i4": pa.int32(),
    "i8": pa.int64(),
    "pos": pa.int32(),
    "n": pa.decimal128(12, 2),
    "n_free": pa.decimal128(38, 9),
    "r": pa.float32(),
    "d": pa.float64(),
    "b": pa.bool_(),
    "t": pa.string(),
    "vc": pa.string(),
    "ch": pa.string(),
    "u": pa.string(),
    "dt": pa.date32(),
    "tm": pa.time64("us"),
    "ts": pa.timestamp("us"),
    "tstz": pa.timestamp("us", tz="UTC"),
    "iv": pa.struct([("months", pa.int32()), ("days", pa.int32()), ("nanos", pa.int64())]),
    "by": pa.binary(),
    "j": pa.string(),
    "jb": pa.string(),
    "a_int": pa.list_(pa.int32()),
    "a_text": pa.list_(pa.string()),
    "a_num": pa.list_(pa.string()),
    "m": pa.string(),
    "ip": pa.string(),
}


def all_types_expected() -> list[dict[str, Any]]:
    import datetime as dt
    from decimal import Decimal

    utc = dt.UTC
    return [
        {
            "id": 1,
            "i2": -32768,
            "i4": 2147483647,
            "i8": 9223372036854775807,
            "pos": 7,
            "n": Decimal("1234567890.12"),
            "n_free": Decimal("12345678901234567890.123456789"),
            "r": 2.5,
            "d": 1.0e308,
            "b": True,
            "t": "héllo ✓",
            "vc": "abc",
            "ch": "ab ",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "dt": dt.date(2024, 2, 29),
            "tm": dt.time(23, 59, 59, 999999),
            "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
            "tstz": dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=utc),
            "iv": {"months": 14, "days": 3, "nanos": 14_706_789_000_000},
            "by": b"\xde\xad\xbe\xef",
            "j": '{"a": 1}',
            "jb": '{"b": [1, 2]}',
            "a_int": [1, None, 3],
            "a_text": ["x", "y z"],
            "a_num": ["1.5", "2"],
            "m": "happy",
            "ip": "10.0.0.1/32",
        },
        {"id": 2, **{name: None for name in ALL_TYPES_ARROW if name != "id"}},
        {
            "id": 3,
            "i2": 0,
            "i4": -1,
            "i8": -9223372036854775808,
            "pos": 1,
            "n": Decimal("-0.01"),
            "n_free": Decimal("-0.5"),
            "r": -1.25,
            "d": -0.0,
            "b": False,
            "t": "",
            "vc": "",
            "ch": "   ",
            "u": "00000000-0000-0000-0000-000000000000",
            "dt": dt.date(1970, 1, 1),
            "tm": dt.time(0, 0),
            "ts": dt.datetime(1900, 1, 1),
            "tstz": dt.datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=utc),
            "iv": {"months": 0, "days": -3, "nanos": -1_000_000_000},
            "by": b"",
            "j": "[]",
            "jb": "{}",
            "a_int": [],
            "a_text": [],
            "a_num": [],
            "m": "sad",
            "ip": "::1/128",
        },
    ]


def create_all_types(pg: Pg, table: str = "all_types") -> None:
    """The table of every type (rows as :func:`all_types_expected`) in the test's schema."""
    ddl = ALL_TYPES_DDL.replace("{schema}", pg.schema).replace(".all_types", f".{table}")
    if table != "all_types":
        ddl = ddl.split(";", 2)[2]  # the types exist already
    pg.execute(ddl)
