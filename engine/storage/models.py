"""SQL tables (SQLAlchemy 2.x): the durable audit trail and snapshots behind the Redis state.

``point_activity`` holds every activity exactly once (its id is the engine's activity id), with
the user's state after it. ``user_score`` is a snapshot of each user's state; each half (the
points state and the profile) carries the per-user version it was written at, and an older
write never overwrites a newer one. ``weekly_goal``, ``side_quest`` and ``user_side_quest`` are
the seed's engagement tables. ``point_activity_rollup`` keeps the sums of the months of
``point_activity`` that retention dropped. ``leaderboard_period`` and ``leaderboard_archive``
keep the final standings of ended day, week and month boards. ``seasonal_event`` holds the
seasonal events made through the admin API.

The schema is created and changed by the Alembic migrations in ``engine/migrations`` (run
``scoring db upgrade``); these classes are the models those migrations must match.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class PointActivity(Base):
    """One point activity (the seed's PointActivity), with the user's state after it.

    On PostgreSQL the table is range-partitioned by UTC month on ``created_at`` (migration 0008,
    ``engine.storage.partitions``), so its primary key is (id, created_at): a unique key of a
    partitioned table must hold the partition column. An activity's created_at never changes,
    so the id alone still names one row. SQLite keeps one table with the primary key (id)."""

    __tablename__ = "point_activity"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(Integer)
    activity_type: Mapped[str] = mapped_column(String(30))
    description: Mapped[str] = mapped_column(String(255), default="", server_default="")
    tier_at_time: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    # the user's state after this activity
    total_points: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[int] = mapped_column(Integer)
    current_streak_days: Mapped[int] = mapped_column(Integer)
    longest_streak_days: Mapped[int] = mapped_column(Integer)
    last_activity_date: Mapped[date] = mapped_column(Date)
    version: Mapped[int] = mapped_column(BigInteger)
    #: the days (in the user's zone) this activity kept the streak alive over by spending
    #: streak freezes, as ISO dates joined by ","; NULL when it froze none
    frozen_days: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    # set when a seasonal event multiplied the amount: the amount before it (after the cap),
    # the multiplier and the event; ``amount`` is the multiplied amount, what the user got
    base_amount: Mapped[int | None] = mapped_column(Integer, nullable=True)
    multiplier: Mapped[float | None] = mapped_column(Float, nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the activity an adjustment reverses (type ``adjustment``); NULL for every other row
    reverses: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)

    __table_args__ = (
        Index("ix_point_activity_user_created", "user_id", created_at.desc()),
        # partial: the few rows that reverse an activity (a reversal's original is looked up
        # through it; every other insert pays nothing for it)
        Index(
            "ix_point_activity_reverses",
            "reverses",
            postgresql_where=text("reverses IS NOT NULL"),
            sqlite_where=text("reverses IS NOT NULL"),
        ),  # fmt: skip
        Index("ix_point_activity_type_created", "activity_type", created_at.desc()),
        Index("ix_point_activity_user_type", "user_id", "activity_type"),
        # for "points awarded today" and "most active users over the last 7 days"; BRIN on
        # PostgreSQL (rows arrive in time order; it costs inserts almost nothing)
        Index("ix_point_activity_created", "created_at", postgresql_using="brin"),
    )


class PointActivityRollup(Base):
    """The per-user, per-type sums of the activities of a month that retention dropped
    (``SCORING_ACTIVITY_RETENTION_MONTHS``): what ``reconcile`` and ``rebuild`` add to the rows
    still in ``point_activity``. ``month``: the month's first day (UTC)."""

    __tablename__ = "point_activity_rollup"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    activity_type: Mapped[str] = mapped_column(String(30), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    activities: Mapped[int] = mapped_column(BigInteger)


class UserScore(Base):
    """The latest known state of a user: points state and profile, each with its version."""

    __tablename__ = "user_score"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    total_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tier: Mapped[str] = mapped_column(String(20), default="", server_default="")
    level: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    current_streak_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    longest_streak_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_activity_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    state_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    username: Mapped[str | None] = mapped_column(String(150), nullable=True)
    display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    time_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    profile_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_user_score_tier", "tier"),)


class WeeklyGoal(Base):
    """A user's goal for one week (the seed's WeeklyGoal)."""

    __tablename__ = "weekly_goal"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    goal_type: Mapped[str] = mapped_column(String(30))
    week_start: Mapped[date] = mapped_column(Date)
    week_end: Mapped[date] = mapped_column(Date)
    current_progress: Mapped[int] = mapped_column(Integer, default=0)
    target_progress: Mapped[int] = mapped_column(Integer)
    is_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    points_reward: Mapped[int] = mapped_column(Integer, default=30)

    __table_args__ = (
        UniqueConstraint("user_id", "goal_type", "week_start", name="uq_weekly_goal_user_week"),
    )


class SideQuest(Base):
    """A quest in the catalog (the seed's SideQuest)."""

    __tablename__ = "side_quest"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    quest_type: Mapped[str] = mapped_column(String(30))
    difficulty: Mapped[str] = mapped_column(String(20))
    points_reward: Mapped[int] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    activity_type: Mapped[str] = mapped_column(String(30))
    target_count: Mapped[int] = mapped_column(Integer, default=1)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserSideQuest(Base):
    """A user's progress on a quest (the seed's UserSideQuest)."""

    __tablename__ = "user_side_quest"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    side_quest_id: Mapped[int] = mapped_column(ForeignKey("side_quest.id"))
    status: Mapped[str] = mapped_column(String(20), default="in_progress")
    current_progress: Mapped[int] = mapped_column(Integer, default=0)
    target_progress: Mapped[int] = mapped_column(Integer)
    is_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    points_awarded: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (UniqueConstraint("user_id", "side_quest_id", name="uq_user_side_quest"),)


class LeaderboardPeriod(Base):
    """An ended period of a window board whose standings were archived (``day``/``2026-11-24``,
    ``week``/``2026-W47``, ``month``/``2026-11``)."""

    __tablename__ = "leaderboard_period"

    window: Mapped[str] = mapped_column(String(10), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    users: Mapped[int] = mapped_column(Integer)
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LeaderboardArchive(Base):
    """One user's final standing on an ended period's board (competition ranks)."""

    __tablename__ = "leaderboard_archive"

    window: Mapped[str] = mapped_column(String(10), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_leaderboard_archive_rank", "window", "period", "rank"),)


class UserAchievement(Base):
    """A level of an achievement a user earned (levels 1, 2, 3 ... of a multi-level badge)."""

    __tablename__ = "user_achievement"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    achievement_id: Mapped[str] = mapped_column(String(30), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    earned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    points_reward: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("ix_user_achievement_achievement", "achievement_id", "level"),)


class SeasonalEvent(Base):
    """A seasonal event made through the admin API (the rules file's are not stored).
    ``activity_types``: the types it multiplies, comma-separated; ``ended_at``: when an admin
    ended it (it is in force until the earlier of ``ends_at`` and ``ended_at``)."""

    __tablename__ = "seasonal_event"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    multiplier: Mapped[float] = mapped_column(Float)
    activity_types: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserStreakFreeze(Base):
    """The streak freezes a user holds, as of ``seq`` (the outbox entry's id, as the number
    ms x 1,000,000 + sequence: a later change of the same user has a larger one)."""

    __tablename__ = "user_streak_freeze"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    held: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeletedUser(Base):
    """A deleted user's tombstone in SQL, by the SHA-256 of the user id (``digest``), never
    the id: ``scoring rebuild`` skips such users and writes their Redis tombstones again.
    ``crc``: the CRC-32 of the id, the user's shard under any shard count (``crc % K``)."""

    __tablename__ = "deleted_user"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    crc: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(10))
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_deleted_user_expires", "expires_at"),)


class WebhookSubscription(Base):
    """A webhook subscription: where to POST which event types, signed with ``secret``."""

    __tablename__ = "webhook_subscription"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(80))
    previous_secret: Mapped[str | None] = mapped_column(String(80), nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean)
    max_in_flight: Mapped[int] = mapped_column(Integer, default=4)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event to deliver to one subscription, and how its attempts went."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(40), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
    )
