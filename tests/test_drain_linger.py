"""Drain jobs linger: at a low award rate one job takes many awards (not a job per award), every
award still reaches SQL within about a second, and the lingering job keeps every guarantee (a
killed worker's flag lapses within a lease, entries appended as the job ends get a successor,
SIGTERM ends the job at once).

Runs on SQLite and PostgreSQL (the ``store`` fixture), with a real Redis and real
``scoring worker`` processes where it matters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import (
    PLAIN_RULES,
    USERS,
    CountingQueue,
    NoQueue,
    assert_sql_matches_redis,
    burst_worker,
    drainer,
)
from sqlalchemy import select

import workers.jobs
from engine import ScoringEngine
from engine.storage.models import PointActivity
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore
from workers.drain import FLAG_HELD, LOCK_TTL

QUEUE = "linger-test"
#: A trickle: awards per second, and how long it lasts (s).
RATE = 10.0
SECONDS = 4.0


@pytest.fixture
def rq_queue(real_redis: redis.Redis, redis_url: str) -> Iterator[Any]:
    from rq import Queue

    queue = Queue(QUEUE, connection=redis.Redis.from_url(redis_url))
    queue.empty()
    yield queue
    queue.empty()


def wait_for_a_started_job(queue: Any, timeout: float = 30) -> None:
    """Until a worker of ``queue`` runs a job (or ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while not queue.started_job_registry.count and time.monotonic() < deadline:
        time.sleep(0.02)


def jobs_run(queue: Any) -> int:
    """Drain jobs the queue's workers finished or failed."""
    return int(queue.finished_job_registry.count + queue.failed_job_registry.count)


def busy(queue: Any) -> bool:
    return bool(queue.count or queue.started_job_registry.count)


class Trickle(threading.Thread):
    """Awards at ``rate`` per second, one at a time on an absolute schedule, until ``stop`` or
    ``seconds``; records each award's activity id and when its call returned."""

    def __init__(self, engine: ScoringEngine, rate: float = RATE, seconds: float = SECONDS):
        super().__init__(daemon=True)
        self.engine, self.rate, self.seconds = engine, rate, seconds
        self.sent: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        for k in range(int(self.rate * self.seconds)):
            if self.stop.wait(max(0.0, start + k / self.rate - time.monotonic())):
                return
            result = self.engine.award(USERS[k % len(USERS)], "comment", description=f"t{k}")
            self.sent.append((result.activity.id, time.monotonic()))


class RowWatcher(threading.Thread):
    """Polls point_activity every 20 ms; ``seen``: activity id -> when first seen."""

    def __init__(self, store: SqlStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.02):
            at = time.monotonic()
            try:
                with self.store.engine.connect() as c:
                    for (activity_id,) in c.execute(select(PointActivity.id)):
                        self.seen.setdefault(str(uuid.UUID(str(activity_id))), at)
            except Exception as exc:  # noqa: BLE001 - SQLite busy while the worker commits
                self.errors.append(repr(exc))


def worker_env(redis_url: str, store: SqlStore, **extra: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": store.url,
            "SCORING_QUEUE": QUEUE, **extra}  # fmt: skip


def start_worker(env: dict[str, str], queue: Any) -> subprocess.Popen[str]:
    """`scoring worker` in a process of its own, once it listens on the queue."""
    from rq import Worker

    before = len(Worker.all(queue=queue))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoring.cli", "worker", "--log-level", "WARNING"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(Worker.all(queue=queue)) <= before:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    return proc


def stop_worker(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def test_a_trickle_of_awards_queues_a_job_per_ten_awards_at_most(
    real_redis: redis.Redis, redis_url: str, clock, store: SqlStore, rq_queue: Any
) -> None:
    """40 awards at 10/s with a `scoring worker` running: at most 4 drain jobs (one lingering
    job takes them all, where each award used to queue one), and each award is in SQL within
    a second of its call returning."""
    drains = CountingQueue(rq_queue)
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    worker = start_worker(worker_env(redis_url, store), rq_queue)
    watcher, trickle = RowWatcher(store), Trickle(engine)
    try:
        watcher.start()
        trickle.start()
        trickle.join(SECONDS + 30)
        ids = [i for i, _ in trickle.sent]
        deadline = time.monotonic() + 10
        while not all(i in watcher.seen for i in ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while busy(rq_queue) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop.set()
        output = stop_worker(worker)
    watcher.join()
    awards = len(trickle.sent)
    lags = sorted(watcher.seen[i] - at for i, at in trickle.sent if i in watcher.seen)
    jobs = jobs_run(rq_queue)
    print(f"{awards} awards: {len(drains.requests)} jobs requested by awards, {jobs} run; "
          f"lag median {lags[len(lags) // 2]:.3f} s, max {lags[-1]:.3f} s")  # fmt: skip
    assert awards == RATE * SECONDS
    missing = [k for k, (i, _) in enumerate(trickle.sent) if i not in watcher.seen]
    assert not missing, (missing, watcher.errors[-3:], output, jobs, drains.requests)
    assert lags[-1] <= 1.0, lags[-10:]
    assert jobs <= awards / 10 and len(drains.requests) <= awards / 10, (jobs, drains.requests)
    assert rq_queue.failed_job_registry.count == 0
    assert "Traceback" not in output, output
    assert_sql_matches_redis(engine, store, awards)


def test_a_lingering_job_takes_what_comes_and_then_lowers_the_flag(
    real_redis: redis.Redis, clock, store: SqlStore
) -> None:
    """In process: awards made while a run lingers find the flag raised and queue nothing; the
    run writes them as they come, ends a linger after the last, and lowers the flag, so the
    next award queues a drain again."""
    drains = CountingQueue(NoQueue())
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    engine.award("user-0", "comment")
    assert drains.requests == [0]
    d = drainer(engine, store, linger=0.3)
    flag = engine.keys.drain_flag(0)
    held: list[int] = []

    def later() -> None:
        while real_redis.pttl(flag) > LOCK_TTL * 1000:  # until the run holds the flag
            time.sleep(0.005)
        for i in range(5):
            time.sleep(0.1)
            engine.award(USERS[i % len(USERS)], "reaction")
            held.append(real_redis.pttl(flag))

    awarder = threading.Thread(target=later)
    started = time.monotonic()
    awarder.start()
    report = d.drain(0, linger=d.linger)
    took = time.monotonic() - started
    awarder.join()
    assert report.written == 6 and report.complete, report
    assert drains.requests == [0], "no award queued a job while the run lingered"
    assert all(0 < ttl <= LOCK_TTL * 1000 for ttl in held), held  # held for one lease at a time
    assert 0.75 <= took < 3.0, took  # the last award after 0.5 s, then a linger of 0.3 s
    assert not real_redis.exists(flag)
    engine.award("user-1", "comment")
    assert drains.requests == [0, 0]
    assert d.drain(0).written == 1
    assert_sql_matches_redis(engine, store, 7)


def test_a_lingering_job_yields_and_queues_its_successor(
    real_redis: redis.Redis, clock, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain job ends its linger at once when another job waits for the worker; an award
    that came while it still held the flag (so queued nothing) gets the successor the job
    queues, whatever the flag says."""
    drains = CountingQueue(NoQueue())
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    engine.award("user-0", "comment")
    d = drainer(engine, store, linger=30.0)
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    asked: list[float] = []

    def another_job_waits(_engine: ScoringEngine) -> bool:
        asked.append(time.monotonic())
        if len(asked) == 3:
            engine.award("user-1", "comment")  # the flag stands: it queues nothing
        return len(asked) >= 3

    monkeypatch.setattr(workers.jobs, "_should_yield", another_job_waits)
    started = time.monotonic()
    report = workers.jobs.drain_shard(0)
    assert time.monotonic() - started < 5  # not the 30 s linger
    assert report["written"] == 1 and not report["complete"], report
    assert drains.requests == [0, 0]  # the successor, queued by the job
    assert real_redis.exists(engine.keys.drain_flag(0))  # raised for it
    assert workers.jobs.drain_shard(0)["written"] == 1  # the successor (it yields at once)
    assert_sql_matches_redis(engine, store, 2)


@pytest.mark.parametrize(("linger", "raised"), [(0.0, [True, False]), (0.1, [True, True])])
def test_the_flag_is_lowered_at_the_first_commit_only_without_linger(
    real_redis: redis.Redis, clock, store: SqlStore, linger: float, raised: list[bool]
) -> None:
    """Without a linger (SCORING_DRAIN_LINGER_MS=0, as before lingering existed) a run lowers
    the flag at its first commit, so an award during its second batch queues the next job; a
    lingering run holds it until it ends."""
    drains = CountingQueue(NoQueue())
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    engine.award("user-0", "comment")
    engine.award("user-1", "comment")
    assert drains.requests == [0]
    d = drainer(engine, store, batch=1)
    seen: list[bool] = []
    write = store.write

    def spy(*args: Any, **kwargs: Any) -> None:
        seen.append(bool(real_redis.exists(engine.keys.drain_flag(0))))
        write(*args, **kwargs)

    store.write = spy  # type: ignore[method-assign]
    try:
        report = d.drain(0, linger=linger)
    finally:
        del store.write
    assert report.written == 2 and seen == raised, (report, seen)
    assert not real_redis.exists(engine.keys.drain_flag(0))
    engine.award("user-0", "comment")
    assert drains.requests == [0, 0]


def test_a_killed_lingering_worker_leaves_a_flag_that_lapses_within_a_lease(
    real_redis: redis.Redis, redis_url: str, clock, store: SqlStore, rq_queue: Any
) -> None:
    """A worker SIGKILLed while its job lingers: the flag it held lapses within one lease, the
    next award then queues a drain, and the next worker writes every award exactly once."""
    drains = CountingQueue(rq_queue)
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=drains)  # fmt: skip
    env = worker_env(redis_url, store)
    worker = start_worker(env, rq_queue)
    trickle = Trickle(engine, seconds=30)
    try:
        trickle.start()
        wait_for_a_started_job(rq_queue)
        time.sleep(0.5)  # the job runs, and lingers
        assert drains.requests == [0]
        stop_worker(worker, signal.SIGKILL)
        killed = time.monotonic()
        ttl = real_redis.pttl(engine.keys.drain_flag(0))
        assert 0 < ttl <= LOCK_TTL * 1000, ttl
        while len(drains.requests) < 2:  # an award raises the flag again and queues a drain
            assert time.monotonic() - killed < LOCK_TTL + 2, "no award queued a drain"
            time.sleep(0.02)
    finally:
        trickle.stop.set()
        trickle.join()
        if worker.poll() is None:
            stop_worker(worker, signal.SIGKILL)
    done = burst_worker(env)
    assert done.returncode == 0, done.stderr
    assert_sql_matches_redis(engine, store, len(trickle.sent))


def test_sigterm_ends_a_lingering_job_at_once(
    real_redis: redis.Redis, redis_url: str, clock, store: SqlStore, rq_queue: Any
) -> None:
    """A worker told to stop while its job lingers under a trickle of awards (which would keep
    it lingering to the end of its 60 s slice) stops within seconds, its writes committed."""
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=CountingQueue(rq_queue))  # fmt: skip
    env = worker_env(redis_url, store)
    worker = start_worker(env, rq_queue)
    trickle = Trickle(engine, seconds=30)
    try:
        trickle.start()
        wait_for_a_started_job(rq_queue)
        time.sleep(1.0)
        asked = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        took = time.monotonic() - asked
    finally:
        trickle.stop.set()
        trickle.join()
        output = stop_worker(worker, signal.SIGKILL)
    assert code == 0 and took < 5, (code, took, output)
    assert "Traceback" not in output, output
    assert rq_queue.failed_job_registry.count == 0
    done = burst_worker(env)
    assert done.returncode == 0, done.stderr
    assert_sql_matches_redis(engine, store, len(trickle.sent))


def test_a_job_locked_out_by_a_lingering_drain_queues_no_successor(
    real_redis: redis.Redis, clock, store: SqlStore, rq_queue: Any, monkeypatch
) -> None:
    """A drain job that gives up waiting for its shard's lock while the holder lingers (the
    flag says so) queues no successor: the holder looks for unread entries when it ends. (A
    plain holder still gets one: see test_drain.py.)"""
    engine = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                           drain_queue=DrainQueue(rq_queue))  # fmt: skip
    engine.award("user-0", "comment")
    rq_queue.empty()
    d = drainer(engine, store, lock_ttl=0.3)
    monkeypatch.setattr(workers.jobs, "context", lambda: (engine, d))
    holder = real_redis.lock(engine.keys.drain_lock(0), timeout=30)  # a drain that lingers
    assert holder.acquire()
    real_redis.set(engine.keys.drain_flag(0), FLAG_HELD, px=30_000)
    try:
        report = workers.jobs.drain_shard(0)
    finally:
        holder.release()
    assert report["locked_out"] and not report["complete"] and report["written"] == 0
    assert rq_queue.count == 0
