"""Revocable, expiring tokens; the stored size of each job document.

`tokens.expires_at` / `tokens.revoked_at`: a token is refused once either has passed. The
API looks every token up in the store on every request (no cache), so a revocation is
seen at once by every process and replica.

`jobs.spec_bytes`: the length of the stored job document, so a list page can be cut at
a byte budget by the database without reading the documents it will not return.

Revision ID: 0003_tokens
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_tokens"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.BigInteger, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spec_bytes", sa.Integer, nullable=False, server_default="0"))
    # The stored documents are ASCII (the store escapes everything else): characters = bytes.
    op.execute("UPDATE jobs SET spec_bytes = length(spec)")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spec_bytes")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
