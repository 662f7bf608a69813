"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..deps import Engine

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis and SQL are reachable", responses={503: {}})
def readyz(engine: Engine) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        engine.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["redis"] = f"down: {type(exc).__name__}"
    try:
        if engine.store is None:
            checks["sql"] = "not configured"
        else:
            engine.store.ping()
            checks["sql"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["sql"] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
