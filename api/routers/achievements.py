"""Achievements: the catalog with its holders, and a user's achievements with progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from engine.domain.results import AchievementCatalog, UserAchievements

from ..auth import Scope
from ..deps import Caller, Engine
from ..schemas import CatalogOut, UserAchievementsOut, error_responses

router = APIRouter(prefix="/v1", tags=["achievements"])
ERRORS = error_responses(401, 403, 404, 422)


@router.get(
    "/achievements", response_model=CatalogOut, responses=ERRORS,
    summary="The achievements, with how many users hold each level",
)  # fmt: skip
def catalog(
    engine: Engine,
    caller: Caller,
    include_hidden: Annotated[bool, Query(description="hidden achievements too (admin)")] = False,
) -> AchievementCatalog:
    caller.require(Scope.ADMIN if include_hidden else Scope.READ)
    return engine.achievement_catalog(include_hidden=include_hidden)


@router.get(
    "/users/{user_id}/achievements", response_model=UserAchievementsOut, responses=ERRORS,
    summary="A user's achievements: the levels earned, and progress toward the rest",
)  # fmt: skip
def user_achievements(user_id: str, engine: Engine, caller: Caller) -> UserAchievements:
    caller.require_user(user_id, Scope.READ)
    return engine.achievements(user_id)
