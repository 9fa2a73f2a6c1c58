"""Rolling updates of model services: which revision of its document each replica runs.

Revision ID: 0005_rollout
Revises: 0005_ckpt
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rollout"
down_revision = "0005_ckpt"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("replica_revisions", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("replica_revisions")
