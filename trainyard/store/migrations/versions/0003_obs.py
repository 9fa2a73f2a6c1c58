"""Observability: where each attempt's workers serve metrics, and the loop's counters.

`job_attempts.metrics_targets` is the scrape address of each worker of the attempt
({"<index>": "host:port"}, JSON), written by the loop from the backend's view and read
by the Prometheus service discovery route. `loop_stats` holds the scheduling loop's
cumulative cycle histogram, decision counters and last pending-reason snapshot, so every
API process exposes the same numbers and they survive a restart or a change of leader.

Revision ID: 0003_obs
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_obs"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_attempts") as batch:
        batch.add_column(sa.Column("metrics_targets", sa.Text, nullable=True))
    op.create_table(
        "loop_stats",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_loop_stats"),
    )


def downgrade() -> None:
    op.drop_table("loop_stats")
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_column("metrics_targets")
