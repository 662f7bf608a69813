"""The outbox stays bounded, an SQL outage costs one drain attempt per backoff interval, and a
dead or hung worker's shard is drained again within seconds (issue 12).

Real Redis, SQLite and PostgreSQL (the ``store`` fixture), real RQ jobs, and real worker
processes killed with SIGKILL or stopped with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis
from helpers import (
    PG_TEST_DB,
    PLAIN_RULES,
    Clock,
    CountingQueue,
    NoQueue,
    assert_sql_matches_redis,
    award_some,
    burst_worker,
    drainer,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import workers.jobs
from engine import ScoringEngine
from engine.storage.store import SqlStore
from workers.drain import GROUP, Drainer

# -- the outbox stays bounded -------------------------------------------------------------


def test_a_drain_trims_every_acknowledged_entry(sql_engine: ScoringEngine, store: SqlStore) -> None:
    """Approximate trimming (XTRIM MINID ~) left ~10,000 acknowledged entries per drain."""
    engine = sql_engine
    outbox = engine.keys.outbox(0)
    for start in range(0, 24_000, 4_000):
        award_some(engine, 4_000, start=start)
    d = drainer(engine, store, batch=2_000)
    report = d.drain(0)
    assert report.written == 24_000 and report.complete
    assert engine.redis.xlen(outbox) == 0
    # an entry not acknowledged keeps exactly itself and what follows it, nothing older
    award_some(engine, 2_000, start=24_000)
    engine.redis.xadd(outbox, {"id": "not-a-uuid"})  # fails, and stays pending
    award_some(engine, 2_000, start=26_000)
    report = d.drain(0)
    assert report.written == 4_000 and report.failed == 1
    assert engine.redis.xlen(outbox) == 2_001
    assert drainer(engine, store, max_failures=2).drain(0).dead == 1
    assert engine.redis.xlen(outbox) == 0
    assert_sql_matches_redis(engine, store, 28_000)


def test_the_sweep_trims_every_shard_with_nothing_pending(
    real_redis: redis.Redis, clock: Clock, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries acknowledged but never trimmed (a drain killed between its last XACK and its
    XTRIM, or left by approximate trimming) go at the next sweep, though no shard has a
    backlog to drain."""
    engine = ScoringEngine(real_redis, clock=clock, store=store, shards=3, rules=PLAIN_RULES)
    award_some(engine, 3_000)
    for shard in range(3):
        outbox = engine.keys.outbox(shard)
        real_redis.xgroup_create(outbox, GROUP, id="0")
        read = real_redis.xreadgroup(GROUP, "gone", {outbox: ">"})
        real_redis.xack(outbox, GROUP, *(entry_id for entry_id, _ in read[0][1]))
    assert sum(real_redis.xlen(engine.keys.outbox(s)) for s in range(3)) == 3_000
    d = Drainer(real_redis, store, engine.keys, engine.rules)
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    assert workers.jobs.sweep() == []  # nothing to drain
    assert [real_redis.xlen(engine.keys.outbox(s)) for s in range(3)] == [0, 0, 0]


def test_idle_consumers_without_pending_entries_are_forgotten(
    sql_engine: ScoringEngine, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker process joins the group under a name of its own (host-pid); the group
    forgets the idle ones that hold nothing, and keeps any that holds an entry."""
    engine = sql_engine
    outbox = engine.keys.outbox(0)
    for i in range(20):  # twenty worker processes came and went
        award_some(engine, 5, start=5 * i)
        drainer(engine, store, consumer=f"host-{i}").drain(0)
    award_some(engine, 5, start=100)
    engine.redis.xreadgroup(GROUP, "stalled", {outbox: ">"}, count=2)
    time.sleep(0.3)
    consumers = {c["name"] for c in engine.redis.xinfo_consumers(outbox, GROUP)}
    assert len(consumers) == 21
    d = drainer(engine, store, consumer="host-now", consumer_idle_ms=200)
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    assert workers.jobs.sweep() == []  # it forgets them too (the awards queued a drain)
    assert {c["name"] for c in engine.redis.xinfo_consumers(outbox, GROUP)} == {"stalled"}
    d.drain(0)  # its first claim takes the stalled consumer's entries; then it holds nothing
    assert {c["name"] for c in engine.redis.xinfo_consumers(outbox, GROUP)} == {"host-now"}
    assert_sql_matches_redis(engine, store, 105)


# -- an SQL outage --------------------------------------------------------------------------


def unreachable(store: SqlStore) -> SqlStore:
    """A store of the same dialect that cannot be reached."""
    if store.engine.dialect.name == "sqlite":
        return SqlStore("sqlite:////etc/hostname/cannot-open.db")  # a file, not a folder
    return SqlStore("postgresql+psycopg://postgres@127.0.0.1:1/test",
                    connect_args={"connect_timeout": 1})  # fmt: skip


class LaterSql:
    """An SQL database that cannot be opened until the test creates it: SQLite, a file in a
    folder that cannot be made yet (a file stands in its place); PostgreSQL, a database (of
    this suite's own) not created yet, which the server refuses at every connection."""

    def __init__(self, store: SqlStore, tmp_path: Path) -> None:
        self.dialect = store.engine.dialect.name
        if self.dialect == "sqlite":
            self.folder = tmp_path / "later"
            self.folder.write_text("not a folder")
            self.url = f"sqlite:///{self.folder / 'scoring.db'}"
        else:
            self.name = f"{PG_TEST_DB}_later"
            self.admin = create_engine(store.url, isolation_level="AUTOCOMMIT")
            self.url = make_url(store.url).set(database=self.name).render_as_string(False)
            self.drop()

    def create(self) -> SqlStore:
        if self.dialect == "sqlite":
            self.folder.unlink()
            self.folder.mkdir()
        else:
            with self.admin.connect() as c:
                c.execute(text(f"CREATE DATABASE {self.name}"))
        store = SqlStore(self.url)
        store.upgrade()
        return store

    def drop(self) -> None:
        if self.dialect != "sqlite":
            with self.admin.connect() as c:
                c.execute(text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))


def test_workers_ride_out_an_sql_outage(
    real_redis: redis.Redis, redis_url: str, clock: Clock, store: SqlStore, tmp_path: Path
) -> None:
    """Two `scoring worker` processes while awards come in bursts and SQL cannot be opened,
    then SQL is there and no award follows: each shard's one drain job retries it after 1 s,
    2 s, ... (keeping the shard's flag raised, so the bursts queue no more jobs), no job fails,
    no traceback; the workers log one line per shard when SQL fails and one when it is back,
    and every award lands exactly once within seconds."""
    from rq import Queue, Worker

    later = LaterSql(store, tmp_path)
    rq_conn = redis.Redis.from_url(redis_url)
    queue = Queue("outage-test", connection=rq_conn)
    queue.empty()
    drains = CountingQueue(queue)
    engine = ScoringEngine(real_redis, clock=clock, shards=2, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": later.url,
           "SCORING_SHARDS": "2", "SCORING_QUEUE": queue.name}  # fmt: skip
    command = [sys.executable, "-m", "scoring.cli", "worker", "--log-level", "WARNING"]
    procs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]  # fmt: skip
    try:
        started = time.monotonic()
        while len(Worker.all(queue=queue)) < 2 and time.monotonic() - started < 60:
            time.sleep(0.05)
        awarded = bursts = 0
        outage = time.monotonic()
        while time.monotonic() - outage < 3.5:  # attempts at about 0, 1 and 3 s
            award_some(engine, 12, start=awarded)
            awarded, bursts = awarded + 12, bursts + 1
            time.sleep(0.01)
        per_shard = [drains.requests.count(s) for s in range(2)]
        attempts = [int(real_redis.hget(engine.keys.drain_outage(s), "attempts") or 0)
                    for s in range(2)]  # fmt: skip
        print(
            f"{bursts} bursts in 3.5 s of outage: drain jobs per shard {per_shard}, "
            f"attempts per shard {attempts}"
        )
        assert bursts > 50 and per_shard == [1, 1], (bursts, per_shard)
        assert all(1 <= n <= 4 for n in attempts), attempts
        assert queue.failed_job_registry.count == 0
        assert real_redis.hlen(engine.keys.drain_failures(0)) == 0  # no entry's fault

        sql = later.create()  # SQL is back, and no award follows
        back = time.monotonic()
        while sum(drainer(engine, sql).backlog(s) for s in range(2)):
            assert time.monotonic() - back < 30, "the workers did not drain"
            time.sleep(0.05)
        took = time.monotonic() - back
        print(f"drained {took:.1f} s after SQL came back")
        assert took < 10  # the next retry was due within 4 s
        assert queue.failed_job_registry.count == 0
        assert_sql_matches_redis(engine, sql, awarded)
        sql.close()
    finally:
        for w in procs:
            w.send_signal(signal.SIGTERM)
        logs = "".join(w.communicate(timeout=60)[1] for w in procs)
        queue.empty()
        later.drop()
    assert "Traceback" not in logs, logs
    for shard in range(2):
        assert logs.count(f"shard {shard}: SQL unavailable") == 1, logs
        assert logs.count(f"shard {shard}: SQL reachable again") == 1, logs
    assert not real_redis.exists(engine.keys.drain_outage(0), engine.keys.drain_outage(1))


def test_the_sweep_retries_an_outage_without_awards(
    real_redis: redis.Redis, clock: Clock, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no award arriving, the periodic sweep is what retries: it queues a drain once the
    backoff has lapsed, never before."""
    drains = CountingQueue(NoQueue())
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    award_some(engine, 30)
    assert drains.requests == [0]
    d = Drainer(real_redis, unreachable(store), engine.keys, engine.rules,
                outage_retry=(0.5, 0.5))  # fmt: skip
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    monkeypatch.setattr(workers.jobs, "DRAIN_SLICE_SECONDS", 1.0)  # no retry fits in the job
    report = workers.jobs.drain_shard(0)
    assert report["sql_unavailable"] and not report["written"]
    assert drains.requests == [0]  # a failed attempt queues no successor
    assert workers.jobs.sweep() == []  # the backoff has not lapsed: the flag is still raised
    time.sleep(0.6)
    assert workers.jobs.sweep() == [0]
    d.store = store  # SQL is back
    assert workers.jobs.drain_shard(0)["written"] == 30
    assert_sql_matches_redis(engine, store, 30)


# -- a dead or hung worker ------------------------------------------------------------------

#: `scoring worker --burst` whose SQL writes are slow: it prints a line before each batch's
#: write, then sleeps, so the test can kill (or stop) it while it holds entries it read.
SLOW_WORKER = textwrap.dedent(
    """
    import sys, time
    from scoring.cli import main
    from engine.storage.store import SqlStore

    real_write = SqlStore.write

    def write(self, *args, **kwargs):
        print("writing", flush=True)
        time.sleep(0.5)
        return real_write(self, *args, **kwargs)

    SqlStore.write = write
    sys.exit(main(["worker", "--burst", "--log-level", "WARNING"]))
    """
)


def worker_env(state_env: dict[str, str], store: SqlStore) -> dict[str, str]:
    return {**os.environ, **state_env, "DATABASE_URL": store.url,
            "SCORING_QUEUE": "recovery-test", "SCORING_DRAIN_BATCH": "100"}  # fmt: skip


@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_a_dead_or_frozen_worker_is_replaced_within_seconds(
    sql_engine: ScoringEngine, store: SqlStore, state_env: dict[str, str], fault: str
) -> None:
    """A worker SIGKILLed (or SIGSTOPped: a frozen process) while it writes a batch, with the
    next one read: the next `scoring worker --burst` takes the shard within the lock's lease
    and writes what the dead one held at once, not after its claim idle time. A frozen worker
    that wakes up finds its lease gone and stops; every award is in SQL once."""
    engine = sql_engine
    award_some(engine, 1_000)
    env = worker_env(state_env, store)
    victim = subprocess.Popen([sys.executable, "-c", SLOW_WORKER], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert victim.stdout is not None
        for _ in range(3):  # two batches written, the third being written, a fourth read
            assert victim.stdout.readline() == "writing\n", victim.stderr
        victim.send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        if fault == "killed":
            victim.wait(10)
        outbox = engine.keys.outbox(0)
        assert engine.redis.xpending(outbox, GROUP)["pending"] >= 100  # what it holds
        started = time.monotonic()
        done = burst_worker(env)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert drainer(engine, store).backlog(0) == 0, done.stderr
        assert_sql_matches_redis(engine, store, 1_000)
        # the lease is 5 s; the new process takes about 2 s to start
        assert took < 9, f"recovery took {took:.1f} s"
        print(f"{fault}: recovery took {took:.1f} s")
        if fault == "stopped":
            victim.send_signal(signal.SIGCONT)  # it wakes up, writes its batch again, stops
            assert victim.wait(60) == 0, victim.stderr.read() if victim.stderr else ""
            assert_sql_matches_redis(engine, store, 1_000)
            assert drainer(engine, store).backlog(0) == 0
    finally:
        if victim.poll() is None:
            victim.send_signal(signal.SIGCONT)
            victim.kill()
            victim.wait(10)


def test_a_hung_drain_gives_up_its_shard(sql_engine: ScoringEngine, store: SqlStore) -> None:
    """A drain stuck in an SQL write that never returns (its process alive, its lease renewer
    too) stops renewing its lease once it has made no progress for ``lock_grace`` seconds, so
    another drain takes the shard; when the stuck write returns, the first drain stops."""
    engine = sql_engine
    award_some(engine, 300)
    stuck, release = threading.Event(), threading.Event()

    class HangingStore(SqlStore):
        def write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            stuck.set()
            release.wait(30)
            return super().write(*args, **kwargs)

    hanging = HangingStore(store.url)
    options = {"lock_ttl": 0.6, "lock_grace": 1.0, "batch": 100}
    first: list = []
    hung = threading.Thread(
        target=lambda: first.append(drainer(engine, hanging, consumer="hung", **options).drain(0))
    )
    hung.start()
    try:
        assert stuck.wait(10)
        started = time.monotonic()
        report = drainer(engine, store, consumer="next", **options).drain(0)
        took = time.monotonic() - started
        assert report.complete and report.written == 300, report
        assert 0.5 < took < 3.0, took  # about lock_grace + lock_ttl after the write hung
    finally:
        release.set()
        hung.join(30)
        hanging.close()
    assert not first[0].complete and first[0].written <= 100  # it stopped after its batch
    assert_sql_matches_redis(engine, store, 300)
    assert drainer(engine, store).backlog(0) == 0
