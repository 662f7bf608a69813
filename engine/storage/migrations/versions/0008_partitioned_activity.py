"""The audit trail at volume: on PostgreSQL, point_activity range-partitioned by UTC month on
created_at (primary key (id, created_at)), with a DEFAULT partition; and, on every backend,
point_activity_rollup, where retention carries the per-user, per-type sums of the months it
drops.

The existing table is converted with its rows: renamed, a partitioned parent made LIKE it (so
it has every column the table has at this point of the chain, whatever earlier migrations
added), a partition for each month that has rows plus the current month and the next 3, the
DEFAULT partition, the rows moved, the model's indexes made on the parent (each partition gets
them), the old table dropped. One transaction: a failure leaves the table as it was. It
rewrites the table: allow for the time a copy of the audit trail takes, with the drain stopped
or waiting (the outbox keeps the entries meanwhile). SQLite keeps one table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

from engine.storage import partitions as parts

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Months made ahead of the current one by the migration (the scheduler's job keeps it so).
AHEAD = 3
_OLD = "point_activity_unpartitioned"


def upgrade() -> None:
    op.create_table(
        parts.ROLLUP,
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("activity_type", sa.String(length=30), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("activities", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "activity_type", "month"),
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _drop_indexes()
    op.execute(f"ALTER TABLE {parts.PARENT} RENAME TO {_OLD}")
    op.execute(f"ALTER TABLE {_OLD} RENAME CONSTRAINT point_activity_pkey TO {_OLD}_pkey")
    op.execute(
        f"CREATE TABLE {parts.PARENT} (LIKE {_OLD} INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (created_at)"
    )
    op.execute(f"ALTER TABLE {parts.PARENT} ADD CONSTRAINT point_activity_pkey "
               "PRIMARY KEY (id, created_at)")  # fmt: skip
    months = {
        r[0]
        for r in bind.execute(
            text(
                f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date "
                f"FROM {_OLD}"
            )  # fmt: skip
        )
    }
    current = parts.month_of(datetime.now(UTC))
    months.update(parts.add_months(current, n) for n in range(AHEAD + 1))
    parts.create_default(bind)
    for month in sorted(months):
        parts.create_month(bind, month)
    # rows arrive in each partition in time order: the BRIN index stays tight
    op.execute(f"INSERT INTO {parts.PARENT} SELECT * FROM {_OLD} ORDER BY created_at")
    op.execute(f"DROP TABLE {_OLD}")
    for statement in parts.INDEXES:
        op.execute(statement)
    op.execute(f"ANALYZE {parts.PARENT}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and parts.is_partitioned(bind):
        # the rollup's sums go with it: the months retention dropped are gone from every sum
        _drop_indexes()
        op.execute(f"ALTER TABLE {parts.PARENT} RENAME TO {_OLD}")
        op.execute(f"ALTER TABLE {_OLD} RENAME CONSTRAINT point_activity_pkey TO {_OLD}_pkey")
        op.execute(f"CREATE TABLE {parts.PARENT} (LIKE {_OLD} INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {parts.PARENT} SELECT * FROM {_OLD} ORDER BY created_at")
        op.execute(f"ALTER TABLE {parts.PARENT} ADD CONSTRAINT point_activity_pkey "
                   "PRIMARY KEY (id)")  # fmt: skip
        op.execute(f"DROP TABLE {_OLD}")  # and every partition with it
        for statement in parts.INDEXES:
            op.execute(statement)
    op.drop_table(parts.ROLLUP)


def _drop_indexes() -> None:
    for statement in parts.INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {statement.split()[2]}")
