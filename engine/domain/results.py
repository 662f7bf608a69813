"""What the engine returns: plain, immutable dataclasses (no Redis or SQL types leak out)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from engine.domain.periods import day_to_date
from engine.domain.rules import Rules

#: A lifetime counter ``<name>`` of :attr:`Rules.lifetime` shows as ``lifetime_<name>``.
LIFETIME_PREFIX = "lifetime_"


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's live state.

    ``current_streak_days`` is the length of the run of consecutive active days (in the user's
    time zone) that ends on ``last_activity_date``; ``streak_active`` says whether that run can
    still grow, i.e. the last active day is today or yesterday in the user's zone. Days the
    user missed and spent streak freezes on (``[streak]`` rules) are *frozen*: they keep the run
    together and do not count in its length. ``streak_freezes``: the freezes the user holds;
    ``streak_freezes_used``: how many days the user has frozen in all.

    ``activity_counts`` and ``points_by_type`` hold every activity type the user has in
    :meth:`ScoringEngine.status`; in an award's result, only the awarded type and the types the
    script's reply carries.

    ``lifetime`` holds the rules' lifetime counters (:attr:`Rules.lifetime`, the only place that
    names them): counter name -> the count of its activity type. Each is also an attribute,
    ``lifetime_<name>`` (``user.lifetime_quizzes_completed`` under the default rules), which is
    how the API's user schema reads them (see :meth:`__getattr__`).
    """

    user_id: str
    username: str | None
    display_name: str | None
    time_zone: str
    total_points: int
    tier: str
    tier_display: str
    level: int
    points_to_next_tier: int | None
    points_to_next_level: int
    current_streak_days: int
    longest_streak_days: int
    last_activity_date: date | None
    streak_active: bool
    lifetime: dict[str, int]
    activity_counts: dict[str, int] = field(default_factory=dict)
    points_by_type: dict[str, int] = field(default_factory=dict)
    streak_freezes: int = 0
    streak_freezes_used: int = 0
    version: int = 0
    #: the user's local week (``2026-W49``) of the last decay (``[decay]``), None when none,
    #: and the points it took (from the user hash: in an award's result, None and 0)
    last_decay_week: str | None = None
    last_decay_points: int = 0

    @classmethod
    def from_hash(cls, user_id: str, h: dict[str, str], rules: Rules, today: int) -> UserState:
        """Build from the user hash; ``today`` is the current day number in the user's zone."""
        counts: dict[str, int] = {}
        points: dict[str, int] = {}
        for k, v in h.items():
            if k.startswith("n:"):
                counts[k[2:]] = int(v)
            elif k.startswith("pts:"):
                points[k[4:]] = int(v)
        last = h.get("last_day")
        return cls.build(
            user_id, rules, today,
            username=h.get("username"), display_name=h.get("display_name"),
            time_zone=h.get("tz", "UTC"), total=int(h.get("total", 0)),
            streak=int(h.get("streak", 0)), longest=int(h.get("longest", 0)),
            last_day=int(last) if last else None, counts=counts, points=points,
            version=int(h.get("version", 0)),
            freezes=int(h.get("fz", 0)), freezes_used=int(h.get("fz_used", 0)),
            peak=int(h.get("pk", 0)), last_decay_week=h.get("decay_wk"),
            last_decay_points=int(h.get("decay_pts", 0)),
        )  # fmt: skip

    @classmethod
    def build(
        cls,
        user_id: str,
        rules: Rules,
        today: int,
        *,
        username: str | None,
        display_name: str | None,
        time_zone: str,
        total: int,
        streak: int,
        longest: int,
        last_day: int | None,
        counts: dict[str, int],
        points: dict[str, int],
        version: int,
        freezes: int = 0,
        freezes_used: int = 0,
        peak: int = 0,
        last_decay_week: str | None = None,
        last_decay_points: int = 0,
    ) -> UserState:
        """Derive tier, level and the rest from the stored values (tier and level are pure
        functions of ``total`` under ``rules``). ``counts``: activity type -> awards of it; the
        lifetime counters are read from it, one per entry of ``rules.lifetime`` (0 for a type
        it lacks)."""
        held = rules.held_points(total, peak)  # with keep_peak, the peak total when higher
        tier = rules.tier_for(held)
        return cls(
            user_id=user_id,
            username=username,
            display_name=display_name,
            time_zone=time_zone,
            total_points=total,
            tier=tier,
            tier_display=rules.display_for(tier),
            level=rules.level_for(held),
            points_to_next_tier=rules.points_to_next_tier(held),
            points_to_next_level=rules.points_to_next_level(held),
            current_streak_days=streak,
            longest_streak_days=longest,
            last_activity_date=day_to_date(last_day) if last_day is not None else None,
            streak_active=last_day is not None and last_day >= today - 1,
            lifetime={name: counts.get(kind, 0) for name, kind in rules.lifetime.items()},
            activity_counts=counts,
            points_by_type=points,
            streak_freezes=freezes,
            streak_freezes_used=freezes_used,
            version=version,
            last_decay_week=last_decay_week,
            last_decay_points=last_decay_points,
        )

    def __getattr__(self, name: str) -> int:
        """``lifetime_<name>``: the lifetime counter ``<name>`` (``self.lifetime[name]``).

        Called only for names the dataclass does not have; any other raises AttributeError.
        """
        if name.startswith(LIFETIME_PREFIX):
            try:
                return self.lifetime[name[len(LIFETIME_PREFIX) :]]
            except KeyError:
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class Activity:
    """One point activity, as written to the outbox and then to SQL (``point_activity``)."""

    id: str
    user_id: str
    amount: int
    activity_type: str
    description: str
    tier_at_time: str
    created_at: datetime

    @staticmethod
    def time_from_ms(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Reward:
    """A reward an award (or a quest call) gave: a weekly goal's, a side quest's or a streak
    milestone's points, as a point activity of its own (``activity_type`` ``weekly_goal``,
    ``side_quest`` or ``streak_bonus``). ``ref`` is the goal id, the quest id or the milestone's
    streak length (e.g. ``"7"``)."""

    activity_type: str
    ref: str
    points: int
    activity_id: str


@dataclass(frozen=True, slots=True)
class EarnedAchievement:
    """A level of an achievement a user earned (``level`` of ``levels``); its reward is paid as
    an activity of type ``achievement`` (none when ``points_reward`` is 0)."""

    achievement_id: str
    level: int
    levels: int
    title: str
    points_reward: int

    @classmethod
    def of(cls, rules: Rules, achievement_id: str, level: int, points: int) -> EarnedAchievement:
        """Level ``level`` of the achievement, titled as ``rules`` define it (an id they no
        longer define is its own title); ``points``: the reward it paid."""
        a = rules.achievements.get(achievement_id)
        if a is None:
            return cls(achievement_id, level, level, achievement_id, points)
        return cls(achievement_id, level, a.levels, a.title, points)


@dataclass(frozen=True, slots=True)
class AwardResult:
    """The outcome of one award. ``old_*``/``new_*`` are None unless that value changed.

    ``replayed`` is True when the idempotency key (or activity id) had been seen before: nothing
    was changed; ``activity``, the upgrades and ``rewards`` are the first call's, ``user`` is the
    user's state now.
    """

    user: UserState
    activity: Activity
    tier_upgraded: bool
    old_tier: str | None
    new_tier: str | None
    level_upgraded: bool
    old_level: int | None
    new_level: int | None
    replayed: bool = False
    #: goals, quests and streak milestones this award completed and achievement levels it
    #: earned that paid points; ``user`` already includes their points
    rewards: tuple[Reward, ...] = ()
    #: the achievement levels this award earned (a replay: the first call's)
    achievements: tuple[EarnedAchievement, ...] = ()
    #: set when a seasonal event multiplied the amount (``activity.amount`` is the multiplied
    #: amount): the amount before it, the multiplier and the event's id
    base_amount: int | None = None
    multiplier: float | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AdjustmentResult:
    """The outcome of one adjustment (``engine.adjust``): ``activity`` is its row in the audit
    trail (type ``adjustment``, the reason as description, a signed amount); ``reverses`` the
    id of the activity it took back, if any. ``old_*``/``new_*`` are None unless that value
    changed (a negative adjustment may lower them: a demotion). ``replayed``: the idempotency
    key had been seen: nothing changed, ``activity`` is the first call's and ``user`` the
    user's state now."""

    user: UserState
    activity: Activity
    reverses: str | None
    tier_changed: bool
    old_tier: str | None
    new_tier: str | None
    level_changed: bool
    old_level: int | None
    new_level: int | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class GoalProgress:
    """A user's progress on one weekly goal in the user's current week (Monday to Sunday in
    the user's time zone)."""

    goal_id: str
    title: str
    kind: str
    activity_type: str | None
    week_start: date
    week_end: date
    current_progress: int
    target_progress: int
    is_completed: bool
    points_reward: int


@dataclass(frozen=True, slots=True)
class Quest:
    """A side quest of the catalog (SQL ``side_quest``)."""

    id: int
    title: str
    description: str
    quest_type: str
    difficulty: str
    points_reward: int
    is_active: bool
    activity_type: str
    target_count: int
    starts_at: datetime | None
    ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserQuest:
    """A user's side quest: ``status`` is ``in_progress`` or ``completed``."""

    quest_id: int
    title: str
    activity_type: str
    status: str
    current_progress: int
    target_progress: int
    points_reward: int
    points_awarded: int
    started_at: datetime
    completed_at: datetime | None
    ends_at: datetime | None

    @classmethod
    def from_record(cls, quest_id: str, record: str) -> UserQuest:
        """From the record the quest scripts keep (see ``lua/includes/quest_record.lua``)."""
        kind, target, progress, reward, ends, started, completed, title = record.split("\x1f")
        done = completed != ""
        return cls(
            quest_id=int(quest_id), title=title, activity_type=kind,
            status="completed" if done else "in_progress", current_progress=int(progress),
            target_progress=int(target), points_reward=int(reward),
            points_awarded=int(reward) if done else 0,
            started_at=Activity.time_from_ms(int(started)),
            completed_at=Activity.time_from_ms(int(completed)) if done else None,
            ends_at=Activity.time_from_ms(int(ends)) if ends != "0" else None,
        )  # fmt: skip

    def record(self) -> str:
        """The record the quest scripts keep (the inverse of :meth:`from_record`)."""

        def ms(t: datetime | None) -> str:
            return "" if t is None else str(int(t.timestamp() * 1000))

        return "\x1f".join((
            self.activity_type, str(self.target_progress), str(self.current_progress),
            str(self.points_reward), ms(self.ends_at) or "0", ms(self.started_at),
            ms(self.completed_at), self.title,
        ))  # fmt: skip


@dataclass(frozen=True, slots=True)
class QuestResult:
    """The outcome of starting, advancing or completing a user's side quest."""

    quest: UserQuest
    reward: Reward | None
    #: the achievement levels the completion earned (e.g. a ``quests`` badge)
    achievements: tuple[EarnedAchievement, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaderboardEntry:
    """One row of a board, ranked in the read's tie mode (by default competition: 1, 1, 3)."""

    rank: int
    user_id: str
    score: int


@dataclass(frozen=True, slots=True)
class RankInfo:
    """A user's standing on a board. ``percentile``: share of ranked users at or below this rank
    (100.0 for the leaders); ``total_users``: users on the board; ``points_to_next_rank``: points
    to tie the nearest better score (None for the leaders)."""

    user_id: str
    score: int
    rank: int
    percentile: float
    total_users: int
    points_to_next_rank: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a board (``page`` counts from 1)."""

    page: int
    page_size: int
    total_users: int
    entries: list[LeaderboardEntry]


@dataclass(frozen=True, slots=True)
class BoardRow:
    """A board row as a dashboard shows it. ``points`` are the board's (the period's or the
    activity type's); ``tier``, ``level`` and ``streak`` are the user's (``streak`` is 0 once the
    run can no longer grow)."""

    rank: int
    user_id: str
    name: str
    points: int
    tier: str
    tier_display: str
    level: int
    streak: int


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A tier or level change, or an achievement level earned, from the upgrade feed; ``at``:
    when the engine recorded it. For an achievement, ``achievement`` is its title, ``level``
    the level earned, ``from_level`` the one before, and the tiers are "" (not recorded)."""

    user_id: str
    name: str
    at: datetime
    from_tier: str
    tier: str
    from_level: int
    level: int
    achievement: str | None = None

    @property
    def tier_changed(self) -> bool:
        return self.tier != self.from_tier


@dataclass(frozen=True, slots=True)
class LiveBoard:
    """What a live dashboard shows of one board: its top rows, the number of users on it, the
    users per tier (every tier, lowest first; users with points) and the latest upgrades
    (newest first)."""

    board: str
    total_users: int
    rows: list[BoardRow]
    tiers: dict[str, int]
    upgrades: list[Upgrade]


@dataclass(frozen=True, slots=True)
class AchievementLevel:
    """A level of an achievement a user holds, and when it was earned."""

    achievement_id: str
    title: str
    description: str
    level: int
    levels: int
    earned_at: datetime


@dataclass(frozen=True, slots=True)
class AchievementProgress:
    """Where a user stands on an achievement not fully earned: ``current`` of ``target`` for
    level ``next_level``, in the unit the achievement tests (points for ``points``, ``tier``
    and ``level`` badges: a tier's or level's lowest total; days for ``streak``; a count for
    the others)."""

    achievement_id: str
    title: str
    description: str
    kind: str
    level: int
    levels: int
    next_level: int
    current: int
    target: int


@dataclass(frozen=True, slots=True)
class UserAchievements:
    """A user's achievements: the levels earned (oldest first), and the progress toward the
    visible (not hidden) ones not fully earned."""

    user_id: str
    earned: list[AchievementLevel]
    progress: list[AchievementProgress]


@dataclass(frozen=True, slots=True)
class CatalogLevel:
    """One level of an achievement in the catalog: how many users hold it, and what share of
    the users with points (0 to 1)."""

    level: int
    target: int | str
    points_reward: int
    holders: int
    share: float


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    achievement_id: str
    title: str
    description: str
    kind: str
    activity_type: str | None
    hidden: bool
    levels: list[CatalogLevel]


@dataclass(frozen=True, slots=True)
class AchievementCatalog:
    """Every achievement with its holders; ``users``: the users with points (the shares'
    denominator)."""

    users: int
    achievements: list[CatalogEntry]


@dataclass(slots=True)
class BackfillReport:
    """What an achievement backfill did: users tested, levels granted, points paid."""

    users: int = 0
    granted: int = 0
    points: int = 0
    seconds: float = 0.0


@dataclass
class DeletionReport:
    """What one deletion removed (zeros when the user had nothing left: a repeated delete)."""

    user_id: str
    mode: str
    #: whether the user was already deleted (their tombstone was there)
    already_deleted: bool
    #: the user's own Redis keys deleted (user hash, day bitmap, goals, quests...)
    redis_keys: int = 0
    #: the boards the user left
    boards: int = 0
    #: the user's upgrade feed entries deleted
    feed_entries: int = 0
    #: achievement levels whose holder counts went down
    achievements: int = 0
    #: undrained outbox entries (and dead letters) of the user deleted
    outbox_entries: int = 0
    #: idempotency records of the user's activities deleted
    idempotency_records: int = 0
    #: SQL rows erased (or moved to a pseudonym), per table
    sql_rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
