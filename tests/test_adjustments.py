"""Adjustments and reversals (``engine.adjust``, ``lua/adjust.lua``): totals, boards, tiers,
the audit trail, rebuild and reconcile, the HTTP endpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import shards_for
from fastapi.testclient import TestClient
from helpers import (
    ADMIN,
    API_KEYS,
    AWARDER,
    JWT_SECRET,
    PLAIN_RULES,
    Clock,
    at_utc,
    drain,
    in_threads,
    last_weekday,
    snapshot,
    week_id,
)
from sqlalchemy import select

from api.app import create_app
from engine import ScoringEngine
from engine.domain.errors import (
    AlreadyReversed,
    BelowZero,
    ConfigError,
    IdempotencyConflict,
    InvalidAmount,
    InvalidDescription,
    NotDrainedYet,
    NotReversible,
    UnknownActivity,
    ValidationError,
)
from engine.domain.rules import ADJUSTMENT_TYPE, build_rules
from engine.runtime.settings import Settings
from engine.services.recovery import rebuild, reconcile
from engine.storage.models import PointActivity
from engine.storage.store import SqlStore

PEAK_RULES = build_rules(
    {"adjustments": {"keep_peak": True}, "weekly_goals": {}, "achievements": {}}
)


def board(engine: ScoringEngine, name: str, user: str, period: str | None = None) -> int | None:
    """The user's points on a board (None: not on it)."""
    rows = {e.user_id: e.score for e in engine.leaderboard(name, period=period).top(1000)}
    return rows.get(user)


def adjustment_board(engine: ScoringEngine, user: str) -> int | None:
    score = engine.redis.zscore(
        engine.keys.type_board(engine.keys.shard_of(user), "adjustment"), user
    )
    return None if score is None else int(-score)


def test_positive_and_negative_adjustments(engine: ScoringEngine, clock: Clock) -> None:
    """On a Redis, fakeredis and the cluster: the total, the boards and the outbox move; the
    streak and the last active day do not."""
    engine.award("ada", "quiz_complete", amount=80)
    before = engine.status("ada")
    up = engine.adjust("ada", 40, "goodwill")
    down = engine.adjust("ada", -100, "refund")
    assert (up.user.total_points, down.user.total_points) == (120, 20)
    assert down.activity.amount == -100 and down.activity.activity_type == ADJUSTMENT_TYPE
    assert down.activity.description == "refund" and down.reverses is None
    state = engine.status("ada")
    assert state.total_points == 20 and state.activity_counts[ADJUSTMENT_TYPE] == 2
    assert (state.current_streak_days, state.last_activity_date) == (
        before.current_streak_days, before.last_activity_date,
    )  # fmt: skip
    for name in ("all_time", "day", "week", "month"):
        assert board(engine, name, "ada") == 20, name
    assert board(engine, "type:quiz_complete", "ada") == 80
    assert adjustment_board(engine, "ada") == -60
    # a replay with the same key answers as the first call and changes nothing
    first = engine.adjust("ada", -5, "fee", idempotency_key="fee-1")
    again = engine.adjust("ada", -5, "fee", idempotency_key="fee-1")
    assert again.replayed and again.activity == first.activity
    assert engine.status("ada").total_points == 15
    with pytest.raises(IdempotencyConflict):
        engine.adjust("ada", -6, "fee", idempotency_key="fee-1")


@pytest.mark.parametrize(
    ("args", "error", "field"),
    [
        ((0, "x"), InvalidAmount, "amount"),
        ((True, "x"), InvalidAmount, "amount"),
        ((2**31, "x"), InvalidAmount, "amount"),
        ((5, ""), InvalidDescription, "reason"),
        ((5, "a\x00b"), InvalidDescription, "reason"),
        ((5, "x" * 256), InvalidDescription, "reason"),
        ((None, "x"), InvalidAmount, "amount"),
    ],
)
def test_bad_input_writes_nothing(real_engine: ScoringEngine, args, error, field) -> None:
    real_engine.award("bea", "comment")
    before = snapshot(real_engine)
    with pytest.raises(error) as info:
        real_engine.adjust("bea", *args)
    assert info.value.field == field
    with pytest.raises(ValidationError, match="UUID"):
        real_engine.adjust("bea", None, "x", reverses="not-an-id")
    assert snapshot(real_engine) == before


def test_the_award_path_and_the_rules_refuse_the_adjustment_type(real_engine) -> None:
    with pytest.raises(ValidationError, match="engine.adjust") as info:
        real_engine.award("cy", ADJUSTMENT_TYPE, amount=5)
    assert info.value.field == "activity_type"
    with pytest.raises(ConfigError) as bad:
        build_rules(
            {"activity_types": {"adjustment": {"display": "A", "points": 1, "max_points": 2}}}
        )
    assert bad.value.field == "activity_types.adjustment"


def test_a_total_never_goes_below_zero(real_engine: ScoringEngine) -> None:
    real_engine.award("dee", "comment", amount=30)
    before = snapshot(real_engine)
    with pytest.raises(BelowZero) as info:
        real_engine.adjust("dee", -31, "too much")
    assert info.value.code == "total_below_zero" and "30" in info.value.message
    with pytest.raises(BelowZero):
        real_engine.adjust("nobody", -1, "no points")
    assert snapshot(real_engine) == before
    assert real_engine.adjust("dee", -30, "all of it").user.total_points == 0


def test_reversal_of_an_activity_from_a_past_week(state_redis, clock: Clock, store) -> None:
    """The week board of that week loses it, this week's does not; once only. On a Redis
    and the cluster, with SQLite and PostgreSQL (the original is found in SQL)."""
    engine = ScoringEngine(state_redis, clock=clock, store=store, shards=shards_for(state_redis))
    this_week = at_utc(last_weekday(clock.now.date(), 2), 12)  # a Wednesday
    clock.now = this_week - timedelta(days=7)
    old = engine.award("eve", "quiz_complete", amount=60)
    engine.award("eve", "comment", amount=10)
    past = week_id(clock.now)
    clock.now = this_week
    engine.award("eve", "comment", amount=15)
    drain(engine)
    assert board(engine, "week", "eve", past) == 70 and board(engine, "week", "eve") == 15
    result = engine.adjust("eve", None, "fraud", reverses=old.activity.id)
    assert result.activity.amount == -60 and result.reverses == old.activity.id
    assert result.user.total_points == 25
    assert board(engine, "week", "eve", past) == 10  # the past week lost it
    assert board(engine, "week", "eve") == 15  # this week's did not
    assert board(engine, "type:quiz_complete", "eve") == 0
    assert board(engine, "all_time", "eve") == 25
    assert result.user.points_by_type["quiz_complete"] == 0
    before = snapshot(engine)
    with pytest.raises(AlreadyReversed) as twice:
        engine.adjust("eve", None, "again", reverses=old.activity.id)
    assert twice.value.code == "already_reversed"
    with pytest.raises(NotReversible):
        engine.adjust("eve", None, "undo", reverses=result.activity.id)
    with pytest.raises(UnknownActivity):
        engine.adjust("mallory", None, "not hers", reverses=old.activity.id)
    with pytest.raises(UnknownActivity):
        engine.adjust("eve", None, "none", reverses="00000000-0000-4000-8000-000000000000")
    with pytest.raises(InvalidAmount):
        engine.adjust("eve", -59, "wrong amount", reverses=old.activity.id)
    assert snapshot(engine) == before


def test_a_reversal_leaves_windows_past_their_retention_alone(real_engine, clock) -> None:
    """An award of 60 days ago: its day and week boards are gone (8 and 35 days' retention),
    its month board is kept (400): only the month and the all-time board lose it."""
    clock.noon()
    then = clock.now - timedelta(days=60)
    old = real_engine.award("ola", "comment", amount=40, occurred_at=then)
    real_engine.award("ola", "comment", amount=5)
    gone = [real_engine.keys.board(0, f"day:{then.date().isoformat()}"),
            real_engine.keys.board(0, f"week:{week_id(then)}")]  # fmt: skip
    assert real_engine.redis.exists(*gone) == 0
    real_engine.adjust("ola", None, "spam", reverses=old.activity.id)
    assert real_engine.redis.exists(*gone) == 0  # not made again
    assert board(real_engine, "month", "ola", f"{then.year}-{then.month:02d}") == 0
    assert board(real_engine, "all_time", "ola") == 5


def test_reversal_of_an_activity_still_in_the_outbox(real_engine: ScoringEngine) -> None:
    """No SQL: the original is found among the outbox's entries; a reversed adjustment gives
    its points back."""
    award = real_engine.award("fay", "comment", amount=40)
    fix = real_engine.adjust("fay", -15, "typo")
    back = real_engine.adjust("fay", None, "typo undone", reverses=fix.activity.id)
    assert back.activity.amount == 15 and back.user.total_points == 40
    gone = real_engine.adjust("fay", None, "spam", reverses=award.activity.id)
    assert gone.user.total_points == 0
    with pytest.raises(AlreadyReversed):
        real_engine.adjust("fay", None, "spam", reverses=award.activity.id)


def test_adjustments_racing_awards_on_one_user(state_redis, clock: Clock) -> None:
    """16 threads on a Redis and on the cluster: every award and adjustment counted once."""
    engine = ScoringEngine(
        state_redis, clock=clock, rules=PLAIN_RULES, shards=shards_for(state_redis)
    )
    engine.award("gus", "special_event", amount=1000)

    def work(i: int) -> None:
        for n in range(25):
            if i % 2:
                engine.adjust("gus", -7, f"fix {i}.{n}")
            else:
                engine.award("gus", "comment", amount=3)

    in_threads(work, [(i,) for i in range(16)])
    expected = 1000 + 8 * 25 * 3 - 8 * 25 * 7
    assert engine.status("gus").total_points == expected
    assert board(engine, "all_time", "gus") == expected
    outbox = engine.keys.outbox(engine.keys.shard_of("gus"))
    entries = [f for _, f in state_redis.xrange(outbox) if f.get("user") == "gus"]
    states = sorted((int(v), int(t)) for t, *_, v in (f["state"].split() for f in entries))
    # each change saw the one before it: versions 1 to 401, the last one's total the final one
    assert [v for v, _ in states] == list(range(1, 402)) and states[-1][1] == expected


def test_demotion_follows_the_total_down(real_engine: ScoringEngine) -> None:
    real_engine.award("hal", "special_event", amount=600)  # blaze, level 6
    result = real_engine.adjust("hal", -400, "chargeback")
    assert (result.old_tier, result.new_tier) == ("blaze", "ember")
    assert (result.old_level, result.new_level) == (6, 4)
    state = real_engine.status("hal")
    assert (state.tier, state.level) == ("ember", 4)
    feed = [f for _, f in real_engine.redis.xrevrange(real_engine.keys.feed(0), count=1)]
    assert feed[0] | {"name": ""} == {"user": "hal", "name": "", "from_tier": "blaze",
                                      "tier": "ember", "from_level": "6", "level": "4"}  # fmt: skip
    assert real_engine.redis.hget(real_engine.keys.user("hal"), "tier") == "ember"


def test_keep_peak_holds_tier_and_level(real_redis, clock: Clock, tmp_path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'peak.db'}")
    store.upgrade()
    engine = ScoringEngine(real_redis, clock=clock, rules=PEAK_RULES, store=store)
    engine.award("ivy", "special_event", amount=600)
    result = engine.adjust("ivy", -400, "chargeback")
    assert not result.tier_changed and not result.level_changed
    assert result.user.total_points == 200 and (result.user.tier, result.user.level) == ("blaze", 6)
    later = engine.award("ivy", "comment", amount=10)  # an award does not demote either
    assert (later.user.tier, later.user.level, later.tier_upgraded) == ("blaze", 6, False)
    assert (engine.status("ivy").tier, engine.status("ivy").total_points) == ("blaze", 210)
    drain(engine)
    assert store.snapshots()["ivy"].tier == "blaze"
    real_redis.flushdb()
    rebuild(engine, store)
    assert (engine.status("ivy").tier, engine.status("ivy").level) == ("blaze", 6)
    assert reconcile(engine, store) == []


def test_drain_rebuild_and_reconcile_agree(state_redis, clock: Clock, store) -> None:
    """SQL holds the adjustments with their reverses; a rebuild puts a reversal's subtraction in
    the original's windows and keeps the reversal marker."""
    engine = ScoringEngine(state_redis, clock=clock, store=store, shards=shards_for(state_redis))
    this_week = at_utc(last_weekday(clock.now.date(), 2), 12)
    clock.now = this_week - timedelta(days=7)
    old = engine.award("jo", "quiz_complete", amount=50)
    engine.award("jo", "comment", amount=20)
    past = week_id(clock.now)
    clock.now = this_week
    engine.award("kim", "comment", amount=30)
    engine.adjust("kim", -12, "fix")
    drain(engine)
    rev = engine.adjust("jo", None, "fraud", reverses=old.activity.id)
    engine.adjust("jo", 5, "sorry")
    drain(engine)
    with store.engine.connect() as c:
        rows = {
            str(r.id): r
            for r in c.execute(
                select(PointActivity).where(PointActivity.activity_type == ADJUSTMENT_TYPE)
            )
        }
    assert len(rows) == 3
    assert str(rows[rev.activity.id].reverses) == old.activity.id
    assert rows[rev.activity.id].amount == -50 and rows[rev.activity.id].description == "fraud"
    assert sum(r.reverses is None for r in rows.values()) == 2
    assert reconcile(engine, store) == []
    before = {u: engine.status(u) for u in ("jo", "kim")}
    weeks = {u: (board(engine, "week", u, past), board(engine, "week", u)) for u in ("jo", "kim")}
    state_redis.flushdb()
    rebuild(engine, store)
    assert {u: engine.status(u) for u in ("jo", "kim")} == before
    assert weeks == {u: (board(engine, "week", u, past), board(engine, "week", u))
                     for u in ("jo", "kim")}  # fmt: skip
    assert weeks["jo"] == (20, 5) and board(engine, "type:quiz_complete", "jo") == 0
    assert before["jo"].current_streak_days == 1  # adjustments are not days of activity
    assert reconcile(engine, store) == []
    with pytest.raises(AlreadyReversed):
        engine.adjust("jo", None, "again", reverses=old.activity.id)


@pytest.fixture
def api(real_redis, clock: Clock, tmp_path) -> tuple[TestClient, ScoringEngine]:
    store = SqlStore(f"sqlite:///{tmp_path / 'api.db'}")
    store.upgrade()
    engine = ScoringEngine(real_redis, clock=clock, store=store)
    settings = Settings(SCORING_API_KEYS=API_KEYS, SCORING_JWT_SECRET=JWT_SECRET)
    return TestClient(create_app(engine, settings)), engine


def test_http_endpoint(api) -> None:
    client, engine = api
    award = engine.award("lu", "quiz_complete", amount=70)
    path = "/v1/users/lu/adjustments"
    r = client.post(path, headers=ADMIN, json={"amount": 20, "reason": "goodwill"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["user"]["total_points"] == 90 and body["point_activity"]["amount"] == 20
    assert body["point_activity"]["activity_type"] == "adjustment" and body["reverses"] is None
    r = client.post(path, headers=ADMIN, json={"reason": "fraud", "reverses": award.activity.id})
    assert r.status_code == 201, r.text
    assert r.json()["user"]["total_points"] == 20 and r.json()["reverses"] == award.activity.id
    again = client.post(path, headers=ADMIN, json={"reason": "x", "reverses": award.activity.id})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_reversed"
    for body_in, status, field in [
        ({"amount": 0, "reason": "x"}, 422, "amount"),
        ({"amount": 5, "reason": "a\x00b"}, 422, "reason"),
        ({"amount": 5}, 422, "reason"),
        ({"amount": 5, "reason": ""}, 422, "reason"),
        ({"amount": 1.5, "reason": "x"}, 422, "amount"),
        ({"reason": "x", "reverses": "00000000-0000-4000-8000-000000000000"}, 404, "reverses"),
        ({"amount": -(10**6), "reason": "x"}, 409, "amount"),
    ]:
        r = client.post(path, headers=ADMIN, json=body_in)
        assert r.status_code == status, (body_in, r.text)
        assert field in (r.json()["error"].get("field") or ""), (body_in, r.text)
    assert client.post(path, headers=AWARDER, json={"amount": 5, "reason": "x"}).status_code == 403
    assert client.post(path, json={"amount": 5, "reason": "x"}).status_code == 401
    keyed = {**ADMIN, "Idempotency-Key": "adj-1"}
    first = client.post(
        "/v1/users/mo/adjustments", headers=keyed, json={"amount": 9, "reason": "a"}
    )
    second = client.post(
        "/v1/users/mo/adjustments", headers=keyed, json={"amount": 9, "reason": "a"}
    )
    assert second.json()["replayed"] and engine.status("mo").total_points == 9
    assert first.json()["point_activity"] == second.json()["point_activity"]
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/users/{user_id}/adjustments"]["post"]
    assert {"201", "404", "409", "422"} <= set(post["responses"])
    assert {"amount", "reason", "reverses"} == set(
        spec["components"]["schemas"]["AdjustmentIn"]["properties"]
    )


def test_reversal_markers_move_with_a_reshard(cluster_redis, clock: Clock, tmp_path) -> None:
    from engine.services.reshard import reshard

    store = SqlStore(f"sqlite:///{tmp_path / 'reshard.db'}")
    store.upgrade()
    old = ScoringEngine(cluster_redis, clock=clock, rules=PLAIN_RULES, shards=2, store=store)
    awards = {u: old.award(u, "comment", amount=20) for u in ("p1", "p2", "p3", "p4")}
    for u, a in awards.items():
        old.adjust(u, None, "spam", reverses=a.activity.id)
    drain(old)
    new = ScoringEngine(cluster_redis, clock=clock, rules=PLAIN_RULES, shards=5, store=store)
    assert all(old.keys.shard_of(u) != new.keys.shard_of(u) for u in awards)  # all move
    reshard(new, store, 2)
    for u, a in awards.items():
        assert new.redis.sismember(new.keys.reversed(u), a.activity.id), u
        with pytest.raises(AlreadyReversed):
            new.adjust(u, None, "again", reverses=a.activity.id)


def test_an_award_key_is_not_an_adjustment_key(real_engine: ScoringEngine) -> None:
    """Awards and adjustments keep their idempotency keys apart: the same key on both is two
    activities (not a replay of the other's record, which has another form)."""
    award = real_engine.award("kai", "comment", idempotency_key="ticket-7")
    adjustment = real_engine.adjust("kai", 40, "goodwill", idempotency_key="ticket-7")
    assert adjustment.activity.id != award.activity.id and not adjustment.replayed
    assert real_engine.adjust("kai", 40, "goodwill", idempotency_key="ticket-7").replayed
    assert real_engine.award("kai", "comment", idempotency_key="ticket-7").replayed
    assert real_engine.status("kai").total_points == award.user.total_points + 40


def test_a_reversal_of_an_activity_deep_in_an_undrained_outbox_is_retried(
    real_engine: ScoringEngine,
) -> None:
    """The reversal reads the newest outbox entries only (bounded): an activity not among them
    and not in SQL while the outbox holds more is a retryable 503, not "unknown"."""
    old = real_engine.award("deep", "comment", amount=7)
    real_engine.award_many(
        [{"user_id": f"other{i}", "activity_type": "reaction"} for i in range(600)]
    )
    with pytest.raises(NotDrainedYet):
        real_engine.adjust("deep", None, "fraud", reverses=old.activity.id)
    assert real_engine.status("deep").total_points == 7
