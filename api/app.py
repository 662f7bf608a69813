"""The HTTP API: FastAPI routers over the engine.

``create_app()`` builds the app from the settings (or from an engine the caller gives, as tests
do); ``scoring serve`` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.domain.errors import ConfigError
from engine.runtime.settings import Settings, get_settings
from engine.services.facade import ScoringEngine

from . import errors
from .auth import PRINCIPAL, Authenticator, AuthError, parse_api_keys
from .hot import HotRoutes, route_of
from .live import LiveHub
from .metrics import Metrics
from .routers import (
    achievements,
    awards,
    dashboard,
    engagement,
    events,
    health,
    leaderboards,
    me,
    stats,
    users,
    webhooks,
)
from .schemas import user_schemas

#: Request bodies larger than this are refused with 413 (a batch of 1,000 awards is ~250 KB).
MAX_BODY = 2 * 1024 * 1024
#: Seconds the next part of an unfinished request body may take to arrive before a 408.
BODY_TIMEOUT = 30.0


#: FastAPI's own OpenTelemetry instrumentation (FastAPI 0.165 and later) turned off: it asks
#: the OpenTelemetry providers, and through them the environment, on every request (a twentieth
#: of an award request's CPU), and the engine reports through Prometheus (``/metrics``).
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def create_app(engine: ScoringEngine | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    try:
        keys = parse_api_keys(settings.api_keys)
    except ValueError as exc:
        raise ConfigError(str(exc), field="SCORING_API_KEYS") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.live.started(asyncio.get_running_loop())
        yield
        app.state.live.close()
        await app.state.engine.aclose()  # the asyncio Redis client of this worker's loop

    app = FastAPI(
        **_NO_TELEMETRY,
        lifespan=lifespan,
        title="Scoring engine",
        version="0.1.0",
        description="Points, tiers, levels, streaks and live leaderboards over Redis.",
    )
    app.state.settings = settings
    app.state.engine = engine or ScoringEngine.from_settings(settings)
    app.state.authenticator = Authenticator(keys, settings.jwt_secret)
    app.state.self_award_types = frozenset(
        t.strip() for t in settings.self_award_types.split(",") if t.strip()
    )
    app.state.metrics = Metrics(app.state)
    app.state.live = LiveHub(app.state, settings.stream_interval_ms / 1000)
    errors.install(app)
    # the user's response models show the rules' lifetime counters (api.schemas.user_schemas)
    schemas = user_schemas(tuple(app.state.engine.rules.lifetime))
    award_routes, user_routes = awards.router(schemas), users.router(schemas)
    for router in (health.router, award_routes, user_routes,
                   leaderboards.router, engagement.router, achievements.router, events.router,
                   stats.router, me.router(schemas), dashboard.router,
                   webhooks.router):  # fmt: skip
        app.include_router(router)
    app.webhooks.include_router(webhooks.events)  # the event bodies, in the OpenAPI document
    # the last added is the outermost: the guard, then the hottest routes' handlers (api.hot)
    hot_routes = [
        (route_of(award_routes.routes, awards.AWARD_PATH, "POST"), awards.hot_award(schemas)),
        (route_of(leaderboards.router.routes, "/v1/leaderboards/{board}", "GET"),
         leaderboards.hot_leaderboard),
        (route_of(user_routes.routes, "/v1/users/{user_id}", "GET"), users.hot_status(schemas)),
    ]  # fmt: skip
    app.add_middleware(HotRoutes, routes=hot_routes)
    app.add_middleware(_Guard)
    app.mount("/dashboard", StaticFiles(directory=dashboard.STATIC), name="dashboard")
    return app


class _Guard:
    """Pure ASGI middleware, in front of everything (Starlette's BaseHTTPMiddleware costs far
    more per request):

    - refuses a body larger than :data:`MAX_BODY` with 413: at once when ``Content-Length``
      says so, else as soon as the bytes received pass the limit (a chunked upload), so the
      rest is never buffered;
    - answers 408 when an unfinished body stops arriving for :data:`BODY_TIMEOUT` seconds;
    - authenticates a request that may carry a body (every such route needs credentials)
      before a byte of the body is read, 401 without them; the dependency reuses the result;
    - times every request for the latency histogram.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        refusal = self._refusal(scope, state)
        if refusal is not None:
            state.metrics.error(refusal.code)
            await refusal.response(scope, receive, send)
            return
        started = time.perf_counter()
        sent = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal sent
            sent = True
            await send(message)

        try:
            await self.app(scope, _limited(receive), sending)
        except BodyError as exc:  # raised where no error handler answers it
            if sent:
                raise
            refusal = _refused(exc)
            state.metrics.error(refusal.code)
            await refusal.response(scope, receive, send)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            state.metrics.latency.labels(scope["method"], path).observe(
                time.perf_counter() - started
            )

    @staticmethod
    def _refusal(scope: dict[str, Any], state: Any) -> _Refusal | None:
        api_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                return _refused(BodyTooLarge())
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if scope["method"] in _BODY_METHODS and scope["path"].startswith(_API_PATHS):
            try:
                principal = state.authenticator.from_headers(api_key, authorization)
            except AuthError as exc:
                return _Refusal(exc.code, errors.error(401, exc.code, exc.message))
            scope.setdefault("state", {})[PRINCIPAL] = principal
        return None


#: Methods whose requests may carry a body; on the API's paths every such route needs credentials.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_API_PATHS = ("/v1/", "/api/")


class BodyError(StarletteHTTPException):
    """A body refused while it is read (FastAPI re-raises an HTTPException from reading the
    body, so the error handler answers it; the guard answers it where none does)."""

    code: str


class BodyTooSlow(BodyError):
    """The rest of a body did not arrive within :data:`BODY_TIMEOUT` seconds (408)."""

    code = "too_slow"

    def __init__(self) -> None:
        super().__init__(408, f"the request body did not arrive within {BODY_TIMEOUT:g} s")


class BodyTooLarge(BodyError):
    """The body received so far passed :data:`MAX_BODY` (413)."""

    code = "too_large"

    def __init__(self) -> None:
        super().__init__(413, f"request bodies are limited to {MAX_BODY} bytes")


@dataclass(frozen=True)
class _Refusal:
    code: str
    response: JSONResponse


def _refused(exc: BodyError) -> _Refusal:
    return _Refusal(exc.code, errors.error(exc.status_code, exc.code, str(exc.detail)))


def _limited(receive: Any) -> Any:
    """``receive`` that raises :class:`BodyTooLarge` once the body passes :data:`MAX_BODY`, and
    :class:`BodyTooSlow` when the next part of an unfinished body takes longer than
    :data:`BODY_TIMEOUT` to arrive (a client trickling a body holds a connection and up to
    2 MB; once the body is complete, ``receive`` waits for a disconnect as long as it takes)."""
    received = 0
    complete = False

    async def limited() -> dict[str, Any]:
        nonlocal received, complete
        if complete:
            message: dict[str, Any] = await receive()
            return message
        try:
            async with asyncio.timeout(BODY_TIMEOUT):  # no task per call, unlike wait_for
                message = await receive()
        except TimeoutError:
            raise BodyTooSlow from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise BodyTooLarge
            complete = not message.get("more_body", False)
        return message

    return limited
