"""The monthly partitions of ``point_activity`` on PostgreSQL.

``point_activity`` is range-partitioned on ``created_at`` by UTC month: a partition
``point_activity_y2026m12`` holds [2026-12-01, 2027-01-01), and ``point_activity_default`` (the
DEFAULT partition) every row no month partition takes, so that an insert never fails for a
month without one (``occurred_at`` may be backdated, or a clock far ahead). The primary key is
(id, created_at): a unique key of a partitioned table must hold its partition column, and an
activity's created_at never changes between two writes of it, so the drain's ``ON CONFLICT
(id, created_at) DO NOTHING`` stays idempotent.

These functions take a SQLAlchemy connection inside the caller's transaction (the migration's,
or the store's). SQLite keeps one unpartitioned table and none of this applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text

PARENT = "point_activity"
DEFAULT = "point_activity_default"
ROLLUP = "point_activity_rollup"
_PREFIX = "point_activity_y"

#: The indexes the model declares (engine/storage/models.py), as PostgreSQL makes them on the
#: partitioned parent (each partition gets its own copy).
INDEXES = (
    "CREATE INDEX ix_point_activity_user_created ON point_activity (user_id, created_at DESC)",
    "CREATE INDEX ix_point_activity_type_created ON point_activity (activity_type, "
    "created_at DESC)",
    "CREATE INDEX ix_point_activity_user_type ON point_activity (user_id, activity_type)",
    "CREATE INDEX ix_point_activity_created ON point_activity USING brin (created_at)",
    "CREATE INDEX ix_point_activity_reverses ON point_activity (reverses) "
    "WHERE reverses IS NOT NULL",
)


@dataclass(frozen=True)
class Partition:
    """A partition of ``point_activity``: a month (``month`` its first day), or the DEFAULT one
    (``month`` None); ``rows``: PostgreSQL's estimate (``reltuples``; -1 if never analysed)."""

    name: str
    month: date | None
    rows: int


def month_name(month: date) -> str:
    return f"{_PREFIX}{month.year:04d}m{month.month:02d}"


def month_of(at: datetime | date) -> date:
    """The first day of the UTC month of ``at``."""
    if isinstance(at, datetime):
        at = at.astimezone(UTC).date()
    return at.replace(day=1)


def add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def _bound(month: date) -> str:
    return f"{month.isoformat()} 00:00:00+00"


def _start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def _month_from_name(name: str) -> date | None:
    if not name.startswith(_PREFIX) or len(name) != len(_PREFIX) + 7 or name[-3] != "m":
        return None
    try:
        return date(int(name[len(_PREFIX) : -3]), int(name[-2:]), 1)
    except ValueError:
        return None


def is_partitioned(connection: Any) -> bool:
    """Whether ``point_activity`` is a partitioned table here (PostgreSQL after 0008)."""
    if connection.dialect.name != "postgresql":
        return False
    q = text(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
    )
    return connection.execute(q, {"name": PARENT}).first() is not None


def partitions(connection: Any) -> list[Partition]:
    """The partitions of ``point_activity``, months in order, then DEFAULT."""
    q = text(
        "SELECT c.relname, c.reltuples::bigint FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = :name AND pg_table_is_visible(p.oid)"
    )
    found = [
        Partition(name, _month_from_name(name), int(rows))
        for name, rows in connection.execute(q, {"name": PARENT})
    ]
    return sorted(found, key=lambda p: (p.month is None, p.month or date.min, p.name))


def detached(connection: Any) -> list[str]:
    """Month tables that are no partition (left by a retention run that stopped between
    detaching a month and dropping it): the next run carries and drops them."""
    q = text(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE :like "
        "AND pg_table_is_visible(c.oid) AND NOT c.relispartition"
    )
    names = [r[0] for r in connection.execute(q, {"like": _PREFIX + "%"})]
    return sorted(n for n in names if _month_from_name(n) is not None)


def default_months(connection: Any) -> list[date]:
    """The months of the rows in the DEFAULT partition (a scan of it: it is meant to be near
    empty, as :func:`create_month` empties it of each month it makes)."""
    q = text(
        f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date "
        f"FROM {DEFAULT} ORDER BY 1"
    )
    return [r[0] for r in connection.execute(q)]


def create_default(connection: Any) -> None:
    connection.execute(text(f"CREATE TABLE IF NOT EXISTS {DEFAULT} PARTITION OF {PARENT} DEFAULT"))


def create_month(connection: Any, month: date) -> bool:
    """Make the partition of ``month`` unless it exists, moving that month's rows out of the
    DEFAULT partition into it (PostgreSQL refuses a partition whose rows sit in DEFAULT); True
    if made. Inserts into ``point_activity`` wait until the transaction ends."""
    name = month_name(month)
    exists = connection.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
    if exists is not None:
        return False
    lo, hi = _bound(month), _bound(add_months(month, 1))
    # inserts wait from here, before they pick a partition (ONLY: the parent, not every
    # partition), and the ones under way are done: no row of the month can slip into DEFAULT
    # before ATTACH, nor be routed there by a statement planned before it (PostgreSQL would
    # then refuse it: the new partition's constraint)
    connection.execute(text(f"LOCK TABLE ONLY {PARENT} IN SHARE ROW EXCLUSIVE MODE"))
    # (again under the lock: another run may have made it while this one waited)
    if connection.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None:
        return False
    connection.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= :lo AND created_at < :hi "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        {"lo": _start(month), "hi": _start(add_months(month, 1))},
    )
    # the partition's primary key and indexes are made as it is attached
    connection.execute(
        text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')")
    )
    return True


def detach_month(connection: Any, name: str) -> None:
    """Detach a month partition: from then on it takes no insert (a row of its month goes to
    DEFAULT), and it can be read and dropped without a race with the drain."""
    connection.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))


def carry_and_drop(connection: Any, name: str) -> tuple[int, int]:
    """Add a detached month table's per-user, per-type sums to the rollup and drop it, in the
    caller's transaction (both or neither); (rows, points) it held."""
    month = _month_from_name(name)
    if month is None:
        raise ValueError(f"{name!r} is not a month partition")
    rows, points = connection.execute(
        text(f"SELECT count(*), coalesce(sum(amount), 0) FROM {name}")
    ).one()
    connection.execute(
        text(
            f"INSERT INTO {ROLLUP} (user_id, activity_type, month, amount, activities) "
            f"SELECT user_id, activity_type, :month, sum(amount), count(*) FROM {name} "
            f"GROUP BY user_id, activity_type ORDER BY user_id, activity_type "
            f"ON CONFLICT (user_id, activity_type, month) DO UPDATE SET "
            f"amount = {ROLLUP}.amount + EXCLUDED.amount, "
            f"activities = {ROLLUP}.activities + EXCLUDED.activities"
        ),
        {"month": month},
    )
    connection.execute(text(f"DROP TABLE {name}"))
    return int(rows), int(points)


def utc_days(connection: Any, name: str) -> list[date]:
    """The UTC days that have rows in partition ``name``."""
    q = text(f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {name} ORDER BY 1")
    return [r[0] for r in connection.execute(q)]
