"""Checkpoints reported by pods: what a job's claim holds, for listing on Kubernetes.

Revision ID: 0005_ckpt
Revises: 0004_infer
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_ckpt"
down_revision = "0004_infer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_checkpoints",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step", sa.BigInteger, primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("written_at", sa.BigInteger, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("reported_attempt", sa.Integer, nullable=False),
        sa.Column("reported_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_checkpoints")
