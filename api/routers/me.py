"""The seed's endpoints, same paths and bodies. "Me" is the caller's user: a user token's
``sub``, or the ``X-User-Id`` a server key names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from engine.domain.ties import Ties
from engine.domain.validation import user_id as check_user_id

from ..auth import AuthError, Principal, Scope
from ..deps import Caller, Engine, TiesQuery, header_text, may_award
from ..schemas import (
    LeaderboardOut,
    SeedAwardIn,
    SeedAwardOut,
    UserSchemas,
    error_responses,
    render,
)

ERRORS = error_responses(401, 403, 422)
UserHeader = Annotated[
    str | None, Header(max_length=128, description="the user, when calling with a server key")
]


def me(caller: Principal, x_user_id: str | None, scope: Scope) -> str:
    if caller.user_id is not None:
        return caller.user_id
    caller.require(scope)
    if not x_user_id:
        raise AuthError("with a server key, name the user in X-User-Id")
    return check_user_id(header_text(x_user_id, "X-User-Id"))


def router(schemas: UserSchemas) -> APIRouter:
    """The seed's routes, answering with ``schemas`` (the app's rules' user schema)."""
    router = APIRouter(prefix="/api/v1/me/thrive-circle", tags=["seed-compatible"])

    @router.post(
        "/award-points/",
        status_code=201,
        response_model=SeedAwardOut,
        responses=ERRORS,
        summary="Award points to me (the seed's award-points)",
    )
    async def award_points(
        body: SeedAwardIn,
        request: Request,
        engine: Engine,
        caller: Caller,
        x_user_id: UserHeader = None,
    ) -> Response:
        user = me(caller, x_user_id, Scope.AWARD)
        may_award(request.app.state, caller, user, body.activity_type)
        result = await engine.award_async(
            user, body.activity_type, amount=body.amount, description=body.description
        )
        request.app.state.metrics.awards.labels("applied").inc()
        return render(SeedAwardOut, result, status_code=201)

    @router.get("/my-status/", response_model=schemas.status, responses=ERRORS, summary="My status")
    async def my_status(
        engine: Engine, caller: Caller, x_user_id: UserHeader = None
    ) -> dict[str, object]:
        """``recent_activities``: the 20 newest, awards not yet drained into SQL included."""
        user = me(caller, x_user_id, Scope.READ)
        state, recent = await engine.status_and_recent_async(user, limit=20)
        return {"user": state, "recent_activities": recent}

    @router.get("/", response_model=LeaderboardOut, responses=ERRORS, summary="The leaderboard")
    async def leaderboard(
        engine: Engine,
        caller: Caller,
        x_user_id: UserHeader = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        ties: TiesQuery = Ties.COMPETITION,
    ) -> dict[str, object]:
        me(caller, x_user_id, Scope.READ)
        board = engine.leaderboard("all_time")
        entries, total = await board.top_with_size_async(limit, offset, ties=ties)
        return {"board": "all_time", "period": None, "total_users": total, "entries": entries}

    return router
