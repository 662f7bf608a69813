"""Request and response bodies (pydantic), apart from the engine's own types."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from engine.domain.results import (
    Activity,
    AwardResult,
    GoalProgress,
    LeaderboardEntry,
    Quest,
    QuestResult,
    RankInfo,
    Reward,
    UserQuest,
    UserState,
)

Description = Annotated[StrictStr, Field(max_length=255)]
UserId = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AwardIn(_In):
    activity_type: StrictStr = Field(examples=["quiz_complete"])
    amount: StrictInt | None = Field(default=None, description="default: the type's points")
    description: Description = ""
    occurred_at: datetime | None = Field(default=None, description="default: now")


class SeedAwardIn(_In):
    """The seed's award-points body."""

    amount: StrictInt = Field(examples=[50])
    activity_type: StrictStr = Field(examples=["comment"])
    description: Description = ""


class BatchItem(AwardIn):
    user_id: UserId
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None


class BatchIn(_In):
    awards: list[BatchItem] = Field(min_length=1, max_length=1000)


class ProfileIn(_In):
    """Fields left out stay as they are; ``null`` clears one."""

    username: Annotated[StrictStr, Field(max_length=150)] | None = None
    display_name: Annotated[StrictStr, Field(max_length=255)] | None = None
    time_zone: Annotated[StrictStr, Field(max_length=64, examples=["Europe/Oslo"])] | None = None


QuestText = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]{0,19}$")]


class QuestPatch(_In):
    """Catalog fields of a side quest; in a PATCH, those left out stay as they are."""

    title: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    description: Annotated[StrictStr, Field(max_length=2000)] | None = None
    quest_type: QuestText | None = Field(default=None, examples=["learning"])
    difficulty: QuestText | None = Field(default=None, examples=["easy"])
    points_reward: StrictInt | None = Field(default=None, examples=[100])
    is_active: bool | None = None
    activity_type: StrictStr | None = Field(
        default=None, examples=["quiz_complete"], description="awards of it advance the quest"
    )
    target_count: StrictInt | None = Field(default=None, description="awards to complete it")
    starts_at: datetime | None = None
    ends_at: datetime | None = None


class QuestIn(QuestPatch):
    """A new side quest for the catalog."""

    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    description: Annotated[StrictStr, Field(max_length=2000)] = ""
    quest_type: QuestText = Field(examples=["learning"])
    difficulty: QuestText = Field(examples=["easy"])
    points_reward: StrictInt = Field(examples=[100])
    is_active: bool = True
    activity_type: StrictStr = Field(examples=["quiz_complete"])
    target_count: StrictInt = 1


class ProgressIn(_In):
    by: StrictInt = Field(default=1, description="steps to advance")


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


#: A route's ``responses=`` (FastAPI's type: status code or range such as "4XX" to its
#: OpenAPI response, e.g. ``{"model": ErrorOut}``).
Responses = dict[int | str, dict[str, Any]]


def error_responses(*statuses: int) -> Responses:
    """``responses=`` documenting each of ``statuses`` as an :class:`ErrorOut` body."""
    return {status: {"model": ErrorOut} for status in statuses}


class UserOut(BaseModel):
    id: str
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
    lifetime_quizzes_completed: int
    lifetime_projects_created: int
    lifetime_comments_posted: int
    activity_counts: dict[str, int]
    points_by_type: dict[str, int]

    @classmethod
    def of(cls, u: UserState) -> UserOut:
        data = {f: getattr(u, f) for f in cls.model_fields if f != "id"}
        return cls(id=u.user_id, **data)


class ActivityOut(BaseModel):
    id: str
    user_id: str
    amount: int
    activity_type: str
    description: str
    tier_at_time: str
    created_at: datetime

    @classmethod
    def of(cls, a: Activity) -> ActivityOut:
        return cls(**{f: getattr(a, f) for f in cls.model_fields})


class RewardOut(BaseModel):
    """Points a goal or quest gave, as an activity of its own (``weekly_goal``/``side_quest``);
    ``ref``: the goal id or quest id."""

    activity_type: str
    ref: str
    points: int
    activity_id: str

    @classmethod
    def of(cls, r: Reward) -> RewardOut:
        return cls(**{f: getattr(r, f) for f in cls.model_fields})


class AwardOut(BaseModel):
    user: UserOut
    point_activity: ActivityOut
    tier_upgraded: bool
    old_tier: str | None
    new_tier: str | None
    level_upgraded: bool
    old_level: int | None
    new_level: int | None
    replayed: bool
    rewards: list[RewardOut] = Field(description="goals and quests this award completed")


class BatchResultOut(BaseModel):
    """One item's outcome: ``result`` or ``error``."""

    index: int
    result: AwardOut | None = None
    error: ErrorBody | None = None


class BatchOut(BaseModel):
    applied: int
    refused: int
    results: list[BatchResultOut]


class SeedUserOut(BaseModel):
    id: str
    username: str | None
    total_points: int
    tier: str
    tier_display: str
    level: int
    points_to_next_tier: int | None
    points_to_next_level: int


class SeedActivityOut(BaseModel):
    id: str
    amount: int
    activity_type: str
    description: str
    created_at: datetime


class SeedAwardOut(BaseModel):
    """Exactly the seed's award-points response."""

    user: SeedUserOut
    point_activity: SeedActivityOut
    tier_upgraded: bool
    old_tier: str | None
    new_tier: str | None

    @classmethod
    def of(cls, r: AwardResult) -> SeedAwardOut:
        u, a = r.user, r.activity
        return cls(
            user=SeedUserOut(
                id=u.user_id, username=u.username, total_points=u.total_points, tier=u.tier,
                tier_display=u.tier_display, level=u.level,
                points_to_next_tier=u.points_to_next_tier,
                points_to_next_level=u.points_to_next_level,
            ),
            point_activity=SeedActivityOut(
                id=a.id, amount=a.amount, activity_type=a.activity_type,
                description=a.description, created_at=a.created_at,
            ),
            tier_upgraded=r.tier_upgraded, old_tier=r.old_tier, new_tier=r.new_tier,
        )  # fmt: skip


class EntryOut(BaseModel):
    rank: int
    user_id: str
    score: int

    @classmethod
    def of(cls, e: LeaderboardEntry) -> EntryOut:
        return cls(rank=e.rank, user_id=e.user_id, score=e.score)


class BoardInfo(BaseModel):
    id: str = Field(description="the board's name in /v1/leaderboards/{board}")
    title: str


class BoardsOut(BaseModel):
    boards: list[BoardInfo]


class LeaderboardOut(BaseModel):
    board: str
    period: str | None
    total_users: int
    entries: list[EntryOut]


class RankOut(BaseModel):
    board: str
    user_id: str
    score: int
    rank: int
    percentile: float
    total_users: int
    points_to_next_rank: int | None = Field(
        description="points to tie the next better score; null for the leaders"
    )

    @classmethod
    def of(cls, board: str, r: RankInfo) -> RankOut:
        return cls(board=board, user_id=r.user_id, score=r.score, rank=r.rank,
                   percentile=r.percentile, total_users=r.total_users,
                   points_to_next_rank=r.points_to_next_rank)  # fmt: skip


class StatusOut(BaseModel):
    """A user's status with recent activities (the seed's my-status)."""

    user: UserOut
    recent_activities: list[ActivityOut]


class ActivityPage(BaseModel):
    activities: list[ActivityOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class StatsOut(BaseModel):
    points_awarded_today: int
    tier_distribution: dict[str, int]
    most_active_users: list[dict[str, Any]]


# -- fast rendering -----------------------------------------------------------------------
# The hot endpoints return these JSON-ready dicts in a JSONResponse, skipping a second pydantic
# validation of their own output; the models above document the same shapes in the OpenAPI
# document, and a test checks that the two agree.


# field names read off the models, so the renderers cannot drift from them
_USER_FIELDS = tuple(f for f in UserOut.model_fields if f != "id")
_ACTIVITY_FIELDS = tuple(ActivityOut.model_fields)
_AWARD_FIELDS = tuple(
    f for f in AwardOut.model_fields if f not in ("user", "point_activity", "rewards")
)
_REWARD_FIELDS = tuple(RewardOut.model_fields)


def user_json(u: UserState) -> dict[str, Any]:
    out = {"id": u.user_id, **{f: getattr(u, f) for f in _USER_FIELDS}}
    day = out["last_activity_date"]
    out["last_activity_date"] = day.isoformat() if day else None
    return out


def activity_json(a: Activity) -> dict[str, Any]:
    out = {f: getattr(a, f) for f in _ACTIVITY_FIELDS}
    out["created_at"] = a.created_at.isoformat().replace("+00:00", "Z")
    return out


def award_json(r: AwardResult) -> dict[str, Any]:
    return {
        "user": user_json(r.user),
        "point_activity": activity_json(r.activity),
        **{f: getattr(r, f) for f in _AWARD_FIELDS},
        "rewards": [{f: getattr(w, f) for f in _REWARD_FIELDS} for w in r.rewards],
    }


# -- goals and quests -------------------------------------------------------------------------


def _fields(model: type[BaseModel], obj: object) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in model.model_fields}


class GoalOut(BaseModel):
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

    @classmethod
    def of(cls, g: GoalProgress) -> GoalOut:
        return cls(**_fields(cls, g))


class GoalsOut(BaseModel):
    """A user's weekly goals for the current week (Monday to Sunday, in the user's zone)."""

    week_start: date
    week_end: date
    goals: list[GoalOut]


class QuestOut(BaseModel):
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

    @classmethod
    def of(cls, q: Quest) -> QuestOut:
        return cls(**_fields(cls, q))


class UserQuestOut(BaseModel):
    quest_id: int
    title: str
    activity_type: str
    status: str = Field(description="in_progress or completed")
    current_progress: int
    target_progress: int
    points_reward: int
    points_awarded: int
    started_at: datetime
    completed_at: datetime | None
    ends_at: datetime | None

    @classmethod
    def of(cls, q: UserQuest) -> UserQuestOut:
        return cls(**_fields(cls, q))


class QuestResultOut(BaseModel):
    quest: UserQuestOut
    reward: RewardOut | None

    @classmethod
    def of(cls, r: QuestResult) -> QuestResultOut:
        return cls(
            quest=UserQuestOut.of(r.quest), reward=RewardOut.of(r.reward) if r.reward else None
        )
