"""Model services: the ready replicas and endpoint of each service job.

Revision ID: 0004_infer
Revises: 0003_tokens
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_infer"
down_revision = "0003_estimates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_endpoints",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("endpoint", sa.Text, nullable=True),
        sa.Column("ready", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_endpoints")
