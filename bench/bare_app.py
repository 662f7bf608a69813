"""The framework's ceiling for ``bench.api_bench``: a bare FastAPI app doing one Redis GET.

    uvicorn bench.bare_app:create_app --factory --workers N

One ``async def`` endpoint, ``GET /bare``, that reads one key with a ``redis.asyncio`` client
built from ``REDIS_URL`` (default: the benchmarks' database 12) and returns a small JSON body
through a pydantic response model: the fastest way FastAPI serves a Redis read (a sync ``def``
endpoint, run in the thread pool, measured about 2.4x slower here), and the way the API's award
endpoints run. It has no authentication, middleware, metrics or engine: what is left is what any
endpoint pays for uvicorn, FastAPI's routing and validation and one Redis round trip.

``GET /bare-sync`` is the same read from a sync ``def`` endpoint with a ``redis.Redis`` client,
for comparison: what FastAPI's thread pool costs.
"""

from __future__ import annotations

import redis
from fastapi import FastAPI
from pydantic import BaseModel
from redis import asyncio as aioredis

from bench.harness import redis_url

KEY = "bench:bare"


class BareOut(BaseModel):
    key: str
    value: str | None


def create_app() -> FastAPI:
    url = redis_url()
    clients: list[aioredis.Redis] = []  # made in the worker's event loop, on first request

    app = FastAPI(title="bare", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/bare", response_model=BareOut)
    async def bare() -> BareOut:
        if not clients:
            clients.append(aioredis.Redis.from_url(url, decode_responses=True))
        return BareOut(key=KEY, value=await clients[0].get(KEY))

    sync_client = redis.Redis.from_url(url, decode_responses=True)

    @app.get("/bare-sync", response_model=BareOut)
    def bare_sync() -> BareOut:
        return BareOut(key=KEY, value=sync_client.get(KEY))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
