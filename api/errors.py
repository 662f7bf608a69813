"""Every error as JSON ``{"error": {"code", "message", "field"?}}``.

Bad input is a 4xx (it wrote nothing); a dependency that is down is a 503. Nothing a client
sends can produce a 500: request validation, engine validation and routing errors are all
mapped here.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine import errors as e
from engine.runtime.connect import REDIS_ERRORS

from .auth import AuthError, Forbidden

log = logging.getLogger(__name__)

STATUS: list[tuple[type[e.ScoringError], int]] = [
    (AuthError, 401),
    (Forbidden, 403),
    (e.UserDeleted, 410),
    (e.NotRanked, 404),
    (e.NotFound, 404),
    (e.QuestStateError, 409),
    (e.EventConflict, 409),
    (e.AdjustmentRefused, 409),
    (e.UnknownBoard, 404),
    (e.IdempotencyConflict, 409),
    (e.ValidationError, 422),
    (e.ConfigError, 503),
    (e.ScriptError, 503),
    (e.StoreUnavailable, 503),
]


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_of(exc: e.ScoringError) -> int:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 400)


def refusal(state: Any, exc: e.ScoringError) -> JSONResponse:
    """The answer to an error the engine (or the API's own checks) raised; counted in the
    app's metrics (``state``: the app's state)."""
    state.metrics.error(exc.code)
    return error(status_of(exc), exc.code, exc.message, exc.field)


def store_down(state: Any, exc: Exception) -> JSONResponse:
    """The answer to a Redis error (:data:`~engine.runtime.connect.REDIS_ERRORS`): 503."""
    log.error("Redis error: %s", exc)
    state.metrics.error("redis_unavailable")
    return error(503, "redis_unavailable", "the scoring store is unavailable; retry")


def install(app: FastAPI) -> None:
    @app.exception_handler(e.ScoringError)
    async def scoring_error(request: Request, exc: e.ScoringError) -> JSONResponse:
        return refusal(app.state, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            return invalid_json()
        app.state.metrics.error("invalid_request")
        return error(422, "invalid_request", message, ".".join(loc) or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body its JSON parser gave up on (nested too deep, invalid
            # UTF-8, a number too long to convert): to a client, JSON it cannot use, like any
            # other invalid JSON
            return invalid_json()
        refused = getattr(exc, "code", None)  # a body the guard refused (api.app.BodyError)
        if refused is not None:
            app.state.metrics.error(refused)
        code = refused or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error(exc.status_code, code, str(exc.detail))

    def invalid_json() -> JSONResponse:
        app.state.metrics.error("invalid_json")
        return error(422, "invalid_json", "the request body is not valid JSON")

    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        return store_down(app.state, exc)

    for kind in REDIS_ERRORS:  # on a cluster also RedisClusterException, not a RedisError
        app.add_exception_handler(kind, redis_down)

    @app.exception_handler(SQLAlchemyError)
    async def sql_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("SQL error: %s", exc)
        app.state.metrics.error("sql_unavailable")
        return error(503, "sql_unavailable", "the audit trail database is unavailable; retry")
