"""Drain jobs per award and award-to-row lag, at a low and a high award rate, lingering drain
jobs against the previous behaviour, A/B in one run.

    .venv/bin/python -m bench.drain_jobs_bench [--quick]

The production path of ``bench.drain_bench``'s lag phase: a producer process awards on an
absolute schedule through an engine whose ``DrainQueue`` enqueues ``workers.jobs.drain_shard``
when an award raises the shard's drain flag; an RQ ``SimpleWorker`` in another process (what
``scoring worker`` runs, configured by environment variables) runs the jobs; a thread of this
process polls PostgreSQL every 20 ms and records when it first saw each activity id. Lag =
first seen - the award's ``award_many`` returned (overstated by up to one poll interval).

Two rates: 10 awards/s (``award_many`` of 1 every 100 ms, as ``scoring demo`` does) for 60 s
(10 s with ``--quick``) and 5,000 awards/s (50 every 10 ms) for 20 s (2 s with ``--quick``).
Each runs twice, with a fresh worker, Redis database and tables: once with the default
``SCORING_DRAIN_LINGER_MS`` (the job waits up to 500 ms for more entries once the outbox is
empty, holding the shard's drain flag) and once with ``SCORING_DRAIN_LINGER_MS=0`` (the flag is
lowered at the job's first commit, so the next award queues the next job: the behaviour before
lingering existed). Jobs are the drain jobs the worker finished while the awards were made and
drained (the warm-up's are not counted). Targets: at 10 awards/s at most 1 job per 10 awards;
lag p99 at most 1 s at both rates; every award in SQL exactly once.

PostgreSQL and Redis as for ``bench.drain_bench`` (database ``scoring_bench_jobs``, created and
dropped by the run; ``REDIS_URL`` or database 12, flushed only when it is ours).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.award_bench import warm_up, workload
from bench.drain_bench import (
    AWARDS_ONLY,
    PROCESS_TIMEOUT,
    RQ_QUEUE,
    Poller,
    Postgres,
    _rq_worker,
    bench_database,
    empty_tables,
    find_postgres,
    paced_awards,
    row_count,
    stop_process,
    wait_for,
    worker_env,
)
from bench.harness import Row, Skipped, connect, fresh_db, log, parser, redis_url, render, summary
from bench.harness import verdict as ok
from engine import AwardRequest, ScoringEngine
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore

PG_DATABASE = "scoring_bench_jobs"
USERS = 10_000
#: rate (awards/s) -> awards per award_many call
RATES = {10: 1, 5000: 50}
FULL = {10: 60.0, 5000: 20.0}  # seconds of awards per rate
QUICK = {10: 10.0, 5000: 2.0}
#: mode -> SCORING_DRAIN_LINGER_MS of the worker
MODES = {"linger (default)": None, "no linger (before)": "0"}
JOBS_TARGET = 0.1  # drain jobs per award at the low rate, at most
LAG_TARGET = 1.0  # seconds, p99
SETTLE = 30.0  # seconds to wait for the last rows


def _producer(url: str, rate: int, seconds: float, go: Any, results: Any) -> None:
    """A helper process: ``rate`` awards/s for ``seconds`` (``RATES[rate]`` per call, on an
    absolute schedule); puts (sent, errors, elapsed), ``sent`` a list of (id, returned at)."""
    engine = ScoringEngine(
        connect(url), rules=AWARDS_ONLY, drain_queue=DrainQueue.from_url(url, name=RQ_QUEUE)
    )
    per_call = RATES[rate]
    calls = int(seconds * rate / per_call)
    work = workload(calls * per_call, USERS, seed=51)
    requests = [AwardRequest(uid, t, description=f"j-{i:08d}") for i, (uid, t) in enumerate(work)]
    warm_up(engine)
    results.put("ready")
    go.wait(timeout=PROCESS_TIMEOUT)
    results.put(paced_awards(engine, requests, per_call, rate))


@dataclass
class Run:
    mode: str
    rate: int  # target awards/s
    awards: int
    achieved: float  # awards/s
    lags: list[float]
    unseen: int
    errors: int
    jobs: int  # drain jobs finished for these awards
    rows: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("inf")

    @property
    def per_award(self) -> float:
        return self.jobs / max(self.awards, 1)


def _rq_counts() -> tuple[int, int]:
    """(drain jobs finished, jobs queued or running) of the benchmark's queue."""
    from rq import Queue
    from rq.registry import FinishedJobRegistry, StartedJobRegistry

    queue = Queue(RQ_QUEUE, connection=redis.Redis.from_url(redis_url()))
    busy = queue.count + StartedJobRegistry(queue=queue).count
    return FinishedJobRegistry(queue=queue).count, busy


def _idle() -> bool:
    return _rq_counts()[1] == 0


def bench_run(r: redis.Redis, pg: Postgres, mode: str, rate: int, seconds: float) -> Run:
    fresh_db(r)
    empty_tables(pg)
    env = worker_env(pg)
    if MODES[mode] is not None:
        env["SCORING_DRAIN_LINGER_MS"] = str(MODES[mode])
    else:
        env.pop("SCORING_DRAIN_LINGER_MS", None)
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=_rq_worker, args=(env,), daemon=True)
    producer = ctx.Process(target=_producer, args=(redis_url(), rate, seconds, go, results))
    poller = Poller(pg)
    worker.start()
    producer.start()
    try:
        if results.get(timeout=PROCESS_TIMEOUT) != "ready":
            raise RuntimeError("the producer did not start")
        wait_for(lambda: row_count(pg) >= 5, PROCESS_TIMEOUT, "the worker to drain the warm-up")
        wait_for(_idle, PROCESS_TIMEOUT, "the warm-up's job to end")
        jobs_before = _rq_counts()[0]
        poller.start()
        go.set()
        sent, errors, elapsed = results.get(timeout=seconds + PROCESS_TIMEOUT)
        producer.join(PROCESS_TIMEOUT)
        ids = [i for i, _ in sent]
        try:
            wait_for(lambda: all(i in poller.seen for i in ids[-50:]), SETTLE, "the last awards")
        except RuntimeError as exc:
            log(str(exc))  # reported as awards never seen
        wait_for(_idle, SETTLE, "the last job to end")
        jobs = _rq_counts()[0] - jobs_before
        time.sleep(0.1)
    finally:
        poller.stop.set()
        stop_process(producer)
        stop_process(worker)
    poller.join()
    if poller.error is not None:
        raise RuntimeError(f"the SQL poller failed: {poller.error!r}")
    lags = [poller.seen[i] - at for i, at in sent if i in poller.seen]
    return Run(mode, rate, len(sent), len(sent) / elapsed, lags, len(sent) - len(lags), errors,
               jobs, row_count(pg))  # fmt: skip


def rows_for(runs: list[Run]) -> list[Row]:
    out: list[Row] = []
    by = {(x.mode, x.rate): x for x in runs}
    new, old = MODES
    for rate in RATES:
        pair = [by.get((m, rate)) for m in (new, old)]
        for run in (p for p in pair if p is not None):
            label = f"{rate:,}/s, {run.mode}"
            kept = run.achieved >= 0.95 * rate
            out += [
                Row(f"{label}: awards sent", f"{run.awards:,} at {run.achieved:,.0f}/s",
                    f">= {0.95 * rate:,.0f}/s", ok(kept)),
                Row(f"{label}: drain jobs per award",
                    f"{run.per_award:.3g} ({run.jobs:,} jobs, "
                    f"{run.awards / max(run.jobs, 1):,.0f} awards/job)",
                    f"<= {JOBS_TARGET:g}" if rate == min(RATES) and run.mode == new else "",
                    ok(run.per_award <= JOBS_TARGET)
                    if rate == min(RATES) and run.mode == new else ""),
                Row(f"{label}: lag p50 / p99 / max",
                    f"{statistics.median(run.lags) * 1000:.0f} / {run.quantile(0.99) * 1000:.0f}"
                    f" / {max(run.lags) * 1000:.0f} ms" if run.lags else "no award reached SQL",
                    f"p99 <= {LAG_TARGET:g} s",
                    ok(run.quantile(0.99) <= LAG_TARGET and not run.unseen)),
                Row(f"{label}: rows in SQL (+5 warm-up)", f"{run.rows:,}", f"= {run.awards + 5:,}",
                    ok(run.rows == run.awards + 5 and not run.errors)),
            ]  # fmt: skip
        a, b = pair
        if a is not None and b is not None:
            jobs = f"{a.per_award / b.per_award:.3g}x" if b.per_award else "n/a"
            lag = f"{a.quantile(0.99) / b.quantile(0.99):.2f}x" if b.lags and a.lags else "n/a"
            out.append(Row(f"{rate:,}/s: linger / before, jobs per award; lag p99",
                           f"{jobs}; {lag}"))  # fmt: skip
    return out


def measure(durations: dict[int, float]) -> list[Row]:
    r = connect(redis_url())
    r.ping()
    fresh_db(r)
    try:
        pg = find_postgres(PG_DATABASE)
    except Skipped as why:
        return [Row("drain jobs and lag", str(why), "", "n/a")]
    runs: list[Run] = []
    rows: list[Row] = []
    with bench_database(pg):
        schema = SqlStore(pg.url)
        schema.upgrade()
        schema.close()
        for rate, seconds in durations.items():
            for mode in MODES:
                log(f"{rate:,} awards/s for {seconds:g} s, {mode}")
                try:
                    runs.append(bench_run(r, pg, mode, rate, seconds))
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    log(f"{rate}/s {mode} failed: {exc!r}")
                    rows.append(Row(f"{rate:,}/s, {mode}", f"failed: {exc!r}"[:100], "", "MISS"))
    fresh_db(r)
    return rows_for(runs) + rows


def main(argv: list[str] | None = None) -> int:
    args = parser("drain_jobs_bench", __doc__, "10 s at 10/s and 2 s at 5,000/s").parse_args(argv)
    started = time.perf_counter()
    print(render(measure(QUICK if args.quick else FULL)))
    print(summary(args.quick, started, redis_url(), f"PostgreSQL database {PG_DATABASE}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
