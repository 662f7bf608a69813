"""Streak freezes: point_activity.frozen_days, the days an activity froze (nullable), and
user_streak_freeze, the freezes each user holds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("point_activity", sa.Column("frozen_days", sa.Text(), nullable=True))
    op.create_table(
        "user_streak_freeze",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("user_streak_freeze")
    with op.batch_alter_table("point_activity") as batch:
        batch.drop_column("frozen_days")
