"""Archived standings of ended leaderboard periods: leaderboard_period, leaderboard_archive.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leaderboard_period",
        sa.Column("window", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("window", "period"),
    )
    op.create_table(
        "leaderboard_archive",
        sa.Column("window", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("window", "period", "user_id"),
    )
    op.create_index(
        "ix_leaderboard_archive_rank", "leaderboard_archive", ["window", "period", "rank"]
    )


def downgrade() -> None:
    op.drop_index("ix_leaderboard_archive_rank", table_name="leaderboard_archive")
    op.drop_table("leaderboard_archive")
    op.drop_table("leaderboard_period")
