"""Table definitions (SQLAlchemy Core): the single source the migrations are written from.

Core tables rather than ORM classes: the submit path is one INSERT per table inside one
transaction, and Core keeps that path free of unit-of-work bookkeeping.

Times are integer microseconds since the Unix epoch (UTC): exact, sortable and identical
on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# BIGINT PRIMARY KEY is not a rowid alias in SQLite; INTEGER PRIMARY KEY is, and is the
# cheapest possible insert there.
RowId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    # Submission order: newest-first listing, cursors and queue position all use it, and
    # it never changes, so a preempted job keeps its place in line.
    Column("seq", RowId, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("owner", String(128), nullable=False),
    Column("name", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("queue", String(63), nullable=False),
    Column("priority", String(63), nullable=False),
    Column("priority_value", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    # The validated job document as JSON text (ASCII-escaped, so any string survives).
    Column("spec", Text, nullable=False),
    # {"<worker index>": "<node name>"} as JSON text, written by the scheduler.
    Column("placement", Text, nullable=True),
    Column("version", Integer, nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    UniqueConstraint("owner", "idempotency_key"),
    # Keyset pagination, newest first, for the filters the API offers.
    Index(None, "owner", "seq"),
    Index(None, "state", "seq"),
    Index(None, "owner", "state", "seq"),
    Index(None, "queue", "state", "seq"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Index(None, "job_id", "id"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)
