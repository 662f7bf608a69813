"""What several test files share: the clock and its dates, the core tests' rules, an archived
week, threads started together and a burst worker, the HTTP API's keys and tokens, a snapshot
of every key, and draining the outbox to SQL (with the checks that SQL matches Redis).
Fixtures stay in ``conftest.py``, which imports the clock from here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jwt
from sqlalchemy import func, select

from engine import AwardRequest, ScoringEngine
from engine.domain.rules import build_rules
from engine.storage.models import PointActivity
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore
from workers.drain import Drainer

PG_TEST_DB = os.environ.get("SCORING_TEST_PG_DB", "scoring_tests")
if not PG_TEST_DB.isidentifier():
    raise ValueError(f"SCORING_TEST_PG_DB={PG_TEST_DB!r} is not a plain database name")

#: The core tests' rules: the defaults without weekly goals and achievements, whose rewards and
#: records (extra activities and outbox entries) would shift the exact totals, counts and outbox
#: lengths those tests check. They run with the default rules in test_engagement.py and
#: test_achievements.py.
PLAIN_RULES = build_rules({"weekly_goals": {}, "achievements": {}})


# -- the clock -------------------------------------------------------------------------------


def base_now() -> datetime:
    """Where every test's clock starts: ``SCORING_TEST_NOW`` (ISO 8601, UTC when it names no
    zone) when set, else the real current time, to the second. No test names a calendar date:
    each builds the dates it needs from this one, so the suite passes on any day (run it with
    ``SCORING_TEST_NOW=2031-12-31T23:30:00Z`` to see). A base far from the Redis server's own
    clock is fine: the engine gives Redis relative TTLs only (see ``engine/periods.py``)."""
    text = os.environ.get("SCORING_TEST_NOW")
    if not text:
        return datetime.now(UTC).replace(microsecond=0)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


#: This run's base time (one per run, so all tests agree on "today").
BASE = base_now()


class Clock:
    """A settable clock for the engine: ``clock.now`` is what the engine sees. It starts at
    :data:`BASE`."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def noon(self) -> None:
        """Set the clock to 12:00 UTC of its current day (hours of room either way)."""
        self.now = at_utc(self.now.date(), 12)


def week_id(d: date | datetime) -> str:
    """The ISO week of ``d`` as the engine names week boards and periods (``2026-W48``)."""
    year, week, _ = d.isocalendar()
    return f"{year}-W{week:02d}"


def monday_of(d: date) -> date:
    return d - timedelta(days=d.weekday())


def last_weekday(d: date, weekday: int) -> date:
    """The latest date on or before ``d`` that falls on ``weekday`` (Monday 0 ... Sunday 6)."""
    return d - timedelta(days=(d.weekday() - weekday) % 7)


def at_utc(d: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(d, time(hour, minute), UTC)


def iso(t: datetime) -> str:
    """``t`` (UTC) as the ISO 8601 text a client sends: ``2026-11-24T12:00:00Z``."""
    return f"{t.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def dst_change(tz: str, *, before: datetime, forward: bool) -> datetime:
    """The last time before ``before`` at which ``tz`` changed its UTC offset, forward (spring:
    a 23-hour day) or back (autumn: a 25-hour day): the first instant of the new offset. So a
    test of daylight saving time finds a real change near the run's date, not a fixed one."""
    zone = ZoneInfo(tz)
    t = before.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    after = t.astimezone(zone).utcoffset()
    for _ in range(24 * 800):
        t -= timedelta(hours=1)
        offset = t.astimezone(zone).utcoffset()
        assert offset is not None and after is not None
        if offset != after and (after > offset) == forward:
            return t + timedelta(hours=1)
        after = offset
    raise AssertionError(f"{tz} has not changed its offset in two years")


def local(d: date, hour: int, minute: int, tz: str) -> datetime:
    """The UTC time of ``hour:minute`` on ``d`` in zone ``tz`` (the first, if it comes twice)."""
    return datetime.combine(d, time(hour, minute), ZoneInfo(tz)).astimezone(UTC)


def archive_last_week(engine: ScoringEngine, clock: Clock) -> tuple[date, str, list]:
    """Awards on the last Sunday (a 50, b 70, c 50 points), then the archive job as it runs on
    the Monday after, 00:10 UTC: (that Sunday, its ISO week, what the job archived)."""
    sunday = last_weekday(clock.now.date(), 6)
    clock.now = at_utc(sunday, 12)  # Sunday, the last day of its ISO week
    for user, points in (("a", 50), ("b", 70), ("c", 50)):
        engine.award(user, "special_event", amount=points)
    clock.now = at_utc(sunday + timedelta(days=1), 0, 10)  # the job's time, Monday
    return sunday, week_id(sunday), engine.archive_ended_periods()


# -- threads and processes ---------------------------------------------------------------------


def in_threads(target: Callable[..., None], args: Sequence[tuple] = ((),) * 16) -> None:
    """``target(*a)`` in a thread of its own for each ``a`` of ``args`` (16 threads with no
    arguments by default), all started before any is waited for."""
    threads = [threading.Thread(target=target, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def burst_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``scoring worker --burst`` in a process of its own, with ``env``: it drains what is
    queued and exits."""
    return subprocess.run(
        [sys.executable, "-m", "scoring.cli", "worker", "--burst", "--log-level", "WARNING"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# -- the HTTP API's keys and tokens -----------------------------------------------------------

AWARD_KEY = "award-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
JWT_SECRET = "jwt-secret-for-the-tests-0123456789"
AWARDER = {"X-API-Key": AWARD_KEY}
READER = {"X-API-Key": READ_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
#: The API keys of the tests' app: one each to award (and read), to read, and to administer.
API_KEYS = f"svc:{AWARD_KEY}:award+read, dash:{READ_KEY}:read, ops:{ADMIN_KEY}:admin"


def token(sub: str, secret: str = JWT_SECRET, **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode({'sub': sub, **claims}, secret, 'HS256')}"}


# -- Redis and SQL ------------------------------------------------------------------------------


def snapshot(engine: ScoringEngine) -> dict[str, object]:
    """Every key and its content (streams by their entries), to show that a call wrote nothing."""
    r = engine.redis
    out: dict[str, object] = {}
    for key in sorted(r.scan_iter(match=f"{engine.keys.prefix}:*")):
        kind = r.type(key)
        if kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = [e[1] for e in r.xrange(key)]
        elif kind == "set":
            out[key] = sorted(r.smembers(key))
        else:
            out[key] = r.get(key)
    return out


def drain(engine: ScoringEngine) -> None:
    """Drain every shard of ``engine``'s outbox into its store, every entry written."""
    for shard in range(engine.keys.shards):
        report = Drainer(engine.redis, engine.store, engine.keys, engine.rules).drain(shard)
        assert report.dead == 0 and report.failed == 0, report


USERS = [f"user-{i}" for i in range(9)]


def drainer(engine: ScoringEngine, store: SqlStore, **options) -> Drainer:
    options.setdefault("batch", 50)
    return Drainer(engine.redis, store, engine.keys, engine.rules, **options)


def award_some(engine: ScoringEngine, n: int, *, start: int = 0) -> None:
    items = [
        AwardRequest(
            USERS[i % len(USERS)],
            ["comment", "quiz_complete", "reaction"][i % 3],
            description=f"award {i}",
        )  # fmt: skip
        for i in range(start, start + n)
    ]
    assert not any(isinstance(r, Exception) for r in engine.award_many(items))


def sql_rows(store: SqlStore) -> tuple[int, int]:
    """(rows, distinct ids) in point_activity."""
    with store.engine.connect() as c:
        rows = c.execute(select(func.count()).select_from(PointActivity)).scalar_one()
        ids = c.execute(select(func.count(func.distinct(PointActivity.id)))).scalar_one()
    return rows, ids


def assert_sql_matches_redis(engine: ScoringEngine, store: SqlStore, activities: int) -> None:
    rows, ids = sql_rows(store)
    assert rows == ids == activities, "exactly one row per activity"
    totals = {user: total for user, total, _ in store.user_totals()}
    for user in USERS:
        assert totals.get(user, 0) == engine.status(user).total_points, user
    snapshots = store.snapshots()
    for user in USERS:
        state = engine.status(user)
        if state.total_points:
            snap = snapshots[user]
            assert (snap.total_points, snap.tier, snap.level, snap.state_version) == (
                state.total_points, state.tier, state.level, state.version,
            )  # fmt: skip


#: A rules file's own lifetime table: other counters, in its order (no seed counter but one).
LIFETIME_RULES = """
[lifetime]
reactions_given = "reaction"
logins = "daily_login"
quizzes_completed = "quiz_complete"
"""


class CountingQueue(DrainQueue):
    """A drain queue that also counts the drain jobs requested, per shard."""

    def __init__(self, queue: Any) -> None:
        super().__init__(queue)
        self.requests: list[int] = []

    def request(self, shard: int) -> None:
        self.requests.append(shard)
        super().request(shard)


class NoQueue:
    """An RQ queue that drops what is enqueued and is always empty (a test runs the jobs
    itself)."""

    count = 0
    jobs: list[Any] = []

    def enqueue(self, *args: Any, **kwargs: Any) -> None:
        return None
