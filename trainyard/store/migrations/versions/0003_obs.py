"""Observability: where each attempt's workers serve metrics, and the loop's counters.

`job_attempts.metrics_targets` is the scrape address of each worker of the attempt
({"<index>": "host:port"}, JSON), written by the loop from the backend's view and read
by the Prometheus service discovery route. `loop_stats` holds the scheduling loop's
cumulative cycle histogram, decision counters and last pending-reason snapshot, so every
API process exposes the same numbers and they survive a restart or a change of leader.

Revision ID: 0003_obs
Revises: 0003_tokens (re-chained after main merged 0003_tokens)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_obs"
down_revision = "0003_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_attempts") as batch:
        batch.add_column(sa.Column("metrics_targets", sa.Text, nullable=True))
    # /metrics counts waits and durations of recently started/finished jobs per scrape
    # and the older ones once (they never change): these make the recent range cheap.
    op.create_index("ix_jobs_started_at", "jobs", ["started_at"])
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_index("ix_job_attempts_admitted_at", "job_attempts", ["admitted_at"])
    op.create_table(
        "loop_stats",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_loop_stats"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_attempts_admitted_at", table_name="job_attempts")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_started_at", table_name="jobs")
    op.drop_table("loop_stats")
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_column("metrics_targets")
