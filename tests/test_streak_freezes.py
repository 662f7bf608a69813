"""Streak freezes and milestones (``[streak]`` rules): earned, spent and paid by the award
script, in the user's local days; in the state, over HTTP and in the audit trail."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from conftest import shards_for
from fastapi.testclient import TestClient
from helpers import ADMIN, AWARDER, READER, Clock, drain, dst_change, in_threads, local, token
from sqlalchemy import select
from test_api import api_settings, sqlite_store  # noqa: F401 - fixtures
from test_hot_routes import _same

from api.app import create_app
from api.hot import HotRoutes
from engine import ScoringEngine
from engine.domain.errors import ConfigError, NotFound, ValidationError
from engine.domain.rules import build_rules, load_rules, reward_id
from engine.storage.models import PointActivity
from engine.storage.store import SqlStore

#: freezes on (at most 2, one per 3 active days), three milestones, no weekly goals
RULES = build_rules(
    {
        "weekly_goals": {},
        "streak": {"freezes_max": 2, "freeze_every_days": 3,
                   "milestones": {"3": 10, "5": 20, "8": 40}},
    }
)  # fmt: skip
EPOCH = date(1970, 1, 1)


def at(day: date, hour: int = 12) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


@pytest.fixture
def st(client: redis.Redis, clock: Clock) -> ScoringEngine:
    """An engine with :data:`RULES` on a Redis, fakeredis and the cluster."""
    return ScoringEngine(client, clock=clock, rules=RULES, shards=shards_for(client))


@pytest.fixture
def st_sql(state_redis: redis.Redis, clock: Clock, store: SqlStore) -> ScoringEngine:
    """An engine with :data:`RULES` and SQL (SQLite, PostgreSQL), on a Redis and the cluster."""
    return ScoringEngine(
        state_redis, clock=clock, store=store, rules=RULES, shards=shards_for(state_redis)
    )


def days_from(start: date) -> Callable[[int], str]:
    """The award time (noon UTC) of day ``n`` counted from ``start``."""
    return lambda n: at(start + timedelta(days=n))


def sql_rows(store: SqlStore, user: str) -> list[PointActivity]:
    with store.engine.connect() as c:
        t = PointActivity.__table__
        return list(c.execute(select(t).where(t.c.user_id == user).order_by(t.c.version)))


# -- rules ----------------------------------------------------------------------------------


def test_the_defaults_keep_freezes_and_milestones_off() -> None:
    s = load_rules().streak
    assert (s.freezes_max, s.freeze_every_days, s.milestones) == (0, 7, {})


def test_a_rules_file_sets_the_streak_section(tmp_path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[streak]\nfreezes_max = 3\nfreeze_every_days = 5\n"
        "milestones = {7 = 50, 30 = 200, 100 = 1000}\n"
    )
    s = load_rules(path).streak
    assert (s.freezes_max, s.freeze_every_days) == (3, 5)
    assert s.milestones == {7: 50, 30: 200, 100: 1000}


@pytest.mark.parametrize(
    ("streak", "field"),
    [
        ({"freezes_max": -1}, "streak.freezes_max"),
        ({"freezes_max": "two"}, "streak.freezes_max"),
        ({"freeze_every_days": 0}, "streak.freeze_every_days"),
        ({"milestones": {"0": 5}}, "streak.milestones.0.[key]"),
        ({"milestones": {"seven": 5}}, "streak.milestones.seven.[key]"),
        ({"milestones": {"7": 0}}, "streak.milestones.7"),
        ({"milestones": [7, 30]}, "streak.milestones"),
        ({"freezes": 2}, "streak.freezes"),
    ],
)
def test_invalid_streak_rules_name_the_field(streak: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_rules({"streak": streak})
    assert info.value.field == field


# -- freezes --------------------------------------------------------------------------------


def test_freezes_are_earned_every_n_days_up_to_the_cap(st: ScoringEngine, clock: Clock) -> None:
    day = days_from(clock.now.date() - timedelta(days=40))
    held = [st.award("fay", "daily_login", occurred_at=day(n)).user.streak_freezes
            for n in range(10)]  # fmt: skip
    # one at 3, one at 6 active days; at 9 the user holds the cap (2) already
    assert held == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    u = st.status("fay")
    assert (u.current_streak_days, u.streak_freezes, u.streak_freezes_used) == (10, 2, 0)


def test_enough_freezes_keep_the_streak_and_the_missed_days_are_frozen(
    st: ScoringEngine, clock: Clock
) -> None:
    day = days_from(clock.now.date() - timedelta(days=40))
    for n in range(6):  # days 0-5: two freezes earned
        st.award("gus", "daily_login", occurred_at=day(n))
    u = st.award("gus", "comment", occurred_at=day(8)).user  # days 6 and 7 missed
    # the streak lives on; the frozen days do not count in its length
    assert (u.current_streak_days, u.longest_streak_days) == (7, 7)
    assert (u.streak_freezes, u.streak_freezes_used) == (0, 2)
    assert u.last_activity_date == clock.now.date() - timedelta(days=32)
    u = st.award("gus", "comment", occurred_at=day(9)).user
    assert (u.current_streak_days, u.streak_freezes) == (8, 0)
    # one more missed day and no freeze left: a new run
    u = st.award("gus", "comment", occurred_at=day(11)).user
    assert (u.current_streak_days, u.longest_streak_days, u.streak_freezes_used) == (1, 8, 2)
    assert st.status("gus").streak_freezes_used == 2


def test_too_few_freezes_are_kept_and_the_streak_restarts(st: ScoringEngine, clock: Clock) -> None:
    day = days_from(clock.now.date() - timedelta(days=40))
    for n in range(3):  # one freeze
        st.award("hal", "daily_login", occurred_at=day(n))
    u = st.award("hal", "daily_login", occurred_at=day(5)).user  # two days missed
    assert (u.current_streak_days, u.streak_freezes, u.streak_freezes_used) == (1, 1, 0)


def test_freezes_off_by_default(client: redis.Redis, clock: Clock) -> None:
    engine = ScoringEngine(client, clock=clock, rules=build_rules({"weekly_goals": {}}),
                           shards=shards_for(client))  # fmt: skip
    engine.award("ivy", "streak_bonus", amount=5)  # a user with state (not a day of activity)
    assert engine.grant_freezes("ivy", 3).streak_freezes == 0
    day = days_from(clock.now.date() - timedelta(days=40))
    for n in range(14):
        u = engine.award("ivy", "daily_login", occurred_at=day(n)).user
    assert (u.streak_freezes, u.current_streak_days) == (0, 14)
    u = engine.award("ivy", "daily_login", occurred_at=day(15)).user
    assert (u.current_streak_days, u.streak_freezes_used) == (1, 0)


def test_a_grant_is_capped_at_freezes_max(st: ScoringEngine, clock: Clock) -> None:
    with pytest.raises(NotFound):  # a user with no state yet
        st.grant_freezes("jo", 1)
    st.award("jo", "streak_bonus", amount=5)  # (not a day of activity)
    assert st.grant_freezes("jo", 1).streak_freezes == 1
    u = st.grant_freezes("jo", 5)
    assert (u.streak_freezes, u.total_points, u.current_streak_days) == (2, 5, 0)
    for bad in (0, -1, 366, True, "2"):
        with pytest.raises(ValidationError):
            st.grant_freezes("jo", bad)  # type: ignore[arg-type]
    day = days_from(clock.now.date() - timedelta(days=20))
    st.award("jo", "daily_login", occurred_at=day(0))
    u = st.award("jo", "daily_login", occurred_at=day(3)).user  # two granted freezes spent
    assert (u.current_streak_days, u.streak_freezes, u.streak_freezes_used) == (2, 0, 2)


def test_a_streak_bonus_neither_extends_nor_thaws(st: ScoringEngine, clock: Clock) -> None:
    day = days_from(clock.now.date() - timedelta(days=20))
    st.award("kim", "streak_bonus", amount=5, occurred_at=day(0))
    st.grant_freezes("kim", 2)
    st.award("kim", "daily_login", occurred_at=day(0))
    u = st.award("kim", "streak_bonus", amount=5, occurred_at=day(2)).user
    assert (u.current_streak_days, u.streak_freezes, u.streak_freezes_used) == (1, 2, 0)


def test_late_activities_join_runs_through_frozen_days(st: ScoringEngine, clock: Clock) -> None:
    day = days_from(clock.now.date() - timedelta(days=60))
    for n in (0, 1, 2):  # one freeze
        st.award("lou", "daily_login", occurred_at=day(n))
    u = st.award("lou", "daily_login", occurred_at=day(4)).user  # day 3 frozen
    assert (u.current_streak_days, u.streak_freezes_used) == (4, 1)
    st.award("lou", "daily_login", occurred_at=day(7))  # days 5, 6 missed: a new run
    u = st.award("lou", "daily_login", occurred_at=day(8)).user
    assert (u.current_streak_days, u.longest_streak_days) == (2, 4)
    # a late day 6 joins days 7-8; then a late day 5 joins everything through frozen day 3
    u = st.award("lou", "comment", occurred_at=day(6)).user
    assert (u.current_streak_days, u.longest_streak_days) == (3, 4)
    u = st.award("lou", "comment", occurred_at=day(5)).user
    assert (u.current_streak_days, u.longest_streak_days) == (8, 8)  # 9 days, 1 frozen
    # an activity arriving late for the frozen day makes it active; the freeze is not returned
    u = st.award("lou", "comment", occurred_at=day(3)).user
    assert (u.current_streak_days, u.longest_streak_days) == (9, 9)
    assert (u.streak_freezes, u.streak_freezes_used) == (st.status("lou").streak_freezes, 1)
    # and a late activity long before grows both bitmaps towards the past
    u = st.award("lou", "comment", occurred_at=day(-20)).user
    assert (u.current_streak_days, u.longest_streak_days) == (9, 9)
    u = st.award("lou", "comment", occurred_at=day(-1)).user
    assert (u.current_streak_days, u.longest_streak_days) == (10, 10)


def _bits(r: redis.Redis, key: str, day0: int) -> set[int]:
    """The days marked in a bitmap whose bit 0 is ``day0`` (``r``: a client of bytes)."""
    raw = r.get(key) or b""
    return {day0 + 8 * i + j for i, b in enumerate(raw) for j in range(8) if b & (0x80 >> j)}


def _reference(active: set[int], frozen: set[int]) -> tuple[int, int]:
    """(current, longest) from the sets of days: a run is consecutive days each active or
    frozen; its length counts the active days; the current run holds the last active day."""
    days = sorted(active | frozen)
    longest = cur = 0
    prev = None
    for d in days:
        if prev is None or d != prev + 1:
            cur = 0
        cur += d in active
        longest = max(longest, cur)
        prev = d
    last, cur = max(active), 0
    d = last
    while d in active or d in frozen:
        cur += d in active
        d -= 1
    return cur, longest


def test_the_streak_is_a_pure_function_of_active_and_frozen_days(
    real_redis: redis.Redis, redis_url: str, clock: Clock
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=RULES)
    raw = redis.Redis.from_url(redis_url)
    rng = random.Random(16)
    start = clock.now.date() - timedelta(days=200)
    for user in ("q1", "q2", "q3"):
        active: set[int] = set()
        cursor, paid = 0, Counter[str]()
        for _ in range(90):
            if rng.random() < 0.2 and cursor > 5:  # a late activity
                n = cursor - rng.randrange(1, 30)
            else:
                cursor += rng.choice([0, 1, 1, 1, 1, 2, 3])
                n = cursor
            d = start + timedelta(days=n)
            r = engine.award(user, "comment", occurred_at=at(d, rng.randrange(24)))
            paid.update(x.activity_id for x in r.rewards)
            active.add((d - EPOCH).days)
            u = r.user
            day0 = int(real_redis.hget(engine.keys.user(user), "day0"))
            assert _bits(raw, engine.keys.days(user), day0) == active
            frozen = _bits(raw, engine.keys.frozen(user), day0)
            assert (u.current_streak_days, u.longest_streak_days) == _reference(active, frozen)
            assert u.streak_freezes_used == len(frozen) and 0 <= u.streak_freezes <= 2
        assert max(paid.values()) == 1  # each milestone of each run once
        assert st_total(engine, user) == engine.status(user).total_points
    raw.close()


def st_total(engine: ScoringEngine, user: str) -> int:
    """The user's all-time board score (the boards follow every reward)."""
    return int(-engine.redis.zscore(engine.keys.board(0, "all"), user))


@pytest.mark.parametrize("forward", [True, False], ids=["spring-forward", "fall-back"])
def test_freezes_across_a_dst_change_in_auckland(
    st_sql: ScoringEngine, clock: Clock, store: SqlStore, forward: bool
) -> None:
    """The missed days are calendar days in the user's zone: the 23-hour or 25-hour day of a
    change counts as one day, and the frozen days are Auckland's dates."""
    engine, tz = st_sql, "Pacific/Auckland"
    change = dst_change(tz, before=clock.now - timedelta(days=5), forward=forward)
    odd_day = change.astimezone(ZoneInfo(tz)).date()  # 23 or 25 hours long
    engine.set_profile("kiri", time_zone=tz)
    first = odd_day - timedelta(days=3)
    for n in range(3):  # three local days, one freeze; 23:30 local (UTC says the same day)
        engine.award(
            "kiri", "daily_login", occurred_at=local(first + timedelta(days=n), 23, 30, tz)
        )
    engine.grant_freezes("kiri", 1)
    # the change day and the next are missed; 00:30 local two days on (UTC: the day before)
    when = local(odd_day + timedelta(days=2), 0, 30, tz)
    assert when.date() == odd_day + timedelta(days=1)
    u = engine.award("kiri", "daily_login", occurred_at=when).user
    assert (u.current_streak_days, u.last_activity_date) == (4, odd_day + timedelta(days=2))
    assert (u.streak_freezes, u.streak_freezes_used) == (0, 2)
    drain(engine)
    rows = [r for r in sql_rows(store, "kiri") if r.activity_type == "daily_login"]
    frozen = [r.frozen_days for r in rows]
    assert frozen == [None] * 3 + [f"{odd_day.isoformat()},{(odd_day + timedelta(days=1))}"]
    assert rows[-1].current_streak_days == 4


# -- milestones -----------------------------------------------------------------------------


def test_a_milestone_is_paid_once_per_run(st: ScoringEngine, clock: Clock) -> None:
    start = clock.now.date() - timedelta(days=60)
    day = days_from(start)
    run0 = (start - EPOCH).days
    results = [st.award("max", "daily_login", occurred_at=day(n)) for n in range(9)]
    paid = {n: [(w.activity_type, w.ref, w.points) for w in r.rewards]
            for n, r in enumerate(results) if r.rewards}  # fmt: skip
    assert paid == {2: [("streak_bonus", "3", 10)], 4: [("streak_bonus", "5", 20)],
                    7: [("streak_bonus", "8", 40)]}  # fmt: skip
    assert results[2].rewards[0].activity_id == reward_id(f"streak:max:{run0}:3")
    u = results[-1].user
    assert u.total_points == 9 * 5 + 10 + 20 + 40
    assert st.status("max").activity_counts["streak_bonus"] == 3
    # a replay pays nothing again and answers with the first call's rewards
    first = st.award("max", "daily_login", occurred_at=day(9), idempotency_key="k")
    again = st.award("max", "daily_login", occurred_at=day(9), idempotency_key="k")
    assert again.replayed and again.rewards == first.rewards == ()
    assert st.status("max").total_points == 10 * 5 + 70
    # a new run pays each milestone again, under its own key
    day2 = days_from(start + timedelta(days=20))
    r = [st.award("max", "daily_login", occurred_at=day2(n)) for n in range(3)][-1]
    run1 = (start + timedelta(days=20) - EPOCH).days
    assert [w.activity_id for w in r.rewards] == [reward_id(f"streak:max:{run1}:3")]


def test_a_late_activity_joining_runs_pays_only_new_lengths(
    st: ScoringEngine, clock: Clock
) -> None:
    day = days_from(clock.now.date() - timedelta(days=60))
    for n in [0, 1, 2, 5, 6, 7]:  # two runs of 3 (one freeze, two days missed): each paid
        st.award("ned", "daily_login", occurred_at=day(n))
    assert st.award("ned", "daily_login", occurred_at=day(3)).rewards == ()  # 0-3: 4 days
    r = st.award("ned", "daily_login", occurred_at=day(4))  # one run of 8
    assert [(w.ref, w.points) for w in r.rewards] == [("5", 20), ("8", 40)]
    assert st.status("ned").points_by_type["streak_bonus"] == 10 + 10 + 20 + 40


def test_sixteen_concurrent_awards_pay_a_milestone_once(
    real_redis: redis.Redis, clock: Clock
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=RULES)
    day = days_from(clock.now.date() - timedelta(days=30))
    for n in range(4):
        engine.award("oz", "daily_login", occurred_at=day(n))
    rewards: list = []
    payers: list[int] = []  # the first calls (not replays) whose result carries a reward
    lock = threading.Lock()
    gate = threading.Barrier(16)

    def one(i: int) -> None:
        gate.wait()
        # day 4 (the 5th) for all of them, half by its own key, half retried with a shared one
        key = "shared" if i % 2 else f"own-{i}"
        r = engine.award("oz", "comment", occurred_at=day(4), idempotency_key=key)
        with lock:
            rewards.extend(r.rewards)
            if r.rewards and not r.replayed:
                payers.append(i)

    in_threads(one, [(i,) for i in range(16)])
    assert len(payers) == 1
    assert {w.activity_id for w in rewards} == {
        reward_id(f"streak:oz:{(clock.now.date() - timedelta(days=30) - EPOCH).days}:5")
    }
    u = engine.status("oz")
    assert u.points_by_type["streak_bonus"] == 10 + 20 and u.current_streak_days == 5


def test_milestones_and_frozen_days_in_the_audit_trail(
    st_sql: ScoringEngine, clock: Clock, store: SqlStore
) -> None:
    engine = st_sql
    start = clock.now.date() - timedelta(days=30)
    day = days_from(start)
    for n in [0, 1, 2, 4]:  # day 3 frozen
        engine.award("pia", "daily_login", occurred_at=day(n))
    drain(engine)
    rows = sql_rows(store, "pia")
    assert [(r.activity_type, r.amount) for r in rows] == [
        ("daily_login", 5), ("daily_login", 5), ("daily_login", 5), ("streak_bonus", 10),
        ("daily_login", 5),
    ]  # fmt: skip
    run0 = (start - EPOCH).days
    assert str(rows[3].id) == reward_id(f"streak:pia:{run0}:3")
    assert rows[4].frozen_days == (start + timedelta(days=3)).isoformat()
    assert rows[4].current_streak_days == 4
    # the same reward written again (a worker's retry of an old entry) is one row
    [(entry_id, fields)] = [
        e
        for e in engine.redis.xrange(engine.keys.outbox(engine.keys.shard_of("pia")))
        if "key" in e[1]
    ] or [(None, None)]
    if fields is not None:  # (trimmed once acknowledged: rebuild it from the key)
        engine.redis.xadd(engine.keys.outbox(engine.keys.shard_of("pia")), fields)
    else:
        engine.redis.xadd(
            engine.keys.outbox(engine.keys.shard_of("pia")),
            {"key": f"streak:pia:{run0}:3", "user": "pia", "amount": "10",
             "type": "streak_bonus", "desc": "Streak milestone: 3 days",
             "at": str(int(rows[3].created_at.timestamp() * 1000)),  # (the entry's own time)
             "tier": "ember", "state": f"25 1 3 3 {run0 + 2} 4"},
        )  # fmt: skip
    drain(engine)
    assert len(sql_rows(store, "pia")) == 5
    assert sum(r.amount for r in sql_rows(store, "pia")) == engine.status("pia").total_points


def test_the_migration_adds_and_drops_frozen_days(tmp_path) -> None:
    from sqlalchemy import inspect

    store = SqlStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.upgrade("0003")
    assert "frozen_days" not in {
        c["name"] for c in inspect(store.engine).get_columns("point_activity")
    }
    store.upgrade()
    assert "frozen_days" in {c["name"] for c in inspect(store.engine).get_columns("point_activity")}
    from alembic import command
    from alembic.config import Config

    from engine.storage.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    assert "frozen_days" not in {
        c["name"] for c in inspect(store.engine).get_columns("point_activity")
    }


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def st_apps(
    state_redis,
    state_env: dict[str, str],
    clock: Clock,
    sqlite_store: SqlStore,  # noqa: F811
) -> tuple[TestClient, TestClient]:
    """(the app with :data:`RULES`, the same app without its hot handlers)."""
    engine = ScoringEngine.from_url(
        state_env["REDIS_URL"], clock=clock, store=sqlite_store, rules=RULES,
        shards=shards_for(state_redis),
    )  # fmt: skip
    hot, reference = create_app(engine, api_settings()), create_app(engine, api_settings())
    for m in reference.user_middleware:
        if m.cls is HotRoutes:
            m.kwargs["routes"] = []
    return TestClient(hot), TestClient(reference)


def test_the_admin_grants_freezes_over_http(st_apps: tuple[TestClient, TestClient]) -> None:
    hot, ref = st_apps
    path = "/v1/users/rua/streak/freezes"
    for headers in (AWARDER, READER, token("rua"), {}):
        assert hot.post(path, json={"count": 1}, headers=headers).status_code in (401, 403)
    for body in ({"count": 0}, {"count": "1"}, {"count": 1.5}, {}, {"count": 1, "x": 1}):
        assert hot.post(path, json=body, headers=ADMIN).status_code == 422
    r = hot.post(path, json={"count": 5}, headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"  # no state yet
    award = {"activity_type": "streak_bonus", "amount": 5}
    assert hot.post("/v1/users/rua/awards", json=award, headers=ADMIN).status_code == 201
    r = hot.post(path, json={"count": 5}, headers=ADMIN)
    assert r.status_code == 200
    user = r.json()
    assert (user["id"], user["streak_freezes"], user["streak_freezes_used"]) == ("rua", 2, 0)
    got = hot.get("/v1/users/rua", headers=READER)
    assert got.json()["streak_freezes"] == 2
    _same(got, ref.get("/v1/users/rua", headers=READER))  # the hot handler's bytes
    mine = hot.get("/api/v1/me/thrive-circle/my-status/", headers=token("rua"))
    assert mine.status_code == 200 and mine.json()["user"]["streak_freezes"] == 2


def test_rebuild_restores_frozen_days_and_the_run(
    st_sql: ScoringEngine, clock: Clock, store: SqlStore
) -> None:
    from engine.services.recovery import rebuild

    engine = st_sql
    start = clock.now.date() - timedelta(days=30)
    day = days_from(start)
    for n in [0, 1, 2, 4, 5, 6, 8]:  # days 3 and 7 frozen; paid 3 and 5
        engine.award("rex", "daily_login", occurred_at=day(n))
    engine.grant_freezes("rex", 1)
    before = engine.status("rex")
    assert (before.current_streak_days, before.streak_freezes_used) == (7, 2)
    assert before.streak_freezes >= 1
    drain(engine)
    rebuild(engine, store)
    after = engine.status("rex")
    assert (after.current_streak_days, after.longest_streak_days, after.last_activity_date) == (
        before.current_streak_days, before.longest_streak_days, before.last_activity_date,
    )  # fmt: skip
    assert (after.total_points, after.streak_freezes_used) == (before.total_points, 2)
    assert after.streak_freezes == before.streak_freezes  # from user_streak_freeze
    # the run goes on as it was: a late day 7 joins nothing new, day 9 reaches 8 once
    r = engine.award("rex", "daily_login", occurred_at=day(9))
    run0 = (start - EPOCH).days
    assert [w.activity_id for w in r.rewards] == [reward_id(f"streak:rex:{run0}:8")]
    assert engine.award("rex", "comment", occurred_at=day(7)).user.current_streak_days == 9
