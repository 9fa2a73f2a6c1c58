"""Replica counts of model services within an attempt (rolling-update surges and the
autoscaler change them), for usage accounting.

Revision ID: 0006_k8ssvc
Revises: 0005_rollout
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_k8ssvc"
down_revision = "0005_rollout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempt_replicas",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("at", sa.BigInteger, primary_key=True),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id", "attempt"],
            ["job_attempts.job_id", "job_attempts.attempt"],
            name="fk_attempt_replicas_job_id_job_attempts",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("attempt_replicas")
