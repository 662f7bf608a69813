"""The worker and scheduler commands, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import redis
from helpers import PLAIN_RULES, burst_worker
from rq_scheduler import Scheduler

from engine import AwardRequest, ScoringEngine
from engine.storage.store import SqlStore
from workers.schedule import CRON, INTERVAL, PERIODIC, register


def test_worker_burst_drains_into_sql(real_redis: redis.Redis, redis_url: str, tmp_path) -> None:
    """`scoring worker --burst` in its own process drains every shard, then exits."""
    engine = ScoringEngine(real_redis, shards=2, rules=PLAIN_RULES)
    engine.award_many([AwardRequest(f"w{i % 11}", "comment") for i in range(700)])
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SCORING_SHARDS": "2",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "SCORING_QUEUE": "burst-test",
    }
    subprocess.run([sys.executable, "-m", "scoring.cli", "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    done = burst_worker(env)
    assert done.returncode == 0, done.stderr
    store = SqlStore(env["DATABASE_URL"])
    assert store.count_activities() == 700
    totals = dict((u, t) for u, t, _ in store.user_totals())
    assert totals == {f"w{i}": engine.status(f"w{i}").total_points for i in range(11)}


def test_scheduler_registers_each_job_once(real_redis: redis.Redis, redis_url: str) -> None:
    scheduler = Scheduler(queue_name="sched-test", connection=redis.Redis.from_url(redis_url))
    for _ in range(3):  # the scheduler restarted, or two of them started
        assert register(scheduler, queue_name="sched-test") == list(PERIODIC)
    jobs = list(scheduler.get_jobs())
    assert sorted(job.id for job in jobs) == sorted(PERIODIC)
    expected = {func for func, _ in [*INTERVAL.values(), *CRON.values()]}
    assert {job.func_name for job in jobs} == expected
    crons = {job.id: job.meta.get("cron_string") for job in jobs}
    assert {job_id: crons[job_id] for job_id in CRON} == {k: v for k, (_, v) in CRON.items()}
    assert not any(job.meta.get("use_local_timezone") for job in jobs)  # UTC
    # each job function is importable by the worker
    import importlib

    for func in expected:
        module, name = func.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))
