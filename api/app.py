"""The HTTP API: FastAPI routers over the engine.

``create_app()`` builds the app from the settings (or from an engine the caller gives, as tests
do); ``scoring serve`` runs it under uvicorn.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import Response

from engine.errors import ConfigError
from engine.service import ScoringEngine
from engine.settings import Settings, get_settings

from . import errors
from .auth import Authenticator, parse_api_keys
from .metrics import Metrics
from .routers import awards, health, leaderboards, me, stats, users

#: Request bodies larger than this are refused with 413 (a batch of 1,000 awards is ~250 KB).
MAX_BODY = 2 * 1024 * 1024


def create_app(engine: ScoringEngine | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    try:
        keys = parse_api_keys(settings.api_keys)
    except ValueError as exc:
        raise ConfigError(str(exc), field="SCORING_API_KEYS") from None
    app = FastAPI(
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
    app.state.metrics = Metrics(app.state.engine)
    errors.install(app)
    app.add_middleware(BaseHTTPMiddleware, dispatch=_guard)
    for router in (health.router, awards.router, users.router, leaderboards.router,
                   stats.router, me.router):  # fmt: skip
        app.include_router(router)
    return app


async def _guard(request: Request, call_next: Any) -> Response:
    """Refuse oversized bodies, and time every request for the latency histogram."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return errors.error(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    request.app.state.metrics.latency.labels(request.method, path).observe(
        time.perf_counter() - started
    )
    return response
