"""Rebuild Redis from SQL, and reconcile the two (SQLite and PostgreSQL, real Redis)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from conftest import shards_for
from helpers import drain

from engine import AwardRequest, ScoringEngine
from engine.services.recovery import day_bitmap, rebuild, reconcile, streaks
from engine.storage.store import SqlStore
from scoring.cli import main as cli_main

BOARDS = [("all_time", None), ("type:comment", None), ("type:quiz_complete", None),
          ("day", None), ("week", None), ("month", None)]  # fmt: skip


def build_history(engine: ScoringEngine, clock) -> list[str]:
    rng = random.Random(5)
    users = [f"r{i}" for i in range(15)]
    engine.set_profile("r1", username="kiri", time_zone="Pacific/Auckland")
    engine.set_profile("r2", display_name="Nia", time_zone="America/New_York")
    engine.set_profile("only-profile", username="lurker")
    items = []
    for _ in range(600):
        at = clock.now - timedelta(days=rng.randrange(45), minutes=rng.randrange(1440))
        items.append(AwardRequest(rng.choice(users), rng.choice(["comment", "quiz_complete",
                                  "reaction", "daily_login"]), occurred_at=at))  # fmt: skip
    for i in range(0, len(items), 100):
        assert not any(isinstance(r, Exception) for r in engine.award_many(items[i : i + 100]))
    engine.set_profile("r1", display_name="Kiri")
    return [*users, "only-profile"]


def picture(engine: ScoringEngine, users: list[str], clock) -> dict:
    """Everything a reader can see: every user's state and every board."""
    boards = {}
    for name, period in BOARDS:
        boards[name] = engine.leaderboard(name, period=period).top(1000)
    for days_back in range(10):
        day = (clock.now - timedelta(days=days_back)).date().isoformat()
        boards[day] = engine.leaderboard("day", period=day).top(1000)
    return {"users": {u: engine.status(u) for u in users}, "boards": boards}


def test_rebuild_reproduces_the_state(state_redis, clock, store: SqlStore) -> None:
    """On a Redis, and on the cluster with K = 8."""
    engine = ScoringEngine(state_redis, clock=clock, store=store, shards=shards_for(state_redis))
    users = build_history(engine, clock)
    drain(engine)
    before = picture(engine, users, clock)
    assert before["users"]["r1"].current_streak_days >= 1
    state_redis.flushdb()  # Redis lost everything (on a cluster: every primary)
    report = rebuild(engine, store)
    # 600 awards, and the weekly goal rewards they earned (activities of their own)
    assert report.users == 15 and report.activities == store.count_activities() > 600
    after = picture(engine, users, clock)
    assert after["users"] == before["users"]
    assert after["boards"] == before["boards"]
    assert reconcile(engine, store) == []
    # and the rebuilt state carries on: versions keep growing, streaks keep counting
    result = engine.award("r1", "comment")
    assert result.user.version == before["users"]["r1"].version + 1
    assert result.user.total_points == before["users"]["r1"].total_points + 5


def test_reconcile_reports_planted_drift(
    state_redis, clock, store: SqlStore, state_env, monkeypatch, fresh_settings
) -> None:
    """On a Redis, and on the cluster with K = 8 (and the command with its settings)."""
    shards = shards_for(state_redis)
    engine = ScoringEngine(state_redis, clock=clock, store=store, shards=shards)
    real_redis = state_redis
    build_history(engine, clock)
    drain(engine)
    assert reconcile(engine, store) == []
    real_redis.hincrby(engine.keys.user("r3"), "total", 7)  # the hash drifts
    r4_board = engine.keys.board(engine.keys.shard_of("r4"), "all")
    real_redis.zincrby(r4_board, -1, "r4")  # the board drifts
    real_redis.hset(engine.keys.user("ghost"), "total", 50)  # points SQL never saw
    drifts = {d.user_id: d for d in reconcile(engine, store)}
    assert set(drifts) == {"r3", "r4", "ghost"}
    assert drifts["r3"].redis_total == drifts["r3"].sql_total + 7
    assert drifts["r4"].board_score == drifts["r4"].redis_total + 1
    assert drifts["ghost"].sql_total is None
    # the command says so in its exit status
    for name, value in state_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SCORING_SHARDS", str(shards))
    monkeypatch.setenv("DATABASE_URL", store.url)
    assert cli_main(["reconcile", "--no-drain"]) == 1
    real_redis.hincrby(engine.keys.user("r3"), "total", -7)
    real_redis.zincrby(r4_board, 1, "r4")
    real_redis.delete(engine.keys.user("ghost"))
    assert cli_main(["reconcile"]) == 0


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ([5], (1, 1)),
        ([1, 2, 3, 7, 8], (2, 3)),
        ([3, 1, 2, 2], (3, 3)),
        ([10, 1, 2, 3, 4, 9], (2, 4)),
    ],
)
def test_streaks_function(days: list[int], expected: tuple[int, int]) -> None:
    assert streaks(days) == expected


def test_day_bitmap_matches_the_script(real_redis) -> None:
    days = {20403, 20405, 20412, 20390}
    day0, bitmap = day_bitmap(days)
    assert day0 == 20384 and day0 % 8 == 0
    real_redis.set("t:bits", bitmap)
    assert {day0 + i for i in range(len(bitmap) * 8) if real_redis.getbit("t:bits", i)} == days
