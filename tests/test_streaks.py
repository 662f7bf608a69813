"""Streaks: counted in days of the user's own time zone, a pure function of the active days."""

from __future__ import annotations

import random
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from helpers import Clock, dst_change, local

from engine import ScoringEngine


def at(day: date, hour: int = 12) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def streaks(days: set[date]) -> tuple[int, int]:
    """(current, longest): the reference definition, from the set of active days."""
    ordered = sorted(days)
    longest = run = 0
    prev = None
    for d in ordered:
        run = run + 1 if prev is not None and d - prev == timedelta(days=1) else 1
        longest = max(longest, run)
        prev = d
    return run, longest


def test_same_day_next_day_gap(engine: ScoringEngine, clock: Clock) -> None:
    award = lambda when: engine.award("amy", "daily_login", occurred_at=when).user  # noqa: E731
    d = clock.now.date() - timedelta(days=23)
    assert award(at(d, 8)).current_streak_days == 1
    assert award(at(d, 20)).current_streak_days == 1
    assert award(at(d + timedelta(days=1))).current_streak_days == 2
    u = award(at(d + timedelta(days=2)))
    assert (u.current_streak_days, u.longest_streak_days) == (3, 3)
    u = award(at(d + timedelta(days=4)))  # a day missed
    assert (u.current_streak_days, u.longest_streak_days) == (1, 3)
    u = award(at(d + timedelta(days=5)))
    assert (u.current_streak_days, u.longest_streak_days) == (2, 3)
    assert u.last_activity_date == d + timedelta(days=5)
    assert not u.streak_active  # the clock says 18 days later


def test_streak_active_today_and_yesterday(engine: ScoringEngine, clock: Clock) -> None:
    engine.award("ben", "daily_login", occurred_at=at(clock.now.date() - timedelta(days=1)))
    assert engine.status("ben").streak_active
    clock.advance(days=1)
    assert not engine.status("ben").streak_active


def test_late_activity_fills_a_gap(engine: ScoringEngine, clock: Clock) -> None:
    d = clock.now.date() - timedelta(days=45)
    for n in [0, 2, 3]:
        engine.award("cat", "daily_login", occurred_at=at(d + timedelta(days=n)))
    u = engine.status("cat")
    assert (u.current_streak_days, u.longest_streak_days) == (2, 2)
    u = engine.award("cat", "daily_login", occurred_at=at(d + timedelta(days=1))).user
    assert (u.current_streak_days, u.longest_streak_days) == (4, 4)
    assert u.last_activity_date == d + timedelta(days=3)


def test_late_activity_before_first_day(engine: ScoringEngine, clock: Clock) -> None:
    d = clock.now.date() - timedelta(days=55)  # day 1 of a 20-day run
    day = lambda n: at(d + timedelta(days=n - 1))  # noqa: E731
    engine.award("dan", "daily_login", occurred_at=day(20))
    engine.award("dan", "daily_login", occurred_at=day(2))  # grows the bitmap back
    engine.award("dan", "daily_login", occurred_at=day(1))
    u = engine.status("dan")
    assert (u.current_streak_days, u.longest_streak_days) == (1, 2)
    for n in range(3, 20):
        u = engine.award("dan", "daily_login", occurred_at=day(n)).user
    assert (u.current_streak_days, u.longest_streak_days) == (20, 20)


def test_streak_is_a_pure_function_of_the_days(engine: ScoringEngine, clock: Clock) -> None:
    rng = random.Random(7)
    start = clock.now.date() - timedelta(days=120)
    for user in ["p1", "p2", "p3"]:
        days = [start + timedelta(days=rng.randrange(90)) for _ in range(70)]
        seen: set[date] = set()
        for d in days:  # arrival order is random: late activities are common
            seen.add(d)
            u = engine.award(user, "comment", occurred_at=at(d, rng.randrange(24))).user
            assert (u.current_streak_days, u.longest_streak_days) == streaks(seen)
            assert u.last_activity_date == max(seen)


def test_auckland_days_are_local(engine: ScoringEngine, clock: Clock) -> None:
    """Pacific/Auckland is UTC+13 in summer, +12 in winter: its last change back to winter time
    (a 25-hour day) before the clock's date."""
    tz = "Pacific/Auckland"
    change = dst_change(tz, before=clock.now - timedelta(days=3), forward=False)
    long_day = change.astimezone(ZoneInfo(tz)).date()  # 25 hours long
    engine.set_profile("kiri", time_zone=tz)
    award = lambda when: engine.award("kiri", "daily_login", occurred_at=when).user  # noqa: E731
    before, after = local(long_day - timedelta(days=1), 23, 30, tz), local(long_day, 0, 30, tz)
    assert before.date() == after.date()  # consecutive local days, one UTC day
    assert award(before).last_activity_date == long_day - timedelta(days=1)
    u = award(after)
    assert (u.current_streak_days, u.last_activity_date) == (2, long_day)
    next_day = long_day + timedelta(days=1)
    late, early = local(next_day, 23, 59, tz), local(next_day + timedelta(days=1), 0, 1, tz)
    assert before.utcoffset() != late.astimezone(ZoneInfo(tz)).utcoffset()  # the change between
    u = award(late)
    assert (u.current_streak_days, u.last_activity_date) == (3, next_day)
    u = award(early)
    assert (u.current_streak_days, u.last_activity_date) == (4, next_day + timedelta(days=1))


def test_new_york_across_spring_forward(engine: ScoringEngine, clock: Clock) -> None:
    """America/New_York moves to EDT at 02:00 on a Sunday in March (a 23-hour day)."""
    tz = "America/New_York"
    short_day = dst_change(tz, before=clock.now - timedelta(days=3), forward=True)
    short_day = short_day.astimezone(ZoneInfo(tz)).date()
    engine.set_profile("nyc", time_zone=tz)
    award = lambda when: engine.award("nyc", "daily_login", occurred_at=when).user  # noqa: E731
    assert award(local(short_day, 1, 0, tz)).last_activity_date == short_day  # 01:00 EST
    late = local(short_day, 23, 0, tz)  # 23:00 EDT: still that day although UTC says the next
    assert late.date() == short_day + timedelta(days=1)
    u = award(late)
    assert (u.current_streak_days, u.last_activity_date) == (1, short_day)
    u = award(local(short_day + timedelta(days=1), 0, 30, tz))  # 00:30 EDT the next day
    assert (u.current_streak_days, u.last_activity_date) == (2, short_day + timedelta(days=1))


def test_new_york_across_fall_back(engine: ScoringEngine, clock: Clock) -> None:
    """EDT ends at 02:00 on a Sunday in November (a 25-hour day)."""
    tz = "America/New_York"
    long_day = dst_change(tz, before=clock.now - timedelta(days=3), forward=False)
    long_day = long_day.astimezone(ZoneInfo(tz)).date()
    next_day = long_day + timedelta(days=1)
    engine.set_profile("nyc2", time_zone=tz)
    award = lambda when: engine.award("nyc2", "daily_login", occurred_at=when).user  # noqa: E731
    award(local(long_day - timedelta(days=1), 0, 30, tz))  # 00:30 EDT the day before
    u = award(local(long_day, 0, 30, tz))  # 00:30 EDT
    assert (u.current_streak_days, u.last_activity_date) == (2, long_day)
    late = local(long_day, 23, 30, tz)  # 23:30 EST, still that day (UTC says the next)
    assert late.date() == next_day
    u = award(late)
    assert (u.current_streak_days, u.last_activity_date) == (2, long_day)
    u = award(local(next_day, 0, 30, tz))  # 00:30 EST the next day
    assert (u.current_streak_days, u.last_activity_date) == (3, next_day)


def test_zone_set_by_another_process_is_honoured(engine: ScoringEngine, clock: Clock) -> None:
    """A second engine (another API process) sets the zone; this one learns it on its award."""
    other = ScoringEngine(engine.redis, clock=clock, shards=engine.keys.shards)
    tz, d = "Pacific/Auckland", clock.now.date() - timedelta(days=30)
    engine.award("zed", "daily_login", occurred_at=at(d))  # caches UTC
    other.set_profile("zed", time_zone=tz)
    when = local(d + timedelta(days=2), 0, 30, tz)
    assert when.date() == d + timedelta(days=1)  # UTC's date is a day behind Auckland's
    u = engine.award("zed", "daily_login", occurred_at=when)
    assert u.user.last_activity_date == d + timedelta(days=2)  # Auckland's date, not UTC's
    late = local(d + timedelta(days=3), 0, 30, tz)
    [r] = engine.award_many([{"user_id": "zed", "activity_type": "comment", "occurred_at": late}])
    assert r.user.last_activity_date == d + timedelta(days=3) and r.user.current_streak_days == 2
