"""The framework's ceiling for ``bench.api_bench``: a bare FastAPI app doing one Redis GET.

    uvicorn bench.bare_app:create_app --factory --workers N

One sync ``def`` endpoint (so it runs in the thread pool, as the API's endpoints do), ``GET
/bare``, that reads one key with a ``redis.Redis`` client built from ``REDIS_URL`` (default: the
benchmarks' database 12) and returns a small JSON body through a pydantic response model. It has
no authentication, middleware, metrics or engine: what is left is what any endpoint of the API
pays for uvicorn, FastAPI's routing and validation, the thread pool and one Redis round trip.
"""

from __future__ import annotations

import os

import redis
from fastapi import FastAPI
from pydantic import BaseModel

KEY = "bench:bare"
DEFAULT_URL = "redis://127.0.0.1:6379/12"


class BareOut(BaseModel):
    key: str
    value: str | None


def create_app() -> FastAPI:
    r = redis.Redis.from_url(os.environ.get("REDIS_URL") or DEFAULT_URL, decode_responses=True)
    app = FastAPI(title="bare", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/bare", response_model=BareOut)
    def bare() -> BareOut:
        return BareOut(key=KEY, value=r.get(KEY))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
