"""Awards: state, upgrades, idempotency, the outbox, and bad input that writes nothing.

Runs on a real Redis and on fakeredis (the ``engine`` fixture is parametrized over both).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from helpers import BASE, LIFETIME_RULES, PLAIN_RULES, Clock, at_utc, iso, snapshot, week_id

from engine import AwardRequest, ScoringEngine
from engine.domain.errors import (
    IdempotencyConflict,
    InvalidAmount,
    InvalidDescription,
    InvalidIdempotencyKey,
    InvalidTimestamp,
    InvalidUserId,
    ScoringError,
    UnknownActivityType,
    UnknownTimeZone,
    ValidationError,
)
from engine.domain.rules import build_rules, load_rules


def outbox(engine: ScoringEngine) -> list[dict[str, str]]:
    """The entries of every shard's outbox, in the order they were added (by entry id)."""
    entries = []
    for shard in range(engine.keys.shards):
        entries += engine.redis.xrange(engine.keys.outbox(shard))
    entries.sort(key=lambda e: tuple(int(part) for part in e[0].split("-")))
    return [fields for _, fields in entries]


def test_first_award(engine: ScoringEngine, clock: Clock) -> None:
    result = engine.award("alice", "project_create", amount=150, description="Test project")
    user = result.user
    assert (user.total_points, user.tier, user.tier_display, user.level) == (
        150,
        "ember",
        "Ember",
        3,
    )
    assert user.points_to_next_tier == 100 and user.points_to_next_level == 50
    assert user.current_streak_days == 1 and user.longest_streak_days == 1
    assert user.last_activity_date == clock.now.date()
    assert user.lifetime_projects_created == 1 and user.activity_counts == {"project_create": 1}
    assert result.level_upgraded and (result.old_level, result.new_level) == (1, 3)
    assert not result.tier_upgraded and result.old_tier is None and result.new_tier is None
    assert result.activity.amount == 150 and result.activity.description == "Test project"
    assert result.activity.tier_at_time == "ember"
    assert result.activity.created_at == clock.now


def test_default_amount_and_seed_sequence(engine: ScoringEngine) -> None:
    assert engine.award("alice", "quiz_complete").user.total_points == 25
    result = engine.award("alice", "special_event", amount=500, description="Big reward")
    assert result.tier_upgraded and (result.old_tier, result.new_tier) == ("ember", "blaze")
    assert result.user.total_points == 525
    assert result.user.lifetime_quizzes_completed == 1


def test_lifetime_counters_come_from_the_rules(
    client: redis.Redis, clock: Clock, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(LIFETIME_RULES)
    engine = ScoringEngine(client, clock=clock, rules=load_rules(path))
    engine.award("u", "reaction")
    engine.award("u", "daily_login")
    result = engine.award("u", "reaction")
    assert list(result.user.lifetime) == ["reactions_given", "logins", "quizzes_completed"]
    assert result.user.lifetime_reactions_given == 2  # the awarded type's counter
    user = engine.status("u")
    assert user.lifetime == {"reactions_given": 2, "logins": 1, "quizzes_completed": 0}
    assert (user.lifetime_reactions_given, user.lifetime_logins) == (2, 1)
    with pytest.raises(AttributeError):
        _ = user.lifetime_comments_posted  # not a counter of these rules
    with pytest.raises(AttributeError):
        _ = user.no_such_field


def test_state_in_redis_matches_rules(engine: ScoringEngine) -> None:
    """Tier and level written by the script agree with the Python rules at every boundary."""
    totals = []
    # crosses 250, 500, 1,000, 2,500, then level 23 at 80,000 and level 24 at 90,000
    for amount in [249, 1, 249, 1, 499, 1, 1499, 1, 6499, *[10000] * 7, 1000, 1, 9999, 1]:
        result = engine.award("bob", "special_event", amount=amount)
        h = engine.redis.hgetall(engine.keys.user("bob"))
        total = int(h["total"])
        assert h["tier"] == engine.rules.tier_for(total) == result.user.tier
        assert int(h["level"]) == engine.rules.level_for(total) == result.user.level
        totals.append((total, h["tier"], int(h["level"])))
    assert totals[:4] == [
        (249, "ember", 4),
        (250, "spark", 4),
        (499, "spark", 5),
        (500, "blaze", 6),
    ]
    assert totals[6:9] == [(2499, "beacon", 10), (2500, "phoenix", 11), (8999, "phoenix", 14)]
    assert totals[-4:] == [(79999, "phoenix", 22), (80000, "phoenix", 23), (89999, "phoenix", 23),
                           (90000, "phoenix", 24)]  # fmt: skip


def test_each_upgrade_reported_once(engine: ScoringEngine) -> None:
    seen = []
    for _ in range(12):
        r = engine.award("carol", "quiz_complete", amount=250)
        if r.tier_upgraded:
            seen.append((r.old_tier, r.new_tier))
    assert seen == [
        ("ember", "spark"),
        ("spark", "blaze"),
        ("blaze", "beacon"),
        ("beacon", "phoenix"),
    ]


def test_outbox_entry(engine: ScoringEngine, clock: Clock) -> None:
    result = engine.award("dave", "comment", amount=50, description="Posted helpful comment")
    [entry] = outbox(engine)
    assert "e" not in entry  # awards carry no event kind; profile changes carry e=profile
    assert entry["id"] == result.activity.id
    assert (entry["user"], entry["amount"], entry["type"]) == ("dave", "50", "comment")
    assert entry["desc"] == "Posted helpful comment" and entry["tier"] == "ember"
    assert entry["at"] == str(int(result.activity.created_at.timestamp() * 1000))
    # state after: total, level, streak, longest, last active day (days since 1970), version
    day = (clock.now.date() - date(1970, 1, 1)).days
    assert entry["state"] == f"50 2 1 1 {day} 1"


def test_leaderboards_updated(engine: ScoringEngine, clock: Clock) -> None:
    engine.award("erin", "quiz_complete", amount=30)
    engine.award("erin", "comment", amount=5)
    for board in ["all_time", "month", "week", "day"]:
        assert engine.leaderboard(board).rank("erin").score == 35
    assert engine.leaderboard("type:quiz_complete").rank("erin").score == 30
    assert engine.leaderboard("type:comment").rank("erin").score == 5
    today = clock.now.date()
    assert engine.leaderboard("week", period=week_id(today)).rank("erin").score == 35
    assert engine.leaderboard("month", period=f"{today:%Y-%m}").rank("erin").score == 35
    assert engine.leaderboard("day", period=today.isoformat()).rank("erin").score == 35


def test_window_boards_expire(engine: ScoringEngine, clock: Clock) -> None:
    """A board lives until its retention ends by the engine's clock: Redis is given the seconds
    left (a relative TTL), so its own clock, however far from the engine's, only counts down."""
    engine.award("erin", "quiz_complete")
    today = clock.now.date()
    day_key = engine.keys.board(engine.keys.shard_of("erin"), f"day:{today}")
    # the day ends at midnight UTC and its board is kept 8 days after
    expected = at_utc(today + timedelta(days=9))
    assert abs((expected - clock.now).total_seconds() - engine.redis.ttl(day_key)) < 5
    assert engine.redis.ttl(engine.keys.board(engine.keys.shard_of("erin"), "all")) == -1


def test_idempotent_replay(engine: ScoringEngine) -> None:
    first = engine.award("frank", "quiz_complete", amount=300, idempotency_key="req-1")
    before = snapshot(engine)
    again = engine.award("frank", "quiz_complete", amount=300, idempotency_key="req-1")
    assert snapshot(engine) == before
    assert again.replayed and not first.replayed
    assert again.user == first.user and again.activity == first.activity
    assert again.tier_upgraded and again.old_tier == "ember"
    assert len(outbox(engine)) == 1
    # the key is scoped to the user: another user's "req-1" is another award
    assert not engine.award("gina", "quiz_complete", amount=300, idempotency_key="req-1").replayed


def test_a_replay_after_later_awards(engine: ScoringEngine) -> None:
    """A replay answers with the first call's activity and upgrades and the user's state now;
    the record behind it stays small (one allocation in Redis)."""
    first = engine.award("ivy", "quiz_complete", amount=300, idempotency_key="req-9")
    engine.award("ivy", "comment", amount=7)
    again = engine.award("ivy", "quiz_complete", amount=300, idempotency_key="req-9")
    assert again.replayed and again.activity == first.activity
    assert (again.tier_upgraded, again.old_tier, again.new_tier) == (True, "ember", "spark")
    assert again.user.total_points == 307 and again.user.version == first.user.version + 1
    record = engine.redis.get(
        engine.keys.idempotency(engine.keys.shard_of("ivy"), first.activity.id)
    )
    assert len(record) <= 44, record


def test_a_record_written_before_the_short_format_still_replays(engine: ScoringEngine) -> None:
    """Records from before the short format (the state after the first call, 15 fields) are
    answered as they were, so an upgrade in the middle of a client's retries awards nothing
    twice."""
    first = engine.award("jon", "comment", amount=5, idempotency_key="old-1")
    key = engine.keys.idempotency(engine.keys.shard_of("jon"), first.activity.id)
    fingerprint, created_ms, *_ = engine.redis.get(key).split("\x1f")
    last_day = str((first.user.last_activity_date - date(1970, 1, 1)).days)
    old = [fingerprint, created_ms, "5", "1", "1", last_day, "1", "1", "5", "0", "0", "1", "jonny",
           "", ""]  # fmt: skip
    engine.redis.set(key, "\x1f".join(old), keepttl=True)
    again = engine.award("jon", "comment", amount=5, idempotency_key="old-1")
    assert again.replayed and again.user.username == "jonny" and again.user.total_points == 5
    assert engine.status("jon").total_points == 5


def test_the_counts_an_award_reports_are_the_rules_lifetime_types(
    engine: ScoringEngine, clock: Clock
) -> None:
    """The award script reports the counts of the rules' lifetime types (not a fixed three),
    after the award and on a replay."""
    rules = build_rules({"weekly_goals": {}, "lifetime": {"reactions_given": "reaction"}})
    custom = ScoringEngine(engine.redis, clock=clock, rules=rules)
    custom.award("kim", "reaction")
    custom.award("kim", "quiz_complete")
    custom.award("kim", "reaction")
    first = custom.award("kim", "comment", idempotency_key="c-1")
    assert first.user.activity_counts == {"reaction": 2, "comment": 1}
    again = custom.award("kim", "comment", idempotency_key="c-1")
    assert again.replayed and again.user.activity_counts == {"reaction": 2, "comment": 1}


def test_idempotency_key_reused_for_another_award(engine: ScoringEngine) -> None:
    engine.award("frank", "quiz_complete", amount=30, idempotency_key="req-2")
    before = snapshot(engine)
    with pytest.raises(IdempotencyConflict):
        engine.award("frank", "quiz_complete", amount=31, idempotency_key="req-2")
    assert snapshot(engine) == before


def test_replay_in_batch(engine: ScoringEngine) -> None:
    items = [
        AwardRequest("hal", "comment", amount=10, idempotency_key=f"k{i % 3}") for i in range(6)
    ]
    results = engine.award_many(items)
    assert [r.replayed for r in results] == [False] * 3 + [True] * 3
    assert engine.status("hal").total_points == 30
    assert len(outbox(engine)) == 3


def test_award_many_each_item_on_its_own(engine: ScoringEngine) -> None:
    results = engine.award_many(
        [
            {"user_id": "ida", "activity_type": "quiz_complete", "amount": 20},
            {"user_id": "ida", "activity_type": "no_such_type"},
            {"user_id": "", "activity_type": "comment"},
            AwardRequest("jon", "comment", amount=5),
            {"user_id": "ida", "activity_type": "comment", "amount": 0},
            {"user_id": "ida", "activity_type": "comment", "colour": "red"},
            "not an award",
        ]
    )
    assert results[0].user.total_points == 20
    assert isinstance(results[1], UnknownActivityType)
    assert isinstance(results[2], InvalidUserId)
    assert results[3].user.total_points == 5
    assert isinstance(results[4], InvalidAmount)
    assert isinstance(results[5], ScoringError) and results[5].field == "colour"
    assert isinstance(results[6], ScoringError)
    assert engine.status("ida").total_points == 20
    assert len(outbox(engine)) == 2


BAD_AWARDS = [
    ({"amount": 0}, InvalidAmount),
    ({"amount": -5}, InvalidAmount),
    ({"amount": 2.5}, InvalidAmount),
    ({"amount": 2.0}, InvalidAmount),
    ({"amount": Decimal("3")}, InvalidAmount),
    ({"amount": "50"}, InvalidAmount),
    ({"amount": True}, InvalidAmount),
    ({"amount": 501}, InvalidAmount),  # quiz_complete's cap is 500
    ({"activity_type": "quiz_completed"}, UnknownActivityType),
    ({"activity_type": None}, UnknownActivityType),
    ({"description": "x" * 256}, InvalidDescription),
    ({"description": 7}, InvalidDescription),
    ({"description": "bad \ud800 surrogate"}, InvalidDescription),
    ({"user_id": ""}, InvalidUserId),
    ({"user_id": "u" * 129}, InvalidUserId),
    ({"user_id": "é" * 65}, InvalidUserId),  # 130 bytes
    ({"user_id": "tab\there"}, InvalidUserId),
    ({"user_id": "nul\x00"}, InvalidUserId),
    ({"user_id": 42}, InvalidUserId),
    ({"occurred_at": "yesterday"}, InvalidTimestamp),
    ({"occurred_at": "2026-13-01T00:00:00"}, InvalidTimestamp),
    ({"occurred_at": 1700000000}, InvalidTimestamp),
    ({"occurred_at": iso(BASE + timedelta(minutes=6))}, InvalidTimestamp),
    ({"occurred_at": iso(BASE + timedelta(days=60))}, InvalidTimestamp),
    ({"occurred_at": "1999-12-31T23:00:00Z"}, InvalidTimestamp),
    ({"idempotency_key": ""}, InvalidIdempotencyKey),
    ({"idempotency_key": "k" * 256}, InvalidIdempotencyKey),
]


@pytest.mark.parametrize(("change", "error"), BAD_AWARDS)
def test_bad_input_writes_nothing(engine: ScoringEngine, change: dict, error: type) -> None:
    engine.award("kim", "quiz_complete", amount=10)
    before = snapshot(engine)
    call = {"user_id": "kim", "activity_type": "quiz_complete", "amount": 20} | change
    user_id = call.pop("user_id")
    activity_type = call.pop("activity_type")
    with pytest.raises(error) as info:
        engine.award(user_id, activity_type, **call)
    assert info.value.field
    assert snapshot(engine) == before
    [result] = engine.award_many([{"user_id": user_id, "activity_type": activity_type, **call}])
    assert isinstance(result, error)
    assert snapshot(engine) == before


def test_unknown_time_zone_writes_nothing(engine: ScoringEngine) -> None:
    engine.award("kim", "quiz_complete", amount=10)
    before = snapshot(engine)
    for bad in ["Mars/Olympus_Mons", "", "../../etc/passwd", "UTC\x00", 5]:
        with pytest.raises(UnknownTimeZone):
            engine.set_profile("kim", time_zone=bad)
    assert snapshot(engine) == before


def test_profile(engine: ScoringEngine) -> None:
    state = engine.set_profile("lee", username="lee", display_name="Lee Ø", time_zone="Europe/Oslo")
    assert (state.username, state.display_name, state.time_zone) == ("lee", "Lee Ø", "Europe/Oslo")
    assert state.total_points == 0 and state.level == 1 and state.tier == "ember"
    engine.award("lee", "comment")
    state = engine.set_profile("lee", display_name=None)
    assert state.display_name is None and state.username == "lee" and state.total_points == 5
    assert engine.status("lee").time_zone == "Europe/Oslo"
    entries = outbox(engine)
    assert [e.get("e", "award") for e in entries] == ["profile", "award", "profile"]
    assert entries[0]["tz"] == "Europe/Oslo" and "display_name" not in entries[2]


def test_status_of_unknown_user(engine: ScoringEngine) -> None:
    state = engine.status("nobody")
    assert (state.total_points, state.tier, state.level, state.current_streak_days) == (
        0,
        "ember",
        1,
        0,
    )
    assert state.last_activity_date is None and state.points_to_next_tier == 250


# -- award_async: the HTTP API's path (an asyncio Redis client) -----------------------------


@pytest.fixture(params=["redis", "fakeredis"])
def async_engine(request: pytest.FixtureRequest, clock) -> ScoringEngine:
    """An engine whose award_async has an asyncio client: from_url (real Redis) or fake_engine."""
    if request.param == "redis":
        request.getfixturevalue("real_redis")  # flushed, marked
        return ScoringEngine.from_url(
            request.getfixturevalue("redis_url"), clock=clock, rules=PLAIN_RULES
        )
    from engine.runtime.testing import fake_engine

    return fake_engine(clock=clock, rules=PLAIN_RULES)


def test_award_async_matches_award(async_engine: ScoringEngine) -> None:
    import asyncio

    async def run() -> list:
        try:
            return [
                await async_engine.award_async("alice", "quiz_complete", amount=300),
                await async_engine.award_async("alice", "comment", idempotency_key="k1"),
                await async_engine.award_async("alice", "comment", idempotency_key="k1"),
            ]
        finally:
            await async_engine.aclose()

    first, second, replay = asyncio.run(run())
    assert first.tier_upgraded and first.new_tier == "spark" and not first.replayed
    assert second.user.total_points == 305 and replay.replayed
    assert replay.activity.id == second.activity.id
    same = async_engine.award("bob", "quiz_complete", amount=300)
    assert same.user.total_points == first.user.total_points
    assert async_engine.status("alice").total_points == 305
    assert async_engine.redis.xlen(async_engine.keys.outbox(0)) == 3  # two awards + bob's


def test_award_async_errors_and_flushed_script_cache(async_engine: ScoringEngine) -> None:
    import asyncio

    async def run() -> None:
        try:
            await async_engine.award_async("alice", "comment", idempotency_key="k")
            with pytest.raises(IdempotencyConflict):
                await async_engine.award_async("alice", "comment", amount=3, idempotency_key="k")
            with pytest.raises(UnknownActivityType):
                await async_engine.award_async("alice", "nope")
            async_engine.redis.script_flush()
            result = await async_engine.award_async("alice", "comment")  # EVAL fallback
            assert result.user.total_points == 10
        finally:
            await async_engine.aclose()

    asyncio.run(run())


def test_award_async_without_an_async_client_uses_a_thread(real_engine: ScoringEngine) -> None:
    import asyncio

    result = asyncio.run(real_engine.award_async("alice", "comment"))
    assert result.user.total_points == 5 and real_engine.status("alice").total_points == 5


@pytest.mark.parametrize("skew_days", [-400, -9, 9, 400])
def test_window_boards_kept_whatever_the_redis_clock(
    engine: ScoringEngine, clock: Clock, skew_days: int
) -> None:
    """The engine's clock may be far from the Redis server's (a test clock, a replay, a bad
    NTP): the boards of today by the engine's clock are written and kept for their retention,
    not expired on write by a time the Redis clock has passed (or kept forever)."""
    clock.noon()
    clock.advance(days=skew_days)
    engine.award("sam", "comment", amount=5)
    today = clock.now.date()
    ttls = {}
    for window, period in (
        ("day", f"{today}"),
        ("week", week_id(today)),
        ("month", f"{today:%Y-%m}"),
    ):
        assert engine.leaderboard(window).rank("sam").score == 5
        ttls[window] = engine.redis.ttl(
            engine.keys.board(engine.keys.shard_of("sam"), f"{window}:{period}")
        )
    assert all(ttl > 86400 for ttl in ttls.values()), ttls
    assert abs(ttls["day"] - 8.5 * 86400) < 5  # from noon: half a day, then 8 days kept


def test_engine_refuses_nul_before_writing(real_engine: ScoringEngine) -> None:
    with pytest.raises(ValidationError) as raised:
        real_engine.award("e1", "comment", description="x\x00")
    assert raised.value.field == "description"
    assert real_engine.redis.dbsize() <= 1
