"""The asyncio auto-pipeline (engine.runtime.autopipe) under the API's award path: concurrent
awards on one connection, each answered with its own reply, exactly once through a killed
connection, a flushed script cache and cancelled callers."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from engine import ScoringEngine
from engine.runtime.autopipe import AutoPipeline


@pytest.fixture
def engine(real_redis: redis.Redis, redis_url: str, clock) -> ScoringEngine:
    return ScoringEngine.from_url(redis_url, clock=clock)


def _run(engine: ScoringEngine, work) -> object:
    async def run() -> object:
        try:
            return await work()
        finally:
            await engine.aclose()

    return asyncio.run(run())


def _clients(r: redis.Redis) -> set[str]:
    """The ids of the connections to this test's database (other databases may be other
    runs'); compared as sets, since a connection of an earlier test may close meanwhile."""
    db = str(r.connection_pool.connection_kwargs.get("db", 0))
    return {c["id"] for c in r.client_list() if c.get("db") == db and c.get("cmd") != "client|list"}


def test_concurrent_awards_share_one_connection_and_get_their_own_replies(
    engine: ScoringEngine, real_redis: redis.Redis
) -> None:
    before = _clients(real_redis)

    async def work() -> list:
        results = await asyncio.gather(
            *(engine.award_async(f"u{i % 50}", "reaction", amount=1 + i % 7) for i in range(500))
        )
        assert isinstance(engine.awards._async_redis(), AutoPipeline)
        assert len(_clients(real_redis) - before) == 1  # the pipeline's one connection
        return results

    results = _run(engine, work)
    assert len({r.activity.id for r in results}) == 500
    for i, r in enumerate(results):
        assert r.activity.user_id == f"u{i % 50}" and r.activity.amount == 1 + i % 7
    for u in range(50):
        expected = sum(1 + i % 7 for i in range(u, 500, 50))
        assert engine.status(f"u{u}").total_points == expected


def _kill_others_of_this_database(r: redis.Redis) -> None:
    """CLIENT KILL of this database's other connections (the engine's): not of the server's
    other clients, which may be another run's."""
    db = str(r.connection_pool.connection_kwargs.get("db", 0))
    me = r.client_id()
    for c in r.client_list():
        if c.get("db") == db and int(c["id"]) != me:
            r.client_kill_filter(_id=c["id"])


def test_a_killed_connection_loses_and_doubles_nothing(
    engine: ScoringEngine, real_redis: redis.Redis
) -> None:
    async def work() -> list:
        await engine.award_async("warm", "comment")
        tasks = [
            asyncio.ensure_future(engine.award_async(f"k{i % 20}", "reaction", amount=1))
            for i in range(2000)
        ]
        pipe = engine.awards._async_redis()
        for _ in range(2):  # kill the pipeline's connection while batches are on the wire
            await asyncio.sleep(0.02)
            lost = pipe.reconnects
            _kill_others_of_this_database(real_redis)
            for _ in range(400):  # until the pipeline noticed (or every award is answered)
                if pipe.reconnects > lost or all(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.005)
        results = await asyncio.gather(*tasks)
        assert pipe.reconnects >= 1  # a kill did land mid-batch
        return results

    results = _run(engine, work)
    assert len(results) == 2000
    assert sum(engine.status(f"k{u}").total_points for u in range(20)) == 2000
    entries = sum(real_redis.xlen(engine.keys.outbox(s)) for s in range(engine.keys.shards))
    assert entries == 2001  # one outbox entry per award, the warm-up's included


def test_a_flushed_script_cache_and_cancelled_callers(
    engine: ScoringEngine, real_redis: redis.Redis
) -> None:
    async def work() -> None:
        await engine.award_async("alice", "comment")
        real_redis.script_flush()
        # NOSCRIPT for every call of the batch: each falls back to EVAL on its own
        totals = await asyncio.gather(*(engine.award_async("bob", "reaction") for _ in range(20)))
        assert sorted(r.user.total_points for r in totals) == [i + 1 for i in range(20)]
        cancelled = asyncio.ensure_future(engine.award_async("carol", "comment"))
        await asyncio.sleep(0)
        cancelled.cancel()
        after = await engine.award_async("dave", "comment")  # the pipeline goes on
        assert after.user.total_points == 5

    _run(engine, work)


def test_an_error_reply_is_its_command_s_own(redis_url: str, real_redis: redis.Redis) -> None:
    async def work() -> None:
        pipe = AutoPipeline(aioredis.Redis.from_url(redis_url, decode_responses=True))
        try:
            ok, bad, ok2 = await asyncio.gather(
                pipe.execute_command("SET", "ap:a", "1"),
                pipe.execute_command("INCR", "ap:not-a-number-key"),
                pipe.execute_command("GET", "ap:a"),
                return_exceptions=True,
            )
            assert ok is True or ok == "OK"
            assert ok2 == "1"
            assert not isinstance(bad, Exception)
            real_redis.set("ap:text", "x")
            with pytest.raises(ResponseError):
                await pipe.execute_command("INCR", "ap:text")
            assert await pipe.execute_command("GET", "ap:a") == "1"
        finally:
            await pipe.aclose()

    asyncio.run(work())


def test_a_redis_that_is_down_fails_at_once() -> None:
    """Nothing can be written: the callers get the connection error at once (the API's 503),
    not after retries."""
    import socket
    import time

    from redis.exceptions import ConnectionError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def work() -> None:
        # as the engine makes its asyncio clients (engine.runtime.connect.clients)
        pipe = AutoPipeline(aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0"))
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(pipe.execute_command("PING") for _ in range(10)), return_exceptions=True
            )
            assert all(isinstance(r, ConnectionError) for r in results)
            assert time.monotonic() - started < 1.0
            assert pipe.reconnects == 0
        finally:
            await pipe.aclose()

    asyncio.run(work())
