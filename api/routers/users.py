"""Users: status, profile, and the audit trail of their activities."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from engine.domain.errors import InvalidPaging, ScoringError
from engine.domain.results import AdjustmentResult, DeletionReport, UserState

from ..auth import Scope
from ..deps import Caller, Engine, header_text
from ..hot import Handler, answer, header
from ..schemas import (
    ActivityPage,
    AdjustmentIn,
    DeletionOut,
    FreezesIn,
    FriendsIn,
    FriendsOut,
    ProfileIn,
    UserExportOut,
    UserSchemas,
    error_responses,
    render,
)

ERRORS = error_responses(401, 403, 422)
ADJUST_ERRORS = error_responses(401, 403, 404, 409, 422)


def router(schemas: UserSchemas) -> APIRouter:
    """The user routes, answering with ``schemas`` (the app's rules' user schema)."""
    router = APIRouter(prefix="/v1/users", tags=["users"])

    @router.get(
        "/{user_id}", response_model=schemas.user, responses=ERRORS, summary="A user's state"
    )
    async def get_user(user_id: str, engine: Engine, caller: Caller) -> UserState:
        caller.require_user(user_id, Scope.READ)
        return await engine.status_async(user_id)

    @router.delete(
        "/{user_id}",
        response_model=DeletionOut,
        responses=error_responses(401, 403, 422, 503),
        summary="Delete a user everywhere (admin)",
    )
    def delete_user(user_id: str, engine: Engine, caller: Caller) -> DeletionReport:
        """Removes the user from every board, their Redis state, idempotency records, feed
        entries and undrained outbox entries, and erases (or, with
        ``SCORING_DELETE_MODE=anonymise``, pseudonymises) their SQL rows; a tombstone refuses
        writes to the id (410) for ``SCORING_DELETE_TOMBSTONE_DAYS``. Idempotent: deleting
        again (or a user never seen) answers 200 with what was removed (zeros). A 503 (the
        shard's drain stayed busy) leaves the user deleted from Redis: call again to finish."""
        caller.require(Scope.ADMIN)
        return engine.delete_user(user_id)

    @router.get(
        "/{user_id}/export",
        response_model=UserExportOut,
        responses=error_responses(401, 403, 404, 422),
        summary="Everything the engine holds of a user",
    )
    def export_user(user_id: str, engine: Engine, caller: Caller) -> dict[str, Any]:
        """State, profile, activities (the SQL audit trail and those still in the outbox),
        weekly goals, side quests, achievements, friends, streak freezes, ranks and every SQL
        row of the user. 404 for a user the engine holds nothing of, or a deleted one. A user
        may export their own."""
        caller.require_user(user_id, Scope.READ)
        return engine.export_user(user_id)

    @router.put(
        "/{user_id}/profile",
        response_model=schemas.user,
        responses=ERRORS,
        summary="Set a user's profile",
    )
    def put_profile(user_id: str, body: ProfileIn, engine: Engine, caller: Caller) -> UserState:
        """Username, display name and IANA time zone (the zone decides a user's streak days).
        Fields left out stay as they are; ``null`` clears one. A user may set their own."""
        caller.require_user(user_id, Scope.AWARD)
        given = {name: getattr(body, name) for name in body.model_fields_set}
        return engine.set_profile(user_id, **given)

    @router.post(
        "/{user_id}/streak/freezes",
        response_model=schemas.user,
        responses=ERRORS,
        summary="Give a user streak freezes (admin)",
    )
    def grant_freezes(user_id: str, body: FreezesIn, engine: Engine, caller: Caller) -> UserState:
        """Adds ``count`` streak freezes; the user holds at most the rules' ``[streak]
        freezes_max`` (0, freezes off: nothing is added). Answers with the user's state."""
        caller.require(Scope.ADMIN)
        return engine.grant_freezes(user_id, body.count)

    @router.post(
        "/{user_id}/adjustments",
        status_code=201,
        response_model=schemas.adjustment,
        responses=ADJUST_ERRORS,
        summary="Correct a user's points, or reverse one of their activities (admin)",
    )
    def adjust(
        user_id: str,
        body: AdjustmentIn,
        engine: Engine,
        caller: Caller,
        idempotency_key: Annotated[
            str | None,
            Header(description="a replay changes nothing and answers as the first call"),
        ] = None,
    ) -> AdjustmentResult:
        """A signed ``amount`` (not 0) with a ``reason``, recorded in the audit trail as an
        activity of type ``adjustment``; tier and level follow the total (down, too, unless
        the rules' ``[adjustments] keep_peak``). With ``reverses``, exactly that activity's
        amount is taken back from every board it counted in: 404 if it is not the user's, 409
        if it was reversed before. 409 when the total would go below 0. Streaks, goals, quests
        and achievements are not taken back."""
        caller.require(Scope.ADMIN)
        return engine.adjust(
            user_id, body.amount, body.reason, reverses=body.reverses,
            idempotency_key=header_text(idempotency_key, "Idempotency-Key"),
        )  # fmt: skip

    @router.put(
        "/{user_id}/friends",
        response_model=FriendsOut,
        responses=ERRORS,
        summary="Set a user's friend list",
    )
    def put_friends(user_id: str, body: FriendsIn, engine: Engine, caller: Caller) -> FriendsOut:
        """Replaces the list (up to 1,000 user ids, each checked as a user id; duplicates and
        the user's own id are dropped). The user's friends board is
        ``GET /v1/leaderboards/{board}?friends_of={user_id}``. A user may set their own."""
        caller.require_user(user_id, Scope.AWARD)
        return FriendsOut(user_id=user_id, friends=engine.set_friends(user_id, body.friends))

    @router.get(
        "/{user_id}/friends",
        response_model=FriendsOut,
        responses=ERRORS,
        summary="A user's friend list",
    )
    def get_friends(user_id: str, engine: Engine, caller: Caller) -> FriendsOut:
        caller.require_user(user_id, Scope.READ)
        return FriendsOut(user_id=user_id, friends=engine.friends(user_id))

    @router.get(
        "/{user_id}/activities",
        response_model=ActivityPage,
        responses=ERRORS,
        summary="A user's activities from the audit trail, newest first",
    )
    def activities(
        user_id: str,
        engine: Engine,
        caller: Caller,
        activity_type: Annotated[str | None, Query(description="only this type")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, object]:
        caller.require_user(user_id, Scope.READ)
        before = _decode(cursor) if cursor else None
        found = engine.recent_activities(
            user_id, limit=limit, activity_type=activity_type, before=before
        )
        last = found[-1] if len(found) == limit else None
        return {
            "activities": found,
            "next_cursor": _encode(last.created_at, last.id) if last else None,
        }

    return router


def hot_status(schemas: UserSchemas) -> Handler:
    """The user status route's hot handler (:mod:`api.hot`); a caller without the right
    credentials goes to the FastAPI route."""

    async def handle(
        scope: dict[str, Any], receive: Any, params: dict[str, Any]
    ) -> tuple[Response | None, Any]:
        state = scope["app"].state
        user_id = params["user_id"]
        try:
            caller = state.authenticator.from_headers(
                header(scope, b"x-api-key"), header(scope, b"authorization")
            )
            caller.require_user(user_id, Scope.READ)
        except ScoringError:
            return None, receive

        async def status() -> Response:
            return render(schemas.user, await state.engine.status_async(user_id))

        return await answer(state, status()), receive

    return handle


def _encode(at: datetime, activity_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{activity_id}".encode()).decode()


def _decode(cursor: str) -> tuple[datetime, str]:
    import uuid

    try:
        at, activity_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(at), str(uuid.UUID(activity_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidPaging("cursor is not one this API gave out", field="cursor") from None
