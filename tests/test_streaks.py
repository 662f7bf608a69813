"""Streaks: counted in days of the user's own time zone, a pure function of the active days."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from engine import ScoringEngine


def at(day: str, hour: int = 12) -> str:
    return f"{day}T{hour:02d}:00:00Z"


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


def test_same_day_next_day_gap(engine: ScoringEngine) -> None:
    award = lambda when: engine.award("amy", "daily_login", occurred_at=when).user  # noqa: E731
    assert award(at("2026-11-01", 8)).current_streak_days == 1
    assert award(at("2026-11-01", 20)).current_streak_days == 1
    assert award(at("2026-11-02")).current_streak_days == 2
    u = award(at("2026-11-03"))
    assert (u.current_streak_days, u.longest_streak_days) == (3, 3)
    u = award(at("2026-11-05"))  # a day missed
    assert (u.current_streak_days, u.longest_streak_days) == (1, 3)
    u = award(at("2026-11-06"))
    assert (u.current_streak_days, u.longest_streak_days) == (2, 3)
    assert u.last_activity_date == date(2026, 11, 6)
    assert not u.streak_active  # the clock says 2026-11-24


def test_streak_active_today_and_yesterday(engine: ScoringEngine, clock) -> None:
    engine.award("ben", "daily_login", occurred_at=at("2026-11-23"))
    assert engine.status("ben").streak_active
    clock.advance(days=1)
    assert not engine.status("ben").streak_active


def test_late_activity_fills_a_gap(engine: ScoringEngine) -> None:
    for day in ["2026-10-10", "2026-10-12", "2026-10-13"]:
        engine.award("cat", "daily_login", occurred_at=at(day))
    u = engine.status("cat")
    assert (u.current_streak_days, u.longest_streak_days) == (2, 2)
    u = engine.award("cat", "daily_login", occurred_at=at("2026-10-11")).user
    assert (u.current_streak_days, u.longest_streak_days) == (4, 4)
    assert u.last_activity_date == date(2026, 10, 13)


def test_late_activity_before_first_day(engine: ScoringEngine) -> None:
    engine.award("dan", "daily_login", occurred_at=at("2026-10-20"))
    engine.award("dan", "daily_login", occurred_at=at("2026-10-02"))  # grows the bitmap back
    engine.award("dan", "daily_login", occurred_at=at("2026-10-01"))
    u = engine.status("dan")
    assert (u.current_streak_days, u.longest_streak_days) == (1, 2)
    for d in range(3, 20):
        u = engine.award("dan", "daily_login", occurred_at=at(f"2026-10-{d:02d}")).user
    assert (u.current_streak_days, u.longest_streak_days) == (20, 20)


def test_streak_is_a_pure_function_of_the_days(engine: ScoringEngine) -> None:
    rng = random.Random(7)
    start = date(2026, 6, 1)
    for user in ["p1", "p2", "p3"]:
        days = [start + timedelta(days=rng.randrange(90)) for _ in range(70)]
        seen: set[date] = set()
        for d in days:  # arrival order is random: late activities are common
            seen.add(d)
            u = engine.award(user, "comment", occurred_at=at(d.isoformat(), rng.randrange(24))).user
            assert (u.current_streak_days, u.longest_streak_days) == streaks(seen)
            assert u.last_activity_date == max(seen)


def test_auckland_days_are_local(engine: ScoringEngine) -> None:
    """Pacific/Auckland is UTC+13 in summer, +12 in winter; NZ daylight time ends 2026-04-05."""
    engine.set_profile("kiri", time_zone="Pacific/Auckland")
    award = lambda when: engine.award("kiri", "daily_login", occurred_at=when).user  # noqa: E731
    # 23:30 and 00:30 local on consecutive days are both 2026-04-04 in UTC
    assert award("2026-04-04T10:30:00Z").last_activity_date == date(2026, 4, 4)  # 23:30 NZDT 4th
    u = award("2026-04-04T11:30:00Z")  # 00:30 NZDT on the 5th
    assert (u.current_streak_days, u.last_activity_date) == (2, date(2026, 4, 5))
    # the 5th is 25 hours long; 23:59 NZST on the 6th is 11:59Z on the 6th
    u = award("2026-04-06T11:59:00Z")
    assert (u.current_streak_days, u.last_activity_date) == (3, date(2026, 4, 6))
    u = award("2026-04-06T12:01:00Z")  # 00:01 on the 7th
    assert (u.current_streak_days, u.last_activity_date) == (4, date(2026, 4, 7))


def test_new_york_across_spring_forward(engine: ScoringEngine) -> None:
    """America/New_York moves to EDT at 02:00 on 2026-03-08 (a 23-hour day)."""
    engine.set_profile("nyc", time_zone="America/New_York")
    award = lambda when: engine.award("nyc", "daily_login", occurred_at=when).user  # noqa: E731
    assert award("2026-03-08T06:00:00Z").last_activity_date == date(2026, 3, 8)  # 01:00 EST
    u = award("2026-03-09T03:00:00Z")  # 23:00 EDT, still the 8th although UTC says the 9th
    assert (u.current_streak_days, u.last_activity_date) == (1, date(2026, 3, 8))
    u = award("2026-03-09T04:30:00Z")  # 00:30 EDT on the 9th
    assert (u.current_streak_days, u.last_activity_date) == (2, date(2026, 3, 9))


def test_new_york_across_fall_back(engine: ScoringEngine) -> None:
    """EDT ends at 02:00 on 2026-11-01 (a 25-hour day)."""
    engine.set_profile("nyc2", time_zone="America/New_York")
    award = lambda when: engine.award("nyc2", "daily_login", occurred_at=when).user  # noqa: E731
    award("2026-10-31T04:30:00Z")  # 00:30 EDT on the 31st
    u = award("2026-11-01T04:30:00Z")  # 00:30 EDT on the 1st
    assert (u.current_streak_days, u.last_activity_date) == (2, date(2026, 11, 1))
    u = award("2026-11-02T04:30:00Z")  # 23:30 EST, still the 1st
    assert (u.current_streak_days, u.last_activity_date) == (2, date(2026, 11, 1))
    u = award("2026-11-02T05:30:00Z")  # 00:30 EST on the 2nd
    assert (u.current_streak_days, u.last_activity_date) == (3, date(2026, 11, 2))


def test_zone_set_by_another_process_is_honoured(engine: ScoringEngine, clock) -> None:
    """A second engine (another API process) sets the zone; this one learns it on its award."""
    other = ScoringEngine(engine.redis, clock=clock)
    engine.award("zed", "daily_login", occurred_at="2026-04-03T12:00:00Z")  # caches UTC
    other.set_profile("zed", time_zone="Pacific/Auckland")
    u = engine.award("zed", "daily_login", occurred_at="2026-04-04T11:30:00Z")
    assert u.user.last_activity_date == date(2026, 4, 5)  # Auckland's date, not UTC's
    late = datetime(2026, 4, 5, 12, 30, tzinfo=UTC)  # 00:30 on the 6th in Auckland
    [r] = engine.award_many([{"user_id": "zed", "activity_type": "comment", "occurred_at": late}])
    assert r.user.last_activity_date == date(2026, 4, 6) and r.user.current_streak_days == 2
