"""Dependencies shared by the routers (``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from engine.service import ScoringEngine

from .auth import Principal


# async: they do no I/O, and FastAPI runs a plain-def dependency in its thread pool (a hop per
# dependency per request)
async def get_engine(request: Request) -> ScoringEngine:
    return request.app.state.engine


async def get_principal(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="a server API key")] = None,
    authorization: Annotated[str | None, Header(description="Bearer <user token>")] = None,
) -> Principal:
    return request.app.state.authenticator.from_headers(x_api_key, authorization)


Engine = Annotated[ScoringEngine, Depends(get_engine)]
Caller = Annotated[Principal, Depends(get_principal)]


def may_award(request: Request, caller: Principal, user_id: str, activity_type: object) -> None:
    """A key with the award scope awards anyone; a user token awards only itself, and only
    the activity types the operator opened to self-awards."""
    from .auth import Forbidden, Scope

    if caller.key is not None:
        caller.require(Scope.AWARD)
        return
    if caller.user_id != user_id:
        raise Forbidden("a user token can award points to its own user only")
    if activity_type not in request.app.state.self_award_types:
        raise Forbidden(f"users may not award themselves {activity_type!r} points")
