"""The dashboard's reads: a board's rows with names, tiers, levels and streaks; users per tier
counted on the all-time boards; the upgrade feed the award and quest scripts write."""

from __future__ import annotations

import time

import pytest
import redis
from helpers import PLAIN_RULES

from engine import ScoringEngine
from engine.domain.errors import InvalidPaging, UnknownBoard
from engine.storage.store import SqlStore


def test_rows_carry_name_tier_level_points_and_streak(engine: ScoringEngine, clock) -> None:
    engine.set_profile("ann", display_name="Ann Lee")
    engine.set_profile("bo", username="bo_dev")
    engine.award("ann", "quiz_complete", amount=300)  # spark, level 5
    clock.advance(days=1)
    engine.award("ann", "comment", amount=5)  # two days running
    engine.award("bo", "project_create", amount=100)  # ember, level 3
    engine.award("cy", "reaction", amount=1)

    live = engine.live_board("all_time", limit=2)
    assert live.total_users == 3
    assert [(r.rank, r.user_id, r.name, r.points, r.tier, r.tier_display, r.level, r.streak)
            for r in live.rows] == [
        (1, "ann", "Ann Lee", 305, "spark", "Spark", 5, 2),
        (2, "bo", "bo_dev", 100, "ember", "Ember", 3, 1),
    ]  # fmt: skip
    # a type board ranks by its own points; the tier and level stay the user's
    (row,) = engine.live_board("type:comment").rows
    assert (row.user_id, row.points, row.tier, row.level) == ("ann", 5, "spark", 5)
    # a streak that can no longer grow shows as 0
    clock.advance(days=3)
    assert [r.streak for r in engine.live_board().rows] == [0, 0, 0]


def test_users_per_tier_follow_the_thresholds(engine: ScoringEngine) -> None:
    # ember 0, spark 250, blaze 500, beacon 1000, phoenix 2500: each boundary on both sides
    for i, points in enumerate([1, 249, 250, 499, 500, 999, 1000, 2499, 2500, 9000]):
        engine.award(f"u{i}", "side_quest", amount=min(points, 5000))
    live = engine.live_board()
    assert live.tiers == {"ember": 2, "spark": 2, "blaze": 2, "beacon": 2, "phoenix": 2}
    assert list(live.tiers) == PLAIN_RULES.tier_names


def test_feed_records_tier_and_level_changes_only(engine: ScoringEngine) -> None:
    engine.set_profile("ann", display_name="Ann")
    engine.award("ann", "reaction", amount=1)  # level 1 ember, like 0 points: no entry
    assert engine.live_board().upgrades == []
    engine.award("ann", "comment", amount=60)  # level 2
    engine.award("ann", "reaction", amount=1)  # nothing changes
    engine.award("ann", "quiz_complete", amount=200)  # 262: spark, level 4
    first, second = engine.live_board().upgrades
    assert (first.user_id, first.name, first.from_tier, first.tier, first.from_level,
            first.level, first.tier_changed) == (
        "ann", "Ann", "ember", "spark", 2, 4, True,
    )  # fmt: skip
    assert (second.from_tier, second.tier, second.from_level, second.level) == (
        "ember", "ember", 1, 2,
    )  # fmt: skip
    assert not second.tier_changed and first.at >= second.at
    # a new user whose first award jumps a level is in the feed too
    engine.award("bo", "project_create", amount=100)
    newest = engine.live_board(upgrades=1).upgrades
    assert [(u.user_id, u.name, u.from_level, u.level) for u in newest] == [("bo", "bo", 1, 3)]


def test_feed_is_capped(engine: ScoringEngine) -> None:
    for i in range(260):
        engine.award(f"u{i}", "comment", amount=60)
    assert engine.redis.xlen(engine.keys.feed(0)) <= 200
    assert len(engine.live_board(upgrades=100).upgrades) == 100


def test_many_shards_merge_rows_tiers_and_feed(real_redis: redis.Redis, clock) -> None:
    eng = ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES, shards=4)
    for i in range(12):
        eng.award(f"user-{i}", "side_quest", amount=50 * (i + 1))
        time.sleep(0.002)  # the feed is ordered by its stream ids: Redis's clock, in ms
    assert len({eng.keys.shard_of(f"user-{i}") for i in range(12)}) > 1
    live = eng.live_board(limit=3, upgrades=5)
    assert [r.user_id for r in live.rows] == ["user-11", "user-10", "user-9"]
    assert live.total_users == 12 and sum(live.tiers.values()) == 12
    assert live.tiers["blaze"] == 3  # 500, 550 and 600 points
    assert [u.user_id for u in live.upgrades] == [f"user-{i}" for i in (11, 10, 9, 8, 7)]


def test_rewards_that_change_a_tier_are_in_the_feed(
    real_redis: redis.Redis,
    clock,
    store: SqlStore,
) -> None:
    eng = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES)
    qid = eng.create_quest(title="Big one", quest_type="learning", difficulty="hard",
                           points_reward=300, activity_type="quiz_complete",
                           target_count=5).id  # fmt: skip
    eng.award("zed", "reaction", amount=1)
    eng.start_quest("zed", qid)
    eng.complete_quest("zed", qid)
    (up,) = eng.live_board().upgrades
    assert (up.user_id, up.from_tier, up.tier, up.from_level, up.level) == (
        "zed", "ember", "spark", 1, 5,
    )  # fmt: skip


def test_bad_board_and_paging(engine: ScoringEngine) -> None:
    with pytest.raises(UnknownBoard):
        engine.live_board("type:nope")
    with pytest.raises(UnknownBoard):
        engine.live_board("year")
    for kwargs in ({"limit": 0}, {"limit": 1001}, {"upgrades": -1}, {"upgrades": 101},
                   {"upgrades": True}):  # fmt: skip
        with pytest.raises(InvalidPaging):
            engine.live_board(**kwargs)
