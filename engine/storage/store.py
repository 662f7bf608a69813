"""The SQL side: the audit trail's writes (idempotent) and the queries the seed shows.

PostgreSQL in production, SQLite by default. Writes come from the outbox drain: activities are
inserted with ``ON CONFLICT (id) DO NOTHING`` (``(id, created_at)`` on PostgreSQL's partitioned
table: see ``engine.storage.partitions``; a batch written twice leaves one row per activity)
and the ``user_score`` snapshot is upserted only where the incoming version is newer.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    Engine,
    Row,
    Table,
    case,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from engine.domain.events import API_SOURCE, SeasonalEvent
from engine.domain.results import Activity, LeaderboardEntry, Quest
from engine.domain.rules import ADJUSTMENT_TYPE, DECAY_REASON
from engine.domain.webhooks import DELIVERED, FAILED, PENDING, Webhook, WebhookDelivery
from engine.storage import partitions
from engine.storage.models import (
    Base,
    DeletedUser,
    LeaderboardArchive,
    LeaderboardPeriod,
    PointActivity,
    PointActivityRollup,
    SideQuest,
    UserAchievement,
    UserScore,
    UserSideQuest,
    UserStreakFreeze,
    WebhookSubscription,
    WeeklyGoal,
)
from engine.storage.models import SeasonalEvent as SeasonalEventRow
from engine.storage.models import WebhookDelivery as WebhookDeliveryRow

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class ActivityRow(NamedTuple):
    """One activity as rebuild reads it."""

    user_id: str
    activity_type: str
    amount: int
    created_at: datetime
    frozen_days: str | None
    #: the activity a reversal takes back, and that activity's type and time (all None when
    #: the row reverses nothing; the last two also when the reversed row is gone)
    reverses: str | None
    reversed_type: str | None
    reversed_at: datetime | None
    #: an adjustment's reason (None for every other type): a decay's counts in no window board
    reason: str | None = None


class StoredActivity(NamedTuple):
    """What a reversal needs of the activity it takes back."""

    id: str
    user_id: str
    amount: int
    activity_type: str
    created_at: datetime
    reverses: str | None


_STATE_COLUMNS = ("total_points", "tier", "level", "current_streak_days", "longest_streak_days",
                  "last_activity_date", "state_version", "updated_at")  # fmt: skip
_PROFILE_COLUMNS = ("username", "display_name", "time_zone", "profile_version", "updated_at")


# PostgreSQL: a batch is COPied (binary) into temporary staging tables and moved into place
# with one INSERT ... SELECT per table. (SQLAlchemy sends ON CONFLICT inserts one row at a time;
# COPY also spares the client most of the cost of adapting values.)
_ACTIVITY = {
    "id": "uuid", "user_id": "text", "amount": "int4", "activity_type": "text",
    "description": "text", "tier_at_time": "text", "created_at": "timestamptz",
    "total_points": "int8", "level": "int4", "current_streak_days": "int4",
    "longest_streak_days": "int4", "last_activity_date": "date", "version": "int8",
    "frozen_days": "text",
    "base_amount": "int4", "multiplier": "float8", "event_id": "text", "reverses": "uuid",
}  # fmt: skip
_STATE = {
    "user_id": "text", "total_points": "int8", "tier": "text", "level": "int4",
    "current_streak_days": "int4", "longest_streak_days": "int4",
    "last_activity_date": "date", "state_version": "int8", "updated_at": "timestamptz",
}  # fmt: skip
_PROFILE = {
    "user_id": "text", "username": "text", "display_name": "text", "time_zone": "text",
    "profile_version": "int8", "updated_at": "timestamptz", "tier": "text",
}  # fmt: skip
_STAGING = {"drain_activity": "point_activity", "drain_state": "user_score",
            "drain_profile": "user_score"}  # fmt: skip
#: Webhooks: a batch's webhook_delivery rows (staged with their own columns: the id is the
#: table's to give), moved in ignoring an event already queued for its subscription.
_DELIVERY = {
    "subscription_id": "text", "event_id": "text", "event_type": "text", "payload": "text",
    "status": "text", "attempts": "int4", "next_attempt_at": "timestamptz",
    "created_at": "timestamptz",
}  # fmt: skip
_PG_DELIVERY_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS drain_delivery ("
    + ", ".join(f"{c} {t}" for c, t in _DELIVERY.items())
    + ") ON COMMIT DELETE ROWS"
)
_PG_INSERT_DELIVERIES = (
    f"INSERT INTO webhook_delivery ({', '.join(_DELIVERY)}) SELECT {', '.join(_DELIVERY)} "
    "FROM drain_delivery ON CONFLICT (subscription_id, event_id) DO NOTHING"
)


def _pg_upsert(staging: str, columns: dict[str, str], updated: Sequence[str], version: str) -> str:
    names = ", ".join(columns)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
    return (
        f"INSERT INTO user_score ({names}) SELECT {names} FROM {staging} ORDER BY user_id "
        f"ON CONFLICT (user_id) DO UPDATE SET {sets} "
        f"WHERE user_score.{version} < EXCLUDED.{version}"
    )


def _pg_insert_activities(key: Sequence[str]) -> str:
    """The move of staged activities into ``point_activity``, ignoring those already there:
    ``key`` is the table's primary key, (id, created_at) on the partitioned table (an activity's
    created_at never changes, so that is as idempotent as (id) alone), (id) on a table that was
    never partitioned (before migration 0008)."""
    names = ", ".join(_ACTIVITY)
    return (
        f"INSERT INTO point_activity ({names}) SELECT {names} "
        f"FROM drain_activity ON CONFLICT ({', '.join(key)}) DO NOTHING"
    )


_PG_PRIMARY_KEY = (
    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'point_activity'::regclass "
    "AND i.indisprimary ORDER BY a.attnum"
)
_PG_UPSERT_STATES = _pg_upsert("drain_state", _STATE, _STATE_COLUMNS, "state_version")
_PG_UPSERT_PROFILES = _pg_upsert("drain_profile", _PROFILE, _PROFILE_COLUMNS, "profile_version")


def _pg_write(
    connection: Any,
    activities: Sequence[dict[str, Any]],
    states: Sequence[dict[str, Any]],
    profiles: Sequence[dict[str, Any]],
    deliveries: Sequence[dict[str, Any]] = (),
) -> None:
    """Write a batch on PostgreSQL inside the transaction of ``connection``."""
    import psycopg

    pooled = connection.connection
    statement = ""
    try:
        with pooled.driver_connection.cursor() as cursor:
            if not pooled.info.get("drain_staging"):
                for staging, table in _STAGING.items():
                    statement = (
                        f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
                        f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    )
                    cursor.execute(statement)
                statement = _PG_DELIVERY_STAGING
                cursor.execute(statement)
                statement = _PG_PRIMARY_KEY
                cursor.execute(statement)
                key = [r[0] for r in cursor.fetchall()]
                pooled.info["drain_insert"] = _pg_insert_activities(key)
                pooled.info["drain_staging"] = True
            for staging, columns, rows, move in (
                ("drain_activity", _ACTIVITY, activities, pooled.info["drain_insert"]),
                ("drain_state", _STATE, states, _PG_UPSERT_STATES),
                ("drain_profile", _PROFILE, profiles, _PG_UPSERT_PROFILES),
                ("drain_delivery", _DELIVERY, deliveries, _PG_INSERT_DELIVERIES),
            ):
                if not rows:
                    continue
                names = list(columns)
                statement = f"COPY {staging} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(statement) as copy:
                    copy.set_types(list(columns.values()))
                    for row in rows:
                        copy.write_row([row.get(name) for name in names])
                statement = move
                cursor.execute(move)
    except psycopg.Error as exc:
        # the transaction rolls back, and with it the staging tables if it made them
        pooled.info.pop("drain_staging", None)
        # the error SQLAlchemy would have raised (DataError, IntegrityError, OperationalError...)
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


#: How long partition DDL waits for a lock (the drain's inserts hold the parent briefly); on a
#: timeout the job tries again on its next run.
_DDL_LOCK_TIMEOUT = "10s"

#: Seconds to wait for a PostgreSQL connection unless the URL says (``?connect_timeout=``).
CONNECT_TIMEOUT = 10


class SqlStore:
    """Access to the audit trail's database. Thread-safe (a pooled SQLAlchemy engine)."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                # best effort: if the folder cannot be made, connecting will say so
                with contextlib.suppress(OSError):
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine_options.setdefault("connect_args", {"timeout": 30})
        else:
            engine_options.setdefault("pool_pre_ping", True)
            if "connect_timeout" not in make_url(url).query:
                # psycopg waits for ever on a host that never answers: each drain attempt of
                # an outage would stall on it
                connect_args = engine_options.setdefault("connect_args", {})
                connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT)
        self.engine: Engine = create_engine(url, **engine_options)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._insert = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )

    @classmethod
    def from_settings(cls, settings: Any = None) -> SqlStore:
        from engine.runtime.settings import get_settings

        return cls((settings or get_settings()).sql_url())

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with the Alembic migrations."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # -- partitions of point_activity (PostgreSQL) ----------------------------------------

    def partitioned(self) -> bool:
        """Whether ``point_activity`` is partitioned (PostgreSQL, migrated to 0008)."""
        with self.engine.connect() as connection:
            return partitions.is_partitioned(connection)

    def activity_partitions(self) -> list[partitions.Partition]:
        """The partitions of ``point_activity``, months in order, then DEFAULT; none on an
        unpartitioned table."""
        with self.engine.connect() as connection:
            if not partitions.is_partitioned(connection):
                return []
            return partitions.partitions(connection)

    def create_partitions(self, months: Iterable[date]) -> list[str]:
        """Make the partitions of ``months`` (first days of months) that are missing, and of
        every month with rows in the DEFAULT partition, moving those rows into them; the names
        made. One transaction per month, so DEFAULT is locked against inserts only briefly."""
        if not self.partitioned():
            return []
        with self.engine.connect() as connection:
            wanted = set(months) | set(partitions.default_months(connection))
        made = []
        for month in sorted(wanted):
            with self.engine.begin() as connection:
                connection.execute(text(f"SET LOCAL lock_timeout = '{_DDL_LOCK_TIMEOUT}'"))
                if partitions.create_month(connection, month):
                    made.append(partitions.month_name(month))
        return made

    def partition_days(self, name: str) -> list[date]:
        """The UTC days that have rows in the month partition ``name``."""
        with self.engine.connect() as connection:
            return partitions.utc_days(connection, name)

    def drop_partition(self, name: str) -> tuple[int, int]:
        """Detach the month partition ``name``, carry its per-user, per-type sums into
        ``point_activity_rollup`` and drop it; (rows, points) it held. Two transactions: once
        detached, no drain writes into it (a row of its month goes to DEFAULT), so the sums
        read are final; a run stopped between the two leaves a detached table that
        :meth:`finish_detached` carries and drops."""
        with self.engine.begin() as connection:
            connection.execute(text(f"SET LOCAL lock_timeout = '{_DDL_LOCK_TIMEOUT}'"))
            partitions.detach_month(connection, name)
        with self.engine.begin() as connection:
            return partitions.carry_and_drop(connection, name)

    def finish_detached(self) -> list[tuple[str, int, int]]:
        """Carry and drop month tables a stopped retention run detached; (name, rows, points)
        of each."""
        if self.engine.dialect.name != "postgresql":
            return []
        with self.engine.connect() as connection:
            names = partitions.detached(connection)
        done = []
        for name in names:
            with self.engine.begin() as connection:
                done.append((name, *partitions.carry_and_drop(connection, name)))
        return done

    # -- the drain's writes ---------------------------------------------------------------

    def write(
        self,
        activities: Sequence[dict[str, Any]],
        states: Sequence[dict[str, Any]],
        profiles: Sequence[dict[str, Any]],
        *,
        quests: Sequence[dict[str, Any]] = (),
        goals: Sequence[dict[str, Any]] = (),
        achievements: Sequence[dict[str, Any]] = (),
        freezes: Sequence[dict[str, Any]] = (),
        deliveries: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Write one drained batch in one transaction.

        ``activities``: point_activity rows (ids already present are skipped). ``states`` and
        ``profiles``: at most one row per user each, applied only over an older version. Rows
        are upserted in user id order, so concurrent writers lock rows in the same order.
        ``quests``: user_side_quest rows (a row never goes back: a completed quest stays
        completed, progress only grows). ``goals``: completed weekly_goal rows.
        ``achievements``: user_achievement rows (a level already present is kept).
        ``freezes``: user_streak_freeze rows (applied only over an older ``seq``).
        ``deliveries``: webhook_delivery rows of the batch's events (one already queued for
        its subscription is kept), in the same transaction: an event exists exactly when its
        activity does.
        """
        states = sorted(states, key=itemgetter("user_id"))
        profiles = sorted(profiles, key=itemgetter("user_id"))
        with self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":
                _pg_write(connection, activities, states, profiles, deliveries)
                self._write_engagement(connection, quests, goals, achievements, freezes)
                return
            self._write_engagement(connection, quests, goals, achievements, freezes)
            if activities:
                stmt = self._insert(PointActivity).on_conflict_do_nothing(index_elements=["id"])
                connection.execute(stmt, list(activities))
            if states:
                connection.execute(self._upsert(_STATE_COLUMNS, "state_version"), states)
            if profiles:
                connection.execute(self._upsert(_PROFILE_COLUMNS, "profile_version"), profiles)
            self._write_deliveries(connection, deliveries)

    def _write_deliveries(self, connection: Any, deliveries: Sequence[dict[str, Any]]) -> None:
        """Webhooks: queue the batch's events for their subscriptions (once each; SQLite)."""
        if deliveries:
            stmt = self._insert(WebhookDeliveryRow).on_conflict_do_nothing(
                index_elements=["subscription_id", "event_id"]
            )
            connection.execute(stmt, list(deliveries))

    def _write_engagement(
        self,
        connection: Any,
        quests: Sequence[dict[str, Any]],
        goals: Sequence[dict[str, Any]],
        achievements: Sequence[dict[str, Any]],
        freezes: Sequence[dict[str, Any]] = (),
    ) -> None:
        if freezes:
            stmt = self._insert(UserStreakFreeze)
            t = UserStreakFreeze.__table__
            connection.execute(
                stmt.on_conflict_do_update(
                    index_elements=["user_id"],
                    set_={c: stmt.excluded[c] for c in ("held", "seq", "updated_at")},
                    where=t.c.seq < stmt.excluded.seq,
                ),
                sorted(freezes, key=itemgetter("user_id")),
            )
        if achievements:
            connection.execute(
                self._insert(UserAchievement).on_conflict_do_nothing(
                    index_elements=["user_id", "achievement_id", "level"]
                ),
                sorted(achievements, key=itemgetter("user_id", "achievement_id", "level")),
            )
        if quests:
            stmt = self._insert(UserSideQuest)
            t = UserSideQuest.__table__
            columns = ("status", "current_progress", "target_progress", "is_completed",
                       "points_awarded", "completed_at")  # fmt: skip
            connection.execute(
                stmt.on_conflict_do_update(
                    index_elements=["user_id", "side_quest_id"],
                    set_={c: stmt.excluded[c] for c in columns},
                    where=(t.c.is_completed == False)  # noqa: E712 - SQL, not Python
                    & (stmt.excluded.is_completed | (stmt.excluded.current_progress
                                                     >= t.c.current_progress)),
                ),
                sorted(quests, key=itemgetter("user_id", "side_quest_id")),
            )  # fmt: skip
        if goals:
            stmt = self._insert(WeeklyGoal)
            t = WeeklyGoal.__table__
            connection.execute(
                stmt.on_conflict_do_update(
                    index_elements=["user_id", "goal_type", "week_start"],
                    set_={c: stmt.excluded[c] for c in ("current_progress", "target_progress",
                                                        "is_completed", "points_reward")},
                ),
                sorted(goals, key=itemgetter("user_id", "goal_type", "week_start")),
            )  # fmt: skip

    # -- weekly goals, quests, archives ---------------------------------------------------

    def insert_weekly_goals(self, rows: Iterable[dict[str, Any]], *, chunk: int = 5000) -> int:
        """Insert weekly_goal rows (read lazily, ``chunk`` per transaction), skipping (user,
        goal, week) rows that exist; returns how many were new. Safe to run twice, and
        concurrently."""
        stmt = (
            self._insert(WeeklyGoal)
            .on_conflict_do_nothing(index_elements=["user_id", "goal_type", "week_start"])
            .returning(WeeklyGoal.id)
        )
        added = 0
        source = iter(rows)
        while part := list(itertools.islice(source, chunk)):
            with self.engine.begin() as connection:
                added += len(connection.execute(stmt, part).all())
        return added

    def weekly_goal_rows(self, week_start: date) -> list[Row[Any]]:
        """The week's ``weekly_goal`` rows (columns as attributes), by user and goal."""
        with self.engine.connect() as connection:
            t = WeeklyGoal.__table__
            q = select(t).where(t.c.week_start == week_start).order_by(t.c.user_id, t.c.goal_type)
            return list(connection.execute(q))

    def create_quest(self, fields: dict[str, Any]) -> Quest:
        with self.engine.begin() as connection:
            table = _table(SideQuest)
            row = connection.execute(table.insert().values(**fields).returning(table)).one()
        return _quest(row)

    def import_quests(self, rows: Sequence[dict[str, Any]]) -> tuple[int, list[int]]:
        """Insert side_quest rows with their own ids (an import's), skipping ids present.
        Returns (rows new, ids held by a quest of another title: not imported). On
        PostgreSQL the id sequence then starts past the highest id, so quests made later
        through the API get new ids."""
        if not rows:
            return 0, []
        t = _table(SideQuest)
        stmt = self._insert(SideQuest).on_conflict_do_nothing(index_elements=["id"])
        with self.engine.begin() as connection:
            added = len(connection.execute(stmt.returning(t.c.id), list(rows)).all())
            ids = [r["id"] for r in rows]
            held = dict(connection.execute(select(t.c.id, t.c.title).where(t.c.id.in_(ids))).all())
            if self.engine.dialect.name == "postgresql":
                connection.execute(text(
                    "SELECT setval(pg_get_serial_sequence('side_quest', 'id'), "
                    "(SELECT max(id) FROM side_quest))"
                ))  # fmt: skip
        return added, [r["id"] for r in rows if held.get(r["id"]) != r["title"]]

    def update_quest(self, quest_id: int, fields: dict[str, Any]) -> Quest | None:
        t = _table(SideQuest)
        with self.engine.begin() as connection:
            if fields:
                connection.execute(t.update().where(t.c.id == quest_id).values(**fields))
            row = connection.execute(select(t).where(t.c.id == quest_id)).one_or_none()
        return None if row is None else _quest(row)

    def get_quest(self, quest_id: int) -> Quest | None:
        t = SideQuest.__table__
        with self.engine.connect() as connection:
            row = connection.execute(select(t).where(t.c.id == quest_id)).one_or_none()
        return None if row is None else _quest(row)

    def list_quests(self, *, active_only: bool = False) -> list[Quest]:
        t = SideQuest.__table__
        q = select(t).order_by(t.c.id)
        if active_only:
            q = q.where(t.c.is_active == True)  # noqa: E712 - SQL, not Python
        with self.engine.connect() as connection:
            return [_quest(r) for r in connection.execute(q)]

    # -- seasonal events ------------------------------------------------------------------

    def create_event(self, event: SeasonalEvent) -> SeasonalEvent | None:
        """Store a new event; None (nothing written) if an event with its id exists."""
        t = _table(SeasonalEventRow)
        stmt = (
            self._insert(SeasonalEventRow)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(t.c.id)
        )
        values = {
            "id": event.id, "title": event.title, "starts_at": event.start,
            "ends_at": event.end, "multiplier": event.multiplier,
            "activity_types": ",".join(event.activity_types), "created_at": event.created_at,
            "ended_at": None,
        }  # fmt: skip
        with self.engine.begin() as connection:
            if connection.execute(stmt.values(**values)).first() is None:
                return None  # the id was taken
            row = connection.execute(select(t).where(t.c.id == event.id)).one()
        return _event(row)

    def end_event(self, event_id: str, at: datetime) -> SeasonalEvent | None:
        """End an event at ``at`` unless it was ended before or ends by then; the event as it
        is after that, or None if there is none with that id."""
        t = _table(SeasonalEventRow)
        with self.engine.begin() as connection:
            connection.execute(
                t.update()
                .where(t.c.id == event_id, t.c.ended_at.is_(None), t.c.ends_at > at)
                .values(ended_at=at)
            )
            row = connection.execute(select(t).where(t.c.id == event_id)).one_or_none()
        return None if row is None else _event(row)

    def list_events(self) -> list[SeasonalEvent]:
        """Every stored event, by start, then id."""
        t = _table(SeasonalEventRow)
        with self.engine.connect() as connection:
            rows = connection.execute(select(t).order_by(t.c.starts_at, t.c.id))
            return [_event(r) for r in rows]

    # -- webhooks -------------------------------------------------------------------------

    def create_webhook(self, values: dict[str, Any]) -> Webhook:
        """Store a new subscription (``values``: the columns, ``events`` as a tuple)."""
        t = _table(WebhookSubscription)
        with self.engine.begin() as connection:
            connection.execute(
                t.insert().values(**{**values, "events": ",".join(values["events"])})
            )
            row = connection.execute(select(t).where(t.c.id == values["id"])).one()
        return _webhook(row)

    def webhooks(self) -> list[Webhook]:
        """Every subscription, oldest first."""
        t = _table(WebhookSubscription)
        with self.engine.connect() as connection:
            rows = connection.execute(select(t).order_by(t.c.created_at, t.c.id))
            return [_webhook(r) for r in rows]

    def webhook(self, webhook_id: str) -> Webhook | None:
        t = _table(WebhookSubscription)
        with self.engine.connect() as connection:
            row = connection.execute(select(t).where(t.c.id == webhook_id)).one_or_none()
        return None if row is None else _webhook(row)

    def webhook_secrets(self, webhook_id: str) -> tuple[str, str | None, datetime | None] | None:
        """A subscription's secret, previous secret and until when that one is valid; None if
        there is no such subscription."""
        t = _table(WebhookSubscription)
        q = select(t.c.secret, t.c.previous_secret, t.c.previous_secret_until)
        with self.engine.connect() as connection:
            row = connection.execute(q.where(t.c.id == webhook_id)).one_or_none()
        if row is None:
            return None
        until = _utc(row.previous_secret_until) if row.previous_secret_until else None
        return row.secret, row.previous_secret, until

    def update_webhook(self, webhook_id: str, values: dict[str, Any]) -> Webhook | None:
        """Change a subscription's columns (``events`` as a tuple); None if there is none."""
        t = _table(WebhookSubscription)
        if "events" in values:
            values = {**values, "events": ",".join(values["events"])}
        with self.engine.begin() as connection:
            connection.execute(t.update().where(t.c.id == webhook_id).values(**values))
            row = connection.execute(select(t).where(t.c.id == webhook_id)).one_or_none()
        return None if row is None else _webhook(row)

    def rotate_webhook_secret(
        self, webhook_id: str, secret: str, previous_until: datetime, at: datetime
    ) -> Webhook | None:
        """Make ``secret`` the subscription's secret, the current one its previous secret
        (valid until ``previous_until``); None if there is no such subscription."""
        t = _table(WebhookSubscription)
        with self.engine.begin() as connection:
            connection.execute(
                t.update()
                .where(t.c.id == webhook_id)
                .values(previous_secret=t.c.secret, previous_secret_until=previous_until,
                        secret=secret, updated_at=at)
            )  # fmt: skip
            row = connection.execute(select(t).where(t.c.id == webhook_id)).one_or_none()
        return None if row is None else _webhook(row)

    def delete_webhook(self, webhook_id: str) -> bool:
        """Delete a subscription and its delivery log; whether there was one."""
        t, d = _table(WebhookSubscription), _table(WebhookDeliveryRow)
        with self.engine.begin() as connection:
            connection.execute(d.delete().where(d.c.subscription_id == webhook_id))
            return bool(connection.execute(t.delete().where(t.c.id == webhook_id)).rowcount)

    def webhook_deliveries(
        self,
        webhook_id: str,
        *,
        limit: int = 100,
        before: int | None = None,
        status: str | None = None,
    ) -> list[WebhookDelivery]:
        """A subscription's delivery log, newest first: ``limit`` rows with an id below
        ``before`` (the last page's last id), of ``status`` if given."""
        d = _table(WebhookDeliveryRow)
        q = select(d).where(d.c.subscription_id == webhook_id)
        if before is not None:
            q = q.where(d.c.id < before)
        if status is not None:
            q = q.where(d.c.status == status)
        with self.engine.connect() as connection:
            rows = connection.execute(q.order_by(d.c.id.desc()).limit(limit))
            return [_delivery(r) for r in rows]

    def redeliver_webhook(
        self, webhook_id: str, now: datetime, *, event_id: str | None = None,
        since: datetime | None = None,
    ) -> int:  # fmt: skip
        """Queue again the subscription's delivery of ``event_id``, or every delivery of an
        event queued at or after ``since``: status pending, due ``now``, the attempts made
        kept. The number of deliveries queued."""
        d = _table(WebhookDeliveryRow)
        q = d.update().where(d.c.subscription_id == webhook_id)
        if event_id is not None:
            q = q.where(d.c.event_id == event_id)
        if since is not None:
            q = q.where(d.c.created_at >= since)
        with self.engine.begin() as connection:
            return int(connection.execute(q.values(status=PENDING, next_attempt_at=now)).rowcount)

    def prune_webhook_deliveries(self, before: datetime, *, chunk: int = 10_000) -> int:
        """Delete the delivered and failed deliveries queued before ``before``, ``chunk`` rows
        per transaction (pending ones stay: they are still to be sent). The number deleted."""
        d = _table(WebhookDeliveryRow)
        done = d.c.status.in_((DELIVERED, FAILED))
        deleted = 0
        while True:
            ids = select(d.c.id).where(d.c.created_at < before, done).limit(chunk)
            with self.engine.begin() as connection:
                n = int(connection.execute(d.delete().where(d.c.id.in_(ids))).rowcount)
            deleted += n
            if n < chunk:
                return deleted

    def user_quest_rows(self, user_id: str) -> list[Row[Any]]:
        """The user's ``user_side_quest`` rows (columns as attributes), by quest."""
        t = UserSideQuest.__table__
        with self.engine.connect() as connection:
            q = select(t).where(t.c.user_id == user_id).order_by(t.c.side_quest_id)
            return list(connection.execute(q))

    def period_archived(self, window: str, period: str) -> bool:
        t = LeaderboardPeriod.__table__
        with self.engine.connect() as connection:
            q = select(t.c.users).where(t.c.window == window, t.c.period == period)
            return connection.execute(q).first() is not None

    def archive_period(
        self, window: str, period: str, standings: Iterator[tuple[int, str, int]], *,
        chunk: int = 5000,
    ) -> int:  # fmt: skip
        """Store a period's final standings ((rank, user id, points), best first), then mark
        the period archived. Rows already there are kept: running it twice, or two at once,
        leaves one copy. Returns the number of users."""
        stmt = self._insert(LeaderboardArchive).on_conflict_do_nothing(
            index_elements=["window", "period", "user_id"]
        )
        users = 0
        rows: list[dict[str, Any]] = []

        def flush() -> None:
            with self.engine.begin() as connection:
                connection.execute(stmt, rows)
            rows.clear()

        for rank, user_id, points in standings:
            rows.append({"window": window, "period": period, "user_id": user_id,
                         "rank": rank, "points": points})  # fmt: skip
            users += 1
            if len(rows) >= chunk:
                flush()
        if rows:
            flush()
        mark = self._insert(LeaderboardPeriod).on_conflict_do_nothing(
            index_elements=["window", "period"]
        )
        with self.engine.begin() as connection:
            connection.execute(mark, [{"window": window, "period": period, "users": users,
                                       "archived_at": datetime.now(UTC)}])  # fmt: skip
        return users

    def archived_top(
        self, window: str, period: str, *, limit: int, offset: int
    ) -> tuple[int, list[LeaderboardEntry]] | None:
        """(users, entries) of an archived period, best first; None if it was not archived."""
        p, a = LeaderboardPeriod.__table__, LeaderboardArchive.__table__
        with self.engine.connect() as connection:
            users = connection.execute(
                select(p.c.users).where(p.c.window == window, p.c.period == period)
            ).scalar_one_or_none()
            if users is None:
                return None
            q = (
                select(a.c.rank, a.c.user_id, a.c.points)
                .where(a.c.window == window, a.c.period == period)
                .order_by(a.c.rank, a.c.user_id)
                .limit(limit)
                .offset(offset)
            )
            return users, [LeaderboardEntry(r, u, pts) for r, u, pts in connection.execute(q)]

    def archived_rank(self, window: str, period: str, user_id: str) -> tuple[int, int, int] | None:
        """(rank, points, users) of a user on an archived period; None if not on it."""
        p, a = LeaderboardPeriod.__table__, LeaderboardArchive.__table__
        q = (
            select(a.c.rank, a.c.points, p.c.users)
            .join(p, (p.c.window == a.c.window) & (p.c.period == a.c.period))
            .where(a.c.window == window, a.c.period == period, a.c.user_id == user_id)
        )
        with self.engine.connect() as connection:
            row = connection.execute(q).first()
        return None if row is None else (row[0], row[1], row[2])

    def _upsert(self, columns: Sequence[str], version: str) -> Any:
        stmt = self._insert(UserScore)
        table = UserScore.__table__
        return stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={c: stmt.excluded[c] for c in columns},
            where=table.c[version] < stmt.excluded[version],
        )

    # -- queries --------------------------------------------------------------------------

    def recent_activities(
        self, user_id: str, *, limit: int = 20, activity_type: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[Activity]:  # fmt: skip
        """A user's activities, newest first (ties by id). ``before``: the (created_at, id) of
        the last activity of the previous page, for cursor paging."""
        t = PointActivity.__table__
        q = select(t.c.id, t.c.user_id, t.c.amount, t.c.activity_type, t.c.description,
                   t.c.tier_at_time, t.c.created_at).where(t.c.user_id == user_id)  # fmt: skip
        if activity_type is not None:
            q = q.where(t.c.activity_type == activity_type)
        if before is not None:
            at, last_id = before[0].astimezone(UTC), uuid.UUID(str(before[1]))
            q = q.where((t.c.created_at < at) | ((t.c.created_at == at) & (t.c.id < last_id)))
        q = q.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [
                Activity(
                    str(r.id),
                    r.user_id,
                    r.amount,
                    r.activity_type,
                    r.description,
                    r.tier_at_time,
                    _utc(r.created_at),
                )  # fmt: skip
                for r in connection.execute(q)
            ]

    def points_by_type(self, user_id: str) -> dict[str, int]:
        """Sum of a user's points per activity type (with the months retention dropped)."""
        r = _table(PointActivityRollup)
        kept = (
            select(PointActivity.activity_type, func.sum(PointActivity.amount).label("amount"))
            .where(PointActivity.user_id == user_id)
            .group_by(PointActivity.activity_type)
        )
        rolled = (
            select(r.c.activity_type, func.sum(r.c.amount).label("amount"))
            .where(r.c.user_id == user_id)
            .group_by(r.c.activity_type)
        )
        both = union_all(kept, rolled).subquery()
        q = select(both.c.activity_type, func.sum(both.c.amount)).group_by(both.c.activity_type)
        with self.engine.connect() as connection:
            return {t: int(total) for t, total in connection.execute(q)}

    def points_between(self, start: datetime, end: datetime) -> int:
        """Points awarded with created_at in [start, end)."""
        q = select(func.coalesce(func.sum(PointActivity.amount), 0)).where(
            PointActivity.created_at >= start, PointActivity.created_at < end
        )
        with self.engine.connect() as connection:
            return int(connection.execute(q).scalar_one())

    def tier_distribution(self) -> dict[str, int]:
        """Users per tier, from the snapshots."""
        q = (
            select(UserScore.tier, func.count())
            .where(UserScore.tier != "")
            .group_by(UserScore.tier)
        )
        with self.engine.connect() as connection:
            return {tier: int(n) for tier, n in connection.execute(q)}

    def most_active(self, since: datetime, *, limit: int = 10) -> list[tuple[str, int]]:
        """(user id, points) of the users with the most points since ``since``."""
        points = func.sum(PointActivity.amount).label("points")
        q = (
            select(PointActivity.user_id, points)
            .where(PointActivity.created_at >= since)
            .group_by(PointActivity.user_id)
            .order_by(points.desc(), PointActivity.user_id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [(u, int(p)) for u, p in connection.execute(q)]

    # -- rebuild and reconcile ------------------------------------------------------------

    def user_totals(self) -> Iterator[tuple[str, int, int]]:
        """(user id, sum of amounts, number of activities) for every user with activities,
        those of the months retention dropped included (``point_activity_rollup``)."""
        r = _table(PointActivityRollup)
        kept = select(
            PointActivity.user_id,
            func.sum(PointActivity.amount).label("amount"),
            func.count().label("n"),
        ).group_by(PointActivity.user_id)
        rolled = select(
            r.c.user_id, func.sum(r.c.amount).label("amount"), func.sum(r.c.activities).label("n")
        ).group_by(r.c.user_id)
        both = union_all(kept, rolled).subquery()
        q = (
            select(both.c.user_id, func.sum(both.c.amount), func.sum(both.c.n))
            .group_by(both.c.user_id)
            .order_by(both.c.user_id)
        )
        with self.engine.connect() as connection:
            for user_id, total, n in connection.execution_options(yield_per=10_000).execute(q):
                yield user_id, int(total), int(n)

    def activities_by_user(self) -> Iterator[ActivityRow]:
        """Every activity, ordered by user (see :class:`ActivityRow`): a reversal's row carries
        the type and time of the activity it reverses, whose boards it takes the points from.
        (The reversed activities are looked up first, through the index on ``reverses``: a
        join in the stream would make the database match every row of the table.)"""
        t = PointActivity.__table__
        o = t.alias("reversed")
        originals = (
            select(t.c.reverses, o.c.activity_type, o.c.created_at)
            .join(o, o.c.id == t.c.reverses)
            .where(t.c.reverses.is_not(None))
        )
        reason = case((t.c.activity_type == ADJUSTMENT_TYPE, t.c.description), else_=None)
        q = select(
            t.c.user_id, t.c.activity_type, t.c.amount, t.c.created_at, t.c.frozen_days,
            t.c.reverses, reason,
        ).order_by(t.c.user_id)  # fmt: skip
        with self.engine.connect() as connection:
            reversed_: dict[uuid.UUID, tuple[str, datetime]] = {
                row[0]: (row[1], _utc(row[2])) for row in connection.execute(originals)
            }
            result = connection.execution_options(stream_results=True, yield_per=20_000).execute(q)
            for row in result:
                if row[5] is None:
                    yield ActivityRow(
                        row[0], row[1], row[2], _utc(row[3]), row[4], None, None, None, row[6]
                    )
                    continue
                original_type, original_at = reversed_.get(row[5], (None, None))
                yield ActivityRow(
                    row[0], row[1], row[2], _utc(row[3]), row[4], str(row[5]), original_type,
                    original_at, row[6],
                )  # fmt: skip

    def last_decays(self) -> dict[str, tuple[datetime, int]]:
        """Each decayed user's latest decay (its time and amount, negative): an adjustment
        whose reason is ``decay``."""
        t = PointActivity.__table__
        decays = (t.c.activity_type == ADJUSTMENT_TYPE) & (t.c.description == DECAY_REASON)
        latest = (
            select(t.c.user_id, func.max(t.c.created_at).label("at"))
            .where(decays)
            .group_by(t.c.user_id)
            .subquery()
        )
        q = select(t.c.user_id, t.c.created_at, t.c.amount).join(
            latest, (latest.c.user_id == t.c.user_id) & (latest.c.at == t.c.created_at)
        ).where(decays)  # fmt: skip
        with self.engine.connect() as connection:
            return {row[0]: (_utc(row[1]), row[2]) for row in connection.execute(q)}

    def activity(self, activity_id: str) -> StoredActivity | None:
        """One activity of the audit trail by id (None when SQL has none)."""
        try:
            key = uuid.UUID(activity_id)
        except ValueError:
            return None
        t = PointActivity.__table__
        q = select(
            t.c.id, t.c.user_id, t.c.amount, t.c.activity_type, t.c.created_at, t.c.reverses
        ).where(t.c.id == key)
        with self.engine.connect() as connection:
            row = connection.execute(q).first()
        if row is None:
            return None
        return StoredActivity(
            str(row[0]), row[1], row[2], row[3], _utc(row[4]),
            None if row[5] is None else str(row[5]),
        )  # fmt: skip

    def reversed_by_user(self) -> Iterator[tuple[str, str]]:
        """(user id, id of the activity reversed) of every reversal, by user."""
        t = PointActivity.__table__
        q = select(t.c.user_id, t.c.reverses).where(t.c.reverses.is_not(None))
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=20_000).execute(
                q.order_by(t.c.user_id)
            )
            for user_id, reverses in result:
                yield user_id, str(reverses)

    def rollups(self) -> dict[str, dict[str, tuple[int, int]]]:
        """user id -> activity type -> (points, activities) of the months retention dropped."""
        r = _table(PointActivityRollup)
        q = select(
            r.c.user_id, r.c.activity_type, func.sum(r.c.amount), func.sum(r.c.activities)
        ).group_by(r.c.user_id, r.c.activity_type)
        found: dict[str, dict[str, tuple[int, int]]] = {}
        with self.engine.connect() as connection:
            for user_id, activity_type, amount, n in connection.execute(q):
                found.setdefault(user_id, {})[activity_type] = (int(amount), int(n))
        return found

    def streak_freezes(self) -> dict[str, int]:
        """The streak freezes each user holds (users holding none may be missing)."""
        t = UserStreakFreeze.__table__
        with self.engine.connect() as connection:
            return {r[0]: r[1] for r in connection.execute(select(t.c.user_id, t.c.held))}

    def achievements_by_user(self) -> Iterator[tuple[str, str, int, datetime]]:
        """(user id, achievement id, level, earned_at) of every level earned, by user, then
        achievement, lowest level first."""
        t = UserAchievement.__table__
        q = select(t.c.user_id, t.c.achievement_id, t.c.level, t.c.earned_at).order_by(
            t.c.user_id, t.c.achievement_id, t.c.level
        )
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=20_000).execute(q)
            for row in result:
                yield row[0], row[1], row[2], _utc(row[3])

    def users_of_activities(self, activity_ids: Sequence[str]) -> dict[str, str]:
        """The user of each of ``activity_ids`` that is in the audit trail (id -> user id)."""
        ids = []
        for activity_id in activity_ids:
            try:
                ids.append(uuid.UUID(activity_id))
            except ValueError:
                continue  # not an id of ours: in no row
        if not ids:
            return {}
        q = select(PointActivity.id, PointActivity.user_id).where(PointActivity.id.in_(ids))
        with self.engine.connect() as connection:
            return {str(i): u for i, u in connection.execute(q)}

    def count_activities(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(PointActivity)).scalar_one()
            )

    # -- deletion and export ----------------------------------------------------------------

    def add_tombstone(
        self, *, digest: str, crc: int, at: datetime, expires_at: datetime, mode: str
    ) -> None:
        """Record a deleted user's tombstone (by digest) ahead of the deletion itself, so that
        SQL holds every tombstone Redis does: a rebuild or a reshard after a deletion cut short
        still refuses the user. :meth:`erase_user` writes it again."""
        row = {"digest": digest, "crc": crc, "mode": mode, "deleted_at": at,
               "expires_at": expires_at}  # fmt: skip
        with self.engine.begin() as connection:
            connection.execute(
                self._insert(DeletedUser)
                .values(row)
                .on_conflict_do_update(index_elements=["digest"], set_={"expires_at": expires_at})
            )

    def erase_user(
        self,
        user_id: str,
        *,
        digest: str,
        crc: int,
        pseudonym: str | None,
        at: datetime,
        expires_at: datetime,
        mode: str,
    ) -> dict[str, int]:
        """In one transaction: write the user's tombstone (by ``digest``; an earlier one of
        the same user is kept, its expiry moved), drop tombstones past their expiry, and erase
        the user's rows, or (``pseudonym`` given) move them to the pseudonym with the profile
        fields and descriptions cleared. Returns the rows erased (or moved) per table."""
        done: dict[str, int] = {}
        with self.engine.begin() as connection:
            tomb = _table(DeletedUser)
            connection.execute(delete(tomb).where(tomb.c.expires_at < at))
            row = {"digest": digest, "crc": crc, "mode": mode, "deleted_at": at,
                   "expires_at": expires_at}  # fmt: skip
            connection.execute(
                self._insert(DeletedUser)
                .values(row)
                .on_conflict_do_update(index_elements=["digest"], set_={"expires_at": expires_at})
            )
            for model in _USER_TABLES:
                t = _table(model)
                if pseudonym is None:
                    stmt: Any = delete(t).where(t.c.user_id == user_id)
                else:
                    values: dict[str, Any] = {"user_id": pseudonym}
                    values.update(_CLEARED.get(t.name, {}))
                    stmt = update(t).where(t.c.user_id == user_id).values(values)
                done[t.name] = connection.execute(stmt).rowcount
        return done

    def tombstones(self, now: datetime) -> list[tuple[str, int, datetime]]:
        """(digest, crc, expires_at) of every tombstone still in force at ``now``."""
        t = DeletedUser.__table__
        q = select(t.c.digest, t.c.crc, t.c.expires_at).where(t.c.expires_at > now)
        with self.engine.connect() as connection:
            return [(r[0], int(r[1]), _utc(r[2])) for r in connection.execute(q)]

    def activity_ids(self, user_id: str) -> list[str]:
        """The ids of the user's activities (their idempotency records may still live)."""
        t = PointActivity.__table__
        q = select(t.c.id).where(t.c.user_id == user_id)
        with self.engine.connect() as connection:
            return [str(r[0]) for r in connection.execute(q)]

    def user_rows(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every row the database holds of the user, per table (columns as keys), the
        activities oldest first: what an export shows."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self.engine.connect() as connection:
            for model in _USER_TABLES:
                t = _table(model)
                q = select(t).where(t.c.user_id == user_id)
                if model is PointActivity:
                    q = q.order_by(t.c.created_at, t.c.id)
                out[t.name] = [dict(r._mapping) for r in connection.execute(q)]
        return out

    def snapshots(self) -> dict[str, Row[Any]]:
        """Every user's ``user_score`` snapshot row (columns as attributes), by user id."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(UserScore.__table__))
            return {r.user_id: r for r in rows}


#: The tables with rows of one user (``user_id``): what deleting a user erases or moves.
_USER_TABLES: tuple[type[Base], ...] = (
    PointActivity, UserScore, WeeklyGoal, UserSideQuest, UserAchievement, UserStreakFreeze,
    LeaderboardArchive, PointActivityRollup,
)  # fmt: skip
#: What anonymising clears, per table, besides moving the rows to the pseudonym.
_CLEARED: dict[str, dict[str, Any]] = {
    "point_activity": {"description": ""},
    "user_score": {"username": None, "display_name": None, "time_zone": None},
}


def _table(model: type[Base]) -> Table:
    """The table ``model`` is mapped to (SQLAlchemy types ``__table__`` as any FromClause,
    since a class may be mapped to a subquery; every model of ours maps a Table)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is mapped to {type(table).__name__}, not a Table")
    return table


def _quest(row: Any) -> Quest:
    return Quest(
        id=row.id, title=row.title, description=row.description, quest_type=row.quest_type,
        difficulty=row.difficulty, points_reward=row.points_reward, is_active=row.is_active,
        activity_type=row.activity_type, target_count=row.target_count,
        starts_at=_utc(row.starts_at) if row.starts_at else None,
        ends_at=_utc(row.ends_at) if row.ends_at else None,
    )  # fmt: skip


def _event(row: Any) -> SeasonalEvent:
    return SeasonalEvent(
        id=row.id, title=row.title, start=_utc(row.starts_at), end=_utc(row.ends_at),
        multiplier=float(row.multiplier),
        activity_types=tuple(t for t in row.activity_types.split(",") if t),
        source=API_SOURCE, created_at=_utc(row.created_at),
        ended_at=_utc(row.ended_at) if row.ended_at is not None else None,
    )  # fmt: skip


def _webhook(row: Any) -> Webhook:
    until = row.previous_secret_until
    return Webhook(
        id=row.id, url=row.url, events=tuple(t for t in row.events.split(",") if t),
        enabled=bool(row.enabled), max_in_flight=row.max_in_flight,
        disabled_reason=row.disabled_reason,
        previous_secret_until=_utc(until) if until is not None else None,
        created_at=_utc(row.created_at), updated_at=_utc(row.updated_at),
    )  # fmt: skip


def _delivery(row: Any) -> WebhookDelivery:
    def utc(value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    return WebhookDelivery(
        id=row.id, subscription_id=row.subscription_id, event_id=row.event_id,
        event_type=row.event_type, status=row.status, attempts=row.attempts,
        last_status=row.last_status, last_error=row.last_error,
        last_attempt_at=utc(row.last_attempt_at), next_attempt_at=utc(row.next_attempt_at),
        delivered_at=utc(row.delivered_at), created_at=_utc(row.created_at),
    )  # fmt: skip


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; busy_timeout waits out the other writer
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
