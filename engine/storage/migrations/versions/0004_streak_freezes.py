"""Streak freezes: point_activity.frozen_days, the days an activity froze (nullable).

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


def downgrade() -> None:
    with op.batch_alter_table("point_activity") as batch:
        batch.drop_column("frozen_days")
