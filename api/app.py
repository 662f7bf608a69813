"""The HTTP API: FastAPI routers over the engine.

``create_app()`` builds the app from the settings (or from an engine the caller gives, as tests
do); ``scoring serve`` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from engine.errors import ConfigError
from engine.service import ScoringEngine
from engine.settings import Settings, get_settings

from . import errors
from .auth import Authenticator, parse_api_keys
from .live import LiveHub
from .metrics import Metrics
from .routers import awards, dashboard, engagement, health, leaderboards, me, stats, users

#: Request bodies larger than this are refused with 413 (a batch of 1,000 awards is ~250 KB).
MAX_BODY = 2 * 1024 * 1024


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
    app.add_middleware(_Guard)
    for router in (health.router, awards.router, users.router, leaderboards.router,
                   engagement.router, stats.router, me.router, dashboard.router):  # fmt: skip
        app.include_router(router)
    app.mount("/dashboard", StaticFiles(directory=dashboard.STATIC), name="dashboard")
    return app


class _Guard:
    """Pure ASGI middleware: refuses oversized bodies (413) and times every request for the
    latency histogram. (Starlette's BaseHTTPMiddleware costs far more per request.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                response = errors.error(
                    413, "too_large", f"request bodies are limited to {MAX_BODY} bytes"
                )
                await response(scope, receive, send)
                return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            metrics = scope["app"].state.metrics
            metrics.latency.labels(scope["method"], getattr(route, "path", "unmatched")).observe(
                time.perf_counter() - started
            )
