"""RQ job functions. Module-level, importable, and idempotent: running one twice changes nothing
more than running it once.

A worker process builds its engine, SQL store and drainer once, from the settings, and reuses
them for every job (``scoring worker`` runs jobs in the worker process itself).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from datetime import date
from functools import lru_cache
from typing import Any

from engine.domain.errors import ConfigError
from engine.runtime.connect import REDIS_ERRORS, queue_redis_url
from engine.runtime.settings import get_settings
from engine.services import retention
from engine.services.facade import ScoringEngine
from engine.storage.outbox import raise_flag
from engine.storage.store import SqlStore
from engine.storage.webhook_store import WebhookDeliveries

from .drain import FLAG_HELD, Drainer, DrainReport
from .webhooks import WebhookOutlet

log = logging.getLogger(__name__)

#: A drain job stops after this long and queues its successor, so no job runs for hours.
DRAIN_SLICE_SECONDS = 60.0
#: Seconds the drain flag outlives a retry that a drain job, waiting out an SQL outage's
#: backoff, will make itself (if the job dies meanwhile, awards queue drains again after that).
RETRY_HOLD_SECONDS = 10.0
#: The worker logs a line on what it has written at most this often (seconds), not per job.
PROGRESS_SECONDS = 30.0

#: Set when the worker running the jobs was asked to stop (``scoring worker`` sets it on
#: SIGTERM or Ctrl-C): a lingering drain job then ends at once instead of at its slice's end.
stopping = threading.Event()


@lru_cache(maxsize=1)
def context() -> tuple[ScoringEngine, Drainer]:
    """This process's engine and drainer, built from the settings."""
    settings = get_settings()
    engine = ScoringEngine.from_settings(settings)
    store = sql_store(engine)
    drainer = Drainer(
        engine.redis,
        store,
        engine.keys,
        engine.rules,
        batch=settings.drain_batch,
        max_failures=settings.drain_max_failures,
        claim_idle_ms=settings.drain_claim_idle_ms,
        linger=settings.drain_linger_ms / 1000,
        webhooks=WebhookOutlet(WebhookDeliveries(store), webhook_queue(settings)),
    )
    return engine, drainer


def webhook_queue(settings: Any) -> Any:
    """The RQ queue of webhook deliveries (on the queues' Redis)."""
    import redis
    from rq import Queue

    return Queue(settings.webhook_queue, connection=redis.Redis.from_url(queue_redis_url(settings)))


def sql_store(engine: ScoringEngine) -> SqlStore:
    """The engine's SQL store (the audit trail), which the workers and the ``scoring`` commands
    need; an engine built by :meth:`ScoringEngine.from_settings` always has one."""
    if engine.store is None:
        raise ConfigError(
            "the scoring engine has no SQL store; build it with ScoringEngine.from_settings "
            "or pass store="
        )
    return engine.store


def drain_shard(shard: int) -> dict[str, Any]:
    """Write shard ``shard``'s outbox to SQL. Queued by the award path (one per shard at a time).

    If SQL cannot take the entries the job still succeeds (a failed job and its traceback per
    attempt would pile up for a day). It retries the shard itself after each backoff that fits
    in its time slice (1, 2, 4, 8 and 16 s: the first 31 s of an outage), keeping the shard's
    drain flag raised meanwhile so that no award queues another job; so drains resume within
    seconds of SQL's return though no award follows, and without the scheduler. Past that the
    report says ``sql_unavailable``, the flag lapses when the next retry is due, and the next
    award (or the sweep) queues it. An outage thus holds a worker per failing shard, at most one
    time slice at a time, as a long drain does.

    Once the outbox is empty the job lingers (the drainer's ``linger``, from
    ``SCORING_DRAIN_LINGER_MS``): it waits that long for more entries, writing them as they
    come, with the shard's drain flag held, so that awards at a low rate queue no job each; it
    ends after a linger with nothing new, at the end of its time slice, as soon as another job
    waits in the queue (this worker may be the only one), or when the worker is asked to stop.
    """
    engine, drainer = context()
    deadline = time.monotonic() + DRAIN_SLICE_SECONDS
    while True:
        report = drainer.drain(
            shard,
            max_seconds=max(0.0, deadline - time.monotonic()),
            linger=drainer.linger,
            should_yield=lambda: _should_yield(engine),
        )
        if not report.sql_unavailable or report.retry_in > deadline - time.monotonic() - 1:
            break
        # the retry is this job's: the flag outlives it a little, so no award queues another
        hold = report.retry_in + RETRY_HOLD_SECONDS
        engine.redis.set(engine.keys.drain_flag(shard), "1", px=round(hold * 1000))
        time.sleep(report.retry_in)
    if not report.complete and not report.sql_unavailable and not _held_by_another(engine, report):
        # this job was the one the flag stood for: its successor is queued whatever the flag
        # says (if it gave up waiting for the lock, the flag raised for it would otherwise keep
        # every award from queueing a drain until it lapses, once the holder is done)
        request_drain(engine, drainer, shard, force=True)
    if report.dead or report.failed:
        log.warning("drain of shard %s: %s", shard, report)
    progress.add(report)
    return asdict(report)


def _held_by_another(engine: ScoringEngine, report: DrainReport) -> bool:
    """Whether this job gave up waiting for its shard's lock while the holder is a lingering
    drain that holds the flag (its value says so): that run looks for unread entries when it
    ends and queues its own successor, so this job needs none (else two workers would pass
    successors to each other every lock wait while one drain lingers)."""
    return report.locked_out and engine.redis.get(engine.keys.drain_flag(report.shard)) == FLAG_HELD


def _should_yield(engine: ScoringEngine) -> bool:
    """Whether a lingering drain job should end now: the worker is stopping, or another job
    waits in the queue (for another shard, or a periodic job) that this worker may be the only
    one to run."""
    if stopping.is_set():
        return True
    queue = engine.drain_queue
    try:
        return queue is not None and queue.waiting() > 0
    except REDIS_ERRORS:
        return True  # the queue's Redis is away: stop lingering, the job ends as it would


class Progress:
    """What this worker's drain jobs wrote, logged as one line when the first entries reach SQL
    and then at most every :data:`PROGRESS_SECONDS` (a line per job would fill a terminal)."""

    def __init__(self, every: float = PROGRESS_SECONDS) -> None:
        self.every = every
        self.total = 0  # entries written by this worker
        self.jobs = 0  # drain jobs run by this worker
        self._written = self._jobs = 0  # since the last line
        self._since: float | None = None  # when the last line was logged (monotonic)
        self._lock = threading.Lock()

    def add(self, report: DrainReport) -> None:
        with self._lock:
            self.total += report.written
            self.jobs += 1
            self._written += report.written
            self._jobs += 1
            now = time.monotonic()
            if self._since is None:
                if report.written:
                    self._since = now
                    log.info(
                        "audit trail: the worker writes the outbox to SQL (%s entries so far)",
                        f"{report.written:,}",
                    )
                    self._written = self._jobs = 0
                return
            if self._written and now - self._since >= self.every:
                log.info(
                    "audit trail: %s outbox entries written to SQL in the last %.0f s "
                    "(%d drain jobs); %s since the worker started",
                    f"{self._written:,}",
                    now - self._since,
                    self._jobs,
                    f"{self.total:,}",
                )
                self._since = now
                self._written = self._jobs = 0


#: This worker process's drain progress.
progress = Progress()


def sweep(*, force: bool = False) -> list[int]:
    """Trim every shard's outbox (and forget the group's idle consumers), and queue a drain of
    every shard whose outbox has entries not yet in SQL (periodic); return the shards queued.
    Trimming here too bounds an outbox that no drain runs on (nothing new to write).
    ``force``: whatever the flags say (``scoring worker`` starting: see :func:`request_drain`)."""
    engine, drainer = context()
    queued = []
    for shard in range(engine.keys.shards):
        drainer.trim(shard)
        if request_drain(engine, drainer, shard, force=force):
            queued.append(shard)
    return queued


def create_weekly_goals() -> int:
    """Write this week's weekly_goal rows for users active in the last 4 weeks (Mondays)."""
    engine, _ = context()
    added = engine.create_weekly_goals()
    log.info("create_weekly_goals: %d rows added", added)
    return added


def check_streak_bonuses(day: str | None = None) -> dict[str, int]:
    """Pay the streak bonuses of UTC day ``day`` (ISO date; default: today). Daily, at the end
    of the day; a second run pays nobody twice."""
    engine, _ = context()
    report = engine.streak_bonuses(date.fromisoformat(day) if day else None)
    log.info("check_streak_bonuses %s: %s", day or "today", report)
    return report


def archive_periods() -> list[tuple[str, str, int]]:
    """Archive the final standings of the day, week and month that ended last (daily)."""
    engine, _ = context()
    done = engine.archive_ended_periods()
    log.info("archive_periods: %s", done or "nothing new")
    return done


def maintain_partitions() -> dict[str, Any]:
    """Make the audit trail's monthly partitions ahead and apply
    ``SCORING_ACTIVITY_RETENTION_MONTHS`` (daily; PostgreSQL, a no-op on SQLite)."""
    engine, _ = context()
    report = retention.maintain_partitions(
        sql_store(engine), engine.clock(),
        retention_months=get_settings().activity_retention_months,
        window_days=retention.longest_window_days(engine.rules),
    )  # fmt: skip
    if report.created or report.dropped or report.waiting:
        log.info("maintain_partitions: %s", report)
    return asdict(report)


def prune_webhook_log() -> int:
    """Delete the webhook deliveries delivered or failed more than ``SCORING_WEBHOOK_LOG_DAYS``
    days ago (daily); the number deleted."""
    engine, _ = context()
    deleted = engine.prune_webhook_deliveries(get_settings().webhook_log_days)
    if deleted:
        log.info("prune_webhook_log: %d deliveries deleted", deleted)
    return deleted


def backfill_achievements(*, force: bool = False) -> dict[str, Any] | None:
    """Grant the achievement levels users already qualify for, when the rules' achievements
    changed since the last backfill (``force``: whatever changed). Every minute; a run that
    overlaps another, or an award, grants each level once."""
    engine, _ = context()
    report = engine.backfill_achievements() if force else engine.backfill_achievements_if_changed()
    if report is None:
        return None
    log.info("backfill_achievements: %s", report)
    return asdict(report)


def run_decay() -> dict[str, Any]:
    """Decay the inactive users due this week (``[decay]``; nothing while it is off). Hourly;
    a run that overlaps another decays each user once per local week."""
    engine, _ = context()
    report = engine.run_decay()
    if report.decayed or report.failed:
        log.info("run_decay: %s", report)
    return asdict(report)


def request_drain(
    engine: ScoringEngine, drainer: Drainer, shard: int, *, force: bool = False
) -> bool:
    """Queue a drain of ``shard`` if it has a backlog and none is queued (nor, in an SQL outage,
    is its retry still to come: the flag stays raised until then); True if queued.

    ``force``: whatever the flag says, for a caller that knows the flag stands for no queued
    job: a drain job ending before the outbox is empty (it was that job), or a worker starting
    (after a crash, a raised flag may stand for a job lost with its caller)."""
    if drainer.backlog(shard) == 0:
        return False
    if force and engine.drain_queue is not None and shard in engine.drain_queue.queued():
        return False  # the flag stands for a job after all
    if not raise_flag(engine.redis, engine.keys.drain_flag(shard), force=force):
        return False  # a drain job is already queued
    engine.queue_drain(shard)
    return True
