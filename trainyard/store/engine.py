"""Engines, transactions and migrations for SQLite and PostgreSQL.

SQLite is tuned for a single-machine control plane: WAL (readers never block the writer),
synchronous=NORMAL (a commit is durable across a process crash; only an OS crash can lose
the last few commits), a busy timeout so writers from other processes queue instead of
failing, and `BEGIN IMMEDIATE` for write transactions. Its files hold every job's
document (environment included), so they are created 0600 and tightened at start when
they are more open (SQLite gives the -wal and -shm files the database file's mode).

Every PostgreSQL session gets a statement timeout and a lock timeout (`DatabaseTimeouts`):
a request stuck behind a lock, or a query that runs away, fails with an error the API
answers 503 with the reason, instead of holding a connection and its client forever.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from trainyard.layout import create_private_dirs

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class DatabaseTimeouts:
    """PostgreSQL session limits in milliseconds (0 = none), set on every connection."""

    statement_ms: int = 15_000
    lock_ms: int = 3_000


def make_engine(url: str, *, timeouts: DatabaseTimeouts | None = None, **kwargs: Any) -> Engine:
    """An engine for `url` with Trainyard's connection settings applied."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            make_sqlite_files_private(Path(parsed.database))
        engine = create_engine(
            url,
            # isolation_level=None: the sqlite3 module issues no BEGIN of its own; ours are
            # explicit (see write_transaction). Doing it here rather than with SQLAlchemy
            # "begin" event listeners keeps every statement off the event-dispatch path.
            connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
            pool_size=16,
            max_overflow=16,
            **kwargs,
        )
        event.listen(engine.pool, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True, **kwargs)
    if engine.dialect.name == "postgresql":
        limits = timeouts or DatabaseTimeouts()

        def session_limits(dbapi_connection: Any, _record: Any) -> None:
            _set_session_limits(dbapi_connection, limits)

        event.listen(engine.pool, "connect", session_limits)
    return engine


def _set_session_limits(dbapi_connection: Any, limits: DatabaseTimeouts) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
        (f"{int(limits.statement_ms)}ms", f"{int(limits.lock_ms)}ms"),
    )
    cursor.close()
    dbapi_connection.commit()


def make_sqlite_files_private(database: Path) -> None:
    """Create the database file (and its directory) private, or make them private.

    A directory Trainyard creates is 0700; an existing one is left as it is (it may be
    a shared parent chosen by the operator; $TRAINYARD_HOME itself is tightened by the
    app). The database file is created 0600 before SQLite opens it, and the database,
    WAL, shared-memory and journal files are tightened to 0600 when they are more open.
    """
    create_private_dirs(database.parent)
    with suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    for suffix in SQLITE_SUFFIXES:
        path = database.with_name(database.name + suffix)
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077 and info.st_uid == os.getuid():
            os.chmod(path, 0o600)


# SQLSTATEs after which the transaction is known to be rolled back, and what they mean.
_REFUSALS = {
    "57014": "the statement ran past the statement timeout (TRAINYARD_DB_STATEMENT_TIMEOUT_MS)",
    "55P03": "a lock was not granted within the lock timeout (TRAINYARD_DB_LOCK_TIMEOUT_MS)",
    "40001": "a serialization conflict with a concurrent transaction",
    "40P01": "a deadlock with a concurrent transaction",
    "53300": "the database has no connection slot free",
}


def database_refusal(exc: DBAPIError) -> str | None:
    """Why the database refused the request, when it said so in a way worth passing on
    (a timeout, a lock, a conflict); None for other errors."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _REFUSALS:
        return _REFUSALS[sqlstate]
    message = str(exc.orig).lower() if exc.orig is not None else ""
    if "database is locked" in message or "database table is locked" in message:
        return "the SQLite database stayed locked by another writer past its busy timeout"
    return None


def commit_outcome_unknown(exc: DBAPIError) -> bool:
    """Whether a failed write transaction may nevertheless have committed.

    True when the connection broke (the COMMIT may have reached the server and its
    answer been lost); False when the database said why it refused (rolled back).
    """
    if exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and database_refusal(exc) is None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


_SQLITE_WRITERS: dict[int, threading.Lock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def _writer_lock(engine: Engine) -> threading.Lock:
    """One in-process lock per SQLite engine, so its writers queue in Python.

    SQLite admits one writer at a time anyway; when several threads race for it, the
    losers sleep in SQLite's busy handler with growing back-off (up to 100 ms per try),
    which shows up as a long latency tail. Queuing on a lock instead hands the database
    over as soon as the previous writer commits.
    """
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(id(engine), threading.Lock())


@contextmanager
def _sqlite_transaction(engine: Engine, begin: str) -> Iterator[Connection]:
    with engine.connect() as connection:
        connection.exec_driver_sql(begin)
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write; on SQLite it takes the write lock up front.

    `BEGIN IMMEDIATE` means two writers never both read and then collide when upgrading
    to a write lock (which SQLite resolves by failing one of them).
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            yield connection
        return
    with _writer_lock(engine), _sqlite_transaction(engine, "BEGIN IMMEDIATE") as connection:
        yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads (one consistent snapshot)."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as connection, connection.begin():
            yield connection
        return
    with _sqlite_transaction(engine, "BEGIN") as connection:
        yield connection


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is already there)."""
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            # A migration may rewrite a large table, and waits for a replica migrating
            # at the same moment: no session limits inside this transaction.
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
            # Two replicas starting together must not both create the tables.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7262746169)")
        command.upgrade(_alembic_config(connection), "head")


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this version of Trainyard."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
