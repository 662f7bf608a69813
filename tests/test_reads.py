"""The reads on the asyncio client: the HTTP read routes make the round trips their plans state
(one for a board page with its size, a status, a rank on one shard), touch neither the sync
client nor a thread, and answer exactly what the sync engine methods answer; the reads
themselves against a reference computed in Python, on one shard, K = 4 and the cluster."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict
from typing import Any

import pytest
import redis
from conftest import CLUSTER_SHARDS
from fastapi.testclient import TestClient
from helpers import API_KEYS, PLAIN_RULES, READER, token
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.app import create_app
from api.schemas import user_schemas
from engine import AwardRequest, ScoringEngine
from engine.domain.results import LeaderboardEntry, RankInfo
from engine.runtime.settings import Settings
from engine.storage.store import SqlStore

#: (Redis, shards): one server with one shard and with four, the cluster with eight.
SETUPS = [("redis", 1), ("redis", 4), ("cluster", CLUSTER_SHARDS)]


class Trips:
    """Counts the round trips made on the asyncio clients of an engine's factory: each command
    sent on its own and each pipeline executed (on a cluster, a pipeline's commands go to
    their nodes together: one round trip)."""

    def __init__(self) -> None:
        self.count = 0
        self.commands: list[str] = []

    def wrap(self, factory: Any) -> Any:
        def make() -> Any:
            client = factory()
            single = client.execute_command

            async def execute_command(*args: Any, **kwargs: Any) -> Any:
                self.count += 1
                self.commands.append(str(args[0]))
                return await single(*args, **kwargs)

            make_pipeline = client.pipeline

            def pipeline(*args: Any, **kwargs: Any) -> Any:
                pipe = make_pipeline(*args, **kwargs)
                execute = pipe.execute

                async def counted(*a: Any, **k: Any) -> Any:
                    self.count += 1
                    self.commands.append("PIPELINE")
                    return await execute(*a, **k)

                pipe.execute = counted
                return pipe

            client.execute_command = execute_command
            client.pipeline = pipeline
            return client

        return make


class NoSyncClient:
    """Stands in for the engine's sync client while the async routes run: any use fails."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the sync Redis client was used ({name})")


@pytest.fixture(params=SETUPS, ids=[f"{r}-K{k}" for r, k in SETUPS])
def setup(request: pytest.FixtureRequest, clock, tmp_path) -> tuple[ScoringEngine, str]:
    kind, shards = request.param
    if kind == "cluster":
        url = request.getfixturevalue("redis_cluster").url
        request.getfixturevalue("cluster_redis")  # emptied
    else:
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("real_redis")  # emptied
    store = SqlStore(f"sqlite:///{tmp_path / 'reads.db'}")
    store.upgrade()
    engine = ScoringEngine.from_url(url, clock=clock, store=store, shards=shards, rules=PLAIN_RULES)
    return engine, kind


def fill(engine: ScoringEngine, scores: dict[str, int]) -> None:
    results = engine.award_many(
        AwardRequest(user, "special_event", amount=points) for user, points in scores.items()
    )
    assert all(not isinstance(r, Exception) for r in results), results[:3]


def entries(rows: list[LeaderboardEntry]) -> list[dict[str, Any]]:
    return [asdict(e) for e in rows]


def test_async_routes_take_one_round_trip_and_answer_as_the_sync_reads(
    setup: tuple[ScoringEngine, str],
) -> None:
    engine, _ = setup
    shards = engine.keys.shards
    # distinct points near the top (no tie across the page boundaries asked for below), then
    # ties further down
    scores = {f"u{i:03d}": 1000 - i for i in range(40)}
    scores |= {f"t{i:03d}": 50 for i in range(30)}
    fill(engine, scores)
    engine.set_profile("u005", display_name="Five", time_zone="Europe/Oslo")
    trips = Trips()
    factory = engine.awards._async_factory
    engine.awards._async_factory = trips.wrap(factory)
    settings = Settings(SCORING_API_KEYS=API_KEYS, SCORING_JWT_SECRET="x" * 32)
    app = create_app(engine, settings)
    schema = user_schemas(tuple(engine.rules.lifetime)).user
    board = engine.leaderboard()

    expected: dict[str, tuple[int, Any]] = {
        # path: (round trips, the sync engine's answer as the route's JSON)
        "/v1/leaderboards/all_time?limit=10": (
            1,
            {"board": "all_time", "period": None, "total_users": board.size(),
             "entries": entries(board.top(10))},
        ),
        "/v1/leaderboards/all_time?limit=5&offset=12": (
            1,
            {"board": "all_time", "period": None, "total_users": board.size(),
             "entries": entries(board.top(5, 12))},
        ),
        "/v1/users/u005": (1, json.loads(schema.model_validate(engine.status("u005"))
                                         .model_dump_json(by_alias=True))),
        "/v1/users/nobody": (1, json.loads(schema.model_validate(engine.status("nobody"))
                                           .model_dump_json(by_alias=True))),
        "/v1/leaderboards/all_time/users/u007": (
            1 if shards == 1 else 2, {"board": "all_time", **asdict(board.rank("u007"))}
        ),
        "/v1/leaderboards/all_time?around=u020&limit=5": (
            2 if shards == 1 else 3,
            {"board": "all_time", "period": None, "total_users": board.size(),
             "entries": entries(board.around("u020", 2))},
        ),
        "/api/v1/me/thrive-circle/?limit=10": (
            1,
            {"board": "all_time", "period": None, "total_users": board.size(),
             "entries": entries(board.top(10))},
        ),
    }  # fmt: skip
    with TestClient(app) as client:
        client.get("/v1/leaderboards/all_time", headers=READER)  # the loop's client, warmed up
        engine.recent_activities("u005")  # the outbox read's script, in the server's cache
        engine.redis, sync = NoSyncClient(), engine.redis
        try:
            for path, (count, answer) in expected.items():
                trips.count, trips.commands = 0, []
                headers = token("u005", secret="x" * 32) if path.startswith("/api") else READER
                r = client.get(path, headers=headers)
                assert r.status_code == 200, (path, r.text)
                assert r.json() == answer, path
                assert trips.count == count, (path, trips.commands)
            # the seed's status: its state and the outbox's activities in one round trip on the
            # asyncio client, then SQL's
            trips.count = 0
            r = client.get("/api/v1/me/thrive-circle/my-status/", headers=token("u005", "x" * 32))
            assert r.status_code == 200 and r.json()["user"]["display_name"] == "Five"
            assert trips.count == 1
            # errors as before: 404 off the board, 422 for a bad id, with no extra trip
            assert (
                client.get("/v1/leaderboards/all_time/users/zz", headers=READER).status_code == 404
            )
            r = client.get("/v1/leaderboards/all_time?around=zz", headers=READER)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_ranked"
        finally:
            engine.redis = sync


def reference(scores: dict[str, int]) -> list[tuple[int, str, int]]:
    """(rank, user, points) of the whole board, computed from the scores alone."""
    order = sorted(scores, key=lambda u: (-scores[u], u.encode()))
    out = []
    for i, user in enumerate(order):
        tied = i and scores[order[i - 1]] == scores[user]
        out.append((out[-1][0] if tied else i + 1, user, scores[user]))
    return out


def rows(found: list[LeaderboardEntry]) -> list[tuple[int, str, int]]:
    return [(e.rank, e.user_id, e.score) for e in found]


def test_reads_equal_a_reference_and_their_async_forms(setup: tuple[ScoringEngine, str]) -> None:
    """Big groups of ties (wider than the windows read around a user), so that every way a
    slice finds its first row's rank is taken: from the row before it, from the shards' tops,
    from the windows, or counted in a second round trip."""
    engine, _ = setup
    rng = random.Random(engine.keys.shards)
    scores = {f"p{i:03d}": rng.choice([7, 20, 20, 20, 300, rng.randrange(1, 900)])
              for i in range(160)}  # fmt: skip
    fill(engine, scores)
    ref = reference(scores)
    total = len(ref)
    board = engine.leaderboard()
    position = {user: i for i, (_, user, _) in enumerate(ref)}

    def window(start: int, size: int) -> list[tuple[int, str, int]]:
        return ref[start : start + size]

    def rank_of(user: str) -> RankInfo:
        rank, _, points = ref[position[user]]
        better = [p for _, _, p in ref if p > points]
        return RankInfo(user, points, rank, round(100.0 * (total - rank + 1) / total, 2), total,
                        min(better) - points if better else None)  # fmt: skip

    async def check() -> None:
        for limit, offset in [(10, 0), (7, 3), (5, 40), (13, 61), (20, 150), (10, 160)]:
            assert rows(board.top(limit, offset)) == window(offset, limit)
            assert (await board.top_with_size_async(limit, offset)) == board.top_with_size(
                limit, offset
            )
        for user in [ref[0][1], ref[-1][1], *rng.sample(sorted(scores), 25)]:
            p = position[user]
            assert board.rank(user) == rank_of(user) == await board.rank_async(user)
            for n in (0, 2, 5):
                size = 2 * n + 1
                expected = window(max(0, min(p - n, total - size)), size)
                assert rows(board.around(user, n)) == expected
                assert await board.around_with_size_async(user, n) == (board.around(user, n), total)
            page = board.page_of(user, 9)
            assert rows(page.entries) == window(p // 9 * 9, 9) and page.total_users == total
        assert await board.size_async() == total == board.size()
        status = await engine.status_async("p001")
        assert status == engine.status("p001") and status.total_points == scores["p001"]
        await engine.aclose()

    asyncio.run(check())


def test_a_flushed_script_cache_is_no_error(setup: tuple[ScoringEngine, str]) -> None:
    engine, kind = setup
    fill(engine, {"a": 10, "b": 20, "c": 20})
    board = engine.leaderboard()
    expected = board.rank("a"), board.around("c", 1)

    async def reads() -> tuple[RankInfo, list[LeaderboardEntry]]:
        try:
            return await board.rank_async("a"), await board.around_async("c", 1)
        finally:
            await engine.aclose()

    flush_scripts(engine, kind)
    assert asyncio.run(reads()) == expected
    flush_scripts(engine, kind)
    assert (board.rank("a"), board.around("c", 1)) == expected


def flush_scripts(engine: ScoringEngine, kind: str) -> None:
    if kind == "cluster":
        for node in engine.redis.get_primaries():
            engine.redis.get_redis_connection(node).script_flush()
    else:
        engine.redis.script_flush()


@pytest.mark.parametrize("build", ["client", "url"])
def test_read_routes_answer_503_when_redis_is_down(build: str, tmp_path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'down.db'}")
    store.upgrade()
    if build == "client":  # no asyncio client: the reads run in a thread
        down = ScoringEngine(redis.Redis(port=1, retry=Retry(NoBackoff(), 0)), store=store)
    else:  # as the server builds it: the reads on the asyncio client
        down = ScoringEngine.from_url("redis://127.0.0.1:1/0", store=store)
    client = TestClient(create_app(down, Settings(SCORING_API_KEYS=API_KEYS)))
    for path in ("/v1/leaderboards/all_time", "/v1/leaderboards/all_time?around=a",
                 "/v1/leaderboards/all_time/users/a", "/v1/users/a",
                 "/api/v1/me/thrive-circle/", "/api/v1/me/thrive-circle/my-status/"):  # fmt: skip
        r = client.get(path, headers={**READER, "X-User-Id": "a"})
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"]["code"] == "redis_unavailable", path
