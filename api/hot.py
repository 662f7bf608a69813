"""The engine's hottest routes answered in pure ASGI, around FastAPI's per-request machinery.

An award, a leaderboard page and a user's status are most of a busy deployment's requests, and
for each FastAPI spent more CPU than the engine and Redis together (a ``Request`` object,
dependency resolution with header and query parameters, the response model's validation,
routing through every router, exception middleware layers): ``bench.api_bench``. Each of these
routes has a *hot handler* that takes the common case itself: the same checks, the same engine
call, the same response bytes, from the ASGI scope directly.

A handler takes only what it can answer exactly as the FastAPI route would. Anything else (a
query parameter it does not know, a value out of bounds, a body that fails validation, missing
or insufficient credentials, an unknown board) goes on to the FastAPI route, with the body
replayed if the handler read it, so every refusal is FastAPI's own, word for word; the FastAPI
routes stay the reference implementation and the OpenAPI document. :class:`HotRoutes` sits
inside :class:`api.app._Guard`, so the body limits, the authentication of bodies before they
are read and the latency histogram apply as to every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match

from engine.domain.errors import ScoringError
from engine.runtime.connect import REDIS_ERRORS

from . import errors

#: A hot handler: (scope, receive, path parameters) -> (the response, or None to let the FastAPI
#: route answer; the ``receive`` that route is to read the request from).
Handler = Callable[[dict[str, Any], Any, dict[str, Any]], Awaitable[tuple[Response | None, Any]]]


class HotRoutes:
    """Pure ASGI middleware: each request that one of ``routes`` matches goes to its handler
    first (see the module's docstring)."""

    def __init__(self, app: Any, routes: Sequence[tuple[APIRoute, Handler]]) -> None:
        self.app = app
        self.routes = list(routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for route, handle in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    response, receive = await handle(scope, receive, child["path_params"])
                    if response is not None:
                        scope["route"] = route  # the latency histogram's label, as FastAPI's
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def route_of(routes: Sequence[Any], path: str, method: str) -> APIRoute:
    """The route of ``path`` and ``method`` among a router's ``routes``."""
    return next(
        r
        for r in routes
        if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ())
    )


def query(scope: dict[str, Any], bounds: dict[str, tuple[int, int]]) -> dict[str, int] | None:
    """The query's parameters, when each is one of ``bounds`` (name: (least, most)) given once as
    a plain decimal within its bounds; else None (FastAPI's route answers: its validation, its
    errors)."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    found: dict[str, int] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        limits = bounds.get(name)
        if limits is None or name in found or not value.isdigit() or not value.isascii():
            return None
        number = int(value)
        if not limits[0] <= number <= limits[1]:
            return None
        found[name] = number
    return found


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header's value (Latin-1, as Starlette decodes it), or None."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


async def read_body(receive: Any) -> tuple[bytes, bool]:
    """The request's body, and whether the client disconnected before its end."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), False


def replay(body: bytes, disconnected: bool, receive: Any) -> Any:
    """``receive`` that hands over ``body`` (already read) first, then what ``receive`` gives."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if sent or disconnected:
            message: dict[str, Any] = await receive()
            return message
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def answer(state: Any, work: Awaitable[Response]) -> Response:
    """``work``'s response, or the app's error answer to what the engine raised (the functions
    its error handlers use: :func:`api.errors.refusal`, :func:`api.errors.store_down`)."""
    try:
        return await work
    except ScoringError as exc:
        return errors.refusal(state, exc)
    except REDIS_ERRORS as exc:
        return errors.store_down(state, exc)
