"""Dependencies shared by the routers (``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request

from engine.domain.errors import ValidationError
from engine.domain.ties import Ties
from engine.services.facade import ScoringEngine

from .auth import PRINCIPAL, Authenticator, Forbidden, Principal, Scope


# async: they do no I/O, and FastAPI runs a plain-def dependency in its thread pool (a hop per
# dependency per request)
async def get_engine(request: Request) -> ScoringEngine:
    engine: ScoringEngine = request.app.state.engine  # set by create_app
    return engine


async def get_principal(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="a server API key")] = None,
    authorization: Annotated[str | None, Header(description="Bearer <user token>")] = None,
) -> Principal:
    known: Principal | None = request.scope.get("state", {}).get(PRINCIPAL)
    if known is not None:  # the guard authenticated it before reading the body (api.app)
        return known
    return _authenticator(request).from_headers(x_api_key, authorization)


async def get_reader(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="a server API key")] = None,
    authorization: Annotated[str | None, Header(description="Bearer <user token>")] = None,
) -> Principal | None:
    """Who reads a leaderboard: see :func:`reader`."""
    host = request.client.host if request.client else ""
    return reader(request.app.state, host, x_api_key, authorization)


def reader(
    state: Any, host: str, x_api_key: str | None, authorization: str | None
) -> Principal | None:
    """Who reads a leaderboard: None when no credentials are needed (``SCORING_PUBLIC_
    LEADERBOARDS``: yes, or local and a client on ``host``, a loopback address), else a key
    with the read scope or a user token. Credentials that are sent are always checked."""
    if not x_api_key and not authorization and boards_public(state, host):
        return None
    authenticator: Authenticator = state.authenticator  # set by create_app
    caller = authenticator.from_headers(x_api_key, authorization)
    caller.require(Scope.READ)
    return caller


def boards_public(state: Any, host: str) -> bool:
    """Whether a client on ``host`` reads leaderboards without credentials
    (``SCORING_PUBLIC_LEADERBOARDS``: yes, or local and ``host`` a loopback address)."""
    access = state.settings.leaderboard_access
    return bool(access == "yes" or (access == "local" and loopback(host)))


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator  # set by create_app
    return authenticator


def loopback(host: str) -> bool:
    """Whether a client at ``host`` is on this machine (behind a local proxy, uvicorn gives the
    X-Forwarded-For address as the client's)."""
    return host == "::1" or host.startswith("127.")


def header_text(value: str | None, name: str) -> str | None:
    """A header's value as the client wrote it. HTTP hands over bytes, which Starlette decodes
    as Latin-1; user ids and keys are UTF-8 everywhere else (a path's ``%C3%A9`` is ``é``), so
    the same bytes are decoded as UTF-8 here (the same id is the same user on every route),
    and refused (422 naming the header) if they are not UTF-8."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ValidationError(f"{name} must be UTF-8 text", field=name) from None


Engine = Annotated[ScoringEngine, Depends(get_engine)]
Caller = Annotated[Principal, Depends(get_principal)]
Reader = Annotated[Principal | None, Depends(get_reader)]
#: ``?ties=`` of the board reads (:mod:`engine.domain.ties`); another value is a 422
TiesQuery = Annotated[
    Ties,
    Query(description="ranks of equal points: competition (1 1 3), dense (1 1 2) or ordinal "
                      "(1 2 3: most points first, then user ids in byte order)"),
]  # fmt: skip


def may_award(state: Any, caller: Principal, user_id: str, activity_type: object) -> None:
    """A key with the award scope awards anyone; a user token awards only itself, and only
    the activity types the operator opened to self-awards (``state``: the app's state)."""
    if caller.key is not None:
        caller.require(Scope.AWARD)
        return
    if caller.user_id != user_id:
        raise Forbidden("a user token can award points to its own user only")
    if activity_type not in state.self_award_types:
        raise Forbidden(f"users may not award themselves {activity_type!r} points")
