"""Adjustments: on point_activity the id of the activity a reversal takes back (nullable: NULL
for every other activity), and an index on it for rebuild's join and the reversal lookups.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column without a default: PostgreSQL and SQLite add it without a rewrite
    with op.batch_alter_table("point_activity") as batch:
        batch.add_column(sa.Column("reverses", sa.Uuid(), nullable=True))
    # partial: only adjustments that reverse something are in it, so inserts of every other row
    # (nearly all of them) pay nothing for it
    op.create_index(
        "ix_point_activity_reverses", "point_activity", ["reverses"],
        postgresql_where=sa.text("reverses IS NOT NULL"),
        sqlite_where=sa.text("reverses IS NOT NULL"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_point_activity_reverses", table_name="point_activity")
    with op.batch_alter_table("point_activity") as batch:
        batch.drop_column("reverses")
