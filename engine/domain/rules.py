"""Scoring rules: tiers, levels, activity types, weekly goals, retention.

The defaults are the seed design's (see DESIGN.md). A TOML rules file (``SCORING_RULES``) can
override any section; a section given in the file replaces that section's defaults, except
``[activity_types.*]``, where each named type is merged over its default (so a file can change
one type's cap without restating the other ten) and new types may be added. An invalid file fails
at start-up with a :class:`~engine.domain.errors.ConfigError` naming the field.

Tier and level are pure functions of total points. The award script computes them from the
thresholds this module hands it, so the rules live here and only here.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import unicodedata
import uuid
from bisect import bisect_right
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from engine.domain.errors import ConfigError
from engine.domain.events import MAX_STORED_AMOUNT, multiplied

TypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,29}$")]


#: A name or title shown to users (and stored in SQL, e.g. in a goal reward's description): no
#: control characters, which PostgreSQL (NUL) or a dashboard could not take.
def _no_control(text: str) -> str:
    if any(c < " " or c == "\x7f" or unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise ValueError("must not contain control characters or lone surrogates")
    return text


Label = Annotated[str, AfterValidator(_no_control)]

DEFAULT_TIERS: dict[str, int] = {
    "ember": 0,
    "spark": 250,
    "blaze": 500,
    "beacon": 1000,
    "phoenix": 2500,
}

DEFAULT_LEVELS: list[int] = [
    0, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 2500, 3500,
    5000, 7500, 10000, 15000, 20000, 30000, 40000, 50000, 60000, 70000, 80000,
]  # fmt: skip

#: name: (display name, default points, per-award cap). Caps admit every amount in the seed.
DEFAULT_ACTIVITY_TYPES: dict[str, tuple[str, int, int]] = {
    "quiz_complete": ("Quiz Completed", 25, 500),
    "project_create": ("Project Created", 100, 1000),
    "project_update": ("Project Updated", 10, 200),
    "comment": ("Comment Posted", 5, 100),
    "reaction": ("Reaction Given", 1, 20),
    "daily_login": ("Daily Login", 5, 50),
    "streak_bonus": ("Streak Bonus", 5, 500),
    "weekly_goal": ("Weekly Goal Completed", 30, 1000),
    "side_quest": ("Side Quest Completed", 50, 5000),
    "special_event": ("Special Event", 100, 10000),
    "referral": ("Referral Bonus", 100, 1000),
    "achievement": ("Achievement Unlocked", 10, 1_000_000),
}


#: Activity types whose awards do not count as a day of activity for the streak (a bonus for a
#: streak must not extend it).
DEFAULT_NO_STREAK = frozenset({"streak_bonus", "achievement"})

#: What a weekly goal counts (see :class:`WeeklyGoal`).
GoalKind = Literal["count", "points", "active_days"]

#: Goal id: (kind, activity type counted, target, title). Every goal rewards 30 points by default.
DEFAULT_WEEKLY_GOALS: dict[str, tuple[GoalKind, str | None, int, str]] = {
    "complete_quizzes": ("count", "quiz_complete", 5, "Complete 5 quizzes"),
    "post_comments": ("count", "comment", 10, "Post 10 comments"),
    "create_projects": ("count", "project_create", 2, "Create 2 projects"),
    "earn_points": ("points", None, 1000, "Earn 1000 points"),
    "active_days": ("active_days", None, 5, "Be active on 5 days"),
}

#: The lifetime counters a user's state shows (``lifetime_<name>``): name -> the activity type
#: whose awards it counts. The seed's three.
DEFAULT_LIFETIME: dict[str, str] = {
    "quizzes_completed": "quiz_complete",
    "projects_created": "project_create",
    "comments_posted": "comment",
}

#: The activity types of the rewards the engine itself awards.
GOAL_REWARD_TYPE = "weekly_goal"
QUEST_REWARD_TYPE = "side_quest"
STREAK_BONUS_TYPE = "streak_bonus"
ACHIEVEMENT_REWARD_TYPE = "achievement"
#: The activity type of corrections, reversals and decay (``engine.adjust``): not an activity
#: type of the rules (reserved: a rules file may not define it), never awarded.
ADJUSTMENT_TYPE = "adjustment"
#: The reason (description) of the adjustments the decay job makes.
DECAY_REASON = "decay"
#: The description of a reward's activity: a weekly goal's says this and the goal's title, a
#: side quest's this and the quest's title (the award and quest scripts write them).
GOAL_REWARD_DESC = "Weekly goal: "
QUEST_REWARD_DESC = "Completed: "
ACHIEVEMENT_REWARD_DESC = "Achievement: "
#: A streak milestone's reward (type ``streak_bonus``) says this, then the streak's length.
MILESTONE_DESC = "Streak milestone: "
#: Activity types that are rewards: a seasonal event multiplies none of them unless its
#: ``activity_types`` names it. ``achievement`` is reserved for the achievements' rewards.
REWARD_TYPES = frozenset(
    {GOAL_REWARD_TYPE, QUEST_REWARD_TYPE, STREAK_BONUS_TYPE, ACHIEVEMENT_REWARD_TYPE}
)
#: Rewards the scripts pay themselves (not through an award call), which no event can multiply.
SCRIPT_REWARD_TYPES = frozenset({GOAL_REWARD_TYPE, QUEST_REWARD_TYPE, ACHIEVEMENT_REWARD_TYPE})
#: A seasonal event's id: lowercase letters, digits, ``_`` and ``-``, a letter first.
EventId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
#: Namespace of the ids of rewards (see :func:`reward_id`).
REWARD_NAMESPACE = uuid.UUID("2b0c6f7e-4f3a-5d8e-9c1b-7a6e5d4c3b2a")


def reward_id(key: str) -> str:
    """The activity id of a reward: uuid5 of its key, which the scripts build as ``goal``, user,
    goal id and week (or ``quest``, user and quest id; or ``achievement``, user, achievement id
    and level; or ``streak``, user, the local day number the streak run started on and the
    milestone's length) joined by ``:`` (unambiguous: goal ids, weeks, quest and achievement ids
    and numbers hold no colon). The same reward
    always gets the same id, so SQL's primary key would refuse a second copy."""
    return str(uuid.uuid5(REWARD_NAMESPACE, key))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldProblem(ValueError):
    """A validator's error about one field (``field``, relative to the model validated), so
    that :func:`build_rules` names it: ``events.double_xp.activity_types``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ActivityType(_Strict):
    """An activity type: display name, default points, and the most one award may carry."""

    display: Label = Field(min_length=1, max_length=64)
    points: int = Field(gt=0)
    max_points: int = Field(gt=0)
    #: whether an award of this type makes its day an active day for the streak
    streak: bool = True

    @model_validator(mode="after")
    def _cap_admits_default(self) -> ActivityType:
        if self.points > self.max_points:
            raise ValueError(f"points ({self.points}) exceed max_points ({self.max_points})")
        return self


class Levels(_Strict):
    """Level n starts at ``thresholds[n-1]``; past the last, one level per ``step_after`` points."""

    thresholds: list[int] = Field(default_factory=lambda: list(DEFAULT_LEVELS), min_length=1)
    step_after: int = Field(default=10000, gt=0)

    @model_validator(mode="after")
    def _increasing(self) -> Levels:
        t = self.thresholds
        if t[0] != 0:
            raise ValueError("the first level threshold must be 0")
        if any(b <= a for a, b in zip(t, t[1:])):
            raise ValueError("level thresholds must be strictly increasing")
        return self


class WeeklyGoal(_Strict):
    """A goal every user has each week (Monday to Sunday in the user's time zone).

    ``kind``: ``count`` (awards of ``activity_type``), ``points`` (points of awards, not counting
    goal or quest rewards) or ``active_days`` (days with activity). The award that takes the
    progress to ``target`` also awards ``reward`` points (type ``weekly_goal``), once per user,
    goal and week.
    """

    kind: GoalKind
    activity_type: TypeName | None = None
    target: int = Field(gt=0, le=1_000_000_000)
    reward: int = Field(default=30, gt=0, le=1_000_000)
    title: Label = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _type_only_for_count(self) -> WeeklyGoal:
        if (self.kind == "count") != (self.activity_type is not None):
            raise ValueError("activity_type is required for a count goal, and only for one")
        return self


#: What an achievement measures (see :class:`Achievement`).
AchievementKind = Literal["count", "points", "tier", "level", "streak", "goals", "quests"]

#: The most levels one achievement may have.
MAX_ACHIEVEMENT_LEVELS = 20


class Achievement(_Strict):
    """A badge a user earns once per level, inside the award that crosses its target.

    ``kind``: ``count`` (awards of ``activity_type``), ``points`` (total points), ``tier``
    (reaching the tier named by ``target``), ``level`` (reaching that level), ``streak``
    (current streak days), ``goals`` (weekly goals completed, lifetime) or ``quests`` (side
    quests completed). ``target``: a number (a tier name for ``tier``), or a list of increasing
    ones for a multi-level achievement (level 1, 2, 3 ... of the same badge). ``reward``: points
    paid per level (one number for every level, or one per level; 0 = none), as an activity of
    type ``achievement``. ``hidden``: not listed to a user until earned.
    """

    kind: AchievementKind
    activity_type: TypeName | None = None
    target: int | str | list[int] | list[str]
    reward: int | list[int] = 0
    title: Label = Field(min_length=1, max_length=200)
    description: Label = Field(default="", max_length=500)
    hidden: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Achievement:
        if (self.kind == "count") != (self.activity_type is not None):
            raise FieldProblem(
                "activity_type",
                "activity_type is required for a count achievement, and only for one",
            )
        targets = self.targets
        if not 1 <= len(targets) <= MAX_ACHIEVEMENT_LEVELS:
            raise FieldProblem("target", f"between 1 and {MAX_ACHIEVEMENT_LEVELS} levels")
        if self.kind == "tier":
            if not all(isinstance(t, str) for t in targets):
                raise FieldProblem("target", "a tier achievement's target names a tier")
        else:
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
                raise FieldProblem("target", "must be a whole number or a list of them")
            if any(t < 1 or t > 1_000_000_000 for t in targets):  # type: ignore[operator]
                raise FieldProblem("target", "each must be between 1 and 1,000,000,000")
            if any(b <= a for a, b in zip(targets, targets[1:])):  # type: ignore[operator]
                raise FieldProblem("target", "the levels' targets must be strictly increasing")
        rewards = self.rewards
        if len(rewards) != len(targets):
            raise FieldProblem("reward", f"one number, or one per level ({len(targets)})")
        if any(r < 0 or r > 1_000_000 for r in rewards):
            raise FieldProblem("reward", "each must be between 0 and 1,000,000")
        return self

    @property
    def targets(self) -> list[int | str]:
        return list(self.target) if isinstance(self.target, list) else [self.target]

    @property
    def levels(self) -> int:
        return len(self.targets)

    @property
    def rewards(self) -> list[int]:
        if isinstance(self.reward, list):
            return list(self.reward)
        return [self.reward] * self.levels


class SeasonalEventRule(_Strict):
    """A seasonal event: from ``start`` (inclusive) to ``end`` (exclusive), awards of its
    ``activity_types`` carry ``multiplier`` times their amount (see
    :func:`engine.domain.events.multiplied` for the rounding, and
    :func:`engine.domain.events.event_in_force` for overlapping events).

    ``start`` and ``end`` are instants: ISO 8601 with an offset (a TOML offset date-time, or a
    string). ``activity_types`` defaults to every type that is not a reward
    (:data:`REWARD_TYPES`); it may name ``streak_bonus``, never a reward the scripts pay
    (:data:`SCRIPT_REWARD_TYPES`).
    """

    start: AwareDatetime
    end: AwareDatetime
    multiplier: float = Field(gt=0, le=10, allow_inf_nan=False, strict=True)
    activity_types: list[TypeName] | None = Field(default=None, min_length=1)
    title: Label = Field(min_length=1, max_length=200)

    @field_validator("start", "end")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range") from None

    @model_validator(mode="after")
    def _ends_after_start(self) -> SeasonalEventRule:
        if self.end <= self.start:
            raise FieldProblem("end", "end must be after start")
        return self

    def types(self, known: dict[str, ActivityType]) -> tuple[str, ...]:
        """The activity types it multiplies, among the rules' ``known`` types.

        Raises:
            FieldProblem: ``activity_types`` names an unknown type or a script-paid reward, or
                the multiplied cap of a type exceeds what the audit trail stores.
        """
        if self.activity_types is None:
            types = tuple(name for name in known if name not in REWARD_TYPES)
        else:
            for name in self.activity_types:
                if name not in known:
                    raise FieldProblem("activity_types", f"unknown activity type {name!r}")
                if name in SCRIPT_REWARD_TYPES:
                    raise FieldProblem(
                        "activity_types",
                        f"{name!r} is a reward the engine pays: no event multiplies it",
                    )
            types = tuple(dict.fromkeys(self.activity_types))
        for name in types:
            if multiplied(known[name].max_points, self.multiplier) > MAX_STORED_AMOUNT:
                raise FieldProblem(
                    "multiplier",
                    f"{self.multiplier} times the cap of {name!r} exceeds {MAX_STORED_AMOUNT}",
                )
        return types


class Retention(_Strict):
    """How long window leaderboards are kept after their window ends, in days."""

    day_days: int = Field(default=8, ge=1, le=3660)
    week_days: int = Field(default=35, ge=1, le=3660)
    month_days: int = Field(default=400, ge=1, le=3660)


class Idempotency(_Strict):
    """How long an award's id is remembered for de-duplication, in seconds.

    ``key_ttl`` applies to caller-given idempotency keys; ``auto_ttl`` to the ids the engine
    generates, which only need to outlive the Redis client's own retries of the same script call
    (redis-py re-sends a command whose reply a dropped connection lost, within seconds). Each
    record costs about 190 bytes of Redis (README, "Capacity"): at 1,000 keyed awards/s the 24 h
    default holds 86 M of them, about 16 GB; choose ``key_ttl`` for the retry window clients
    really have.
    """

    key_ttl: int = Field(default=86400, ge=60)
    auto_ttl: int = Field(default=60, ge=60)


MilestoneLength = Annotated[int, Field(ge=1, le=36_500)]
MilestonePoints = Annotated[int, Field(gt=0, le=1_000_000)]


class Streak(_Strict):
    """Streak freezes and milestones (``[streak]``).

    A user earns one freeze each time the current streak (active days of the run) reaches a
    multiple of ``freeze_every_days`` on a new latest day, holding at most ``freezes_max``
    (0: freezes are off, the default). An activity after missed days that the user holds enough
    freezes for keeps the streak alive and spends one freeze per missed day: those days are
    *frozen*, not active (the streak's length does not count them). ``milestones``: streak
    length -> points, paid once per streak run (as a ``streak_bonus`` activity) by the award
    that takes the run to that length; none by default.
    """

    freezes_max: int = Field(default=0, ge=0, le=365)
    freeze_every_days: int = Field(default=7, ge=1, le=365)
    milestones: dict[MilestoneLength, MilestonePoints] = Field(default_factory=dict)


class Adjustments(_Strict):
    """Corrections and reversals (``[adjustments]``). ``keep_peak``: a user's tier and level
    stay at the highest they reached when an adjustment lowers the total (the peak total is
    kept in the user hash, ``pk``); false (the default): they follow the total down."""

    keep_peak: bool = False


class Decay(_Strict):
    """Decay of inactive users (``[decay]``, off by default): a user with no activity for
    ``after_days`` days (in the user's zone) loses ``percent`` of the total or ``points`` once
    per week (exactly one of the two), never below ``floor``: a number of points, or
    ``"tier"`` (the threshold of the user's current tier)."""

    #: on when the section gives ``percent`` or ``points`` (unless ``enabled = false``)
    enabled: bool = False
    after_days: int = Field(default=30, ge=1, le=3650)
    percent: int | None = Field(default=None, ge=1, le=100)
    points: int | None = Field(default=None, ge=1, le=MAX_STORED_AMOUNT)
    floor: int | str = 0

    @model_validator(mode="before")
    @classmethod
    def _on_when_a_rate_is_given(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "enabled" not in data
            and ("percent" in data or "points" in data)
        ):
            return {**data, "enabled": True}
        return data

    @model_validator(mode="after")
    def _one_rate(self) -> Decay:
        if self.percent is not None and self.points is not None:
            raise FieldProblem("points", "give percent or points, not both")
        if self.enabled and self.percent is None and self.points is None:
            raise FieldProblem("percent", "one of percent and points is required")
        if (isinstance(self.floor, str) and self.floor != "tier") or (
            isinstance(self.floor, int) and not 0 <= self.floor <= MAX_STORED_AMOUNT
        ):
            raise FieldProblem("floor", f'a number of points (0 to {MAX_STORED_AMOUNT}) or "tier"')
        return self

    def loss(self, total: int) -> int:
        """The points a week of decay takes from ``total`` (before the floor): ``points``, or
        ``percent`` of it rounded down, at least 1."""
        if self.points is not None:
            return self.points
        assert self.percent is not None
        return max(1, total * self.percent // 100)


class Rules(_Strict):
    """The complete, validated rule set. Immutable; build with :func:`load_rules`."""

    tiers: dict[TypeName, int] = Field(default_factory=lambda: dict(DEFAULT_TIERS), min_length=1)
    tier_display: dict[TypeName, Label] = Field(default_factory=dict)
    levels: Levels = Field(default_factory=Levels)
    activity_types: dict[TypeName, ActivityType] = Field(min_length=1)
    weekly_goals: dict[TypeName, WeeklyGoal] = Field(default_factory=lambda: _default_goals())
    retention: Retention = Field(default_factory=Retention)
    idempotency: Idempotency = Field(default_factory=Idempotency)
    streak: Streak = Field(default_factory=Streak)
    #: ``lifetime_<name>`` counters of a user's state: name -> activity type counted
    lifetime: dict[TypeName, TypeName] = Field(default_factory=lambda: dict(DEFAULT_LIFETIME))
    #: badges (``[achievements.<id>]``); the defaults are :func:`default_achievements`
    achievements: dict[TypeName, Achievement] = Field(default_factory=dict)
    adjustments: Adjustments = Field(default_factory=Adjustments)
    decay: Decay = Field(default_factory=Decay)

    @model_validator(mode="before")
    @classmethod
    def _default_achievements(cls, data: Any) -> Any:
        if isinstance(data, dict) and "achievements" not in data:
            tiers = data.get("tiers", DEFAULT_TIERS)
            if isinstance(tiers, dict):
                data = {**data, "achievements": default_achievements(list(tiers))}
        return data

    #: seasonal events of the rules file (more come from the admin API, stored in SQL)
    events: dict[EventId, SeasonalEventRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_references(self) -> Rules:
        for event_id, event in self.events.items():
            try:
                event.types(self.activity_types)
            except FieldProblem as exc:
                raise FieldProblem(f"events.{event_id}.{exc.field}", str(exc)) from None
        for name, activity_type in self.lifetime.items():
            if activity_type not in self.activity_types:
                raise ValueError(
                    f"lifetime counter {name!r} counts unknown activity type {activity_type!r}"
                )
        for name in (GOAL_REWARD_TYPE, QUEST_REWARD_TYPE, STREAK_BONUS_TYPE):
            if name not in self.activity_types:
                raise ValueError(f"activity type {name!r} is required (the engine awards it)")
        for goal_id, goal in self.weekly_goals.items():
            if goal.activity_type is not None and goal.activity_type not in self.activity_types:
                raise ValueError(
                    f"weekly goal {goal_id!r} counts unknown activity type {goal.activity_type!r}"
                )
        if ACHIEVEMENT_REWARD_TYPE not in self.activity_types:
            raise ValueError(f"activity type {ACHIEVEMENT_REWARD_TYPE!r} is required")
        if ADJUSTMENT_TYPE in self.activity_types:
            raise FieldProblem(
                f"activity_types.{ADJUSTMENT_TYPE}",
                f"{ADJUSTMENT_TYPE!r} is reserved for corrections (engine.adjust)",
            )
        for ach_id, ach in self.achievements.items():
            where = f"achievements.{ach_id}"
            if ach.activity_type is not None and ach.activity_type not in self.activity_types:
                raise FieldProblem(
                    f"{where}.activity_type", f"unknown activity type {ach.activity_type!r}"
                )
            if ach.kind == "tier":
                unknown = [t for t in ach.targets if t not in self.tiers]
                if unknown:
                    raise FieldProblem(f"{where}.target", f"unknown tier(s) {unknown}")
                points = [self.tiers[str(t)] for t in ach.targets]
                if any(b <= a for a, b in zip(points, points[1:])):
                    raise FieldProblem(f"{where}.target", "tiers must be listed lowest first")
        return self

    @field_validator("tiers")
    @classmethod
    def _tiers_increasing(cls, tiers: dict[str, int]) -> dict[str, int]:
        values = list(tiers.values())
        if values[0] != 0:
            raise ValueError("the first tier must start at 0")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError("thresholds must be strictly increasing, lowest first")
        return tiers

    @field_validator("tier_display")
    @classmethod
    def _known_tiers(cls, display: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        unknown = set(display) - set(info.data.get("tiers") or {})
        if unknown:
            raise ValueError(f"unknown tier(s) {sorted(unknown)}")
        return display

    # -- derived tables ---------------------------------------------------------------------

    @cached_property
    def tier_names(self) -> list[str]:
        return list(self.tiers)

    @cached_property
    def tier_thresholds(self) -> list[int]:
        return list(self.tiers.values())

    @cached_property
    def script_tables(self) -> dict[str, object]:
        """The rule tables the award and quest scripts need, defined as ``RULES`` ahead of their
        source (see ``lua/award.lua``'s header)."""
        kinds = {"count": 1, "points": 2, "active_days": 3}
        ach: dict[str, Any] = self._achievement_tables
        return {
            "tier_names": self.tier_names,
            "tier_at": self.tier_thresholds,
            "level_at": self.levels.thresholds,
            "level_step": self.levels.step_after,
            "goals": [
                {
                    "id": goal_id,
                    "kind": kinds[g.kind],
                    "type": g.activity_type or "",
                    "target": g.target,
                    "reward": g.reward,
                    "desc": GOAL_REWARD_DESC + g.title,
                }
                for goal_id, g in self.weekly_goals.items()
            ],  # fmt: skip
            "goal_type": GOAL_REWARD_TYPE,
            "quest_type": QUEST_REWARD_TYPE,
            # awards of these types are rewards: they advance no goal
            "reward_types": {
                GOAL_REWARD_TYPE: True,
                QUEST_REWARD_TYPE: True,
                ACHIEVEMENT_REWARD_TYPE: True,
            },  # fmt: skip
            "quest_desc": QUEST_REWARD_DESC,
            # the fields of the goal hash the award script reads ("wk", then each goal's), and
            # the user hash fields of the counts its reply carries, in order: ready, so that
            # the script builds no names on every call
            "goal_fields": ["wk", *(f"g:{goal_id}" for goal_id in self.weekly_goals)],
            "lifetime_fields": [f"n:{t}" for t in self.lifetime_types],
            # streak freezes and milestones (shortest first: {length, points, description})
            "freezes_max": self.streak.freezes_max,
            "freeze_every": self.streak.freeze_every_days,
            "milestones": [
                {"len": n, "points": p, "desc": f"{MILESTONE_DESC}{n} days"}
                for n, p in sorted(self.streak.milestones.items())
            ],
            "bonus_type": STREAK_BONUS_TYPE,
            # tier and level from the peak total ("pk" in the user hash) when it is higher
            "keep_peak": self.adjustments.keep_peak,
            "adjustment_type": ADJUSTMENT_TYPE,
            **ach,
            # per activity type: the lifetime counts, then ach_fields_for that type
            "award_fields": {
                name: [*(f"n:{t}" for t in self.lifetime_types), *fields]
                for name, fields in ach["ach_fields_for"].items()
            },
        }

    @cached_property
    def _achievement_tables(self) -> dict[str, Any]:
        """The achievements as the scripts test them (``lua/includes/achievements.lua``): each
        compares one field of the user hash with its levels' targets (tier, level and points
        targets all become totals)."""
        table: list[dict[str, Any]] = []
        for ach_id, a in self.achievements.items():
            multi = a.levels > 1
            table.append({
                "id": ach_id,
                "field": self.achievement_field(a),
                "targets": self.achievement_thresholds(a),
                "rewards": a.rewards,
                "desc": [
                    ACHIEVEMENT_REWARD_DESC + a.title + (f" (level {n})" if multi else "")
                    for n in range(1, a.levels + 1)
                ],
            })  # fmt: skip
        # the award script tests only what an award of each type can move: the badges of the
        # total, of the streak (a type that counts for it), of its own count, and of the counts
        # of rewards (a goal, quest or achievement reward the award may pay); it reads their
        # levels held ("a:<id>") and the counts it does not know, after the lifetime counts
        by_type: dict[str, list[dict[str, Any]]] = {}
        fields_by_type: dict[str, list[str]] = {}
        rewarded = {f"n:{t}" for t in (GOAL_REWARD_TYPE, QUEST_REWARD_TYPE, STREAK_BONUS_TYPE,
                                       ACHIEVEMENT_REWARD_TYPE)}  # fmt: skip
        for name, spec in self.activity_types.items():
            moved = {"total", f"n:{name}", *rewarded} | ({"streak"} if spec.streak else set())
            mine = [t for t in table if t["field"] in moved]
            counts = list(dict.fromkeys(
                t["field"] for t in mine if t["field"] not in ("total", "streak", f"n:{name}")
            ))  # fmt: skip
            by_type[name] = mine
            fields_by_type[name] = [f"a:{t['id']}" for t in mine] + counts
        return {
            "achievements": table,
            "ach_type": ACHIEVEMENT_REWARD_TYPE,
            # what the quest and backfill scripts read: each one's level held, then the counts
            "ach_fields": [f"a:{t['id']}" for t in table]
            + list(
                dict.fromkeys(t["field"] for t in table if t["field"] not in ("total", "streak"))
            ),  # fmt: skip
            "ach_for": by_type,
            "ach_fields_for": fields_by_type,
        }

    @cached_property
    def achievements_digest(self) -> str:
        """A digest of what the achievements test (their fields, thresholds, rewards): it
        changes when a backfill may grant something new."""
        text = json.dumps(self._achievement_tables["achievements"], sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def achievement_field(self, a: Achievement) -> str:
        """The user hash field an achievement tests."""
        if a.kind == "count":
            return f"n:{a.activity_type}"
        if a.kind == "streak":
            return "streak"
        if a.kind == "goals":
            return f"n:{GOAL_REWARD_TYPE}"
        if a.kind == "quests":
            return f"n:{QUEST_REWARD_TYPE}"
        return "total"  # points, tier, level

    def achievement_reward(self, achievement_id: str, level: int) -> int:
        """The points level ``level`` of an achievement pays (0 for one the rules lack)."""
        a = self.achievements.get(achievement_id)
        if a is None or not 1 <= level <= a.levels:
            return 0
        return a.rewards[level - 1]

    def achievement_thresholds(self, a: Achievement) -> list[int]:
        """The value of :meth:`achievement_field` at which each level of ``a`` is earned."""
        if a.kind == "tier":
            return [self.tiers[str(t)] for t in a.targets]
        if a.kind == "level":
            return [self.level_start(int(t)) for t in a.targets]
        return [int(t) for t in a.targets]

    @cached_property
    def lifetime_types(self) -> list[str]:
        """The activity types the lifetime counters count, each once, in the table's order."""
        return list(dict.fromkeys(self.lifetime.values()))

    # -- pure functions of total points ---------------------------------------------------

    def held_points(self, total: int, peak: int = 0) -> int:
        """The points a user's tier and level are of: the total, or with ``[adjustments]
        keep_peak`` the peak total (``pk``) when it is higher."""
        return max(total, peak) if self.adjustments.keep_peak else total

    def tier_for(self, points: int) -> str:
        return self.tier_names[bisect_right(self.tier_thresholds, points) - 1]

    def display_for(self, tier: str) -> str:
        return self.tier_display.get(tier) or tier.replace("_", " ").title()

    def points_to_next_tier(self, points: int) -> int | None:
        i = bisect_right(self.tier_thresholds, points)
        return None if i >= len(self.tier_thresholds) else self.tier_thresholds[i] - points

    def level_for(self, points: int) -> int:
        t = self.levels.thresholds
        if points >= t[-1]:
            return len(t) + (points - t[-1]) // self.levels.step_after
        return bisect_right(t, points)

    def level_start(self, level: int) -> int:
        """The fewest points of ``level`` (the inverse of :meth:`level_for`)."""
        t = self.levels.thresholds
        if level <= len(t):
            return t[max(level, 1) - 1]
        return t[-1] + (level - len(t)) * self.levels.step_after

    def points_to_next_level(self, points: int) -> int:
        t = self.levels.thresholds
        if points >= t[-1]:
            step = self.levels.step_after
            return step - (points - t[-1]) % step
        return t[bisect_right(t, points)] - points


def _default_types() -> dict[str, dict[str, Any]]:
    return {
        name: {
            "display": display,
            "points": points,
            "max_points": cap,
            "streak": name not in DEFAULT_NO_STREAK,
        }  # fmt: skip
        for name, (display, points, cap) in DEFAULT_ACTIVITY_TYPES.items()
    }


def default_achievements(tiers: list[str]) -> dict[str, Achievement]:
    """The default badges: a first quiz; 10, 100 and 1,000 comments; reaching each tier above
    the first (``tiers``, lowest first); a 7, 30 and 100-day streak. No rewards."""
    found = {
        "first_quiz": Achievement(kind="count", activity_type="quiz_complete", target=1,
                                  title="First quiz", description="Complete a quiz"),
        "commenter": Achievement(kind="count", activity_type="comment", target=[10, 100, 1000],
                                 title="Commenter", description="Post 10, 100, 1,000 comments"),
        "streak": Achievement(kind="streak", target=[7, 30, 100], title="On a roll",
                              description="Be active 7, 30, 100 days in a row"),
    }  # fmt: skip
    if len(tiers) > 1:
        found["tiers"] = Achievement(kind="tier", target=tiers[1:], title="Climber",
                                     description="Reach each tier")  # fmt: skip
    return found


def _default_goals() -> dict[str, WeeklyGoal]:
    return {
        goal_id: WeeklyGoal(kind=kind, activity_type=activity_type, target=target, title=title)
        for goal_id, (kind, activity_type, target, title) in DEFAULT_WEEKLY_GOALS.items()
    }


def build_rules(overrides: dict[str, Any] | None = None, *, source: str = "rules") -> Rules:
    """Validate ``overrides`` (the parsed rules file) over the defaults.

    Raises:
        ConfigError: naming the first invalid field, e.g. ``activity_types.comment.points``.
    """
    data = dict(overrides or {})
    types = _default_types()
    given = data.pop("activity_types", None)
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"{source}: activity_types: must be a table", field="activity_types")
    for name, spec in (given or {}).items():
        if isinstance(spec, dict) and name in types:
            types[name] = {**types[name], **spec}
        else:
            types[name] = spec
    data["activity_types"] = types
    try:
        return Rules.model_validate(data)
    except PydanticValidationError as exc:
        loc, msg = error_field(exc)
        raise ConfigError(f"{source}: {loc}: {msg}", field=loc) from None


def error_field(exc: PydanticValidationError) -> tuple[str, str]:
    """The dotted field (``(top level)`` when none) and message of ``exc``'s first error; a
    :class:`FieldProblem` a validator raised adds its own field to the location."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    msg = err["msg"]
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        parts.append(problem.field)
        msg = str(problem)
    return ".".join(parts) or "(top level)", msg


def load_rules(path: str | Path | None = None) -> Rules:
    """The default rules, or those of the TOML file at ``path`` laid over them."""
    if path is None or str(path) == "":
        return build_rules()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"rules file {p} does not exist", field="SCORING_RULES") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"rules file {p}: {exc}", field="SCORING_RULES") from None
    return build_rules(data, source=f"rules file {p}")
