"""Initial schema: point_activity, user_score, weekly_goal, side_quest, user_side_quest.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 04:20:06.981048
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "point_activity",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("activity_type", sa.String(length=30), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("tier_at_time", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total_points", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("current_streak_days", sa.Integer(), nullable=False),
        sa.Column("longest_streak_days", sa.Integer(), nullable=False),
        sa.Column("last_activity_date", sa.Date(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("point_activity", schema=None) as batch_op:
        batch_op.create_index(
            "ix_point_activity_type_created",
            ["activity_type", sa.literal_column("created_at DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_point_activity_user_created",
            ["user_id", sa.literal_column("created_at DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_point_activity_user_type", ["user_id", "activity_type"], unique=False
        )
        batch_op.create_index(
            "ix_point_activity_created", ["created_at"], unique=False, postgresql_using="brin"
        )

    op.create_table(
        "side_quest",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("quest_type", sa.String(length=30), nullable=False),
        sa.Column("difficulty", sa.String(length=20), nullable=False),
        sa.Column("points_reward", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("activity_type", sa.String(length=30), nullable=False),
        sa.Column("target_count", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "user_score",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("total_points", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tier", sa.String(length=20), nullable=False, server_default=""),
        sa.Column("level", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("current_streak_days", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("longest_streak_days", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_activity_date", sa.Date(), nullable=True),
        sa.Column("state_version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("username", sa.String(length=150), nullable=True),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("time_zone", sa.String(length=64), nullable=True),
        sa.Column("profile_version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("user_score", schema=None) as batch_op:
        batch_op.create_index("ix_user_score_tier", ["tier"], unique=False)

    op.create_table(
        "weekly_goal",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("goal_type", sa.String(length=30), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("week_end", sa.Date(), nullable=False),
        sa.Column("current_progress", sa.Integer(), nullable=False),
        sa.Column("target_progress", sa.Integer(), nullable=False),
        sa.Column("is_completed", sa.Boolean(), nullable=False),
        sa.Column("points_reward", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "goal_type", "week_start", name="uq_weekly_goal_user_week"),
    )
    op.create_table(
        "user_side_quest",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column(
            "side_quest_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("current_progress", sa.Integer(), nullable=False),
        sa.Column("target_progress", sa.Integer(), nullable=False),
        sa.Column("is_completed", sa.Boolean(), nullable=False),
        sa.Column("points_awarded", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["side_quest_id"],
            ["side_quest.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "side_quest_id", name="uq_user_side_quest"),
    )


def downgrade() -> None:
    op.drop_table("user_side_quest")
    op.drop_table("weekly_goal")
    with op.batch_alter_table("user_score", schema=None) as batch_op:
        batch_op.drop_index("ix_user_score_tier")

    op.drop_table("user_score")
    op.drop_table("side_quest")
    with op.batch_alter_table("point_activity", schema=None) as batch_op:
        batch_op.drop_index("ix_point_activity_created")
        batch_op.drop_index("ix_point_activity_user_type")
        batch_op.drop_index("ix_point_activity_user_created")
        batch_op.drop_index("ix_point_activity_type_created")

    op.drop_table("point_activity")
