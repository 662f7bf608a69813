"""The audit trail: every outbox entry reaches SQL exactly once, whatever crashes.

Runs on SQLite and PostgreSQL (the ``store`` fixture), with a real Redis, real worker processes
killed with SIGKILL, and a real RQ worker in burst mode.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
import redis
from helpers import (
    PLAIN_RULES,
    USERS,
    Clock,
    assert_sql_matches_redis,
    award_some,
    drainer,
    in_threads,
    sql_rows,
)
from sqlalchemy import text

from engine import ScoringEngine
from engine.storage.models import UserScore
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore
from workers.drain import GROUP, Drainer


def test_drain_writes_every_entry_once(sql_engine: ScoringEngine, store: SqlStore) -> None:
    engine = sql_engine
    engine.set_profile("user-1", username="one", display_name="User One", time_zone="Asia/Tokyo")
    award_some(engine, 500)
    d = drainer(engine, store)
    assert d.backlog(0) == 501
    report = d.drain(0)
    assert (report.written, report.dead, report.failed, report.batches) == (501, 0, 0, 11)
    assert d.backlog(0) == 0
    assert engine.redis.xlen(engine.keys.outbox(0)) == 0  # acknowledged entries are trimmed
    assert_sql_matches_redis(engine, store, 500)
    snap = store.snapshots()["user-1"]
    assert (snap.username, snap.display_name, snap.time_zone) == ("one", "User One", "Asia/Tokyo")
    mine = engine.recent_activities("user-8", limit=100)
    assert {a.description for a in mine} == {f"award {i}" for i in range(8, 500, 9)}
    # the same entries written again (a worker that died before acknowledging) change nothing
    entries = engine.redis.xrange(engine.keys.dead_letters(0))
    assert entries == []
    d.drain(0)
    assert_sql_matches_redis(engine, store, 500)


def test_an_older_snapshot_never_overwrites_a_newer(
    sql_engine: ScoringEngine, store: SqlStore
) -> None:
    engine = sql_engine
    award_some(engine, 30)
    drainer(engine, store).drain(0)
    snap = store.snapshots()["user-0"]
    older = {"user_id": "user-0", "total_points": 1, "tier": "ember", "level": 1,
             "current_streak_days": 1, "longest_streak_days": 1, "last_activity_date": None,
             "state_version": snap.state_version - 1, "updated_at": snap.updated_at}  # fmt: skip
    store.write([], [older], [])
    assert store.snapshots()["user-0"].total_points == snap.total_points
    store.write([], [{**older, "total_points": 99999, "state_version": snap.state_version + 1}], [])
    assert store.snapshots()["user-0"].total_points == 99999


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import redis
    from engine import ScoringEngine
    from engine.storage.store import SqlStore
    from workers.drain import Drainer

    redis_url, sql_url, mode = sys.argv[1:4]
    engine = ScoringEngine.from_url(redis_url)  # a single server or a cluster
    store = SqlStore(sql_url)
    calls = {"write": 0, "ack": 0}
    real_write, real_ack = SqlStore.write, Drainer._ack

    def write(self, activities, states, profiles, **engagement):
        calls["write"] += 1
        if mode == "mid-batch" and calls["write"] == 3:
            # half a batch inside an open transaction, then the process dies
            from engine.storage.models import PointActivity
            with self.engine.begin() as c:
                c.execute(self._insert(PointActivity), list(activities)[: len(activities) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_write(self, activities, states, profiles, **engagement)

    def ack(self, shard, ids):
        calls["ack"] += 1
        if mode == "after-commit" and calls["ack"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # committed in SQL, never acknowledged
        return real_ack(self, shard, ids)

    SqlStore.write, Drainer._ack = write, ack
    Drainer(engine.redis, store, engine.keys, engine.rules, batch=50, lock_ttl=2).drain(0)
    """
)


@pytest.mark.parametrize("mode", ["mid-batch", "after-commit"])
def test_worker_killed_then_another_finishes(
    sql_engine: ScoringEngine, store: SqlStore, state_env: dict[str, str], mode: str
) -> None:
    engine = sql_engine
    award_some(engine, 400)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, state_env["REDIS_URL"], store.url, mode],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    rows, _ = sql_rows(store)
    assert 0 < rows < 400  # it died part way
    pending = engine.redis.xpending(engine.keys.outbox(0), GROUP)["pending"]
    assert pending > 0  # what it read and never acknowledged waits for the next worker
    # the dead worker's lease on the shard lapses (2 s here); then the next worker takes over,
    # and its first claim takes what the dead one held at once (claim_idle_ms is 30 s)
    report = drainer(engine, store).drain(0)
    assert report.complete and report.dead == report.failed == 0
    assert_sql_matches_redis(engine, store, 400)
    assert drainer(engine, store).backlog(0) == 0


def test_sql_outage_loses_nothing(sql_engine: ScoringEngine, store: SqlStore) -> None:
    engine = sql_engine
    if store.engine.dialect.name == "sqlite":
        down = SqlStore("sqlite:////etc/hostname/cannot-open.db")  # a file, not a folder
    else:
        down = SqlStore("postgresql+psycopg://postgres@127.0.0.1:1/test",
                        connect_args={"connect_timeout": 1})  # fmt: skip
    award_some(engine, 120)
    report = drainer(engine, down).drain(0)  # the job succeeds: the report says why it stopped
    assert report.sql_unavailable and not report.complete and report.written == 0
    award_some(engine, 80, start=120)  # awards go on while SQL is away
    assert drainer(engine, down).drain(0).sql_unavailable
    assert engine.redis.hlen(engine.keys.drain_failures(0)) == 0  # an outage is no entry's fault
    outage = engine.redis.hgetall(engine.keys.drain_outage(0))
    assert outage["attempts"] == "2" and "OperationalError" in outage["error"]
    assert 0 < engine.redis.pttl(engine.keys.drain_flag(0)) <= 2000  # the second backoff: 2 s
    assert sql_rows(store) == (0, 0)
    # SQL is back: what the failed attempts read is claimed at once, not after claim_idle_ms
    report = drainer(engine, store).drain(0)
    assert report.written == 200 and report.dead == 0 and report.complete
    assert not engine.redis.exists(engine.keys.drain_outage(0), engine.keys.drain_flag(0))
    assert_sql_matches_redis(engine, store, 200)


def test_poison_entries_go_to_the_dead_letters(sql_engine: ScoringEngine, store: SqlStore) -> None:
    engine = sql_engine
    award_some(engine, 40)
    outbox = engine.keys.outbox(0)
    poison = [
        engine.redis.xadd(outbox, {"id": "not-a-uuid", "user": "x", "amount": "oops"}),
        engine.redis.xadd(outbox, {"e": "profile", "user": "x"}),  # no version
    ]
    if store.engine.dialect.name == "postgresql":  # parses, but SQL refuses it (type > 30 chars)
        poison.append(engine.redis.xadd(outbox, {
            "id": "0b0c8f55-5a43-4c53-a3f7-a5d0d1a9a001", "user": "user-0", "amount": "5",
            "type": "t" * 300, "desc": "", "at": "1764000000000", "tier": "ember",
            "state": "5 1 1 1 20400 1",
        }))  # fmt: skip
    award_some(engine, 40, start=40)
    d = drainer(engine, store, claim_idle_ms=0, max_failures=3)
    report = d.drain(0)
    assert report.dead == len(poison) and report.written == 80
    dead = engine.redis.xrange(engine.keys.dead_letters(0))
    assert [fields["source_id"] for _, fields in dead] == poison
    assert "unreadable" in dead[0][1]["error"] and dead[0][1]["amount"] == "oops"
    assert d.backlog(0) == 0 and engine.redis.xlen(outbox) == 0
    assert engine.redis.hlen(engine.keys.drain_failures(0)) == 0
    assert_sql_matches_redis(engine, store, 80)


def test_a_batch_of_nothing_but_refused_entries_reaches_the_dead_letters(
    sql_engine: ScoringEngine, store: SqlStore
) -> None:
    """Entries SQL refuses, alone in their batches (as the retries of a later run are), are
    counted each time and end in the dead letters; the outbox behind them drains and trims."""
    engine = sql_engine
    outbox = engine.keys.outbox(0)
    postgres = store.engine.dialect.name == "postgresql"
    poison = [
        engine.redis.xadd(
            outbox,
            {
                "id": f"0b0c8f55-5a43-4c53-a3f7-a5d0d1a9a00{i}",
                "user": "user-0",
                "amount": "5",
                "type": "t" * 300,
                "desc": "",
                "at": "1764000000000",
                "tier": "ember",
                # PostgreSQL refuses the type (over 30 characters); SQLite takes any length, so
                # there the entries are ones the drain cannot read
                "state": "5 1 1 1 20400 1" if postgres else "5 1 1 1 20400 x",
            },
        )  # fmt: skip
        for i in range(3)
    ]
    for _ in range(3):
        drainer(engine, store, claim_idle_ms=0, max_failures=3).drain(0)
    assert [f["source_id"] for _, f in engine.redis.xrange(engine.keys.dead_letters(0))] == poison
    award_some(engine, 10)
    d = drainer(engine, store)
    assert d.drain(0).written == 10
    assert d.backlog(0) == 0 and engine.redis.xlen(outbox) == 0
    assert_sql_matches_redis(engine, store, 10)


def test_a_broken_schema_is_no_entrys_fault(sql_engine: ScoringEngine, store: SqlStore) -> None:
    """A missing table fails every write: the drain stops as in an outage, and no entry is
    counted or dropped."""
    engine = sql_engine
    award_some(engine, 20)
    with store.engine.begin() as c:
        c.execute(text("ALTER TABLE point_activity RENAME TO point_activity_away"))
    try:
        assert drainer(engine, store, max_failures=1).drain(0).sql_unavailable
        assert engine.redis.hlen(engine.keys.drain_failures(0)) == 0
        assert engine.redis.xlen(engine.keys.dead_letters(0)) == 0
    finally:
        with store.engine.begin() as c:
            c.execute(text("ALTER TABLE point_activity_away RENAME TO point_activity"))
    assert drainer(engine, store).drain(0).written == 20
    assert_sql_matches_redis(engine, store, 20)


def test_trimming_keeps_what_is_not_acknowledged(
    sql_engine: ScoringEngine, store: SqlStore
) -> None:
    engine = sql_engine
    outbox = engine.keys.outbox(0)
    award_some(engine, 10)
    engine.redis.xadd(outbox, {"id": "not-a-uuid"})  # fails, and stays pending
    award_some(engine, 20, start=10)
    report = drainer(engine, store).drain(0)
    assert report.written == 30 and report.failed == 1
    assert engine.redis.xlen(outbox) == 21  # the oldest pending entry holds the trim back
    report = drainer(engine, store, max_failures=2).drain(0)  # its first pass retries it at once
    assert report.dead == 1 and engine.redis.xlen(outbox) == 0
    assert_sql_matches_redis(engine, store, 30)


def test_a_stalled_consumers_entries_are_taken_at_once(
    sql_engine: ScoringEngine, store: SqlStore
) -> None:
    """Entries another consumer read and never acknowledged are the next drain's at once, not
    after claim_idle_ms: the drain holds the shard's lock, so their reader is dead or gave the
    shard up."""
    engine = sql_engine
    award_some(engine, 30)
    outbox = engine.keys.outbox(0)
    d = drainer(engine, store)
    d._ensure_group(outbox)
    engine.redis.xreadgroup(GROUP, "stalled", {outbox: ">"}, count=10)
    report = d.drain(0)  # claim_idle_ms is 30 s
    assert report.written == 30 and report.complete
    assert engine.redis.xlen(outbox) == 0
    assert_sql_matches_redis(engine, store, 30)


def test_award_path_queues_one_drain_job_per_shard(
    real_redis: redis.Redis, redis_url: str, clock, store: SqlStore, monkeypatch
) -> None:
    """A burst of awards queues one RQ job per shard; a burst-mode RQ worker drains them."""
    from rq import Queue, SimpleWorker

    import workers.jobs

    rq_conn = redis.Redis.from_url(redis_url)
    queue = Queue("scoring-test", connection=rq_conn)
    queue.empty()
    engine = ScoringEngine(real_redis, clock=clock, store=store, shards=3, rules=PLAIN_RULES,
                           drain_queue=DrainQueue(queue))  # fmt: skip
    award_some(engine, 300)
    for user in USERS[:3]:
        engine.award(user, "comment")
    assert queue.count == 3  # one per shard, not one per award
    d = Drainer(real_redis, store, engine.keys, engine.rules)
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    SimpleWorker([queue], connection=rq_conn).work(burst=True)
    assert queue.count == 0 and queue.failed_job_registry.count == 0
    assert sum(d.backlog(s) for s in range(3)) == 0
    assert sql_rows(store) == (303, 303)
    engine.award("user-0", "comment")  # the drain lowered the flag: the next award queues again
    assert queue.count == 1
    assert workers.jobs.sweep() == []  # the one queued job covers that shard
    queue.empty()


def test_an_award_stands_when_its_drain_job_cannot_be_queued(
    real_redis: redis.Redis, clock, store: SqlStore
) -> None:
    """The queue's Redis away: the award is applied and answered, and its shard's flag is
    lowered so that the next award queues the drain."""
    from rq import Queue

    nowhere = Queue("scoring-test", connection=redis.Redis(port=1, socket_connect_timeout=0.2))
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=DrainQueue(nowhere))  # fmt: skip
    result = engine.award("user-0", "comment")
    assert result.user.total_points == 5 and not result.replayed
    assert not real_redis.exists(engine.keys.drain_flag(0))


def test_a_job_that_gives_up_on_the_lock_queues_its_successor(
    real_redis: redis.Redis, redis_url: str, clock, store: SqlStore, monkeypatch
) -> None:
    """A drain job that could not get its shard (another drain held it too long) queues the
    next one itself: the flag raised for it must not keep the shard's awards from being drained
    once the holder is done."""
    from rq import Queue

    import workers.jobs

    queue = Queue("scoring-test", connection=redis.Redis.from_url(redis_url))
    queue.empty()
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=DrainQueue(queue))  # fmt: skip
    engine.award("user-0", "comment")
    assert queue.count == 1
    queue.empty()
    d = Drainer(real_redis, store, engine.keys, engine.rules, lock_ttl=0.3)
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    holder = real_redis.lock(engine.keys.drain_lock(0), timeout=30)  # a drain that runs long
    assert holder.acquire()
    try:
        report = workers.jobs.drain_shard(0)
    finally:
        holder.release()
    assert not report["complete"] and report["written"] == 0
    assert queue.count == 1  # its successor, whatever the flag said
    queue.empty()


def test_a_starting_worker_queues_drains_whatever_the_flags_say(
    real_redis: redis.Redis, redis_url: str, clock, store: SqlStore, monkeypatch
) -> None:
    """After a crash a raised flag may stand for a job that was lost with its caller: the
    periodic sweep trusts it, a worker starting (``sweep(force=True)``) does not."""
    from rq import Queue

    import workers.jobs

    queue = Queue("scoring-test", connection=redis.Redis.from_url(redis_url))
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=DrainQueue(queue))  # fmt: skip
    engine.award("user-0", "comment")
    queue.empty()  # the job is lost; the flag it raised stands
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, drainer(engine, store)))
    assert workers.jobs.sweep() == [] and queue.count == 0
    assert workers.jobs.sweep(force=True) == [0] and queue.count == 1
    assert workers.jobs.sweep(force=True) == [] and queue.count == 1  # a worker more: no job more
    queue.empty()


def test_queries(sql_engine: ScoringEngine, store: SqlStore, clock: Clock) -> None:
    engine = sql_engine
    clock.noon()  # so that 13 hours ago is yesterday
    engine.award("ann", "quiz_complete", amount=40, occurred_at=clock.now - timedelta(days=9))
    engine.award("ann", "quiz_complete", amount=30, occurred_at=clock.now - timedelta(hours=13))
    for i in range(5):
        clock.advance(seconds=1)
        engine.award("ann", "comment", amount=2, description=f"c{i}")
    engine.award("bob", "special_event", amount=600)
    engine.award("cy", "referral", amount=100, occurred_at=clock.now - timedelta(days=3))
    drainer(engine, store).drain(0)
    page1 = engine.recent_activities("ann", limit=3)
    assert [a.description for a in page1] == ["c4", "c3", "c2"]
    page2 = engine.recent_activities("ann", limit=3, before=(page1[-1].created_at, page1[-1].id))
    assert [a.description for a in page2] == ["c1", "c0", ""]
    assert [a.amount for a in engine.recent_activities("ann", activity_type="quiz_complete")] == [
        30,
        40,
    ]
    assert engine.points_by_type("ann") == {"quiz_complete": 70, "comment": 10}
    assert engine.points_awarded_today() == 10 + 600  # the 30 was yesterday (UTC)
    assert engine.tier_distribution() == {"ember": 2, "spark": 0, "blaze": 1, "beacon": 0,
                                          "phoenix": 0}  # fmt: skip
    assert engine.most_active_users(days=7) == [("bob", 600), ("cy", 100), ("ann", 40)]


def test_queries_need_a_store(engine: ScoringEngine) -> None:
    from engine.domain.errors import ConfigError

    with pytest.raises(ConfigError):
        engine.points_awarded_today()


def test_sqlite_and_postgres_schema_from_migrations(store: SqlStore) -> None:
    with store.engine.connect() as c:
        if store.engine.dialect.name == "sqlite":
            names = {
                r[0] for r in c.execute(text("SELECT name FROM sqlite_master WHERE type='index'"))
            }
        else:
            names = {r[0] for r in c.execute(text("SELECT indexname FROM pg_indexes"))}
    assert {"ix_point_activity_user_created", "ix_point_activity_type_created",
            "ix_point_activity_user_type"} <= names  # fmt: skip
    store.upgrade()  # idempotent
    assert UserScore.__tablename__ == "user_score"


def test_two_drains_of_one_shard_take_turns(sql_engine: ScoringEngine, store: SqlStore) -> None:
    """A drain job queued while another runs (two RQ workers) waits for the shard's lock:
    no deadlock between their snapshot upserts, every entry written once."""

    engine = sql_engine
    award_some(engine, 900)
    reports, errors = [], []

    def run(name: str) -> None:
        try:
            reports.append(drainer(engine, store, consumer=name).drain(0))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    in_threads(run, [(f"worker-{i}",) for i in range(2)])
    assert not errors, errors
    assert sum(r.written for r in reports) == 900 and all(r.complete for r in reports)
    assert_sql_matches_redis(engine, store, 900)


# -- texts SQL must store as they were sent --------------------------------------------------


#: Texts that are legal and awkward: each must reach every SQL backend as it was sent.
AWKWARD = [
    "tab\tnew\nline\rreturn",
    "\x01\x1f\x7f control but not NUL",
    "emoji 🎉" * 20 + "🎉" * 95,  # 255 characters, most of them 4 UTF-8 bytes
    "\ufeffBOM \u200b zero width \u202e right-to-left",
    "\uffff \U0010ffff the last code points",
    "e\u0301 combining, Ǆ, ß, İ, 中文, العربية",
    "'; DROP TABLE point_activity; --",
    "",
]


def test_every_text_accepted_is_stored_by_every_backend(
    real_redis: redis.Redis, clock: Clock, store: SqlStore
) -> None:
    """On SQLite and on a real PostgreSQL: what the engine accepts, the drain writes, with no
    entry refused and no drift between Redis and SQL."""
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES)
    for i, sent in enumerate(AWKWARD):
        engine.award(f"awk{i}", "comment", description=sent[:255])
        profile = "\x01" not in sent and "\t" not in sent  # profile texts refuse controls
        if profile:
            engine.set_profile(f"awk{i}", username=sent[:150], display_name=sent)
    report = Drainer(real_redis, store, engine.keys, engine.rules).drain(0)
    assert report.dead == report.failed == 0, report.errors
    by_user = {a.user_id: a for i in range(len(AWKWARD)) for a in store.recent_activities(
        f"awk{i}", limit=1)}  # fmt: skip
    for i, sent in enumerate(AWKWARD):
        assert by_user[f"awk{i}"].description == sent[:255]
