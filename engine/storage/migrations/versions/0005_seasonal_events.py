"""Seasonal events: the seasonal_event table, and on point_activity the amount before a
seasonal event's multiplier, the multiplier and the event (nullable: NULL when none applied).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seasonal_event",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("multiplier", sa.Float(), nullable=False),
        sa.Column("activity_types", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # nullable columns without a default: PostgreSQL and SQLite add them without a rewrite
    with op.batch_alter_table("point_activity") as batch:
        batch.add_column(sa.Column("base_amount", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("multiplier", sa.Float(), nullable=True))
        batch.add_column(sa.Column("event_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("point_activity") as batch:
        batch.drop_column("event_id")
        batch.drop_column("multiplier")
        batch.drop_column("base_amount")
    op.drop_table("seasonal_event")
