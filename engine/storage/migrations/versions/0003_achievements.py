"""Earned achievements: user_achievement.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_achievement",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("achievement_id", sa.String(length=30), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("earned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points_reward", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("user_id", "achievement_id", "level"),
    )
    op.create_index(
        "ix_user_achievement_achievement", "user_achievement", ["achievement_id", "level"]
    )


def downgrade() -> None:
    op.drop_index("ix_user_achievement_achievement", table_name="user_achievement")
    op.drop_table("user_achievement")
