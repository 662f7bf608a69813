"""User deletion: deleted_user, the tombstones of deleted users (by the digest of the id).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_user",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("crc", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_deleted_user_expires", "deleted_user", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_deleted_user_expires", table_name="deleted_user")
    op.drop_table("deleted_user")
