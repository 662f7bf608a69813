"""Decay of inactive users (``[decay]``): once per user and local week, never below the floor,
not activity, in the audit trail and the user's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import shards_for
from helpers import Clock, drain, dst_change, snapshot
from sqlalchemy import select

from engine import ScoringEngine
from engine.domain.errors import ConfigError
from engine.domain.periods import day_to_date, local_day, local_week, window_boards
from engine.domain.rules import ADJUSTMENT_TYPE, build_rules
from engine.services.recovery import rebuild, reconcile
from engine.storage.models import PointActivity
from engine.storage.store import SqlStore


def rules(**decay):
    return build_rules(
        {"weekly_goals": {}, "achievements": {}, "decay": {"enabled": True, **decay}}
    )


def inactive(engine: ScoringEngine, clock: Clock, user: str, points: int, days: int = 40) -> None:
    """``user`` earned ``points`` ``days`` days ago, and nothing since."""
    engine.award(user, "special_event", amount=points, occurred_at=clock.now - timedelta(days=days))


def test_percent_once_a_week_however_often_it_runs(state_redis, clock: Clock, store) -> None:
    """On a Redis and the cluster; the decay is in SQL as an adjustment with reason decay."""
    clock.noon()  # (30 minutes later is the same week)
    engine = ScoringEngine(
        state_redis, clock=clock, store=store, rules=rules(after_days=30, percent=10),
        shards=shards_for(state_redis),
    )  # fmt: skip
    inactive(engine, clock, "old", 1000)
    inactive(engine, clock, "recent", 1000, days=3)
    before = engine.status("old")
    first = engine.run_decay()
    assert (first.decayed, first.points) == (1, 100) and first.users == 2
    clock.advance(minutes=30)
    assert engine.run_decay().decayed == 0
    state = engine.status("old")
    assert state.total_points == 900 and engine.status("recent").total_points == 1000
    week = local_week(day_to_date(local_day(clock.now, "UTC")))
    assert (state.last_decay_week, state.last_decay_points) == (week, 100)
    # not activity: the streak and the last active day are as they were
    assert (state.current_streak_days, state.last_activity_date) == (
        before.current_streak_days, before.last_activity_date,
    )  # fmt: skip
    drain(engine)
    with store.engine.connect() as c:
        rows = list(c.execute(select(PointActivity).where(PointActivity.user_id == "old")))
    decay = [r for r in rows if r.activity_type == ADJUSTMENT_TYPE]
    assert [(r.amount, r.description, r.reverses) for r in decay] == [(-100, "decay", None)]
    # the next week: 10% of what is left
    clock.advance(days=7)
    assert engine.run_decay().points == 90
    assert engine.status("old").total_points == 810


def test_a_rebuild_remembers_the_week_decayed(real_redis, clock: Clock, store) -> None:
    """Redis lost after a decay (its idempotency record with it): the rebuild restores the week
    of the last decay from SQL, so the job does not decay the user twice that week (nor write a
    decay SQL would ignore: its activity id is the week's, already in the audit trail)."""
    clock.noon()
    engine = ScoringEngine(
        real_redis, clock=clock, store=store, rules=rules(after_days=30, percent=10)
    )
    inactive(engine, clock, "old", 1000)
    assert engine.run_decay().decayed == 1
    drain(engine)
    real_redis.flushdb()
    rebuild(engine, store)
    state = engine.status("old")
    week = local_week(day_to_date(local_day(clock.now, "UTC")))
    assert (state.total_points, state.last_decay_week, state.last_decay_points) == (900, week, 100)
    clock.advance(minutes=30)
    assert engine.run_decay().decayed == 0
    drain(engine)
    assert reconcile(engine, store) == []
    clock.advance(days=7)
    assert engine.run_decay().points == 90


def test_a_decay_is_on_no_window_board(real_redis, clock: Clock, store) -> None:
    """An inactive user's decay leaves this day's, week's and month's boards alone (it would
    put them there with a negative score), in Redis and after a rebuild."""
    clock.noon()
    engine = ScoringEngine(
        real_redis, clock=clock, store=store, rules=rules(after_days=30, percent=10)
    )
    inactive(engine, clock, "old", 1000, days=45)
    assert engine.run_decay().decayed == 1
    windows = [w.board_id for w in window_boards(clock.now, engine.rules)]

    def on_windows() -> list[float | None]:
        return [real_redis.zscore(engine.keys.board(0, b), "old") for b in windows]

    assert on_windows() == [None, None, None]
    drain(engine)
    rebuild(engine, store)
    assert on_windows() == [None, None, None] and engine.status("old").total_points == 900


def test_the_script_checks_what_the_job_read(real_redis, clock: Clock) -> None:
    """The job reads users a chunk at a time, then decays them one by one: an award between the
    read and the decay makes it take nothing (the user is active now), and a "tier" floor is
    the tier held at the decay, not at the read."""
    engine = ScoringEngine(real_redis, clock=clock, rules=rules(points=100, floor="tier"))
    inactive(engine, clock, "ivy", 1000)
    seen = real_redis.hget(engine.keys.user("ivy"), "last_day")
    engine.award("ivy", "comment")  # active again, after the job's read
    step = engine.adjustments.decay_step
    assert step("ivy", 100, floor=0, week="w", record_ttl=60, seen_last_day=seen) is None
    assert engine.status("ivy").total_points == 1005
    inactive(engine, clock, "joe", 260)  # spark (250) when read ...
    engine.award("joe", "special_event", amount=300, occurred_at=clock.now - timedelta(days=40))
    seen = real_redis.hget(engine.keys.user("joe"), "last_day")
    done = step("joe", 100, floor=250, week="w", record_ttl=60, seen_last_day=seen, tier_floor=True)
    assert done is not None and done.activity.amount == -60  # ... blaze (500) when decayed
    assert engine.status("joe").total_points == 500


def test_points_and_the_floor(real_redis, clock: Clock) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=rules(points=50, floor=100))
    inactive(engine, clock, "ann", 120)
    inactive(engine, clock, "bob", 100)  # at the floor: loses nothing
    inactive(engine, clock, "cat", 400)
    report = engine.run_decay()
    assert (report.decayed, report.points) == (2, 20 + 50)
    assert [engine.status(u).total_points for u in ("ann", "bob", "cat")] == [100, 100, 350]
    clock.advance(days=7)
    hashes = {u: engine.redis.hgetall(engine.keys.user(u)) for u in ("ann", "bob")}
    assert engine.run_decay().decayed == 1  # only cat: the others are at the floor
    assert {u: engine.redis.hgetall(engine.keys.user(u)) for u in ("ann", "bob")} == hashes
    assert engine.status("cat").total_points == 300


def test_floor_tier_keeps_the_tier(real_redis, clock: Clock) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=rules(percent=50, floor="tier"))
    inactive(engine, clock, "dan", 600)  # blaze starts at 500
    assert engine.run_decay().points == 100
    clock.advance(days=7)
    assert engine.run_decay().decayed == 0
    state = engine.status("dan")
    assert (state.total_points, state.tier) == (500, "blaze")


def test_weeks_are_the_users_own_across_a_dst_change(real_redis, clock: Clock) -> None:
    """Europe/Berlin's autumn change (a Sunday): runs before and after it in that local week
    decay once; Monday 00:30 in Berlin (still Sunday in UTC) is a new week: once more."""
    tz = "Europe/Berlin"
    change = dst_change(tz, before=clock.now, forward=False)
    engine = ScoringEngine(real_redis, clock=clock, rules=rules(points=10, after_days=14))
    engine.set_profile("eva", time_zone=tz)
    clock.now = change - timedelta(hours=2)  # Sunday 01:00 CEST
    inactive(engine, clock, "eva", 500)
    assert engine.run_decay().decayed == 1
    clock.now = change + timedelta(hours=20)  # Sunday 21:00 CET
    assert engine.run_decay().decayed == 0
    monday = change + timedelta(hours=22, minutes=30)  # Monday 00:30 CET = Sunday 23:30 UTC
    assert monday.weekday() == 6  # (still Sunday in UTC)
    clock.now = monday
    assert engine.run_decay().decayed == 1
    state = engine.status("eva")
    assert state.total_points == 480
    assert state.last_decay_week == local_week((change + timedelta(days=1)).date())


def test_off_by_default(real_redis, clock: Clock, tmp_path) -> None:
    engine = ScoringEngine(real_redis, clock=clock, store=SqlStore(f"sqlite:///{tmp_path}/d.db"))
    inactive(engine, clock, "fin", 300, days=400)
    before = snapshot(engine)
    report = engine.run_decay()
    assert (report.users, report.decayed) == (0, 0) and snapshot(engine) == before


def test_a_section_with_a_rate_is_on_unless_disabled() -> None:
    def decay(**section):
        return build_rules({"decay": section}).decay

    assert decay(percent=5).enabled and decay(points=10, after_days=14).enabled
    assert not decay(percent=5, enabled=False).enabled and not decay(after_days=10).enabled


@pytest.mark.parametrize(
    ("decay", "field"),
    [
        ({"enabled": True}, "decay.percent"),
        ({"percent": 5, "points": 10}, "decay.points"),
        ({"percent": 0}, "decay.percent"),
        ({"percent": 101}, "decay.percent"),
        ({"points": 0}, "decay.points"),
        ({"after_days": 0, "points": 1}, "decay.after_days"),
        ({"floor": "level", "points": 1}, "decay.floor"),
        ({"floor": -1, "points": 1}, "decay.floor"),
        ({"points": 1, "every": 7}, "decay.every"),
    ],
)
def test_rules_validation(decay, field) -> None:
    with pytest.raises(ConfigError) as info:
        build_rules({"decay": decay})
    assert info.value.field == field


def test_the_decay_command_and_job(
    real_redis, redis_url: str, monkeypatch, tmp_path, fresh_settings, capsys
) -> None:
    """`scoring decay run` and the scheduler's job (the real clock: the command's)."""
    from scoring.cli import main as cli_main
    from workers.jobs import run_decay

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("[decay]\nenabled = true\nafter_days = 10\npoints = 7\n")
    store = SqlStore(f"sqlite:///{tmp_path / 'cli.db'}")
    store.upgrade()
    for name, value in (("REDIS_URL", redis_url), ("DATABASE_URL", store.url),
                        ("SCORING_RULES", str(rules_file))):  # fmt: skip
        monkeypatch.setenv(name, value)
    engine = ScoringEngine(real_redis, rules=build_rules({"decay": {"points": 7}}))
    engine.award(
        "gil", "special_event", amount=50, occurred_at=datetime.now(UTC) - timedelta(days=20)
    )
    assert cli_main(["decay", "run"]) == 0
    assert "1 decayed, 7 points taken" in capsys.readouterr().out
    assert run_decay()["decayed"] == 0  # the same week: once
    assert engine.status("gil").total_points == 43
