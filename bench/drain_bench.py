"""Audit-trail benchmark: draining the outbox into PostgreSQL, award-to-row lag, and rebuild.

    .venv/bin/python -m bench.drain_bench [--quick]

Measures, in one run, and prints one table (a missed target is marked MISS; it never fails):

1. **Drain throughput.** The outbox is filled first with N awards (``award_many`` in batches of
   500 over 10,000 users, an engine with no drain queue, so nothing drains meanwhile); then one
   ``workers.drain.Drainer(..., batch=B).drain(0)`` call is timed until the outbox is empty, for
   B = 1,000 and B = 5,000 (the outbox is refilled and SQL emptied between them); N = 200,000
   (20,000 with ``--quick``). Target: >= 50,000 activities/s. Afterwards ``SELECT count(*)``
   must find exactly N rows. The drainer's steps are timed by wrapping its methods on the
   instance (read from Redis, parse, SQL write, XACK, trim), each with its wall time and this
   process's CPU time, so the table shows whether Python or the database is the cost.
2. **Lag from award to row.** The real production path: a producer process awards at 5,000/s
   (``award_many`` of 50 every 10 ms, on an absolute schedule) through an engine whose
   ``DrainQueue`` enqueues ``workers.jobs.drain_shard`` on an RQ queue when an award raises the
   shard's drain flag; an RQ ``SimpleWorker`` in another process (what ``scoring worker`` runs,
   configured by the same environment variables) runs those jobs. The producer records, per
   activity id, the wall time its ``award_many`` returned; this process polls PostgreSQL every
   20 ms (``WHERE created_at >= <newest seen>``, using the created_at index) and records when it
   first saw each id. Lag = first seen - returned; it overstates the true lag by up to one poll
   interval. Target: p99 <= 1 s. 30 s of awards (5 s with ``--quick``); the producer must keep
   95 % of the rate for the figure to count.
3. **Rebuild.** ``point_activity`` is loaded with ``COPY`` (1,000,000 rows; 100,000 with
   ``--quick``): random uuid4 ids, 50,000 users, the award benchmark's activity mix, created_at
   spread over the last 60 days (rows in time order, as a real table grows), the state-after
   columns as running per-user totals, levels and versions (streaks 1: the rebuild does not read
   them); plus one ``user_score`` row per user, as the drain leaves them (one in ten with a
   profile in a non-UTC time zone, so the rebuild's time-zone path is exercised).
   Then ``engine.services.recovery.rebuild(engine, store)`` is timed on an empty Redis database
   (target: <= 30 s), its result checked with ``reconcile`` (no user may drift), and, for the
   breakdown, the SQL read it streams (``store.activities_by_user()``) is timed on its own.

4. **Partitioned vs unpartitioned (A/B).** The drain of item 1 (batch 5,000, same N) timed
   alternately into two databases of the same server: A at migration 0007 (``point_activity``
   one table, ``ON CONFLICT (id)``, as before partitioning) and B at the head (partitioned by
   month, ``ON CONFLICT (id, created_at)``), 5 rounds each, A first in each round (alternating,
   so a neighbour's load on the machine weighs on both). The row gives each side's median and
   the ratio B / A. Target: >= 0.90 (within 10 %). Every run must leave exactly N rows.

PostgreSQL: ``127.0.0.1:5432``, user ``postgres`` (or the current user), trust authentication.
The run creates its own databases ``scoring_bench`` and ``scoring_bench_unpartitioned``
(dropping leftover ones first), makes the schema with ``SqlStore(url).upgrade()`` (to 0007 for
the second) and drops them at the end. If PostgreSQL cannot
be reached, every row says so.

Redis: ``REDIS_URL`` if set, else database 12 of redis://127.0.0.1:6379, with the award
benchmark's safety rule: the database is flushed between phases only if it is empty or holds the
marker key the benchmarks leave in it. The RQ queue (``scoring-bench``) lives in the same
database and is flushed with it.
"""

from __future__ import annotations

import getpass
import multiprocessing as mp
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

import redis

from bench.award_bench import ACTIVITY_MIX, user_id, warm_up, workload
from bench.harness import (
    Row,
    Skipped,
    connect,
    fresh_db,
    log,
    parser,
    redis_url,
    render,
    summary,
    verdict,
    wait_until,
)
from engine import AwardRequest, ScoringEngine
from engine.domain.rules import Rules, build_rules, load_rules
from engine.services.recovery import RebuildReport, rebuild, reconcile
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore
from workers.drain import Drainer

PG_DATABASE = "scoring_bench"
RQ_QUEUE = "scoring-bench"

FILL_BATCH = 500  # award_many batch size when filling the outbox
DRAIN_BATCHES = (1000, 5000)  # Drainer(batch=B)
DRAIN_TARGET = 50_000.0  # activities/s
AB_BATCH = 5000  # the A/B drains' batch
AB_ROUNDS = 5  # A then B, this many times
AB_TARGET = 0.90  # partitioned / unpartitioned drain rate
AB_REVISION = "0007"  # the schema before partitioning (0008)
#: Drainer methods timed in the drain phase, and the step each counts towards.
DRAIN_STEPS = (
    ("_claim", "read (XAUTOCLAIM, XREADGROUP)"),
    ("_read", "read (XAUTOCLAIM, XREADGROUP)"),
    ("_parse", "parse entries"),
    ("_ack", "XACK"),
    ("_trim", "trim"),
)

LAG_RATE = 5000  # awards/s
LAG_BATCH = 50  # awards per award_many call: 100 calls/s
LAG_POLL = 0.020  # seconds between SQL polls
LAG_TARGET_P99 = 1.0  # seconds
LAG_SETTLE = 30.0  # seconds to wait for the last rows after the producer stops

REBUILD_TARGET = 30.0  # seconds
REBUILD_DAYS = 60
TIME_ZONES = ("Europe/Oslo", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
PROCESS_TIMEOUT = 120  # seconds a helper process may take to start or to finish


@dataclass(frozen=True)
class Sizes:
    drain_awards: int
    drain_users: int
    lag_seconds: float
    rebuild_activities: int
    rebuild_users: int


FULL = Sizes(200_000, 10_000, 30.0, 1_000_000, 50_000)
QUICK = Sizes(20_000, 10_000, 5.0, 100_000, 50_000)


# -- PostgreSQL --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """Where the benchmark's own database lives."""

    user: str
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = PG_DATABASE  # the benchmark's own, created and dropped by the run

    def conninfo(self, dbname: str | None = None) -> str:
        where = f"host={self.host} port={self.port} dbname={dbname or self.database}"
        return f"{where} user={self.user} connect_timeout=3"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the benchmark database (psycopg 3)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.database}"


def find_postgres(database: str = PG_DATABASE) -> Postgres:
    """A server that accepts ``postgres`` (or the current user); :class:`Skipped` if none."""
    import psycopg

    for user in dict.fromkeys(("postgres", getpass.getuser())):
        pg = Postgres(user, database=database)
        try:
            psycopg.connect(pg.conninfo("postgres")).close()
            return pg
        except psycopg.Error:
            continue
    raise Skipped("skipped: PostgreSQL unreachable")


@contextmanager
def bench_database(pg: Postgres) -> Iterator[None]:
    """Create the benchmark's database (dropping a leftover one first) and drop it afterwards."""
    import psycopg

    def admin(statement: str) -> None:
        with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    admin(f"DROP DATABASE IF EXISTS {pg.database} WITH (FORCE)")
    admin(f"CREATE DATABASE {pg.database}")
    try:
        yield
    finally:
        admin(f"DROP DATABASE IF EXISTS {pg.database} WITH (FORCE)")


def sql(pg: Postgres, statement: str) -> Any:
    """Run one statement in the benchmark database; the first column of the first row, if any."""
    import psycopg

    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        cur = conn.execute(statement)
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


def empty_tables(pg: Postgres) -> None:
    sql(pg, "TRUNCATE point_activity, user_score")


def row_count(pg: Postgres) -> int:
    return int(sql(pg, "SELECT count(*) FROM point_activity"))


# -- 1. drain throughput -----------------------------------------------------------------------


@dataclass
class DrainResult:
    batch: int
    awards: int
    seconds: float
    cpu: float  # this process's CPU seconds during the drain
    written: int
    rows: int  # SELECT count(*) afterwards
    fill_rate: float  # awards/s while filling the outbox
    parts: dict[str, list[float]] = field(default_factory=dict)  # step: [wall s, cpu s, calls]

    @property
    def rate(self) -> float:
        return self.awards / self.seconds


class StepTimer:
    """Times methods of an object by replacing them on the instance (the class is untouched)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {}

    def wrap(self, obj: Any, method: str, step: str) -> None:
        inner = getattr(obj, method)
        part = self.parts.setdefault(step, [0.0, 0.0, 0])

        @wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                part[0] += time.perf_counter() - wall
                part[1] += time.process_time() - cpu
                part[2] += 1

        setattr(obj, method, timed)


#: The default rules without weekly goals: every outbox entry is then one award, one row (the
#: goals' cost is engagement_bench's subject).
AWARDS_ONLY = build_rules({"weekly_goals": {}})


def fill_outbox(engine: ScoringEngine, awards: int, users: int) -> float:
    """Award ``awards`` times through ``award_many``; return the awards/s it took."""
    requests = [AwardRequest(uid, t) for uid, t in workload(awards, users, seed=21)]
    start = time.perf_counter()
    for i in range(0, len(requests), FILL_BATCH):
        out = engine.award_many(requests[i : i + FILL_BATCH])
        failed = [x for x in out if isinstance(x, Exception)]
        if failed:
            raise RuntimeError(f"filling the outbox: {failed[0]!r}")
    return len(requests) / (time.perf_counter() - start)


def bench_drain(r: redis.Redis, pg: Postgres, sizes: Sizes, batch: int) -> DrainResult:
    """Fill the outbox, then time one drain of it into an empty audit trail."""
    fresh_db(r)
    empty_tables(pg)
    # no drain queue: nothing drains while filling
    engine = ScoringEngine(r, rules=AWARDS_ONLY)
    fill_rate = fill_outbox(engine, sizes.drain_awards, sizes.drain_users)
    store = SqlStore(pg.url)
    store.ping()  # open the pool's first connection before the clock starts
    drainer = Drainer(engine.redis, store, engine.keys, engine.rules, batch=batch)
    steps = StepTimer()
    for method, step in DRAIN_STEPS:
        steps.wrap(drainer, method, step)
    steps.wrap(store, "write", "SQL write (SqlStore.write)")
    wall, cpu = time.perf_counter(), time.process_time()
    report = drainer.drain(0)
    seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
    store.close()
    if report.dead or report.failed or report.errors:
        raise RuntimeError(f"drain with batch {batch} reported failures: {report}")
    rows = row_count(pg)
    return DrainResult(
        batch, sizes.drain_awards, seconds, cpu, report.written, rows, fill_rate, steps.parts
    )


# -- 2. lag from award to row ------------------------------------------------------------------


def _rq_worker(env: dict[str, str]) -> None:
    """A helper process: what ``scoring worker`` runs, an RQ SimpleWorker running drain jobs,
    configured through the environment like the real one."""
    os.environ.update(env)
    from rq import Queue, SimpleWorker

    from workers.jobs import context

    context()  # fail fast on bad settings, as `scoring worker` does
    conn = redis.Redis.from_url(env["REDIS_URL"])
    worker = SimpleWorker([Queue(env["SCORING_QUEUE"], connection=conn)], connection=conn)
    worker.work(logging_level="WARNING")


def _producer(url: str, seconds: float, users: int, go: Any, results: Any) -> None:
    """A helper process: award LAG_BATCH every LAG_BATCH / LAG_RATE seconds for ``seconds``;
    put (sent, errors, elapsed) on ``results``, ``sent`` a list of (activity id, returned at)."""
    engine = ScoringEngine(
        connect(url), rules=AWARDS_ONLY, drain_queue=DrainQueue.from_url(url, name=RQ_QUEUE)
    )
    ticks = int(seconds * LAG_RATE / LAG_BATCH)
    work = workload(ticks * LAG_BATCH, users, seed=31)
    requests = [AwardRequest(uid, t, description=f"lag-{i:08d}") for i, (uid, t) in enumerate(work)]
    warm_up(engine)  # also proves the pipeline: the warm-up rows reach SQL before "go"
    results.put("ready")
    go.wait(timeout=PROCESS_TIMEOUT)
    results.put(paced_awards(engine, requests, LAG_BATCH, LAG_RATE))


def paced_awards(
    engine: ScoringEngine, requests: list[AwardRequest], per_call: int, rate: float
) -> tuple[list[tuple[str, float]], int, float]:
    """``requests`` through ``award_many``, ``per_call`` at a time at ``rate`` awards/s on an
    absolute schedule: (sent, errors, elapsed), ``sent`` a list of (activity id, returned at)."""
    sent: list[tuple[str, float]] = []
    errors = 0
    interval = per_call / rate
    start = time.perf_counter()
    for k in range(len(requests) // per_call):
        delay = start + k * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        out = engine.award_many(requests[k * per_call : (k + 1) * per_call])
        returned = time.time()
        for x in out:
            if isinstance(x, Exception):
                errors += 1
            else:
                sent.append((x.activity.id, returned))
    return sent, errors, time.perf_counter() - start


class Poller(threading.Thread):
    """Polls point_activity every LAG_POLL seconds; ``seen`` maps each id to the wall time of
    the first poll that returned it (the poll's snapshot is taken when it starts).

    The cursor is the newest created_at seen, re-read with ``>=`` (awards share milliseconds):
    with one producer and one worker, rows commit in created_at order, so it skips none; an id
    it never saw is reported as such."""

    def __init__(self, pg: Postgres) -> None:
        super().__init__(daemon=True)
        self.pg = pg
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        import psycopg

        newest = datetime(2000, 1, 1, tzinfo=UTC)
        try:
            with psycopg.connect(self.pg.conninfo(), autocommit=True) as conn:
                while not self.stop.is_set():
                    at = time.time()
                    rows = conn.execute(
                        "SELECT id::text, created_at FROM point_activity WHERE created_at >= %s",
                        (newest,),
                    ).fetchall()
                    for activity_id, created_at in rows:
                        self.seen.setdefault(activity_id, at)
                        newest = max(newest, created_at)
                    self.stop.wait(max(0.0, LAG_POLL - (time.time() - at)))
        except Exception as exc:  # noqa: BLE001 - reported by the phase
            self.error = exc


@dataclass
class LagResult:
    awards: int
    rate: float  # awards/s achieved
    lags: list[float]  # seconds, one per award seen
    unseen: int  # awards never seen by the poller
    errors: int
    jobs: int  # drain jobs the worker finished
    rows: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(condition, timeout):
        raise RuntimeError(f"timed out waiting for {what}")


def worker_env(pg: Postgres) -> dict[str, str]:
    """The settings of the RQ worker process, as ``scoring worker`` reads them."""
    return {
        "REDIS_URL": redis_url(),
        "DATABASE_URL": pg.url,
        "SCORING_QUEUE": RQ_QUEUE,
        "SCORING_SHARDS": "1",
        "SCORING_KEY_PREFIX": "scoring",
    }


def bench_lag(r: redis.Redis, pg: Postgres, sizes: Sizes) -> LagResult:
    """Producer process -> RQ drain jobs in a worker process -> rows seen by a poller thread."""
    fresh_db(r)
    empty_tables(pg)
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=_rq_worker, args=(worker_env(pg),), daemon=True)
    producer = ctx.Process(
        target=_producer, args=(redis_url(), sizes.lag_seconds, sizes.drain_users, go, results)
    )
    poller = Poller(pg)
    worker.start()
    producer.start()
    try:
        if results.get(timeout=PROCESS_TIMEOUT) != "ready":
            raise RuntimeError("the producer did not start")
        wait_for(lambda: row_count(pg) >= 5, PROCESS_TIMEOUT, "the worker to drain the warm-up")
        poller.start()
        go.set()
        sent, errors, elapsed = results.get(timeout=sizes.lag_seconds + PROCESS_TIMEOUT)
        producer.join(PROCESS_TIMEOUT)
        last = [activity_id for activity_id, _ in sent[-LAG_BATCH:]]
        try:
            wait_for(lambda: all(i in poller.seen for i in last), LAG_SETTLE, "the last awards")
        except RuntimeError as exc:
            log(str(exc))  # reported as awards never seen
        time.sleep(5 * LAG_POLL)
    finally:
        poller.stop.set()
        stop_process(producer)
        stop_process(worker)
    poller.join()
    if poller.error is not None:
        raise RuntimeError(f"the SQL poller failed: {poller.error!r}")
    lags = [poller.seen[i] - at for i, at in sent if i in poller.seen]
    unseen = len(sent) - len(lags)
    rate = len(sent) / elapsed
    return LagResult(len(sent), rate, lags, unseen, errors, finished_jobs(), row_count(pg))


def stop_process(p: Any) -> None:
    """Stop a helper process this benchmark started (SIGTERM: RQ finishes its job first)."""
    if p.is_alive():
        p.terminate()
        p.join(30)
    if p.is_alive():
        p.kill()
        p.join()


def finished_jobs() -> int:
    """Drain jobs the RQ worker finished (kept for their result_ttl)."""
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    conn = redis.Redis.from_url(redis_url())
    return FinishedJobRegistry(queue=Queue(RQ_QUEUE, connection=conn)).count


# -- 3. rebuild ------------------------------------------------------------------------------


@dataclass
class RebuildResult:
    report: RebuildReport
    seconds: float
    load_seconds: float
    read_seconds: float  # store.activities_by_user() alone
    users: int  # distinct users loaded
    drifts: int


def _copy_text(rows: Sequence[Sequence[Any]]) -> str:
    """Rows in COPY's text format (no value here needs escaping; None is NULL)."""
    return "".join("\t".join("\\N" if v is None else str(v) for v in row) + "\n" for row in rows)


def activity_rows(
    rules: Rules, n: int, users: int, seed: int
) -> tuple[list[tuple[Any, ...]], dict[str, list[Any]]]:
    """``n`` point_activity rows in time order over the last REBUILD_DAYS days, and per user
    [total, count, last created_at, level]."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    span = REBUILD_DAYS * 86400
    offsets = sorted(rng.random() * span for _ in range(n))
    types = rng.choices(list(ACTIVITY_MIX), weights=list(ACTIVITY_MIX.values()), k=n)
    points = {t: rules.activity_types[t].points for t in ACTIVITY_MIX}
    per_user: dict[str, list[Any]] = {}
    rows = []
    start = now - timedelta(seconds=span)
    for offset, kind in zip(offsets, types, strict=True):
        uid = user_id(rng.randrange(users))
        amount = points[kind]
        created = start + timedelta(seconds=offset)
        state = per_user.setdefault(uid, [0, 0, created, 1])
        state[0] += amount
        state[1] += 1
        state[2] = created
        state[3] = rules.level_for(state[0])
        rows.append((
            uuid.UUID(int=rng.getrandbits(128), version=4), uid, amount, kind, "",
            rules.tier_for(state[0]), created.isoformat(), state[0], state[3], 1, 1,
            created.date().isoformat(), state[1],
        ))  # fmt: skip
    return rows, per_user


def user_score_rows(rules: Rules, per_user: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    """One snapshot per user, as the drain leaves them; one in ten has a profile and a zone."""
    rows = []
    for i, (uid, (total, count, last, level)) in enumerate(sorted(per_user.items())):
        zone = TIME_ZONES[i // 10 % len(TIME_ZONES)] if i % 10 == 0 else None
        rows.append((
            uid, total, rules.tier_for(total), level, 1, 1, last.date().isoformat(), count,
            uid if zone else None, None, zone, 1 if zone else 0, last.isoformat(),
        ))  # fmt: skip
    return rows


ACTIVITY_COLUMNS = ("id, user_id, amount, activity_type, description, tier_at_time, created_at, "
                    "total_points, level, current_streak_days, longest_streak_days, "
                    "last_activity_date, version")  # fmt: skip
SCORE_COLUMNS = ("user_id, total_points, tier, level, current_streak_days, longest_streak_days, "
                 "last_activity_date, state_version, username, display_name, time_zone, "
                 "profile_version, updated_at")  # fmt: skip


def copy_rows(pg: Postgres, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
    import psycopg

    with psycopg.connect(pg.conninfo()) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for i in range(0, len(rows), 50_000):
                copy.write(_copy_text(rows[i : i + 50_000]))


def load_activities(pg: Postgres, rules: Rules, sizes: Sizes) -> int:
    """COPY the synthetic history into the empty tables; return the number of users."""
    empty_tables(pg)
    rows, per_user = activity_rows(rules, sizes.rebuild_activities, sizes.rebuild_users, seed=41)
    copy_rows(pg, "point_activity", ACTIVITY_COLUMNS, rows)
    copy_rows(pg, "user_score", SCORE_COLUMNS, user_score_rows(rules, per_user))
    sql(pg, "VACUUM ANALYZE point_activity")
    sql(pg, "VACUUM ANALYZE user_score")
    return len(per_user)


def bench_rebuild(r: redis.Redis, pg: Postgres, sizes: Sizes) -> RebuildResult:
    rules = load_rules()
    start = time.perf_counter()
    users = load_activities(pg, rules, sizes)
    load_seconds = time.perf_counter() - start
    store = SqlStore(pg.url)
    start = time.perf_counter()
    read = sum(1 for _ in store.activities_by_user())
    read_seconds = time.perf_counter() - start
    if read != sizes.rebuild_activities:
        raise RuntimeError(f"read {read:,} activities back, loaded {sizes.rebuild_activities:,}")
    fresh_db(r)
    engine = ScoringEngine(r)
    start = time.perf_counter()
    report = rebuild(engine, store)
    seconds = time.perf_counter() - start
    drifts = len(reconcile(engine, store))
    store.close()
    return RebuildResult(report, seconds, load_seconds, read_seconds, users, drifts)


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Results:
    drains: list[DrainResult] | Skipped
    lag: LagResult | Skipped
    rebuild: RebuildResult | Skipped
    sizes: Sizes
    ab: list[tuple[DrainResult, DrainResult]] | Skipped = field(default_factory=list)


def per_s(x: float, unit: str = "activities/s") -> str:
    return f"{x:,.0f} {unit}"


def drain_rows(res: Results) -> list[Row]:
    target = f">= {DRAIN_TARGET:,.0f}/s"
    if isinstance(res.drains, Skipped):
        return [Row("outbox drain into PostgreSQL", str(res.drains), target, "n/a")]
    rows = []
    for d in res.drains:
        rate_ok = verdict(d.rate >= DRAIN_TARGET)
        # (the entries written include the achievement levels' e=ach entries: not rows)
        rows_ok = verdict(d.rows == d.awards <= d.written)
        rows += [
            Row(f"drain {d.awards:,} awards, batch {d.batch:,}", per_s(d.rate), target, rate_ok),
            Row(
                f"  rows in SQL (outbox entries written {d.written:,})",
                f"{d.rows:,}",
                f"= {d.awards:,}",
                rows_ok,
            ),
            Row("  drain wall time / client CPU", f"{d.seconds:.2f} s / {d.cpu:.2f} s"),
            *step_rows(d),
        ]
    fill = res.drains[0].fill_rate
    rows.append(Row(f"outbox fill (award_many x{FILL_BATCH}, no drain)", per_s(fill, "awards/s")))
    return rows


def step_rows(d: DrainResult) -> list[Row]:
    """The drain's steps, longest first: wall time, share of the drain, this process's CPU."""
    rows = []
    for step, (wall, cpu, calls) in sorted(d.parts.items(), key=lambda kv: -kv[1][0]):
        share = f"{wall:.2f} s ({wall / d.seconds:.0%}), CPU {cpu:.2f} s"
        rows.append(Row(f"  {step} x{calls:,.0f}", share))
    accounted = sum(wall for wall, _, _ in d.parts.values())
    rest = d.seconds - accounted
    if rest >= 0:
        rows.append(Row("  the rest", f"{rest:.2f} s"))
    else:  # the SQL write of one batch runs while the next is read and parsed
        rows.append(Row("  overlap of SQL write with read and parse", f"{-rest:.2f} s"))
    return rows


def lag_rows(res: Results) -> list[Row]:
    target = f"p99 <= {LAG_TARGET_P99:g} s"
    if isinstance(res.lag, Skipped):
        return [Row("award-to-row lag", str(res.lag), target, "n/a")]
    lag = res.lag
    if not lag.lags:
        return [Row("award-to-row lag", "no award reached SQL", target, "MISS")]
    p99 = lag.quantile(0.99)
    rows = [
        Row(f"awards sent (target {LAG_RATE:,}/s, {res.sizes.lag_seconds:g} s)",
            per_s(lag.rate, "awards/s"), f">= {0.95 * LAG_RATE:,.0f}/s",
            verdict(lag.rate >= 0.95 * LAG_RATE)),
        Row("award-to-row lag p50", f"{statistics.median(lag.lags) * 1000:.0f} ms"),
        Row("award-to-row lag p99", f"{p99 * 1000:.0f} ms", target,
            verdict(p99 <= LAG_TARGET_P99 and not lag.unseen)),
        Row("award-to-row lag max", f"{max(lag.lags) * 1000:.0f} ms"),
        Row("  drain jobs run (RQ SimpleWorker)",
            f"{lag.jobs:,} ({lag.awards / max(lag.jobs, 1):,.0f} awards/job)"),
        Row("  rows in SQL (awards + 5 warm-up)", f"{lag.rows:,}", f"= {lag.awards + 5:,}",
            verdict(lag.rows == lag.awards + 5)),
    ]  # fmt: skip
    if lag.unseen or lag.errors:
        rows.append(Row("  awards failed / never seen in SQL", f"{lag.errors:,} / {lag.unseen:,}",
                        "0 / 0", "MISS"))  # fmt: skip
    return rows


def ab_rows(res: Results) -> list[Row]:
    target = f"B/A >= {AB_TARGET:.2f}"
    name = "drain A/B: unpartitioned (A) vs partitioned (B)"
    if isinstance(res.ab, Skipped):
        return [Row(name, str(res.ab), target, "n/a")]
    if not res.ab:
        return [Row(name, "not run", target, "n/a")]
    a = statistics.median(x.rate for x, _ in res.ab)
    b = statistics.median(y.rate for _, y in res.ab)
    rounds = ", ".join(f"{x.rate / 1000:.0f}k/{y.rate / 1000:.0f}k" for x, y in res.ab)
    exact = all(d.rows == d.awards for pair in res.ab for d in pair)
    n = res.ab[0][0].awards
    return [
        Row(f"drain A/B {n:,} awards, batch {AB_BATCH:,}, median of {len(res.ab)}",
            f"B/A = {b / a:.2f}", target, verdict(b / a >= AB_TARGET)),
        Row("  A unpartitioned (0007) / B partitioned (head)", f"{per_s(a)} / {per_s(b)}"),
        Row("  rounds A/B", rounds),
        Row("  rows in SQL = awards, every run", str(exact), "True", verdict(exact)),
    ]  # fmt: skip


def rebuild_rows(res: Results) -> list[Row]:
    target = f"<= {REBUILD_TARGET:g} s"
    if isinstance(res.rebuild, Skipped):
        return [Row("rebuild from SQL", str(res.rebuild), target, "n/a")]
    rb = res.rebuild
    rep = rb.report
    return [
        Row(f"rebuild {rep.activities:,} activities, {rep.users:,} users", f"{rb.seconds:.1f} s",
            target, verdict(rb.seconds <= REBUILD_TARGET)),
        Row("  rebuild rate", per_s(rep.activities / rb.seconds)),
        Row("  SQL read on its own (activities_by_user)", f"{rb.read_seconds:.1f} s"),
        Row("  users rebuilt / loaded", f"{rep.users:,} / {rb.users:,}", "equal",
            verdict(rep.users == rb.users)),
        Row("  users drifted (reconcile)", f"{rb.drifts:,}", "0", verdict(rb.drifts == 0)),
        Row("  boards written", f"{rep.boards:,}"),
        Row("  COPY load of the history (not timed)", f"{rb.load_seconds:.1f} s"),
    ]  # fmt: skip


# -- main --------------------------------------------------------------------------------------


def attempt(name: str, run: Callable[[], Any]) -> Any:
    """``run()``, or the :class:`Skipped` saying why it could not finish."""
    try:
        return run()
    except Skipped as why:
        return why
    except Exception as exc:  # noqa: BLE001 - reported in the table
        log(f"{name} failed: {exc!r}")
        return Skipped(f"failed: {exc!r}"[:100])


def measure(sizes: Sizes) -> Results:
    r = connect(redis_url())
    r.ping()
    fresh_db(r)  # refuse a foreign database before anything else
    try:
        pg = find_postgres()
    except Skipped as why:
        return Results(why, why, why, sizes, why)
    with bench_database(pg):
        schema = SqlStore(pg.url)
        schema.upgrade()
        schema.close()

        def drains() -> list[DrainResult]:
            out = []
            for batch in DRAIN_BATCHES:
                log(f"drain of {sizes.drain_awards:,} awards, batch {batch:,}")
                out.append(bench_drain(r, pg, sizes, batch))
            return out

        drain = attempt("drain", drains)
        log(f"A/B drains of {sizes.drain_awards:,} awards, {AB_ROUNDS} rounds")
        ab = attempt("A/B", lambda: bench_ab(r, pg, sizes))
        log(f"lag at {LAG_RATE:,} awards/s for {sizes.lag_seconds:g} s")
        lag = attempt("lag", lambda: bench_lag(r, pg, sizes))
        log(f"rebuild from {sizes.rebuild_activities:,} activities")
        rebuilt = attempt("rebuild", lambda: bench_rebuild(r, pg, sizes))
    fresh_db(r)
    return Results(drain, lag, rebuilt, sizes, ab)


def bench_ab(r: redis.Redis, pg: Postgres, sizes: Sizes) -> list[tuple[DrainResult, DrainResult]]:
    """The drain into the unpartitioned table (a second database at 0007) and into the
    partitioned one (``pg``), alternately."""
    unpartitioned = Postgres(pg.user, pg.host, pg.port, f"{pg.database}_unpartitioned")
    with bench_database(unpartitioned):
        schema = SqlStore(unpartitioned.url)
        schema.upgrade(AB_REVISION)
        schema.close()
        pairs = []
        for _ in range(AB_ROUNDS):
            a = bench_drain(r, unpartitioned, sizes, AB_BATCH)
            b = bench_drain(r, pg, sizes, AB_BATCH)
            pairs.append((a, b))
    empty_tables(pg)
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = parser("drain_bench", __doc__, "small sizes, for a smoke run").parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    res = measure(sizes)
    print(render([*drain_rows(res), *ab_rows(res), *lag_rows(res), *rebuild_rows(res)]))
    print(summary(args.quick, started, redis_url(), f"PostgreSQL database {PG_DATABASE}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
