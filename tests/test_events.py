"""Seasonal events: the rules file's [events.<id>], the admin API's (SQL), the multiplier on the
award path (boundaries, overlaps, rounding, the cap on the base amount), replays, the audit
trail and rebuild, and a change seen by a second process within 5 s.

Every time is built from the tests' clock (or, for the served process, the real clock), so the
suite passes on any date."""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import ADMIN, API_KEYS, AWARDER, READER, Clock, drain, iso
from sqlalchemy import select

from api.app import create_app
from bench.harness import Server, free_port
from engine import ScoringEngine
from engine.domain.errors import (
    ConfigError,
    EventConflict,
    IdempotencyConflict,
    InvalidAmount,
    InvalidEvent,
    UnknownEvent,
)
from engine.domain.events import SeasonalEvent, event_in_force, multiplied
from engine.domain.rules import REWARD_TYPES, build_rules, load_rules
from engine.runtime.settings import Settings
from engine.services.recovery import rebuild, reconcile
from engine.storage.models import PointActivity
from engine.storage.store import SqlStore

MS = timedelta(milliseconds=1)


def rules_with(events: dict, **more) -> object:
    return build_rules({"weekly_goals": {}, "events": events, **more})


def event_spec(start: datetime, end: datetime, multiplier: float, **more) -> dict:
    return {"start": start, "end": end, "multiplier": multiplier, "title": "An event", **more}


# -- the rules file -------------------------------------------------------------------------


def test_rules_file_events(tmp_path: Path, clock: Clock) -> None:
    start = clock.now.replace(microsecond=0)
    path = tmp_path / "rules.toml"
    path.write_text(
        f"""
[events.double_xp]
start = {iso(start)}
end = "{(start + timedelta(days=2)).isoformat()}"
multiplier = 2
title = "Double XP weekend"

[events.quiz_week]
start = {iso(start)}
end = {iso(start + timedelta(days=7)).replace("Z", "+05:30")}
multiplier = 1.5
activity_types = ["quiz_complete", "streak_bonus"]
title = "Quiz week"
""",
        encoding="utf-8",
    )
    rules = load_rules(path)
    double, quiz = rules.events["double_xp"], rules.events["quiz_week"]
    assert double.multiplier == 2.0 and double.start == start
    assert quiz.end == start + timedelta(days=7) - timedelta(hours=5, minutes=30)
    # the default: every type that is not a reward
    default = double.types(rules.activity_types)
    assert set(default) == set(rules.activity_types) - REWARD_TYPES
    assert "comment" in default and "weekly_goal" not in default
    assert "streak_bonus" not in default and "side_quest" not in default
    assert quiz.types(rules.activity_types) == ("quiz_complete", "streak_bonus")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"multiplier": 0}, "events.ev.multiplier"),
        ({"multiplier": -1}, "events.ev.multiplier"),
        ({"multiplier": 10.5}, "events.ev.multiplier"),
        ({"multiplier": "2"}, "events.ev.multiplier"),
        ({"multiplier": True}, "events.ev.multiplier"),
        ({"multiplier": float("inf")}, "events.ev.multiplier"),
        ({"end": "START"}, "events.ev.end"),  # end == start
        ({"end": "BEFORE"}, "events.ev.end"),
        ({"start": "2026-01-01T00:00:00"}, "events.ev.start"),  # no offset
        ({"start": "soon"}, "events.ev.start"),
        ({"activity_types": ["nope"]}, "events.ev.activity_types"),
        ({"activity_types": ["weekly_goal"]}, "events.ev.activity_types"),
        ({"activity_types": ["side_quest"]}, "events.ev.activity_types"),
        ({"activity_types": []}, "events.ev.activity_types"),
        ({"title": ""}, "events.ev.title"),
        ({"title": "a\x00b"}, "events.ev.title"),
        ({"colour": "red"}, "events.ev.colour"),
    ],
)
def test_invalid_events_stop_start_up_naming_the_field(
    change: dict, field: str, clock: Clock
) -> None:
    spec = event_spec(clock.now, clock.now + timedelta(days=1), 2)
    spec.update(change)
    if spec["end"] == "START":
        spec["end"] = spec["start"]
    elif spec["end"] == "BEFORE":
        spec["end"] = clock.now - MS
    with pytest.raises(ConfigError) as err:
        build_rules({"events": {"ev": spec}})
    assert err.value.field == field, err.value
    assert field in str(err.value)


def test_bad_event_ids_and_caps_the_audit_trail_cannot_hold(clock: Clock) -> None:
    spec = event_spec(clock.now, clock.now + timedelta(days=1), 10)
    with pytest.raises(ConfigError) as err:
        build_rules({"events": {"Bad Id": spec}})
    assert err.value.field.startswith("events.Bad Id")  # the key itself
    # a cap that, multiplied, exceeds point_activity.amount's 32-bit integer
    huge = {"activity_types": {"comment": {"max_points": 300_000_000}}}
    with pytest.raises(ConfigError) as err:
        build_rules({"events": {"ev": spec}, **huge})
    assert err.value.field == "events.ev.multiplier"


# -- the domain: rounding, boundaries, overlaps ---------------------------------------------


@pytest.mark.parametrize(
    ("amount", "multiplier", "expected"),
    [
        (5, 2, 10),
        (5, 1.5, 8),  # 7.5 rounds half up
        (3, 0.5, 2),  # 1.5 rounds half up
        (10, 0.15, 2),  # the decimal 0.15, not its binary approximation (1.4999...)
        (7, 1.07, 7),  # 7.49
        (1, 0.1, 1),  # at least 1
        (1, 0.01, 1),
        (25, 1.1, 28),  # 27.5
        (1000, 10, 10000),
    ],
)
def test_rounding(amount: int, multiplier: float, expected: int) -> None:
    assert multiplied(amount, multiplier) == expected


def _event(eid: str, start: datetime, end: datetime, multiplier: float, types=("comment",)):
    return SeasonalEvent(eid, eid, start, end, multiplier, tuple(types), "rules")


def test_boundaries_and_overlaps(clock: Clock) -> None:
    t = clock.now
    a = _event("a", t, t + timedelta(hours=2), 2)
    b = _event("b", t + timedelta(hours=1), t + timedelta(hours=3), 3)
    c = _event("c", t + timedelta(hours=1), t + timedelta(hours=3), 3)  # b's twin
    events = [a, b]
    assert event_in_force(events, t - MS, "comment") is None
    assert event_in_force(events, t, "comment") is a  # start inclusive
    assert event_in_force(events, t + timedelta(hours=1) - MS, "comment") is a
    assert event_in_force(events, t + timedelta(hours=1), "comment") is b  # highest wins
    assert event_in_force(events, t + timedelta(hours=3) - MS, "comment") is b
    assert event_in_force(events, t + timedelta(hours=3), "comment") is None  # end exclusive
    assert event_in_force(events, t, "quiz_complete") is None  # not its type
    # a tie of multipliers: the earlier start, then the smaller id
    assert event_in_force([c, b], t + timedelta(hours=2), "comment") is b
    early = _event("z", t, t + timedelta(hours=3), 3)
    assert event_in_force([b, early], t + timedelta(hours=2), "comment") is early
    # ended early: in force until then
    ended = SeasonalEvent("e", "e", t, t + timedelta(days=1), 2, ("comment",), "api",
                          ended_at=t + timedelta(hours=1))  # fmt: skip
    assert event_in_force([ended], t + timedelta(hours=1) - MS, "comment") is ended
    assert event_in_force([ended], t + timedelta(hours=1), "comment") is None


# -- the award path -------------------------------------------------------------------------


@pytest.fixture
def timeline(clock: Clock) -> dict[str, datetime]:
    """An event from 1 h before the clock to 1 h after, another (higher) overlapping its second
    half, and one for quizzes only."""
    clock.noon()
    t = clock.now
    return {"start": t - timedelta(hours=1), "mid": t, "end": t + timedelta(hours=1),
            "late_end": t + timedelta(hours=2)}  # fmt: skip


@pytest.fixture
def rules_events(timeline: dict[str, datetime]):
    s, m, e, late = timeline["start"], timeline["mid"], timeline["end"], timeline["late_end"]
    return rules_with({
        "double": event_spec(s, e, 2),
        "triple": event_spec(m, late, 3, activity_types=["comment", "streak_bonus"]),
        "quiz_half": event_spec(s - timedelta(days=1), s, 0.5, activity_types=["quiz_complete"]),
    })  # fmt: skip


def test_awards_carry_the_event_in_force_at_occurred_at(
    client, clock: Clock, rules_events, timeline: dict[str, datetime]
) -> None:
    """On a Redis, fakeredis and the cluster."""
    from conftest import shards_for

    engine = ScoringEngine(client, clock=clock, rules=rules_events, shards=shards_for(client))
    s, m, e, late = timeline["start"], timeline["mid"], timeline["end"], timeline["late_end"]
    cases = [
        (s - MS, "comment", None, None),
        (s, "comment", "double", 2.0),  # start inclusive
        (m - MS, "comment", "double", 2.0),
        (m, "comment", "triple", 3.0),  # overlapping: the highest multiplier
        (m, "reaction", "double", 2.0),  # triple is not for reactions
        (e - MS, "reaction", "double", 2.0),
        (e, "reaction", None, None),  # end exclusive
        (late - MS, "comment", "triple", 3.0),
        (s - MS, "quiz_complete", "quiz_half", 0.5),  # 25 * 0.5 = 12.5 -> 13
        (s, "quiz_complete", "double", 2.0),
    ]
    clock.now = late + timedelta(minutes=1)  # every occurred_at in the past
    total = 0
    for i, (at, kind, event_id, multiplier) in enumerate(cases):
        base = engine.rules.activity_types[kind].points
        r = engine.award(f"u{i}", kind, occurred_at=at)
        expected = base if multiplier is None else multiplied(base, multiplier)
        assert (r.event_id, r.multiplier) == (event_id, multiplier), (i, at, kind)
        assert r.activity.amount == r.user.total_points == expected, i
        assert r.base_amount == (None if event_id is None else base)
        total += expected
    assert engine.status("u8").total_points == 13
    assert sum(e.score for e in engine.leaderboard("all_time").top(100)) == total
    # rewards are not multiplied by default; a streak bonus is where an event names it
    r = engine.award("bonus", "streak_bonus", amount=10, occurred_at=s)
    assert (r.activity.amount, r.event_id) == (10, None)
    r = engine.award("bonus", "streak_bonus", amount=10, occurred_at=m)
    assert (r.activity.amount, r.event_id) == (30, "triple")


def test_the_cap_applies_to_the_base_amount(
    real_engine: ScoringEngine, clock: Clock, rules_events, timeline
) -> None:
    engine = ScoringEngine(real_engine.redis, clock=clock, rules=rules_events)
    cap = engine.rules.activity_types["comment"].max_points
    r = engine.award("capped", "comment", amount=cap, occurred_at=timeline["mid"])
    assert r.activity.amount == 3 * cap and r.base_amount == cap
    with pytest.raises(InvalidAmount):
        engine.award("capped", "comment", amount=cap + 1, occurred_at=timeline["mid"])
    assert engine.status("capped").total_points == 3 * cap


def test_a_replay_answers_as_the_first_call_whatever_the_events_became(
    real_redis, clock: Clock, store: SqlStore
) -> None:
    clock.noon()
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=rules_with({}))
    engine.create_event(id="weekend", title="Weekend", start=clock.now - timedelta(hours=1),
                        end=clock.now + timedelta(hours=1), multiplier=2.5)  # fmt: skip
    first = engine.award("rita", "quiz_complete", idempotency_key="q-1")
    at = clock.now
    fixed = engine.award("rita", "comment", idempotency_key="c-1", occurred_at=at)
    assert (first.activity.amount, first.multiplier, first.event_id) == (63, 2.5, "weekend")
    engine.end_event("weekend")
    clock.advance(minutes=5)  # occurred_at "now" is now after the event's end too
    again = engine.award("rita", "quiz_complete", idempotency_key="q-1")
    assert again.replayed and again.activity == first.activity
    assert (again.multiplier, again.event_id, again.base_amount) == (2.5, "weekend", 25)
    assert (again.tier_upgraded, again.old_tier) == (first.tier_upgraded, first.old_tier)
    fixed_again = engine.award("rita", "comment", idempotency_key="c-1", occurred_at=at)
    assert fixed_again.replayed and fixed_again.activity == fixed.activity
    # the same key with another request is still a conflict
    with pytest.raises(IdempotencyConflict):
        engine.award("rita", "quiz_complete", amount=30, idempotency_key="q-1")
    # a batch replays the same way
    [batched] = engine.award_many([{"user_id": "rita", "activity_type": "quiz_complete",
                                    "idempotency_key": "q-1"}])  # fmt: skip
    assert batched.replayed and batched.activity.amount == 63 and batched.multiplier == 2.5
    assert engine.status("rita").total_points == 63 + 13
    new = engine.award("rita", "quiz_complete", idempotency_key="q-2")
    assert (new.activity.amount, new.event_id) == (25, None)


# -- the admin side and SQL -----------------------------------------------------------------


def test_create_list_and_end_events(real_redis, clock: Clock, store: SqlStore) -> None:
    clock.noon()
    t = clock.now
    rules = rules_with({"launch": event_spec(t - timedelta(days=3), t - timedelta(days=2), 4)})
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=rules)
    made = engine.create_event(id="double-xp", title="Double XP", start=iso(t),
                               end=(t + timedelta(days=1)).isoformat(), multiplier=2,
                               activity_types=["comment", "quiz_complete"])  # fmt: skip
    assert made == SeasonalEvent("double-xp", "Double XP", t, t + timedelta(days=1), 2.0,
                                 ("comment", "quiz_complete"), "api", created_at=t)  # fmt: skip
    assert [e.id for e in engine.seasonal_events()] == ["launch", "double-xp"]
    assert engine.event("launch").source == "rules"
    assert engine.award("ann", "comment").multiplier == 2.0  # this process: at once
    assert engine.award("ann", "reaction").multiplier is None
    with pytest.raises(EventConflict):
        engine.create_event(id="double-xp", title="Again", start=t, end=t + MS, multiplier=3)
    with pytest.raises(EventConflict):
        engine.create_event(id="launch", title="Again", start=t, end=t + MS, multiplier=3)
    with pytest.raises(EventConflict):
        engine.end_event("launch")
    with pytest.raises(UnknownEvent):
        engine.end_event("nope")
    with pytest.raises(UnknownEvent):
        engine.event("nope")
    for fields, field in [
        ({"id": "Bad Id"}, "id"),
        ({"id": None}, "id"),
        ({"multiplier": 0}, "multiplier"),
        ({"multiplier": 11}, "multiplier"),
        ({"end": t}, "end"),
        ({"start": datetime(2026, 1, 1)}, "start"),  # naive: no offset
        ({"activity_types": ["nope"]}, "activity_types"),
        ({"activity_types": ["weekly_goal"]}, "activity_types"),
        ({"title": ""}, "title"),
        ({"colour": "red"}, "colour"),
    ]:
        spec = {"id": "x", "title": "X", "start": t, "end": t + MS, "multiplier": 2, **fields}
        with pytest.raises(InvalidEvent) as err:
            engine.create_event(**spec)
        assert err.value.field == field, (fields, err.value)
    clock.advance(minutes=30)
    ended = engine.end_event("double-xp")
    assert ended.ended_at == clock.now and ended.end == t + timedelta(days=1)
    assert engine.end_event("double-xp") == ended  # again: nothing changes
    assert engine.award("ann", "comment").multiplier is None
    late = engine.award("ann", "comment", occurred_at=clock.now - timedelta(minutes=1))
    assert late.multiplier == 2.0  # it occurred while the event was in force
    # a scheduled event ended before it starts never applies
    engine.create_event(id="later", title="Later", start=t + timedelta(days=1),
                        end=t + timedelta(days=2), multiplier=5)  # fmt: skip
    engine.end_event("later")
    clock.advance(days=1, hours=1)
    assert engine.award("ann", "comment").multiplier is None


def test_a_second_engine_sees_a_change_within_seconds(
    real_redis, clock: Clock, store: SqlStore
) -> None:
    clock.noon()
    rules = rules_with({})
    first = ScoringEngine(real_redis, clock=clock, store=store, rules=rules)
    second = ScoringEngine(real_redis, clock=clock, store=store, rules=rules)
    assert second.award("bo", "comment").multiplier is None  # it has loaded: no events
    first.create_event(id="flash", title="Flash", start=clock.now - timedelta(minutes=1),
                       end=clock.now + timedelta(hours=1), multiplier=3)  # fmt: skip
    started = time.monotonic()
    while second.award("bo", "comment").multiplier is None:
        assert time.monotonic() - started < 5, "the second engine never saw the event"
        time.sleep(0.1)
    first.end_event("flash")
    started = time.monotonic()
    while second.award("bo", "comment").multiplier is not None:
        assert time.monotonic() - started < 5, "the second engine never saw the end"
        time.sleep(0.1)


def test_sql_away_keeps_the_events_it_had(
    real_redis, clock: Clock, store: SqlStore, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    clock.noon()
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=rules_with({}))
    other = ScoringEngine(real_redis, clock=clock, store=store, rules=rules_with({}))
    engine.create_event(id="keep", title="Keep", start=clock.now - timedelta(minutes=1),
                        end=clock.now + timedelta(hours=1), multiplier=2)  # fmt: skip
    assert engine.award("cy", "comment").multiplier == 2.0
    # another process changes the events; this one cannot reach SQL meanwhile
    engine.ctx.store = SqlStore(f"sqlite:///{tmp_path / 'no-tables.db'}")  # every query fails
    other.end_event("keep")

    def failures() -> int:
        return len([r for r in caplog.records if "could not be reloaded" in r.getMessage()])

    for _ in range(3):
        engine.events._next_check = 0.0  # a second has passed
        assert engine.award("cy", "comment").multiplier == 2.0  # the award goes on, as it was
        _until(lambda: failures() == 1 and not engine.events._reloading)  # (in a thread)
    assert failures() == 1  # once per outage
    engine.ctx.store = store  # SQL is back: the next check reloads (in a thread)

    def reloaded() -> bool:
        engine.events._next_check = 0.0
        return engine.award("cy", "comment").multiplier is None

    _until(reloaded)


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.02)


def test_the_audit_trail_keeps_base_multiplier_and_event_and_rebuild_agrees(
    state_redis, clock: Clock, store: SqlStore
) -> None:
    """On a Redis and on the cluster (K = 8), into SQLite and PostgreSQL."""
    from conftest import shards_for

    clock.noon()
    t = clock.now
    rules = rules_with({"file": event_spec(t - timedelta(days=1), t - timedelta(hours=1), 1.5)})
    engine = ScoringEngine(state_redis, clock=clock, store=store, rules=rules,
                           shards=shards_for(state_redis))  # fmt: skip
    engine.create_event(id="sql", title="SQL", start=t - timedelta(hours=1),
                        end=t + timedelta(hours=1), multiplier=4,
                        activity_types=["quiz_complete"])  # fmt: skip
    expected: dict[str, tuple[int, int | None, float | None, str | None]] = {}
    for i in range(24):
        user = f"au{i % 6}"
        kind = ["comment", "quiz_complete", "reaction"][i % 3]
        at = t - timedelta(hours=2) + timedelta(minutes=5 * i)
        r = engine.award(user, kind, occurred_at=at, idempotency_key=f"k{i}")
        expected[r.activity.id] = (r.activity.amount, r.base_amount, r.multiplier, r.event_id)
        again = engine.award(user, kind, occurred_at=at, idempotency_key=f"k{i}")  # a replay
        assert again.replayed and again.activity.amount == r.activity.amount
    assert {v[3] for v in expected.values()} == {None, "file", "sql"}
    drain(engine)
    with store.engine.connect() as c:
        t_ = PointActivity.__table__
        rows = c.execute(select(t_.c.id, t_.c.amount, t_.c.base_amount, t_.c.multiplier,
                                t_.c.event_id)).all()  # fmt: skip
    assert {str(r.id): (r.amount, r.base_amount, r.multiplier, r.event_id) for r in rows} == (
        expected
    )
    before = {f"au{i}": engine.status(f"au{i}").total_points for i in range(6)}
    assert sum(before.values()) == sum(v[0] for v in expected.values())
    assert reconcile(engine, store) == []
    rebuild(engine, store)
    assert {f"au{i}": engine.status(f"au{i}").total_points for i in range(6)} == before
    assert reconcile(engine, store) == []


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def api(real_redis, clock: Clock, tmp_path: Path) -> TestClient:
    store = SqlStore(f"sqlite:///{tmp_path / 'events.db'}")
    store.upgrade()
    clock.noon()
    engine = ScoringEngine(real_redis, clock=clock, store=store)
    return TestClient(create_app(engine, Settings(SCORING_API_KEYS=API_KEYS)))


def test_the_events_api(api: TestClient, clock: Clock) -> None:
    t = clock.now
    body = {"id": "double_xp", "title": "Double XP", "start": iso(t - timedelta(hours=1)),
            "end": iso(t + timedelta(hours=1)), "multiplier": 2}  # fmt: skip
    assert api.post("/v1/events", json=body, headers=AWARDER).status_code == 403
    assert api.post("/v1/events", json=body).status_code == 401
    r = api.post("/v1/events", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["id"] == "double_xp" and made["multiplier"] == 2.0 and made["source"] == "api"
    assert made["ended_at"] is None and "comment" in made["activity_types"]
    assert api.post("/v1/events", json=body, headers=ADMIN).status_code == 409
    bad = api.post("/v1/events", json={**body, "id": "x", "multiplier": 20}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "multiplier", bad.text
    bad = api.post("/v1/events", json={**body, "id": "x", "end": iso(t - timedelta(hours=2))},
                    headers=ADMIN)  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "end", bad.text
    listed = api.get("/v1/events", headers=READER)
    assert listed.status_code == 200 and [e["id"] for e in listed.json()] == ["double_xp"]
    assert api.get("/v1/events/double_xp", headers=READER).json() == made
    assert api.get("/v1/events/nope", headers=READER).status_code == 404

    award = api.post("/v1/users/ann/awards", json={"activity_type": "comment"}, headers=AWARDER)
    assert award.status_code == 201
    out = award.json()
    assert (out["point_activity"]["amount"], out["base_amount"], out["multiplier"],
            out["event_id"]) == (10, 5, 2.0, "double_xp")  # fmt: skip

    assert api.post("/v1/events/double_xp/end", headers=AWARDER).status_code == 403
    ended = api.post("/v1/events/double_xp/end", headers=ADMIN)
    assert ended.status_code == 200 and ended.json()["ended_at"] is not None
    assert api.post("/v1/events/nope/end", headers=ADMIN).status_code == 404
    plain = api.post("/v1/users/ann/awards", json={"activity_type": "comment"}, headers=AWARDER)
    out = plain.json()
    assert (out["point_activity"]["amount"], out["base_amount"], out["multiplier"],
            out["event_id"]) == (5, None, None, None)  # fmt: skip


def test_a_served_process_applies_a_change_within_5_seconds(
    real_redis, redis_url: str, store: SqlStore, tmp_path: Path
) -> None:
    """The event is made here (this process's engine); `scoring serve --workers 2` (two other
    processes, on the same Redis and SQL) applies it within 5 s, and its end as well."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": store.url,
           "SCORING_DATA_DIR": str(tmp_path), "SCORING_API_KEYS": API_KEYS,
           "SCORING_QUEUE": "events-test"}  # fmt: skip
    argv = [sys.executable, "-m", "scoring.cli", "serve", "--port", str(port), "--workers", "2"]
    server = Server("scoring serve", argv, env, port, tmp_path / "serve.log")
    server.start()
    try:
        engine = ScoringEngine(real_redis, store=store)  # the real clock, as the server's

        def multipliers() -> set[float | None]:
            """The multiplier of an award on each of 8 fresh connections (both workers)."""
            seen = set()
            for i in range(8):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    headers = {**AWARDER, "Content-Type": "application/json"}
                    body = json.dumps({"activity_type": "comment"})
                    conn.request("POST", f"/v1/users/served-{i}/awards", body=body, headers=headers)
                    resp = conn.getresponse()
                    body = json.loads(resp.read())
                    assert resp.status == 201, body
                    seen.add(body["multiplier"])
                finally:
                    conn.close()
            return seen

        assert multipliers() == {None}
        now = datetime.now(UTC)
        engine.create_event(id="served", title="Served", start=now - timedelta(minutes=5),
                            end=now + timedelta(hours=1), multiplier=3)  # fmt: skip
        changed = time.monotonic()
        while multipliers() != {3.0}:
            assert time.monotonic() - changed < 5, "the server did not apply the new event"
            time.sleep(0.1)
        engine.end_event("served")
        changed = time.monotonic()
        while multipliers() != {None}:
            assert time.monotonic() - changed < 5, "the server did not apply the end"
            time.sleep(0.1)
    finally:
        server.stop()


def test_the_readme_rules_example_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = text.split("A rules file overrides", 1)[1].split("```toml\n", 1)[1]
    path = tmp_path / "rules.toml"
    path.write_text(example.split("```", 1)[0], encoding="utf-8")
    rules = load_rules(path)
    event = rules.events["double_xp"]
    assert event.multiplier == 2.0 and event.end - event.start == timedelta(days=3, hours=-1)
