"""Weekly goals and side quests: the catalog (admin), a user's goals and quests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from engine.domain.results import GoalProgress, Quest, QuestResult, UserQuest

from ..auth import Forbidden, Principal, Scope
from ..deps import Caller, Engine
from ..schemas import (
    GoalOut,
    GoalsOut,
    ProgressIn,
    QuestIn,
    QuestOut,
    QuestPatch,
    QuestResultOut,
    UserQuestOut,
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["goals and quests"])
ERRORS = error_responses(401, 403, 404, 409, 422)
QuestId = Annotated[int, Path(ge=1, le=2**62)]
GoalId = Annotated[str, Path(max_length=30)]


def server_only(caller: Principal, what: str) -> None:
    """A server key with the award scope; user tokens may not (they would reward themselves)."""
    if caller.key is None:
        raise Forbidden(f"only a server key can {what}")
    caller.require(Scope.AWARD)


# -- the catalog ---------------------------------------------------------------------------


@router.get("/quests", response_model=list[QuestOut], responses=ERRORS, summary="Side quests")
def list_quests(
    engine: Engine,
    caller: Caller,
    active: Annotated[bool, Query(description="only active quests")] = False,
) -> list[Quest]:
    caller.require(Scope.READ)
    return engine.quests(active_only=active)


@router.post(
    "/quests", status_code=201, response_model=QuestOut, responses=ERRORS,
    summary="Add a side quest (admin)",
)  # fmt: skip
def create_quest(body: QuestIn, engine: Engine, caller: Caller) -> Quest:
    caller.require(Scope.ADMIN)
    return engine.create_quest(**body.model_dump())


@router.get("/quests/{quest_id}", response_model=QuestOut, responses=ERRORS, summary="A quest")
def get_quest(quest_id: QuestId, engine: Engine, caller: Caller) -> Quest:
    caller.require(Scope.READ)
    return engine.quest(quest_id)


@router.patch(
    "/quests/{quest_id}", response_model=QuestOut, responses=ERRORS,
    summary="Change a side quest, e.g. deactivate it (admin)",
)  # fmt: skip
def update_quest(quest_id: QuestId, body: QuestPatch, engine: Engine, caller: Caller) -> Quest:
    caller.require(Scope.ADMIN)
    given = {name: getattr(body, name) for name in body.model_fields_set}
    return engine.update_quest(quest_id, **given)


# -- a user's quests -----------------------------------------------------------------------


@router.get(
    "/users/{user_id}/quests", response_model=list[UserQuestOut], responses=ERRORS,
    summary="A user's side quests, in progress and completed",
)  # fmt: skip
def user_quests(user_id: str, engine: Engine, caller: Caller) -> list[UserQuest]:
    caller.require_user(user_id, Scope.READ)
    return engine.user_quests(user_id)


@router.post(
    "/users/{user_id}/quests/{quest_id}/start", status_code=201, response_model=QuestResultOut,
    responses=ERRORS, summary="Start a side quest (a user may start their own)",
)  # fmt: skip
def start_quest(user_id: str, quest_id: QuestId, engine: Engine, caller: Caller) -> QuestResult:
    caller.require_user(user_id, Scope.AWARD)
    return engine.start_quest(user_id, quest_id)


@router.post(
    "/users/{user_id}/quests/{quest_id}/progress", response_model=QuestResultOut,
    responses=ERRORS, summary="Advance a started quest (server keys)",
)  # fmt: skip
def advance_quest(
    user_id: str, quest_id: QuestId, engine: Engine, caller: Caller, body: ProgressIn | None = None
) -> QuestResult:
    """Awards of the quest's activity type advance it by themselves; this is for progress the
    app tracks on its own. Reaching the target completes the quest and awards its reward."""
    server_only(caller, "advance quests")
    return engine.advance_quest(user_id, quest_id, (body or ProgressIn()).by)


@router.post(
    "/users/{user_id}/quests/{quest_id}/complete", response_model=QuestResultOut,
    responses=ERRORS, summary="Complete a started quest and award its reward (server keys)",
)  # fmt: skip
def complete_quest(user_id: str, quest_id: QuestId, engine: Engine, caller: Caller) -> QuestResult:
    """The reward is given once: completing a completed quest is refused (409)."""
    server_only(caller, "complete quests")
    return engine.complete_quest(user_id, quest_id)


# -- a user's weekly goals -----------------------------------------------------------------


@router.get(
    "/users/{user_id}/goals", response_model=GoalsOut, responses=ERRORS,
    summary="A user's weekly goals this week, with progress",
)  # fmt: skip
def goals(user_id: str, engine: Engine, caller: Caller) -> dict[str, object]:
    caller.require_user(user_id, Scope.READ)
    progress = engine.weekly_goals(user_id)
    start, end = engine.goal_week(user_id)
    return {"week_start": start, "week_end": end, "goals": progress}


@router.get(
    "/users/{user_id}/goals/{goal_id}", response_model=GoalOut, responses=ERRORS,
    summary="One of a user's weekly goals",
)  # fmt: skip
def goal(user_id: str, goal_id: GoalId, engine: Engine, caller: Caller) -> GoalProgress:
    caller.require_user(user_id, Scope.READ)
    return engine.weekly_goal(user_id, goal_id)
