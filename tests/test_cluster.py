"""The engine on a real Redis Cluster (started by the tests from a ``redis-server`` binary):
configuration, workers draining different shards in parallel, the sweep, resharding, a cluster
that is down, and a master SIGKILLed during a stream of awards.

The core semantics (awards, streaks, goals, quests, boards, drain, rebuild, reconcile, the API)
run on the cluster through the ``client``, ``state_redis`` and ``eng`` fixtures of their own
test files; this file holds what only a cluster has.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from helpers import API_KEYS, AWARDER, PLAIN_RULES, READER, Clock, drain
from redis.cluster import RedisCluster
from rq import Queue
from sqlalchemy import func, select

from api.app import create_app
from engine import AwardRequest, ScoringEngine
from engine.domain.errors import ConfigError
from engine.runtime.connect import REDIS_ERRORS, cluster_client, uses_cluster
from engine.runtime.local_cluster import LocalCluster
from engine.runtime.settings import Settings
from engine.services.recovery import rebuild, reconcile
from engine.services.reshard import reshard
from engine.storage.models import PointActivity
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore
from workers.drain import Drainer

SHARDS = 16


def sqlite(tmp_path, name: str = "cluster.db") -> SqlStore:
    store = SqlStore(f"sqlite:///{tmp_path / name}")
    store.upgrade()
    return store


def awards(n: int, users: int = 97, prefix: str = "u") -> list[AwardRequest]:
    types = ["comment", "quiz_complete", "reaction", "project_create"]
    return [
        AwardRequest(f"{prefix}{i % users}", types[i % 4], idempotency_key=f"key-{i}")
        for i in range(n)
    ]


def assert_applied(results: list) -> None:
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]


def rows_by_id(store: SqlStore) -> tuple[int, int]:
    with store.engine.connect() as c:
        rows = c.execute(select(func.count()).select_from(PointActivity)).scalar_one()
        ids = c.execute(select(func.count(func.distinct(PointActivity.id)))).scalar_one()
    return rows, ids


# -- configuration --------------------------------------------------------------------------


def test_the_cluster_is_detected_and_rq_needs_a_url_of_its_own(
    cluster_redis: RedisCluster, redis_cluster: LocalCluster, real_redis, redis_url, tmp_path
) -> None:
    db = f"sqlite:///{tmp_path / 'cfg.db'}"
    settings = Settings(REDIS_URL=redis_cluster.url, RQ_REDIS_URL=redis_url, DATABASE_URL=db,
                        SCORING_SHARDS=SHARDS)  # fmt: skip
    assert uses_cluster(settings)
    engine = ScoringEngine.from_settings(settings)
    assert isinstance(engine.redis, RedisCluster)
    assert engine.award("alice", "comment").user.total_points == 5
    engine.close()
    forced = Settings(REDIS_URL=redis_cluster.url, SCORING_REDIS_CLUSTER="no")
    assert not uses_cluster(forced)
    # RQ cannot use a cluster: start-up names the variable to set
    with pytest.raises(ConfigError, match="RQ_REDIS_URL"):
        ScoringEngine.from_settings(Settings(REDIS_URL=redis_cluster.url, DATABASE_URL=db))
    with pytest.raises(ConfigError, match="only database 0"):
        ScoringEngine.from_settings(Settings(
            REDIS_URL=redis_cluster.url[:-1] + "3", RQ_REDIS_URL=redis_url, DATABASE_URL=db,
            SCORING_REDIS_CLUSTER="yes",
        ))  # fmt: skip
    with pytest.raises(ConfigError, match="REDIS_URL"):
        uses_cluster(Settings(SCORING_REDIS_CLUSTER="yes"))
    env = {**os.environ, "REDIS_URL": redis_cluster.url, "DATABASE_URL": db}
    env.pop("RQ_REDIS_URL", None)
    for command in (["worker", "--burst"], ["scheduler"]):
        done = subprocess.run([sys.executable, "-m", "scoring.cli", *command], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2 and "RQ_REDIS_URL" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


# -- the drain: one consumer group per shard, workers on different shards -------------------


def test_workers_drain_different_shards_in_parallel(
    cluster_redis: RedisCluster, redis_cluster: LocalCluster, real_redis, redis_url, tmp_path
) -> None:
    """Awards over 16 shards on three nodes queue one drain job per shard; two `scoring worker`
    processes take them, both get some, and every award is in SQL exactly once."""
    store = sqlite(tmp_path)
    queue = Queue("cluster-drain", connection=redis.Redis.from_url(redis_url))
    engine = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=SHARDS, store=store,
                           drain_queue=DrainQueue(queue))  # fmt: skip
    assert_applied(engine.award_many(awards(3000)))
    assert len(queue.jobs) == SHARDS  # one per shard, not one per award
    env = {**os.environ, "REDIS_URL": redis_cluster.url, "RQ_REDIS_URL": redis_url,
           "DATABASE_URL": store.url, "SCORING_SHARDS": str(SHARDS),
           "SCORING_QUEUE": "cluster-drain", "SCORING_DRAIN_BATCH": "50"}  # fmt: skip
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "scoring.cli", "worker", "--log-level", "WARNING"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        drainer = Drainer(cluster_redis, store, engine.keys, engine.rules)
        deadline = time.monotonic() + 90
        while any(drainer.backlog(s) for s in range(SHARDS)) or queue.count:
            assert time.monotonic() < deadline, "the workers did not drain the cluster"
            assert all(w.poll() is None for w in workers), workers[0].stderr
            time.sleep(0.2)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    assert rows_by_id(store) == (3000, 3000)
    finished = queue.finished_job_registry.get_job_ids()
    names = {job.worker_name for job in map(queue.fetch_job, finished) if job is not None}
    assert len(names) == 2, names  # both workers drained shards
    assert reconcile(engine, store) == []


def test_sweep_queues_the_shards_left_behind(
    cluster_redis: RedisCluster, redis_cluster: LocalCluster, real_redis, redis_url, tmp_path,
    monkeypatch, fresh_settings,
) -> None:  # fmt: skip
    """The periodic sweep (its settings naming the cluster) finds the shards with entries not
    in SQL when no award queued their drain, and the burst worker drains them."""
    store = sqlite(tmp_path)
    engine = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=SHARDS)  # no queue
    assert_applied(engine.award_many(awards(500)))
    for shard in range(SHARDS):  # the flags the awards raised lapse (no job was queued)
        cluster_redis.delete(engine.keys.drain_flag(shard))
    env = {
        "REDIS_URL": redis_cluster.url,
        "RQ_REDIS_URL": redis_url,
        "DATABASE_URL": store.url,
        "SCORING_SHARDS": str(SHARDS),
        "SCORING_QUEUE": "sweep",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from workers.jobs import sweep

    queued = sweep()
    assert sorted(queued) == sorted({engine.keys.shard_of(f"u{i}") for i in range(97)})
    done = subprocess.run([sys.executable, "-m", "scoring.cli", "worker", "--burst"],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert rows_by_id(store) == (500, 500)


# -- changing K on a populated deployment ---------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(4, 16), (16, 3)])
def test_reshard_keeps_every_read_and_retry(
    cluster_redis: RedisCluster, clock: Clock, tmp_path, before: int, after: int
) -> None:
    """K = 4 -> 16 and 16 -> 3 on the cluster: after `reshard` every status, board and weekly
    goal reads as before, a retried award with an old idempotency key replays its first
    answer (on the user's new shard), and new awards carry on."""
    store = sqlite(tmp_path)
    old = ScoringEngine(cluster_redis, clock=clock, shards=before, store=store)  # goals on
    old.set_profile("u3", username="three", time_zone="Asia/Tokyo")
    old.set_friends("u3", [f"u{i}" for i in range(0, 97, 5)])
    items = awards(1500)
    assert_applied(old.award_many(items))
    drain(old)
    users = [f"u{i}" for i in range(97)]
    boards = ["all_time", "type:comment", "day", "week", "month"]

    def picture(engine: ScoringEngine) -> dict:
        return {
            "users": {u: engine.status(u) for u in users},
            "boards": {b: engine.leaderboard(b).top(1000) for b in boards},
            "goals": {u: engine.weekly_goals(u) for u in users[:10]},
            "friends": (engine.friends("u3"), engine.leaderboard().friends_of("u3")),
        }

    seen = picture(old)
    new = ScoringEngine(cluster_redis, clock=clock, shards=after, store=store)
    report = reshard(new, store, before)
    assert report.user_keys_moved > 0 and report.board_entries_moved > 0
    assert report.idempotency_records_moved > 0 and report.idempotency_records_dropped == 0
    assert picture(new) == seen
    assert reshard(new, store, before).user_keys_moved == 0  # done: a second run moves nothing
    retry = items[5]
    again = new.award(retry.user_id, retry.activity_type, idempotency_key=retry.idempotency_key)
    assert again.replayed and new.status("u5") == seen["users"]["u5"]
    fresh = new.award("u5", "comment")
    assert fresh.user.total_points == seen["users"]["u5"].total_points + 5
    drain(new)
    assert reconcile(new, store) == []


def test_the_reshard_command(
    cluster_redis: RedisCluster, redis_cluster: LocalCluster, real_redis, redis_url, tmp_path
) -> None:
    """`scoring reshard --from 2` with SCORING_SHARDS=5: refused while the outbox holds entries
    SQL lacks (exit 2, the message says to drain), then done once drained."""
    store = sqlite(tmp_path)
    old = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=2, store=store)
    assert_applied(old.award_many(awards(300)))
    env = {**os.environ, "REDIS_URL": redis_cluster.url, "RQ_REDIS_URL": redis_url,
           "DATABASE_URL": store.url, "SCORING_SHARDS": "5"}  # fmt: skip

    def command() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scoring.cli", "reshard", "--from", "2"],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    refused = command()
    assert refused.returncode == 2 and "drain" in refused.stderr, refused.stderr
    before = old.leaderboard().top(1000)
    drain(old)
    done = command()
    assert done.returncode == 0, done.stderr
    assert "resharded 2 -> 5 shards" in done.stdout
    new = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=5, store=store)
    assert new.leaderboard().top(1000) == before
    assert reconcile(new, store) == []


def test_reshard_refuses_an_outbox_not_drained(cluster_redis: RedisCluster, tmp_path) -> None:
    store = sqlite(tmp_path)
    old = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=4, store=store)
    assert_applied(old.award_many(awards(50)))
    new = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=8, store=store)
    with pytest.raises(ConfigError, match="drain"):
        reshard(new, store, 4)


# -- a cluster that is down -------------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A 3-master cluster of this test's own, which it may break."""
    with LocalCluster(masters=3) as cluster:
        yield cluster


def test_a_cluster_that_is_down_fails_fast_with_503(own_cluster: LocalCluster, tmp_path) -> None:
    """A master down (no replica to take over) and then the whole cluster: awards and reads
    fail within seconds with a typed error, the API answers 503 with no traceback, and what
    the live nodes serve keeps working while one master is down."""
    engine = ScoringEngine.from_url(own_cluster.url, shards=SHARDS, rules=PLAIN_RULES,
                                    store=sqlite(tmp_path))  # fmt: skip
    assert_applied(engine.award_many(awards(200)))
    app = TestClient(create_app(engine, Settings(SCORING_API_KEYS=API_KEYS)))
    dead = own_cluster.master_of_slot(cluster_redis_slot(engine, "u0"))
    own_cluster.kill(dead)
    started = time.monotonic()
    r = app.post("/v1/users/u0/awards", headers=AWARDER, json={"activity_type": "comment"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "redis_unavailable"
    assert time.monotonic() - started < 15
    # a user on a live master is served (require_full_coverage asks only about its slot)
    alive = next(
        f"u{i}"
        for i in range(97)
        if own_cluster.master_of_slot(cluster_redis_slot(engine, f"u{i}")) is not dead
    )
    assert app.post(
        f"/v1/users/{alive}/awards", headers=AWARDER, json={"activity_type": "comment"}
    ).status_code in (200, 201, 503)
    for node in own_cluster.primaries():
        own_cluster.kill(node)
    started = time.monotonic()
    for path in ("/v1/leaderboards/all_time", f"/v1/users/{alive}"):
        r = app.get(path, headers=READER)
        assert r.status_code == 503 and "Traceback" not in r.text, r.text
    r = app.post(
        "/v1/awards/batch",
        headers=AWARDER,
        json={"awards": [{"user_id": "u1", "activity_type": "comment"}]},
    )
    # a batch: each item on its own, refused with the code of an unavailable store
    assert r.status_code == 200 and r.json()["refused"] == 1, r.text
    assert r.json()["results"][0]["error"]["code"] == "redis_unavailable"
    assert time.monotonic() - started < 45


def cluster_redis_slot(engine: ScoringEngine, user_id: str) -> int:
    return engine.redis.keyslot(engine.keys.user(user_id))


# -- failover -------------------------------------------------------------------------------


@pytest.fixture
def replicated_cluster() -> Iterator[LocalCluster]:
    """3 masters and 3 replicas, cluster-node-timeout 1 s."""
    with LocalCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_a_master_killed_during_awards(
    replicated_cluster: LocalCluster, tmp_path, wait_replicas: int
) -> None:
    """SIGKILL a master while awards with idempotency keys stream in: once its replica is
    promoted the engine serves again (no hang), the client retrying the awards it got no answer
    for with the same keys has each applied once, and after the drain every acknowledged
    award is in SQL exactly once with Redis and SQL reconciled. With WAIT for one replica no
    acknowledged award can be lost; without it, the test reports any that were."""
    cluster = replicated_cluster
    store = sqlite(tmp_path)
    # the promoted replica has no replica of its own: its awards wait out the WAIT timeout
    engine = ScoringEngine.from_url(cluster.url, shards=SHARDS, rules=PLAIN_RULES, store=store,
                                    wait_replicas=wait_replicas, wait_timeout_ms=200)  # fmt: skip
    items = awards(3000, users=301)
    acknowledged: dict[str, str] = {}  # idempotency key -> activity id
    unanswered: list[AwardRequest] = []
    victim = cluster.master_of_slot(engine.redis.keyslot(engine.keys.outbox(0)))
    killed_at = first_after = None
    sent = served_again = 0
    for i, item in enumerate(items):
        if first_after is not None and i > served_again + 300:
            break  # served again: 300 more awards, then the client's retries
        sent += 1
        if i == 1000:
            cluster.kill(victim)
            killed_at = time.monotonic()
        try:
            result = engine.award(item.user_id, item.activity_type,
                                  idempotency_key=item.idempotency_key)  # fmt: skip
        except REDIS_ERRORS:
            unanswered.append(item)
            continue
        acknowledged[item.idempotency_key] = result.activity.id
        if (
            killed_at is not None
            and first_after is None
            and engine.keys.shard_of(item.user_id) == 0
        ):
            first_after = time.monotonic() - killed_at
            served_again = i
    cluster.wait_ok()
    retried = len(unanswered)
    deadline = time.monotonic() + 60
    while unanswered:  # the client retries what it got no answer for, with the same keys
        assert time.monotonic() < deadline, f"{len(unanswered)} awards never went through"
        item = unanswered.pop(0)
        try:
            result = engine.award(item.user_id, item.activity_type,
                                  idempotency_key=item.idempotency_key)  # fmt: skip
        except REDIS_ERRORS:
            unanswered.append(item)
            time.sleep(0.1)
            continue
        acknowledged[item.idempotency_key] = result.activity.id
    assert len(acknowledged) == sent
    for shard in range(SHARDS):
        Drainer(engine.redis, store, engine.keys, engine.rules).drain(shard)
    rows, ids = rows_by_id(store)
    assert rows == ids, "no activity twice in SQL"
    with store.engine.connect() as c:
        in_sql = {str(i) for (i,) in c.execute(select(PointActivity.id))}
    lost = [k for k, activity in acknowledged.items() if activity not in in_sql]
    drifts = reconcile(engine, store)
    if drifts:  # SQL has awards the promoted replica never got: rebuild repairs the users
        rebuild(engine, store)
        assert reconcile(engine, store) == []
    print(f"failover (WAIT {wait_replicas}): first award on the killed master's shard "
          f"{first_after:.2f} s after the kill; {retried} retried; {len(lost)} lost; "
          f"{len(drifts)} users reconciled by rebuild")  # fmt: skip
    assert first_after is not None and first_after < 20
    if wait_replicas:
        assert not lost, lost[:5]
    else:
        assert len(lost) <= 50, "far more lost than the replication lag of a loopback allows"


# -- the API and its live stream over the cluster ------------------------------------------------


def test_the_api_and_its_stream_on_the_cluster(
    redis_cluster: LocalCluster, cluster_redis: RedisCluster, tmp_path
) -> None:
    """Awards, batch, status, board, rank and the live view through the HTTP API on K = 16
    across three nodes, as `scoring serve` builds it (from_url: the asyncio cluster client)."""
    engine = ScoringEngine.from_url(redis_cluster.url, shards=SHARDS, rules=PLAIN_RULES,
                                    store=sqlite(tmp_path))  # fmt: skip
    app = TestClient(create_app(engine, Settings(SCORING_API_KEYS=API_KEYS)))
    for i in range(40):
        r = app.post(f"/v1/users/p{i}/awards", headers=AWARDER,
                     json={"activity_type": "comment", "amount": 5 + i})  # fmt: skip
        assert r.status_code in (200, 201), r.text
    r = app.post("/v1/awards/batch", headers=AWARDER,
                 json={"awards": [{"user_id": f"p{i}", "activity_type": "reaction"}
                                  for i in range(40)]})  # fmt: skip
    assert r.status_code == 200, r.text
    top = app.get("/v1/leaderboards/all_time?limit=5", headers=READER).json()
    assert [e["user_id"] for e in top["entries"]] == ["p39", "p38", "p37", "p36", "p35"]
    assert app.get("/v1/leaderboards/all_time/users/p0", headers=READER).json()["rank"] == 40
    reaction = PLAIN_RULES.activity_types["reaction"].points
    assert app.get("/v1/users/p7", headers=READER).json()["total_points"] == 5 + 7 + reaction
    live = engine.live_board("all_time", limit=3)
    assert [e.user_id for e in live.rows] == ["p39", "p38", "p37"] and live.total_users == 40
    assert sum(live.tiers.values()) == 40
    with app.stream("GET", "/v1/leaderboards/all_time/stream?limit=3", headers=READER) as s:
        lines = s.iter_lines()
        board = next(line for line in lines if line.startswith("data:") and "user_id" in line)
    assert "p39" in board


def test_award_many_streams_per_node_across_a_slot_map_change(
    own_cluster: LocalCluster,
) -> None:
    """A batch sent while the client's slot map is stale (a slot migrated to another master
    since it was read) is still applied once per item: MOVED replies are sent again where
    the slot is now, never shown to the caller."""
    client, engine, move = shard_0_to_move(own_cluster, 300)
    move()
    results = engine.award_many(awards(600))  # the first 300 replay, the next 300 are new
    assert_applied(results)
    assert [r.replayed for r in results] == [True] * 300 + [False] * 300
    assert engine.leaderboard().size() == 97
    assert sum(e.score for e in engine.leaderboard().top(1000)) == sum(
        engine.status(f"u{i}").total_points for i in range(97)
    )
    client.close()


def test_awards_run_as_functions_and_survive_a_function_flush(
    cluster_redis: RedisCluster,
) -> None:
    """The node clients of a batch's streams call the award script's function (FCALL); after
    FUNCTION FLUSH on every master (a restart without persistence, say) a batch and a single
    award load it again and are applied once each."""

    def fcalls() -> int:
        stats = cluster_redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        return sum(v.get("cmdstat_fcall", {}).get("calls", 0) for v in stats.values())

    engine = ScoringEngine(cluster_redis, rules=PLAIN_RULES, shards=SHARDS)
    batch = awards(240)
    before = fcalls()
    first = engine.award_many(batch[:120])
    assert_applied(first)
    assert fcalls() >= before + 120
    cluster_redis.function_flush()  # on every primary
    second = engine.award_many(batch[120:])
    assert_applied(second)
    name = engine.awards._award.function
    for node in cluster_redis.get_primaries():  # loaded again where it was lost
        listed = cluster_redis.get_redis_connection(node).function_list(library=name)
        assert listed, node.name
    assert not any(r.replayed for r in first + second)
    cluster_redis.function_flush()  # on every primary
    one = engine.award("u1", "comment", amount=2)
    points = sum(r.activity.amount for r in first + second) + 2
    assert sum(engine.status(f"u{i}").total_points for i in range(97)) == points
    assert one.user.total_points == engine.status("u1").total_points


def shard_0_to_move(
    cluster: LocalCluster, n: int, batch: int = 100
) -> tuple[RedisCluster, ScoringEngine, Callable[[], None]]:
    """A client and an engine (K = 16) after ``n`` awards, and the call that moves shard 0's
    slot to another master, ``batch`` keys at a time."""
    client = cluster_client(cluster.url, decode_responses=True)
    engine = ScoringEngine(client, rules=PLAIN_RULES, shards=SHARDS)
    assert_applied(engine.award_many(awards(n)))
    slot = client.keyslot(engine.keys.outbox(0))
    source = cluster.master_of_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    return client, engine, lambda: migrate_slot(cluster, slot, source, target, batch)


def migrate_slot(cluster: LocalCluster, slot: int, source, target, batch: int = 100) -> None:
    """Move one slot and its keys from ``source`` to ``target`` as redis-cli does, ``batch``
    keys at a time."""
    src, dst = source.client(), target.client()
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)
    while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch):
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        time.sleep(0.01)
    for node in (dst, src):
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id)
    cluster.wait_ok()


@pytest.mark.parametrize("shards", [1, 16, 1024])
def test_every_script_touches_one_slot(shards: int) -> None:
    """Each Lua command's KEYS share one hash slot for any user and K (no CROSSSLOT)."""
    from redis.crc import key_slot

    from engine.commands import award, board_position, board_rank, forget_consumers, profile, quest
    from engine.domain.keys import Keys

    k = Keys(shards=shards)
    windows = ["day:2026-12-01", "week:2026-W49", "month:2026-12"]
    for user in ["alice", "Bjørn", "user-123", "{s1}", "x" * 128]:
        shard = k.shard_of(user)
        for keys in (
            award.keys(k, user, shard, "activity-1", "comment", windows),
            quest.keys(k, user, shard, windows),
            profile.keys(k, user, shard),
            board_position.keys(k, shard, "all"),
            board_rank.keys(k, shard, "all"),
            forget_consumers.keys(k, shard),
        ):
            assert len({key_slot(key.encode()) for key in keys}) == 1, keys


def test_awards_while_a_shards_slot_migrates(own_cluster: LocalCluster) -> None:
    """A shard's slot moved to another master key by key (as `redis-cli --cluster reshard`
    does) while batches and single awards keep coming: Redis answers ASK and TRYAGAIN during
    the move, the engine retries, and every award is applied exactly once."""
    client, engine, move = shard_0_to_move(own_cluster, 400, batch=5)
    mover = threading.Thread(target=move)
    mover.start()
    results = []
    while mover.is_alive() or not results:
        results += engine.award_many(awards(100, prefix="m"))
        for i in range(20):
            results.append(engine.award(f"m{i}", "comment"))
    mover.join()
    applied = [r for r in results if not isinstance(r, Exception)]
    failed = [r for r in results if isinstance(r, Exception)]
    assert not failed or all("Redis" in str(e) for e in failed), failed[:3]
    # every applied award counted once: the board's totals are the users' totals
    board = engine.leaderboard().top(1000)
    assert sum(e.score for e in board) == sum(engine.status(e.user_id).total_points for e in board)
    assert len(applied) >= len(results) // 2, f"{len(failed)} of {len(results)} failed"
    client.close()


def test_wait_replicas_waits_on_the_awards_connection(
    replicated_cluster: LocalCluster, real_redis
) -> None:
    """With SCORING_REDIS_WAIT_REPLICAS the award is followed by WAIT on its own connection:
    Redis counts the WAITs, an award whose master has its replica answers at once, and one
    whose master lost its replica answers after the timeout, applied all the same. The same on
    a single server (which has no replica: every award waits the timeout)."""
    cluster = replicated_cluster
    engine = ScoringEngine.from_url(cluster.url, shards=SHARDS, rules=PLAIN_RULES,
                                    wait_replicas=1, wait_timeout_ms=400)  # fmt: skip
    for node in cluster.primaries():
        node.client().config_resetstat()
    started = time.monotonic()
    for i in range(20):
        engine.award(f"w{i}", "comment")
    assert time.monotonic() - started < 2.0  # the replicas answered: no timeout waited
    waits = sum(n.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
                for n in cluster.primaries())  # fmt: skip
    assert 20 <= waits <= 21  # one WAIT a call; the first call may find no script loaded yet
    lonely = cluster.master_of_slot(engine.redis.keyslot(engine.keys.outbox(0)))
    for node in cluster.nodes:  # the replica of shard 0's master goes away
        if node.alive and node is not lonely and node not in cluster.primaries():
            role = node.client().execute_command("ROLE")
            if int(role[2]) == lonely.port:
                cluster.kill(node)
    user = next(f"w{i}" for i in range(100) if engine.keys.shard_of(f"w{i}") == 0)
    started = time.monotonic()
    result = asyncio.run(engine.award_async(user, "comment"))
    assert 0.35 < time.monotonic() - started < 3.0
    assert result.user.total_points == engine.status(user).total_points
    single = ScoringEngine(real_redis, rules=PLAIN_RULES, wait_replicas=1, wait_timeout_ms=200)
    started = time.monotonic()
    assert_applied(single.award_many(awards(50)))  # one WAIT for the batch
    single.award("solo", "comment")
    assert 0.35 < time.monotonic() - started < 2.0
    assert single.status("solo").total_points == 5
