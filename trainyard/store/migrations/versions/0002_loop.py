"""The scheduling loop's columns and tables: attempts, stop requests, backoff, the lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("not_before", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("stop_target", sa.String(16), nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("attempt_started_at", sa.BigInteger, nullable=True))

    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at"])

    op.create_table(
        "job_attempts",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("queue", sa.String(63), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("placement", sa.Text, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("cpu_millicores", sa.BigInteger, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("tpu_chips", sa.Integer, nullable=False),
        sa.Column("accelerator_model", sa.String(253), nullable=True),
        sa.Column("admitted_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("energy_joules", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("job_id", "attempt", name="pk_job_attempts"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_attempts_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_attempts_ended_at", "job_attempts", ["ended_at"])

    op.create_table(
        "cluster_nodes",
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_nodes"),
    )

    op.create_table(
        "leases",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("acquired_at", sa.BigInteger, nullable=False),
        sa.Column("renewed_at", sa.BigInteger, nullable=False),
        sa.Column("wake_address", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("cluster_nodes")
    op.drop_index("ix_job_attempts_ended_at", table_name="job_attempts")
    op.drop_table("job_attempts")
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in (
            "attempt_started_at",
            "stop_reason",
            "stop_target",
            "not_before",
            "failures",
            "attempt",
        ):
            batch.drop_column(name)
