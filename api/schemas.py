"""Request and response bodies (pydantic), apart from the engine's own types."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    AliasChoices,
    AliasPath,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from starlette.responses import Response

from engine.domain.events import SeasonalEvent
from engine.domain.results import (
    LIFETIME_PREFIX,
    AchievementCatalog,
    AchievementLevel,
    AchievementProgress,
    Activity,
    AdjustmentResult,
    AwardResult,
    CatalogEntry,
    CatalogLevel,
    EarnedAchievement,
    GoalProgress,
    LeaderboardEntry,
    Quest,
    QuestResult,
    RankInfo,
    Reward,
    UserAchievements,
    UserQuest,
    UserState,
)
from engine.domain.rules import DEFAULT_LIFETIME
from engine.domain.webhooks import (
    DEFAULT_IN_FLIGHT,
    MAX_IN_FLIGHT,
    MAX_ROTATION_GRACE_S,
    MAX_URL_LENGTH,
    MIN_IN_FLIGHT,
    ROTATION_GRACE_S,
    Webhook,
    WebhookDelivery,
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


class AdjustmentIn(_In):
    """A correction (a signed amount, not 0) or, with ``reverses``, the reversal of one of the
    user's activities (``amount`` may then be left out: it is minus that activity's)."""

    amount: StrictInt | None = Field(
        default=None, examples=[-50], description="signed points; optional with reverses"
    )
    reason: StrictStr = Field(max_length=255, examples=["duplicate award (ticket 1234)"])
    reverses: Annotated[StrictStr, Field(max_length=64)] | None = Field(
        default=None, description="the id of the user's activity to take back, once"
    )


class FreezesIn(_In):
    """Streak freezes to give a user (the user then holds at most the rules' ``freezes_max``)."""

    count: Annotated[StrictInt, Field(ge=1, le=365)]


QuestText = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]{0,19}$")]


class FriendsIn(_In):
    """A user's whole friend list (it replaces the one held)."""

    friends: list[StrictStr] = Field(
        max_length=1000, description="user ids, at most 1,000", examples=[["bob", "cara"]]
    )


class FriendsOut(BaseModel):
    user_id: str
    friends: list[str] = Field(description="in byte order of the ids")


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


class EventIn(_In):
    """A new seasonal event: from ``start`` (inclusive) to ``end`` (exclusive), awards of its
    activity types carry ``multiplier`` times their amount (rounded half up, at least 1; of
    overlapping events the highest multiplier applies)."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=64, examples=["double_xp"])]
    title: Annotated[StrictStr, Field(min_length=1, max_length=200, examples=["Double XP"])]
    start: AwareDatetime = Field(description="ISO 8601 with an offset")
    end: AwareDatetime = Field(description="ISO 8601 with an offset; after start")
    multiplier: StrictFloat | StrictInt = Field(examples=[2], description="more than 0, at most 10")
    activity_types: list[StrictStr] | None = Field(
        default=None, description="default: every activity type that is not a reward"
    )


class ProgressIn(_In):
    by: StrictInt = Field(default=1, description="steps to advance")


# An error, read from a ScoringError's attributes; ``field`` is left out when it names none, as
# ScoringError.to_dict does (no docstring: it would become the OpenAPI schema's description).
class ErrorBody(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    message: str
    field: str | None = Field(default=None, exclude_if=lambda value: not value)


class ErrorOut(BaseModel):
    error: ErrorBody


#: A route's ``responses=`` (FastAPI's type: status code or range such as "4XX" to its
#: OpenAPI response, e.g. ``{"model": ErrorOut}``).
Responses = dict[int | str, dict[str, Any]]


def error_responses(*statuses: int) -> Responses:
    """``responses=`` documenting each of ``statuses`` as an :class:`ErrorOut` body."""
    return {status: {"model": ErrorOut} for status in statuses}


# -- responses --------------------------------------------------------------------------------
# A result has one representation: the engine's dataclass (engine.domain.results). Each response
# model below is read off it (fields_of: its fields, in its order, with their types), validated
# from the object's attributes and serialized by FastAPI's response_model, so the routes return
# the engine's objects as they are. Only what the API shows differently is written here: a
# renamed field (``user_id`` shows as ``id``), a nested model, a description.


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def fields_of(
    source: type,
    *,
    only: tuple[str, ...] | None = None,
    drop: tuple[str, ...] = (),
    rename: Mapping[str, str] | None = None,
    expand: Mapping[str, Mapping[str, Any]] | None = None,
    types: Mapping[str, Any] | None = None,
    describe: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The annotations of a response model that shows the dataclass ``source``: its fields in
    its order (``only`` those, or all but ``drop``), each required, with its type.

    ``rename``: source field -> the name the API shows (validated from the source's attribute,
    or from the API's name, so the model also reads its own JSON); ``expand``: source field ->
    the fields shown in its place (API name -> annotation, with its own alias); ``types``: API
    name -> its type (a nested response model); ``describe``: API name -> its OpenAPI
    description. Assign the result to ``__annotations__`` in the model's class body (pydantic
    reads the fields from it as from written annotations).
    """
    hints = get_type_hints(source)
    rename, expand, types = rename or {}, expand or {}, types or {}
    describe = describe or {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(source):
        if (only is not None and f.name not in only) or f.name in drop:
            continue
        if f.name in expand:
            out.update(expand[f.name])
            continue
        name = rename.get(f.name, f.name)
        info = Field(
            validation_alias=AliasChoices(f.name, name) if name != f.name else None,
            description=describe.get(name),
        )
        out[name] = Annotated[types.get(name, hints[f.name]), info]
    return out


class ActivityOut(_Out):
    __annotations__ = fields_of(Activity)


class RewardOut(_Out):
    """Points a goal or quest gave, as an activity of its own (``weekly_goal``/``side_quest``);
    ``ref``: the goal id or quest id."""

    __annotations__ = fields_of(Reward)


class EarnedAchievementOut(_Out):
    """A level of an achievement earned (``level`` of ``levels``) and the points it paid."""

    __annotations__ = fields_of(EarnedAchievement)


@dataclasses.dataclass(frozen=True)
class UserSchemas:
    """The response models that show a user's state, whose ``lifetime_<name>`` fields are the
    rules' (:attr:`Rules.lifetime <engine.domain.rules.Rules.lifetime>`): built once per app
    from its engine's rules by :func:`user_schemas`, and handed to the routers that use them."""

    user: type[BaseModel]
    award: type[BaseModel]
    batch: type[BaseModel]
    status: type[BaseModel]
    adjustment: type[BaseModel]


@cache
def user_schemas(lifetime: tuple[str, ...]) -> UserSchemas:
    """The user's response models for the lifetime counters named ``lifetime`` (in order), which
    show as ``lifetime_<name>`` fields where :class:`UserState` has its ``lifetime``."""

    # read from ``lifetime[name]`` (a path: much faster than UserState.__getattr__), or from
    # the field's own name in the API's JSON
    counters = {
        LIFETIME_PREFIX + name: Annotated[
            int, Field(validation_alias=AliasChoices(AliasPath("lifetime", name),
                                                     LIFETIME_PREFIX + name))
        ]
        for name in lifetime
    }  # fmt: skip

    class UserOut(_Out):
        __annotations__ = fields_of(
            UserState, drop=("version",), rename={"user_id": "id"}, expand={"lifetime": counters}
        )

    class AwardOut(_Out):
        __annotations__ = fields_of(
            AwardResult, rename={"activity": "point_activity"},
            types={"user": UserOut, "point_activity": ActivityOut, "rewards": list[RewardOut],
                   "achievements": list[EarnedAchievementOut]},
            describe={
                "rewards": "goals, quests and streak milestones completed and achievements "
                "earned that paid points, each an activity of its own",
                "achievements": "the achievement levels this award earned",
                "base_amount": "the amount before the seasonal event's multiplier (null: none "
                "applied); point_activity.amount is the multiplied amount",
                "multiplier": "the multiplier of the seasonal event that applied, or null",
                "event_id": "the seasonal event that applied, or null",
            },
        )  # fmt: skip

    class BatchResultOut(_Out):
        """One item's outcome: ``result`` or ``error``."""

        index: int
        result: AwardOut | None = None
        error: ErrorBody | None = None

    class BatchOut(_Out):
        applied: int
        refused: int
        results: list[BatchResultOut]

    class StatusOut(_Out):
        """A user's status with recent activities (the seed's my-status)."""

        user: UserOut
        recent_activities: list[ActivityOut]

    class AdjustmentOut(_Out):
        __annotations__ = fields_of(
            AdjustmentResult, rename={"activity": "point_activity"},
            types={"user": UserOut, "point_activity": ActivityOut},
            describe={"reverses": "the id of the activity this adjustment took back, or null"},
        )  # fmt: skip

    return UserSchemas(
        user=UserOut, award=AwardOut, batch=BatchOut, status=StatusOut, adjustment=AdjustmentOut
    )


#: Under the default rules (the models of an app whose rules keep the default lifetime table).
DEFAULT_USER_SCHEMAS = user_schemas(tuple(DEFAULT_LIFETIME))
UserOut = DEFAULT_USER_SCHEMAS.user
AwardOut = DEFAULT_USER_SCHEMAS.award
BatchOut = DEFAULT_USER_SCHEMAS.batch
StatusOut = DEFAULT_USER_SCHEMAS.status


class SeedUserOut(_Out):
    __annotations__ = fields_of(
        UserState, rename={"user_id": "id"},
        only=("user_id", "username", "total_points", "tier", "tier_display", "level",
              "points_to_next_tier", "points_to_next_level"),
    )  # fmt: skip


class SeedActivityOut(_Out):
    __annotations__ = fields_of(
        Activity, only=("id", "amount", "activity_type", "description", "created_at")
    )


class SeedAwardOut(_Out):
    """Exactly the seed's award-points response."""

    __annotations__ = fields_of(
        AwardResult, rename={"activity": "point_activity"},
        only=("user", "activity", "tier_upgraded", "old_tier", "new_tier"),
        types={"user": SeedUserOut, "point_activity": SeedActivityOut},
    )  # fmt: skip


class EntryOut(_Out):
    __annotations__ = fields_of(LeaderboardEntry)


class BoardInfo(BaseModel):
    id: str = Field(description="the board's name in /v1/leaderboards/{board}")
    title: str


class BoardsOut(BaseModel):
    boards: list[BoardInfo]


class LeaderboardOut(_Out):
    board: str
    period: str | None
    total_users: int
    entries: list[EntryOut]


# validated from a mapping: ``board`` and a RankInfo's fields
class RankOut(_Out):
    __annotations__ = {
        "board": str,
        **fields_of(
            RankInfo,
            describe={"points_to_next_rank": "points to tie the next better score; null for the "
                      "leaders"},
        ),
    }  # fmt: skip


class ActivityPage(_Out):
    activities: list[ActivityOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class StatsOut(BaseModel):
    points_awarded_today: int
    tier_distribution: dict[str, int]
    most_active_users: list[dict[str, Any]]


# -- goals and quests -------------------------------------------------------------------------


class GoalOut(_Out):
    __annotations__ = fields_of(GoalProgress)


class GoalsOut(_Out):
    """A user's weekly goals for the current week (Monday to Sunday, in the user's zone)."""

    week_start: date
    week_end: date
    goals: list[GoalOut]


class QuestOut(_Out):
    __annotations__ = fields_of(Quest)


class EventOut(_Out):
    __annotations__ = fields_of(
        SeasonalEvent,
        describe={"source": "rules (the rules file) or api (added here, stored in SQL)",
                  "ended_at": "when it was ended early, or null"},
    )  # fmt: skip


class UserQuestOut(_Out):
    __annotations__ = fields_of(UserQuest, describe={"status": "in_progress or completed"})


class QuestResultOut(_Out):
    __annotations__ = fields_of(
        QuestResult, types={"quest": UserQuestOut, "reward": RewardOut | None,
                            "achievements": list[EarnedAchievementOut]},
    )  # fmt: skip


class AchievementLevelOut(_Out):
    __annotations__ = fields_of(AchievementLevel)


class AchievementProgressOut(_Out):
    __annotations__ = fields_of(AchievementProgress)


class UserAchievementsOut(_Out):
    __annotations__ = fields_of(
        UserAchievements, rename={"user_id": "id"},
        types={"earned": list[AchievementLevelOut], "progress": list[AchievementProgressOut]},
    )  # fmt: skip


class CatalogLevelOut(_Out):
    __annotations__ = fields_of(CatalogLevel, describe={"share": "holders / users, 0 to 1"})


class CatalogEntryOut(_Out):
    __annotations__ = fields_of(
        CatalogEntry, rename={"achievement_id": "id"}, types={"levels": list[CatalogLevelOut]}
    )


class CatalogOut(_Out):
    __annotations__ = fields_of(
        AchievementCatalog, types={"achievements": list[CatalogEntryOut]},
        describe={"users": "users with points: the shares' denominator"},
    )  # fmt: skip


def render(
    model: type[BaseModel],
    result: object,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``result`` serialized by ``model`` (the route's ``response_model``) into a response: the
    same bytes FastAPI's ``response_model`` would send, without its ``dataclasses.asdict`` deep
    copy of the result first. The award routes use it: that copy measured about a sixth of an
    award request at low concurrency (``bench.api_bench``, 2 connections)."""
    body = model.model_validate(result).model_dump_json(by_alias=True)
    return Response(body, status_code, headers, media_type="application/json")


class DeletionOut(_Out):
    """What a deletion removed (all zeros when the user was already deleted or never seen)."""

    user_id: str
    mode: str = Field(description="erase or anonymise (SCORING_DELETE_MODE)")
    already_deleted: bool = Field(description="the user's tombstone was already there")
    redis_keys: int = Field(description="the user's own Redis keys deleted")
    boards: int = Field(description="leaderboards the user left")
    feed_entries: int = Field(description="the user's upgrade feed entries deleted")
    achievements: int = Field(description="achievement levels whose holder counts went down")
    outbox_entries: int = Field(description="undrained outbox entries of the user deleted")
    idempotency_records: int
    sql_rows: dict[str, int] = Field(description="rows erased (or pseudonymised) per table")


class UserExportOut(BaseModel):
    """Everything the engine holds of one user (``GET /v1/users/{id}/export``)."""

    user_id: str
    exported_at: datetime
    state: dict[str, Any]
    profile: dict[str, Any]
    streak_freezes: dict[str, int]
    ranks: dict[str, dict[str, Any] | None] = Field(
        description="the user's rank on the all-time board and the current month, week and "
        "day boards (null: not on it)"
    )
    weekly_goals: list[dict[str, Any]]
    side_quests: list[dict[str, Any]]
    achievements: dict[str, Any]
    friends: list[str]
    pending: list[dict[str, Any]] = Field(
        description="the user's outbox entries not yet in SQL (activities, profile, quest, goal "
        "changes), their fields as the outbox holds them, ``entry`` the entry's id"
    )
    activities: list[dict[str, Any]] = Field(description="the SQL audit trail, oldest first")
    sql: dict[str, list[dict[str, Any]]] = Field(description="the user's other SQL rows")


# -- webhooks ---------------------------------------------------------------------------------

EventType = Literal[
    "tier.changed", "level.changed", "goal.completed", "quest.completed", "achievement.earned",
    "streak.milestone", "activity.created",
]  # fmt: skip
WebhookUrl = Annotated[
    StrictStr,
    Field(min_length=1, max_length=MAX_URL_LENGTH, examples=["https://example.com/hooks/scoring"]),
]
InFlight = Annotated[StrictInt, Field(ge=MIN_IN_FLIGHT, le=MAX_IN_FLIGHT)]


class WebhookIn(_In):
    """A new subscription: ``url`` receives a signed POST for each event of ``events``."""

    url: WebhookUrl
    events: list[EventType] = Field(min_length=1, max_length=16)
    enabled: bool = True
    max_in_flight: InFlight = Field(
        default=DEFAULT_IN_FLIGHT, description="deliveries to this URL under way at once, at most"
    )


class WebhookPatch(_In):
    """The fields to change (absent: unchanged); enabling clears ``disabled_reason``."""

    url: WebhookUrl | None = None
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=16)
    enabled: bool | None = None
    max_in_flight: InFlight | None = None


class RotateIn(_In):
    grace_seconds: StrictInt = Field(
        default=ROTATION_GRACE_S, ge=0, le=MAX_ROTATION_GRACE_S,
        description="how long the secret replaced stays valid (default 24 h)",
    )  # fmt: skip


class RedeliverIn(_In):
    """One of: ``event_id`` (that event again) or ``since`` (every event queued since)."""

    event_id: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    since: AwareDatetime | None = Field(default=None, description="ISO 8601 with an offset")


class RedeliverOut(BaseModel):
    queued: int = Field(description="deliveries made pending again, due now")


class WebhookOut(_Out):
    __annotations__ = fields_of(
        Webhook,
        describe={"disabled_reason": "why the engine disabled it (a receiver answered 410)",
                  "previous_secret_until": "until when the secret replaced by the last "
                  "rotation is valid too, or null"},
    )  # fmt: skip


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="the signing secret: shown this once, store it")


class DeliveryOut(_Out):
    __annotations__ = fields_of(
        WebhookDelivery,
        describe={"status": "pending, delivered or failed",
                  "last_status": "the HTTP status of the last attempt; null: no answer "
                  "(last_error says why)"},
    )  # fmt: skip


# The bodies the engine POSTs to subscribers: {"id", "type", "created_at", "data"}; ``id`` is
# the same for the same event on every delivery (Scoring-Event-Id), use it to de-duplicate.


class _Data(BaseModel):
    user_id: str


class TierChangedData(_Data):
    old_tier: str
    new_tier: str
    total_points: int
    activity_id: str = Field(description="the activity that moved the tier")


class LevelChangedData(_Data):
    old_level: int
    new_level: int
    total_points: int
    activity_id: str = Field(description="the activity that moved the level")


class GoalCompletedData(_Data):
    goal_id: str = Field(description="the goal (its type)")
    week_start: date
    progress: int
    target: int
    points_reward: int


class QuestCompletedData(_Data):
    quest_id: int
    progress: int
    target: int
    points_awarded: int
    completed_at: datetime


class AchievementEarnedData(_Data):
    achievement_id: str
    level: int
    points_reward: int
    earned_at: datetime


class StreakMilestoneData(_Data):
    days: int = Field(description="the streak length the milestone is for")
    points: int = Field(description="the milestone reward's points")
    activity_id: str = Field(description="the reward's activity")


class ActivityCreatedData(_Data):
    activity_id: str
    activity_type: str
    amount: int
    description: str
    created_at: datetime
    total_points: int = Field(description="the user's total after the activity")
    tier: str = Field(description="the user's tier after the activity")
    level: int = Field(description="the user's level after the activity")


class _Event(BaseModel):
    id: str = Field(description="the event's id, stable across deliveries (uuid)")
    created_at: datetime


class TierChangedEvent(_Event):
    type: Literal["tier.changed"]
    data: TierChangedData


class LevelChangedEvent(_Event):
    type: Literal["level.changed"]
    data: LevelChangedData


class GoalCompletedEvent(_Event):
    type: Literal["goal.completed"]
    data: GoalCompletedData


class QuestCompletedEvent(_Event):
    type: Literal["quest.completed"]
    data: QuestCompletedData


class AchievementEarnedEvent(_Event):
    type: Literal["achievement.earned"]
    data: AchievementEarnedData


class StreakMilestoneEvent(_Event):
    type: Literal["streak.milestone"]
    data: StreakMilestoneData


class ActivityCreatedEvent(_Event):
    type: Literal["activity.created"]
    data: ActivityCreatedData


#: Each event type's body (the OpenAPI document's ``webhooks`` section shows each).
EVENT_BODIES: dict[str, type[_Event]] = {
    "tier.changed": TierChangedEvent, "level.changed": LevelChangedEvent,
    "goal.completed": GoalCompletedEvent, "quest.completed": QuestCompletedEvent,
    "achievement.earned": AchievementEarnedEvent, "streak.milestone": StreakMilestoneEvent,
    "activity.created": ActivityCreatedEvent,
}  # fmt: skip
