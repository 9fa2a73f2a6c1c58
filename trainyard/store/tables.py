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
    Float,
    ForeignKey,
    ForeignKeyConstraint,
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
MAX_ROW_ID = 2**63 - 1
"""The largest id a RowId column holds (64-bit signed on both databases)."""

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
    # The scheduling loop's bookkeeping. `attempt` counts admissions (worker identity is
    # job id + attempt + index); `failures` counts failed attempts against `retries`;
    # a retried job is not offered to the core before `not_before` (backoff). A set
    # `stop_target` means "stop every worker, then move the job to this state" (cancel
    # of a running job, preemption, a failed gang, max_runtime): the job keeps its
    # state, and its resources, until the backend reports no worker left.
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("not_before", BigInteger, nullable=True),
    Column("stop_target", String(16), nullable=True),
    Column("stop_reason", Text, nullable=True),
    Column("attempt_started_at", BigInteger, nullable=True),
    # Length of `spec` (ASCII, so bytes): list pages are cut at a byte budget with it.
    Column("spec_bytes", Integer, nullable=False, server_default="0"),
    # When the scheduler's forward simulation expects a pending job to start (advisory,
    # refreshed every few cycles without touching `version` or `updated_at`).
    Column("estimated_start", BigInteger, nullable=True),
    # A model service's {"<replica index>": <revision of its document>} as JSON text,
    # written by the loop with each replica it places (operator/rollout.py): a rolling
    # update replaces the replicas whose revision is not the document's.
    Column("replica_revisions", Text, nullable=True),
    UniqueConstraint("owner", "idempotency_key"),
    # Keyset pagination, newest first, for the filters the API offers.
    Index(None, "owner", "seq"),
    Index(None, "state", "seq"),
    Index(None, "owner", "state", "seq"),
    Index(None, "queue", "state", "seq"),
    # The loop's incremental read: jobs changed since its last cycle.
    Index(None, "updated_at"),
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

# One row per admission of a job: where it ran, what it held and how it ended; the
# source of usage accounting (GPU-hours per queue and owner) and of `attempt` history.
job_attempts = Table(
    "job_attempts",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("queue", String(63), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("placement", Text, nullable=False),
    Column("workers", Integer, nullable=False),
    # Per worker.
    Column("cpu_millicores", BigInteger, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("tpu_chips", Integer, nullable=False),
    Column("accelerator_model", String(253), nullable=True),
    Column("admitted_at", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("reason", Text, nullable=True),
    Column("energy_joules", Float, nullable=True),
    # {"<worker index>": "host:port"} as JSON text: where each worker serves Prometheus
    # metrics (the backend's `WorkerStatus.metrics_address`), for service discovery.
    Column("metrics_targets", Text, nullable=True),
    Index(None, "ended_at"),
    Index(None, "admitted_at"),
)

# A model service's replica count within one attempt, as a rolling update's surge or the
# autoscaler changes it: from `at` on the attempt holds `workers` replicas (`delta` more
# than before), until the next row or its end. job_attempts.workers is the count it
# started with; usage accounting integrates the count over time from these rows.
attempt_replicas = Table(
    "attempt_replicas",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("at", BigInteger, primary_key=True),
    Column("workers", Integer, nullable=False),
    Column("delta", Integer, nullable=False),
    ForeignKeyConstraint(
        ["job_id", "attempt"],
        ["job_attempts.job_id", "job_attempts.attempt"],
        ondelete="CASCADE",
    ),
)

# The node view the loop schedules on, published by the loop whenever it changes, so
# every API process and replica shows the same capacity (GET /v1/cluster, metrics).
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", String(253), primary_key=True),
    # JSON: allocatable, labels, taints, readiness and what other workloads use.
    Column("node", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Leader election in the store: the loop acts only while it holds the row named after
# its store ("scheduler"), renewing it before `expires_at`. `wake_address` is where the
# holder listens for wake-up datagrams (a submit or cancel wakes it at once).
leases = Table(
    "leases",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("acquired_at", BigInteger, nullable=False),
    Column("renewed_at", BigInteger, nullable=False),
    Column("wake_address", String(255), nullable=True),
)

# The scheduling loop's own metrics, cumulative, as one JSON document per name (the
# loop writes at most about once a second): every API process reads the same numbers,
# and they survive restarts and changes of leader.
loop_stats = Table(
    "loop_stats",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("data", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
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
    # A token is refused once it has expired or been revoked (both optional).
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)

# A model service's reachable replicas, published by the loop whenever they change, so
# the API (any process, any replica) proxies /predict to ready replicas without asking
# the backend. `endpoint`: where users reach the service (the control plane's proxy
# route locally, the Service's DNS name and port on Kubernetes); `ready`: JSON list of
# "host:port" of replicas whose health route answers.
service_endpoints = Table(
    "service_endpoints",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("endpoint", Text, nullable=True),
    Column("ready", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# The checkpoints a job's output directory held when one of its pods last reported it
# (Kubernetes: worker 0's termination message; see trainyard.checkpoint_index), for
# listing them where the control plane cannot read the job's claim. Replaced as a whole
# by each newer report; deleted with the job's storage by the retention sweep.
job_checkpoints = Table(
    "job_checkpoints",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("attempt", Integer, nullable=True),  # the attempt that wrote it
    Column("written_at", BigInteger, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("reported_attempt", Integer, nullable=False),  # the attempt whose pod reported
    Column("reported_at", BigInteger, nullable=False),
)
