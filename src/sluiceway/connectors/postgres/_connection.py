"""Reaching a PostgreSQL server, and translating what its client libraries raise.

Two client libraries talk to the server: psycopg for control statements and
transactions (catalogue reads, DDL, merges, the ledger, the state store) and the
ADBC PostgreSQL driver for bulk data (``COPY … (FORMAT binary)`` decoded into
Arrow in C++, and Arrow encoded into ``COPY`` for loads). Both are imported only
when a connection is opened. Their exceptions are translated here, once, into
sluiceway's: what a retry may fix (connection lost, serialization failure,
deadlock, server shutting down) becomes :class:`TransientError`, a value or a row
the database refuses becomes :class:`DataError`, the rest is fatal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from sluiceway.core.errors import (
    DataError,
    FatalError,
    SinkError,
    SluicewayError,
    TransientError,
)
from sluiceway.plugins import require

if TYPE_CHECKING:
    from typing import TypeAlias

    import adbc_driver_manager
    import psycopg

    AdbcHandles: TypeAlias = tuple[
        adbc_driver_manager.AdbcDatabase, adbc_driver_manager.AdbcConnection
    ]

__all__ = [
    "PostgresConnection",
    "connect_adbc",
    "connect_psycopg",
    "db_message",
    "is_connection_error",
    "is_row_error",
    "names_a_file",
    "sqlstate",
    "translate",
    "translate_stream",
    "translating",
]

_EXTRA = "postgres"

#: SQLSTATE classes and codes a retry may fix.
_TRANSIENT_CLASSES = ("08", "40", "53")
_TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "55P03", "58030", "57014"})
#: SQLSTATE classes of errors caused by the values of a row (data exception,
#: integrity constraint violation).
_ROW_CLASSES = ("22", "23")


@dataclass(frozen=True, slots=True)
class PostgresConnection:
    """How to reach a server: a DSN (URI or ``key=value`` string) and/or libpq fields.

    Fields given explicitly override the same keys of the DSN; ``params`` passes any
    other libpq keyword (``target_session_attrs``, ``keepalives`` …). TLS keys
    (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``) are passed through as they
    are. Unset keys fall back to libpq's defaults and ``PG*`` environment variables.
    The DSN and the password are secrets: :meth:`describe` never shows them.
    """

    dsn: SecretStr | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: SecretStr | None = None
    dbname: str | None = None
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: int | None = 10
    application_name: str = "sluiceway"
    params: Mapping[str, str] = field(default_factory=dict)
    adbc_driver: str | None = None
    """The ADBC PostgreSQL driver to load for bulk reads and writes: a path to its shared
    library, or a name the ADBC driver manager resolves. None: the one the
    ``adbc-driver-postgresql`` package ships."""

    def conninfo(self, **overrides: str) -> str:
        """The libpq connection string (``key=value`` form), secrets included."""
        conninfo = require("psycopg.conninfo", extra=_EXTRA, what="the postgres connector")
        keys: dict[str, Any] = dict(self.params)
        for name in ("host", "user", "dbname", "sslmode", "sslrootcert", "sslcert", "sslkey"):
            value = getattr(self, name)
            if value is not None:
                keys[name] = value
        if self.port is not None:
            keys["port"] = str(self.port)
        if self.password is not None:
            keys["password"] = self.password.get_secret_value()
        if self.connect_timeout is not None:
            keys["connect_timeout"] = str(self.connect_timeout)
        keys.setdefault("application_name", self.application_name)
        keys.update(overrides)
        dsn = self.dsn.get_secret_value() if self.dsn is not None else ""
        try:
            text: str = conninfo.make_conninfo(dsn, **keys)
        except Exception as exc:  # psycopg.ProgrammingError: a malformed DSN
            # The DSN may hold a password: say what is wrong without echoing it.
            raise FatalError("invalid PostgreSQL connection string (dsn)") from exc
        return text

    def describe(self) -> str:
        """``postgresql://user@host:port/dbname`` without password or secrets."""
        conninfo = require("psycopg.conninfo", extra=_EXTRA, what="the postgres connector")
        try:
            keys = conninfo.conninfo_to_dict(self.conninfo())
        except Exception:
            return "postgresql://(invalid dsn)"
        user = f"{keys['user']}@" if keys.get("user") else ""
        host = str(keys.get("host") or "localhost")
        port = f":{keys['port']}" if keys.get("port") else ""
        dbname = str(keys.get("dbname") or "")
        return f"postgresql://{user}{host}{port}/{dbname}"


def connect_psycopg(
    connection: PostgresConnection, *, autocommit: bool, error: type[FatalError], what: str
) -> psycopg.Connection[Any]:
    """Open a psycopg connection; a refused or lost connection is a :class:`TransientError`."""
    client = require("psycopg", extra=_EXTRA, what=what)
    try:
        con: psycopg.Connection[Any] = client.connect(connection.conninfo(), autocommit=autocommit)
    except client.Error as exc:
        raise translate(exc, f"connect to {connection.describe()}", error) from exc
    return con


def names_a_file(driver: str) -> bool:
    """Whether an ``adbc_driver`` value is a path (not a name the driver manager resolves)."""
    return "/" in driver or "\\" in driver


def connect_adbc(
    connection: PostgresConnection, *, error: type[FatalError], what: str
) -> AdbcHandles:
    """Open an ADBC PostgreSQL connection (autocommit on) for bulk reads and writes."""
    manager = require("adbc_driver_manager", extra=_EXTRA, what=what)
    database: adbc_driver_manager.AdbcDatabase | None = None
    library = connection.adbc_driver
    if library is not None and names_a_file(library) and not Path(library).is_file():
        raise error(f"adbc_driver: no driver library at {library}")
    try:
        if library is None:
            driver = require("adbc_driver_postgresql", extra=_EXTRA, what=what)
            database = driver.connect(connection.conninfo())
        else:
            database = manager.AdbcDatabase(driver=library, uri=connection.conninfo())
        return database, manager.AdbcConnection(database)
    except manager.Error as exc:
        if database is not None:
            with contextlib.suppress(Exception):
                database.close()
        raise translate(exc, f"connect to {connection.describe()}", error) from exc


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE a psycopg or ADBC error carries, if any."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state:
        return state
    diag = getattr(exc, "diag", None)
    state = getattr(diag, "sqlstate", None) if diag is not None else None
    return state if isinstance(state, str) and state else None


def db_message(exc: BaseException) -> str:
    """The server's message (primary text plus detail), without the echoed SQL."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    detail = getattr(diag, "message_detail", None) if diag is not None else None
    details = getattr(exc, "details", None)
    if primary is None and isinstance(details, list):
        fields = {
            key.decode(errors="replace") if isinstance(key, bytes) else str(key): (
                value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            )
            for key, value in details
        }
        primary = fields.get("PG_DIAG_MESSAGE_PRIMARY")
        detail = fields.get("PG_DIAG_MESSAGE_DETAIL")
    if primary:
        return f"{primary} ({detail})" if detail else str(primary)
    text = str(exc).strip()
    for marker in ("ERROR:  ", "FATAL:  "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = text.split("\nQuery was:", 1)[0].split(". SQLSTATE:", 1)[0]
    return " ".join(text.split()) or type(exc).__name__


def is_row_error(exc: BaseException) -> bool:
    """True for errors caused by a row's values (bad value, constraint violation)."""
    state = sqlstate(exc)
    return state is not None and state.startswith(_ROW_CLASSES)


def is_connection_error(exc: BaseException) -> bool:
    """True when the session itself is gone or unusable (reconnect before retrying)."""
    state = sqlstate(exc)
    if state is not None:
        return state.startswith("08") or state in {"57P01", "57P02", "57P03"}
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is installed with the connector
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    status = getattr(exc, "status_code", None)
    return getattr(status, "name", None) in {"IO", "INVALID_STATE", "CANCELLED", "TIMEOUT"}


def _transient(exc: BaseException) -> bool:
    state = sqlstate(exc)
    if state is not None:
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_CODES
    return is_connection_error(exc)


def translate(exc: BaseException, action: str, fatal: type[FatalError]) -> SluicewayError:
    """The sluiceway error for a client library's exception raised while doing ``action``.

    ``fatal`` is the error type for what neither a retry nor dead-lettering fixes
    (:class:`SourceError`, :class:`SinkError` or :class:`StateError`).
    """
    message = db_message(exc)
    state = sqlstate(exc)
    code = f" [{state}]" if state else ""
    if _transient(exc):
        return TransientError(f"PostgreSQL: could not {action}: {message}{code}")
    if fatal is SinkError and is_row_error(exc):
        return DataError(f"PostgreSQL refused the batch: {message}{code}")
    return fatal(f"PostgreSQL: could not {action}: {message}{code}")


@contextlib.contextmanager
def translating(action: str, fatal: type[FatalError]) -> Iterator[None]:
    """Translate psycopg and ADBC exceptions raised inside the block (see :func:`translate`)."""
    try:
        yield
    except SluicewayError:
        raise
    except Exception as exc:
        if _is_client_error(exc):
            raise translate(exc, action, fatal) from exc
        raise


#: Words of libpq messages that arrive without a SQLSTATE (through an Arrow stream)
#: and mean the session was lost or the statement may succeed when retried.
_TRANSIENT_TEXT = (
    "terminating connection",
    "server closed the connection",
    "connection to server",
    "could not receive data",
    "could not send data",
    "no connection to the server",
    "ssl syscall",
    "ssl error",
    "deadlock detected",
    "could not serialize",
    "conflict with recovery",
    "the database system is",
)


def translate_stream(exc: BaseException, action: str, fatal: type[FatalError]) -> SluicewayError:
    """Translate an error the driver's Arrow stream raised (an ``OSError`` with libpq's text)."""
    message = " ".join(str(exc).replace("[libpq]", "").split()) or type(exc).__name__
    if any(word in message.lower() for word in _TRANSIENT_TEXT):
        return TransientError(f"PostgreSQL: could not {action}: {message}")
    return fatal(f"PostgreSQL: could not {action}: {message}")


def _is_client_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("psycopg", "adbc_driver_manager", "adbc_driver_postgresql"))
