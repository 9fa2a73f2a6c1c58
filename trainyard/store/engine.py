"""Engines, transactions and migrations for SQLite and PostgreSQL.

SQLite is tuned for a single-machine control plane: WAL (readers never block the writer),
synchronous=NORMAL (a commit is durable across a process crash; only an OS crash can lose
the last few commits), a busy timeout so writers from other processes queue instead of
failing, and `BEGIN IMMEDIATE` for write transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` with Trainyard's connection settings applied."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True, **kwargs)


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
