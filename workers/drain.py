"""Drain a shard's outbox into SQL, exactly once, whatever crashes.

Per batch: read entries through the consumer group ``sql`` (first those a dead consumer left
pending, then new ones), write them to SQL in one transaction (while the next batch is read and
parsed) (activities inserted with ``ON CONFLICT DO NOTHING``, snapshots upserted
newest-version-wins), commit, and only then acknowledge. A crash before the acknowledgement
leaves the entries pending; whoever claims them writes them again, which changes nothing. An
entry that fails on its own (SQL is reachable but refuses it, or it cannot be parsed) counts a
failure; after ``max_failures`` it moves to the dead-letter stream and the rest keep flowing.

One drain per shard at a time: a drain holds the shard's lock on a short lease
(:data:`LOCK_TTL`) that a thread of its own renews every third of it while the drain makes
progress. Holding the lock proves that no other drain is live, so a run's first pass over the
pending entries takes them all at once, however recently read (their reader is dead, or gave
the shard up); later claims in the run take only entries pending for ``claim_idle_ms``, so that
the run's own failures are not retried in a hot loop.

Worst-case recovery after a worker dies, counted from its death (or from the start of the next
drain of the shard, if that is later: the shard's next award queues one, the periodic sweep
within 60 s, or ``scoring worker --burst``):

- killed (SIGKILL, out of memory, host lost) or frozen (SIGSTOP): its lease lapses at most
  ``LOCK_TTL`` = 5 s after its last renewal; the waiting drain takes the lock within 0.1 s and
  writes what the dead one held in its first batches: at most 5 s.
- hung (alive, its drain stuck in a call that never returns): its renewer stops once the drain
  has made no progress for ``LOCK_GRACE`` = 30 s, or is ``LOCK_GRACE`` past the end of its
  time slice; the lease lapses ``LOCK_TTL`` later: at most 35 s after its last progress.

A worker that wakes up after losing its lease stops after the batch in hand (written again,
which changes nothing).

The shard's drain flag (see :mod:`engine.storage.outbox`) stands for the run while it reads.
A run with a *linger* (what drain jobs get: ``SCORING_DRAIN_LINGER_MS``, see
:func:`workers.jobs.drain_shard`) holds the flag until it ends: once the outbox is empty it
waits on the stream (``XREADGROUP BLOCK``, in steps of :data:`LINGER_STEP`) for up to the
linger for more entries, writes what comes at once, and ends only after a linger with nothing
new (or at the end of its time slice, or as soon as ``should_yield()`` says another job waits
for the worker). Awards meanwhile find the flag raised and queue no job, so at a low, steady
rate one job takes many awards instead of each award queueing one. The held flag lives one
lease (:data:`LOCK_TTL`) and is renewed by the run, so if the run dies it lapses within one
lease, as the lock does. When the run ends it lowers the flag, then looks once more for
entries never read (appended while the flag still stood): if there are any, its successor is
queued. A run without a linger (``linger=0``: direct drains, ``scoring worker --burst``, and
``SCORING_DRAIN_LINGER_MS=0``, the behaviour before lingering existed) lowers the flag once SQL
takes its first write: from then on an award queues the next drain, and what came before, this
run reads. If
SQL cannot take the entries at all (unreachable, or refusing every write alike: a missing
table), nothing is acknowledged or counted against an entry: the run stops, reports
``sql_unavailable`` and ``retry_in``, and the flag stays raised for a backoff
(:data:`OUTAGE_RETRY`: 1 s doubling to 60 s per failed attempt), so that awards queue no drain
job until the retry is due (the drain job waits out the shorter ones itself: see
:func:`workers.jobs.drain_shard`). The outage (since, attempts, error) lives in the shard's
``outbox:outage`` hash, so that whichever worker attempts logs only its start and its end; the
first run that commits ends it.

The stream is trimmed exactly below its oldest unacknowledged entry after every batch (never an
unread one), and consumers idle for :data:`CONSUMER_IDLE_MS` that hold nothing leave the group
(each worker process joins under a name of its own).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.exceptions import LockError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)

from engine.commands import forget_consumers
from engine.domain.keys import Keys, user_digest
from engine.domain.periods import day_to_date
from engine.domain.rules import Rules, reward_id
from engine.runtime.connect import REDIS_ERRORS
from engine.storage.outbox import GROUP, backlog, ensure_group, next_id
from engine.storage.store import SqlStore

from .webhooks import WebhookOutlet

log = logging.getLogger(__name__)

#: Seconds of a drain's lease on its shard's lock; renewed every third of it while the drain
#: makes progress. After a crash, the next drain of the shard waits this long at most.
LOCK_TTL = 5.0
#: Seconds without progress (or past the end of its time slice) after which a drain stops
#: renewing its lease, so that a hung process cannot hold its shard for ever.
LOCK_GRACE = 30.0
#: Seconds before the first retry of a shard after SQL failed it, and the most between two: the
#: wait doubles with each failed attempt.
OUTAGE_RETRY = (1.0, 60.0)
#: Seconds the outage record of a shard outlives its last failed attempt.
OUTAGE_TTL = 3600
#: A consumer of the group idle this long (ms) and holding no entry is deleted.
CONSUMER_IDLE_MS = 600_000
#: Seconds of one blocking read while a run lingers: between two, it checks whether to yield.
LINGER_STEP = 0.1
#: The drain flag's value while a lingering run holds it (the scripts raise it as "1"): such a
#: run looks for unread entries when it ends, so a drain locked out meanwhile needs no successor.
FLAG_HELD = "held"


@dataclass
class DrainReport:
    """What one drain run did."""

    shard: int
    written: int = 0  # entries written to SQL and acknowledged
    dead: int = 0  # entries moved to the dead-letter stream
    failed: int = 0  # entries that failed this time and stay pending
    batches: int = 0
    trimmed: int = 0
    complete: bool = True  # False when a limit stopped the run before the outbox was empty
    locked_out: bool = False  # another drain held the shard's lock too long: nothing was done
    sql_unavailable: bool = False  # SQL could not take the entries; they wait for the retry
    retry_in: float = 0.0  # then: seconds until the shard's retry is due (its flag's lifetime)
    dropped: int = 0  # entries of deleted users acknowledged without being written
    errors: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    quests: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    goals: dict[tuple[str, str, date], dict[str, Any]] = field(default_factory=dict)
    achievements: list[dict[str, Any]] = field(default_factory=list)
    freezes: dict[str, dict[str, Any]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # entry id -> why it cannot be parsed
    dropped: int = 0  # entries of deleted users (in ids, to be acknowledged; nothing written)
    # webhooks (see workers.webhooks): activities that changed the tier or level (the activity,
    # the tier and level before), streak milestone rewards (the activity, the reward's key)
    changes: list[tuple[dict[str, Any], str, int]] = field(default_factory=list)
    milestones: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # written with the batch

    def write_to(self, store: SqlStore, webhooks: WebhookOutlet | None = None) -> None:
        self.deliveries = webhooks.rows(self) if webhooks is not None else []
        store.write(
            self.activities, list(self.states.values()), list(self.profiles.values()),
            quests=list(self.quests.values()), goals=list(self.goals.values()),
            achievements=self.achievements, freezes=list(self.freezes.values()),
            deliveries=self.deliveries,
        )  # fmt: skip


@dataclass(frozen=True)
class _Outage:
    """A shard's SQL outage as its record in Redis holds it."""

    since_ms: int  # wall-clock time of the first failed attempt
    attempts: int  # failed attempts so far


class _Lease:
    """A drain's hold on its shard's lock: a short lease that a thread renews while the drain
    makes progress, so that a dead process frees its shard within one lease, and a hung one
    within ``grace`` and one lease, while a long drain keeps it as long as it needs.

    The lock must be built with ``thread_local=False`` (the renewing thread uses its token).
    ``lost`` becomes True when the lease is no longer this drain's to keep (it stopped renewing,
    or found it taken); the drain then stops after the batch in hand. ``wanted`` becomes True
    when, at a beat, a user deletion waits for the lock (its ``wanted`` key is set): the drain
    then ends its run after the batch in hand too, and its successor is queued.
    """

    def __init__(
        self,
        lock: Any,
        shard: int,
        ttl: float,
        grace: float,
        deadline: float | None,
        wanted: tuple[Any, str] | None = None,
    ) -> None:
        self.lock = lock
        self.wanted = False
        self._wanted_key = wanted
        self.shard = shard
        self.ttl = ttl
        self.grace = grace
        self.deadline = deadline
        self.lost = False
        self._last_progress = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"drain-lease-{shard}", daemon=True
        )

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def progress(self) -> None:
        """The drain moved on (a batch read or settled)."""
        self._last_progress = time.monotonic()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            now = time.monotonic()
            overran = self.deadline is not None and now > self.deadline + self.grace
            if overran or now - self._last_progress > self.grace:
                self.lost = True
                log.warning(
                    "shard %s: the drain has made no progress for %.0f s (or overran its "
                    "time slice); it gives up the shard",
                    self.shard,
                    now - self._last_progress,
                )
                return
            try:
                self.lock.reacquire()
                if self._wanted_key is not None:
                    client, key = self._wanted_key
                    self.wanted = self.wanted or bool(client.exists(key))
            except LockError:
                self.lost = True
                log.warning(
                    "shard %s: the drain lost its lock (its lease lapsed); it stops", self.shard
                )
                return
            except REDIS_ERRORS:
                continue  # Redis away for a moment: the next beat tries again


@dataclass
class _Run:
    """One drain run of one shard (a Drainer may run several at once, from several threads)."""

    shard: int
    outbox: str
    report: DrainReport
    lease: _Lease
    max_batches: int | None
    deadline: float | None
    outage: _Outage | None  # SQL was failing the shard when the run began, and still may be
    linger: float = 0.0  # seconds to wait for more entries once the outbox is empty
    should_yield: Callable[[], bool] | None = None  # True: stop lingering (another job waits)
    sql_ok: bool = False  # SQL took a write (or answered), and any outage was ended
    flag_lowered: bool = False  # the drain flag was lowered
    flag_renewed: float = 0.0  # when a lingering run last renewed the flag it holds (monotonic)
    claim_from: str | None = None  # the first pass's next XAUTOCLAIM start; None once done
    claim_until: str = "0-0"  # the newest entry pending when the run began
    #: digests of the users deleted (tombstones in force) when the run began: their entries
    #: are dropped (a deletion takes the shard's lock, so none is deleted during the run)
    gone: frozenset[str] = frozenset()

    @property
    def holds_flag(self) -> bool:
        """Whether the run keeps the drain flag raised until it ends (it lingers)."""
        return self.linger > 0

    def should_stop(self) -> bool:
        return (
            (self.max_batches is not None and self.report.batches >= self.max_batches)
            or self.out_of_time()
            or self.lease.lost
            or self.lease.wanted
        )

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


class Drainer:
    """Drains outbox streams into a :class:`~engine.storage.store.SqlStore`.

    Args:
        redis: client of the scoring Redis (``decode_responses=True``).
        store: the SQL audit trail.
        keys: the engine's key builder (prefix and shard count).
        rules: the scoring rules (a new user's tier before any award).
        batch: entries per SQL transaction.
        max_failures: failures after which an entry moves to the dead-letter stream.
        claim_idle_ms: how long an entry stays pending before a claim other than the run's
            first pass takes it (in practice: how long the run's own failures wait to be retried).
        consumer: this consumer's name in the group (default: host and process id).
        lock_ttl: seconds of the lease on the shard's lock (see :data:`LOCK_TTL`).
        lock_grace: seconds without progress, or past the time slice, after which the lease is
            no longer renewed (see :data:`LOCK_GRACE`).
        outage_retry: seconds before the first retry after SQL failed, and the most between two
            (see :data:`OUTAGE_RETRY`).
        consumer_idle_ms: idle time after which a consumer that holds nothing is deleted.
        linger: seconds the drain *jobs* of this drainer (:func:`workers.jobs.drain_shard`)
            wait for more entries once the outbox is empty (see :meth:`drain`); 0: none, the
            flag is lowered at the first write. :meth:`drain` itself lingers only when told.
        webhooks: where the events of the batches written go (their delivery rows are
            written in each batch's transaction, their jobs queued once it commits); None: no
            webhooks.
    """

    def __init__(
        self,
        redis: Any,
        store: SqlStore,
        keys: Keys,
        rules: Rules,
        *,
        batch: int = 1000,
        max_failures: int = 5,
        claim_idle_ms: int = 30_000,
        consumer: str | None = None,
        lock_ttl: float = LOCK_TTL,
        lock_grace: float = LOCK_GRACE,
        outage_retry: tuple[float, float] = OUTAGE_RETRY,
        consumer_idle_ms: int = CONSUMER_IDLE_MS,
        linger: float = 0.0,
        webhooks: WebhookOutlet | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self.rules = rules
        self.batch = batch
        self.max_failures = max_failures
        self.claim_idle_ms = claim_idle_ms
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.lock_ttl = lock_ttl
        self.lock_grace = lock_grace
        self.outage_retry = outage_retry
        self.consumer_idle_ms = consumer_idle_ms
        self.linger = linger
        self.webhooks = webhooks

    def drain(
        self,
        shard: int,
        *,
        max_batches: int | None = None,
        max_seconds: float | None = None,
        linger: float = 0.0,
        should_yield: Callable[[], bool] | None = None,
    ) -> DrainReport:
        """Write what the shard's outbox holds to SQL until it is empty (or a limit is reached:
        ``report.complete`` is then False); return what was done. If SQL cannot take the
        entries, ``report.sql_unavailable`` is True and the shard's retry waits its backoff.

        ``linger``: once the outbox is empty, wait up to this many seconds for more entries
        (and write them) before ending, holding the shard's drain flag meanwhile so that awards
        queue no job; the wait starts again after each batch. It ends early when ``max_seconds``
        is up or ``should_yield()`` is true (checked every :data:`LINGER_STEP`)."""
        report = DrainReport(shard)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        # one drain per shard at a time: a second one (a job queued while this one runs) waits
        # up to one lease and a little more, which outlasts a dead holder
        lock = self.redis.lock(
            self.keys.drain_lock(shard),
            timeout=self.lock_ttl,
            blocking_timeout=self.lock_ttl + 5,
            thread_local=False,
        )
        self._make_way(shard)
        if not lock.acquire():
            report.complete, report.locked_out = False, True  # another drain holds the shard
            return report
        try:
            wanted = (self.redis, self.keys.drain_wanted(shard))
            with _Lease(lock, shard, self.lock_ttl, self.lock_grace, deadline, wanted) as lease:
                outbox, outage = self.keys.outbox(shard), self._outage(shard)
                self._run(_Run(shard, outbox, report, lease, max_batches, deadline, outage,
                               linger=max(0.0, linger), should_yield=should_yield,
                               gone=self._gone(shard)))  # fmt: skip
        finally:
            with contextlib.suppress(LockError):
                lock.release()
        return report

    def _make_way(self, shard: int) -> None:
        """While a user deletion waits for the shard's lock (its ``wanted`` key is set, for
        seconds at most), wait with it: it goes first. One EXISTS a run when none waits."""
        wanted = self.keys.drain_wanted(shard)
        until = time.monotonic() + self.lock_ttl + 5
        while self.redis.exists(wanted) and time.monotonic() < until:
            time.sleep(LINGER_STEP / 2)

    def _gone(self, shard: int) -> frozenset[str]:
        """The digests of the shard's users whose tombstones are in force (usually none)."""
        now_ms = int(time.time() * 1000)
        return frozenset(self.redis.zrangebyscore(self.keys.tombstones(shard), now_ms, "+inf"))

    def _run(self, run: _Run) -> None:
        """One run, under the shard's lock: drain, end or extend an SQL outage, trim."""
        # the flag lapses within one lease unless this run lowers it (SQL took a write), keeps
        # it (SQL failed) or renews it (it lingers): if the run dies first, the next award
        # queues a drain. A lingering run raises it for itself: while it runs, no award queues
        flag = self.keys.drain_flag(run.shard)
        if run.holds_flag:
            self.redis.set(flag, FLAG_HELD, px=round(self.lock_ttl * 1000))
            run.flag_renewed = time.monotonic()
        else:
            self.redis.pexpire(flag, round(self.lock_ttl * 1000))
        self._ensure_group(run.outbox)
        self._start_first_pass(run)
        try:
            self._drain(run)
            if not run.sql_ok:  # nothing was written
                if run.outage is not None:
                    self.store.ping()  # is SQL back?
                self._sql_ok(run)
            self._lower_flag(run)  # a lingering run's: from now on an award queues a drain
            if run.report.complete and self._unread(run.outbox):
                # appended after the last read: while the flag was still raised, or by an award
                # whose job was never queued (its caller died, or its reply was lost); the
                # run's successor takes them
                run.report.complete = False
        except SQLAlchemyError as exc:
            self._sql_failed(run, exc)
        run.report.trimmed += self.trim(run.shard)

    def _drain(self, run: _Run) -> None:
        """Read and parse the next batch while the last one is being written: the SQL work
        (mostly the database's) overlaps with the Python work of reading and parsing."""
        in_flight: tuple[Future[None], list[tuple[str, dict[str, str]]], _Batch] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-sql") as writer:
            try:
                while True:
                    run.lease.progress()
                    if run.should_stop():
                        run.report.complete = False
                        break
                    self._renew_flag(run)
                    # entries left pending are claimed only when no write is in flight (which
                    # would otherwise be claimed back from under itself when claim_idle_ms = 0)
                    entries = self._read(run.outbox) if in_flight else self._next(run)
                    if not entries and in_flight is None:
                        entries = self._linger(run)  # the outbox is empty: wait for more
                    batch = self._parse(entries, run.gone) if entries else None
                    if in_flight is not None:
                        settling, in_flight = in_flight, None
                        self._settle(run, *settling)
                        run.report.trimmed += self._trim(run.outbox)
                        if batch is None:
                            continue  # nothing new: look for pending entries before stopping
                        if run.lease.lost:  # what was read waits for the shard's next drain
                            run.report.complete = False
                            break
                    elif batch is None:
                        break
                    run.report.batches += 1
                    in_flight = (writer.submit(self._write_batch, batch), entries, batch)
            finally:
                if in_flight is not None:
                    self._settle(run, *in_flight)

    def _next(self, run: _Run) -> list[tuple[str, dict[str, str]]]:
        return self._claim(run) or self._read(run.outbox)

    def _linger(self, run: _Run) -> list[tuple[str, dict[str, str]]]:
        """The outbox is empty: wait up to the run's linger for new entries (blocking reads of
        :data:`LINGER_STEP`); the first that arrive, or nothing if the linger ran out, the time
        slice is up, the lease was lost or another job waits for this worker."""
        if run.linger <= 0:
            return []
        until = time.monotonic() + run.linger
        while True:
            left = until - time.monotonic()
            if left <= 0 or run.out_of_time() or run.lease.lost or run.lease.wanted:
                return []
            if run.should_yield is not None and run.should_yield():
                return []
            run.lease.progress()
            self._renew_flag(run)
            block = max(1, round(min(left, LINGER_STEP) * 1000))
            reply = self.redis.xreadgroup(
                GROUP, self.consumer, {run.outbox: ">"}, count=self.batch, block=block
            )
            if reply and reply[0][1]:
                return list(reply[0][1])

    def _renew_flag(self, run: _Run) -> None:
        """A lingering run keeps the drain flag it holds alive, one lease at a time (renewed
        every third of one), so that it lapses within a lease of the run's death."""
        if not run.holds_flag or run.flag_lowered:
            return
        now = time.monotonic()
        if now - run.flag_renewed >= self.lock_ttl / 3:
            run.flag_renewed = now
            self.redis.pexpire(self.keys.drain_flag(run.shard), round(self.lock_ttl * 1000))

    def backlog(self, shard: int) -> int:
        """Entries of the shard's outbox not yet in SQL (:func:`~engine.storage.outbox.backlog`)."""
        return backlog(self.redis, self.keys.outbox(shard))

    # -- reading --------------------------------------------------------------------------

    def _ensure_group(self, outbox: str) -> None:
        ensure_group(self.redis, outbox)

    def _start_first_pass(self, run: _Run) -> None:
        """Bound the run's first pass over the pending entries by the newest pending now."""
        pending = self.redis.xpending(run.outbox, GROUP)
        if pending["pending"]:
            run.claim_from, run.claim_until = "0-0", pending["max"]

    def _claim(self, run: _Run) -> list[tuple[str, dict[str, str]]]:
        """Entries read but never acknowledged. The run's first pass (over those pending when
        it began) takes them whatever their idle time: this drain holds the shard's lock, so
        whoever read them is dead or gave the shard up. Later claims take only entries idle
        for ``claim_idle_ms`` (this run's own failures wait that long before a retry)."""
        if run.claim_from is None:
            reply = self.redis.xautoclaim(
                run.outbox,
                GROUP,
                self.consumer,
                self.claim_idle_ms,
                start_id="0-0",
                count=self.batch,
            )
            return [e for e in reply[1] if e and e[1] is not None]
        reply = self.redis.xautoclaim(
            run.outbox, GROUP, self.consumer, 0, start_id=run.claim_from, count=self.batch
        )
        until = _id_key(run.claim_until)
        cursor = reply[0]
        run.claim_from = None if cursor == "0-0" or _id_key(cursor) > until else cursor
        # past the bound: entries this run read itself (they stay pending, and wait)
        return [e for e in reply[1] if e and e[1] is not None and _id_key(e[0]) <= until]

    def _unread(self, outbox: str) -> bool:
        """Whether the outbox holds entries the group has never delivered."""
        info = next(g for g in self.redis.xinfo_groups(outbox) if g["name"] == GROUP)
        return bool(
            self.redis.xinfo_stream(outbox)["last-generated-id"] != info["last-delivered-id"]
        )

    def _read(self, outbox: str) -> list[tuple[str, dict[str, str]]]:
        reply = self.redis.xreadgroup(GROUP, self.consumer, {outbox: ">"}, count=self.batch)
        return reply[0][1] if reply else []

    # -- writing --------------------------------------------------------------------------

    def _settle(
        self,
        run: _Run,
        written: Future[None],
        entries: list[tuple[str, dict[str, str]]],
        batch: _Batch,
    ) -> None:
        """Wait for a batch's write; acknowledge it, or sort out which entries SQL refused."""
        shard, report = run.shard, run.report
        try:
            written.result()
        except SQLAlchemyError as exc:
            if not _entry_error(exc):
                raise  # SQL is unreachable or broken: acknowledge nothing, count nothing
            self.store.ping()
            log.warning(
                "shard %s: a batch of %d failed (%s); writing one by one", shard, len(entries), exc
            )
            self._write_one_by_one(run, entries, batch)
            return
        self._sql_ok(run)
        done = [i for i in batch.ids if i not in batch.broken]
        self._ack(shard, done)
        self._committed(batch)
        report.written += len(done) - batch.dropped
        report.dropped += batch.dropped
        if batch.broken:
            by_id = dict(entries)
            for entry_id, why in batch.broken.items():
                self._failed(shard, entry_id, by_id[entry_id], why, report)

    def _write_batch(self, batch: _Batch) -> None:
        """One transaction; tried again if the database broke a deadlock by aborting it."""
        for attempt in range(3):
            try:
                batch.write_to(self.store, self.webhooks)
                return
            except OperationalError as exc:
                if attempt == 2 or "deadlock" not in str(exc).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _committed(self, batch: _Batch) -> None:
        """A batch is in SQL: queue the delivery jobs of its webhook events."""
        if self.webhooks is not None and batch.deliveries:
            self.webhooks.enqueue(batch.deliveries)

    def _write_one_by_one(
        self, run: _Run, entries: list[tuple[str, dict[str, str]]], batch: _Batch
    ) -> None:
        shard, report = run.shard, run.report
        refused: list[tuple[str, dict[str, str], str]] = []
        written = 0
        for entry_id, fields in entries:
            if entry_id in batch.broken:
                refused.append((entry_id, fields, batch.broken[entry_id]))
                continue
            single = self._parse([(entry_id, fields)], run.gone)
            if single.dropped:  # a deleted user's: acknowledged, never written
                self._ack(shard, [entry_id])
                report.dropped += 1
                continue
            try:
                single.write_to(self.store, self.webhooks)
            except SQLAlchemyError as exc:
                if not _entry_error(exc):
                    raise
                refused.append((entry_id, fields, f"{type(exc).__name__}: {exc}"))
                continue
            self._sql_ok(run)
            self._ack(shard, [entry_id])
            self._committed(single)
            written += 1
        report.written += written
        # Every entry refused is counted, even when none of the batch went in: a batch can be
        # made only of entries that failed before (the claims of a later run), and a database
        # that cannot take any write fails with an error that is no entry's (a missing table
        # or column, a lost connection), which never reaches this point.
        for entry_id, fields, why in refused:
            self._failed(shard, entry_id, fields, why, report)

    # -- SQL outages ----------------------------------------------------------------------

    def _outage(self, shard: int) -> _Outage | None:
        record = self.redis.hgetall(self.keys.drain_outage(shard))
        if not record.get("attempts"):
            return None
        return _Outage(int(record.get("since", 0)), int(record["attempts"]))

    def _sql_failed(self, run: _Run, exc: SQLAlchemyError) -> None:
        """SQL cannot take the shard's entries: they wait, unacknowledged and uncounted. The
        shard's drain flag stays raised for the next backoff, so that awards queue no drain
        until the retry is due (then the next award, or the sweep, queues one); a log line
        when the outage begins, none for the attempts that follow."""
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        record = self.keys.drain_outage(run.shard)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(record, "since", int(time.time() * 1000))
        pipe.hincrby(record, "attempts", 1)
        pipe.hset(record, "error", why)
        pipe.expire(record, OUTAGE_TTL)
        attempts = int(pipe.execute()[1])
        first, longest = self.outage_retry
        wait = min(first * 2 ** min(attempts - 1, 30), longest)
        self.redis.set(self.keys.drain_flag(run.shard), "1", px=max(1, round(wait * 1000)))
        run.report.sql_unavailable = True
        run.report.retry_in = wait
        run.report.complete = False
        run.report.errors.append(f"sql: {why}")
        if attempts == 1:
            log.warning(
                "shard %s: SQL unavailable (%s); the outbox keeps its entries, and its "
                "drain retries after %g s, doubling to %g s",
                run.shard,
                why,
                first,
                longest,
            )
        else:
            log.debug(
                "shard %s: SQL still unavailable after %d attempts (%s); next in %g s",
                run.shard,
                attempts,
                why,
                wait,
            )

    def _sql_ok(self, run: _Run) -> None:
        """SQL took a write (or, with nothing to write, answered): end the shard's outage, and,
        unless the run holds the flag until it ends (it lingers), lower the shard's drain flag
        once, so that an award from now on queues the next drain (this run reads on until the
        outbox is empty, so it takes whatever came before). Kept raised until then, the flag
        spares the first failed attempt of an outage the job that every award arriving
        meanwhile would queue."""
        if run.sql_ok:
            return
        run.sql_ok = True
        if not run.holds_flag:
            self._lower_flag(run)
        outage, run.outage = run.outage, None
        if outage is None:
            return
        self.redis.delete(self.keys.drain_outage(run.shard))
        seconds = max(0.0, time.time() - outage.since_ms / 1000)
        log.warning(
            "shard %s: SQL reachable again after %.1f s and %d failed attempts",
            run.shard,
            seconds,
            outage.attempts,
        )

    def _lower_flag(self, run: _Run) -> None:
        """Lower the shard's drain flag (once): the next award queues a drain."""
        if run.flag_lowered:
            return
        run.flag_lowered = True
        self.redis.delete(self.keys.drain_flag(run.shard))

    def _failed(
        self, shard: int, entry_id: str, fields: dict[str, str], why: str, report: DrainReport
    ) -> None:
        """Count a failure of one entry; past the limit, move it to the dead-letter stream."""
        failures = self.redis.hincrby(self.keys.drain_failures(shard), entry_id, 1)
        report.errors.append(f"{entry_id}: {why}")
        if failures < self.max_failures:
            report.failed += 1
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(
            self.keys.dead_letters(shard), {**fields, "source_id": entry_id, "error": why[:1000]}
        )
        pipe.xack(self.keys.outbox(shard), GROUP, entry_id)
        pipe.hdel(self.keys.drain_failures(shard), entry_id)
        pipe.execute()
        report.dead += 1
        log.error("shard %s: outbox entry %s moved to the dead letters after %d failures: %s",
                  shard, entry_id, failures, why)  # fmt: skip

    def _ack(self, shard: int, ids: list[str]) -> None:
        if ids:
            self.redis.xack(self.keys.outbox(shard), GROUP, *ids)

    def _parse(
        self, entries: list[tuple[str, dict[str, str]]], gone: frozenset[str] = frozenset()
    ) -> _Batch:
        """The batch of ``entries``; those of the users in ``gone`` (digests of deleted users)
        are dropped: acknowledged with the batch, never written."""
        batch = _Batch()
        now = datetime.now(UTC)
        for entry_id, f in entries:
            batch.ids.append(entry_id)
            if gone and user_digest(f.get("user", "")) in gone:
                batch.dropped += 1
                continue
            try:
                kind = f.get("e")
                if kind is None:
                    self._parse_award(f, now, batch)
                elif kind == "profile":
                    self._parse_profile(f, now, batch)
                elif kind == "quest":
                    self._parse_quest(f, batch)
                elif kind == "goal":
                    self._parse_goal(f, batch)
                elif kind == "ach":
                    self._parse_achievement(f, batch)
                elif kind == "freeze":
                    self._parse_freeze(entry_id, f, now, batch)
                else:
                    raise ValueError(f"unknown entry kind {kind!r}")
            except (KeyError, ValueError, TypeError) as exc:
                batch.broken[entry_id] = f"unreadable entry: {type(exc).__name__}: {exc}"
        return batch

    def _parse_award(self, f: dict[str, str], now: datetime, batch: _Batch) -> None:
        total, level, streak, longest, last_day, version = (int(x) for x in f["state"].split())
        user = f["user"]
        created = datetime.fromtimestamp(int(f["at"]) / 1000, tz=UTC)
        last = day_to_date(last_day)
        # a reward's entry carries its key; its id is derived from it (the same reward, one row)
        activity_id = f["id"] if "id" in f else reward_id(f["key"])
        activity = {
            "id": uuid.UUID(activity_id), "user_id": user, "amount": int(f["amount"]),
            "activity_type": f["type"], "description": f["desc"], "tier_at_time": f["tier"],
            "created_at": created, "total_points": total, "level": level,
            "current_streak_days": streak, "longest_streak_days": longest,
            "last_activity_date": last, "version": version,
            "frozen_days": _frozen_days(f.get("frozen")),
            # a seasonal event's multiplier, when one applied (the script then adds these)
            "base_amount": int(f["base"]) if "base" in f else None,
            "multiplier": float(f["mult"]) if "mult" in f else None,
            "event_id": f.get("event"),
            # an adjustment that reverses an activity names it (lua/adjust.lua)
            "reverses": uuid.UUID(f["rev"]) if "rev" in f else None,
        }  # fmt: skip
        batch.activities.append(activity)
        if "otier" in f:  # the tier or level changed (lua/award.lua)
            batch.changes.append((activity, f["otier"], int(f["olevel"])))
        if "key" in f and f["key"].startswith("streak:"):
            batch.milestones.append((activity, f["key"]))
        held = batch.states.get(user)
        if held is None or held["state_version"] < version:
            batch.states[user] = {
                "user_id": user, "total_points": total, "tier": f["tier"], "level": level,
                "current_streak_days": streak, "longest_streak_days": longest,
                "last_activity_date": last, "state_version": version, "updated_at": now,
            }  # fmt: skip

    def _parse_profile(self, f: dict[str, str], now: datetime, batch: _Batch) -> None:
        user, version = f["user"], int(f["version"])
        held = batch.profiles.get(user)
        if held is None or held["profile_version"] < version:
            batch.profiles[user] = {
                "user_id": user, "username": f.get("username"),
                "display_name": f.get("display_name"), "time_zone": f.get("tz"),
                "profile_version": version, "updated_at": now,
                "tier": self.rules.tier_names[0],
            }  # fmt: skip

    def _parse_quest(self, f: dict[str, str], batch: _Batch) -> None:
        """A user's side quest moved on: the row with the most progress wins, completed last."""
        user, quest = f["user"], int(f["quest"])
        completed = f["completed"]
        row = {
            "user_id": user, "side_quest_id": quest, "status": f["status"],
            "current_progress": int(f["progress"]), "target_progress": int(f["target"]),
            "is_completed": f["status"] == "completed", "points_awarded": int(f["reward"]),
            "started_at": datetime.fromtimestamp(int(f["started"]) / 1000, tz=UTC),
            "completed_at": (
                datetime.fromtimestamp(int(completed) / 1000, tz=UTC) if completed else None
            ),
        }  # fmt: skip
        held = batch.quests.get((user, quest))
        if held is None or (row["is_completed"], row["current_progress"]) >= (
            held["is_completed"],
            held["current_progress"],
        ):
            batch.quests[(user, quest)] = row

    def _parse_goal(self, f: dict[str, str], batch: _Batch) -> None:
        """A weekly goal completed (its reward is an activity entry of its own)."""
        start = day_to_date(int(f["week"]) * 7 - 3)  # week n starts on day 7n - 3, a Monday
        user, goal = f["user"], f["goal"]
        row = {
            "user_id": user, "goal_type": goal, "week_start": start,
            "week_end": start + timedelta(days=6), "current_progress": int(f["progress"]),
            "target_progress": int(f["target"]), "is_completed": True,
            "points_reward": int(f["reward"]),
        }  # fmt: skip
        batch.goals[(user, goal, start)] = row

    def _parse_freeze(self, entry_id: str, f: dict[str, str], now: datetime, batch: _Batch) -> None:
        """The streak freezes a user holds changed (earned, spent or granted): the latest wins."""
        ms, _, seq = entry_id.partition("-")
        user, order = f["user"], int(ms) * 1_000_000 + int(seq or 0)
        held = batch.freezes.get(user)
        if held is None or held["seq"] < order:
            batch.freezes[user] = {"user_id": user, "held": int(f["held"]), "seq": order,
                                   "updated_at": now}  # fmt: skip

    def _parse_achievement(self, f: dict[str, str], batch: _Batch) -> None:
        """An achievement level earned (a reward it paid is an activity entry of its own)."""
        batch.achievements.append({
            "user_id": f["user"], "achievement_id": f["ach"], "level": int(f["level"]),
            "earned_at": datetime.fromtimestamp(int(f["at"]) / 1000, tz=UTC),
            "points_reward": int(f["reward"]),
        })  # fmt: skip

    # -- trimming -------------------------------------------------------------------------

    def trim(self, shard: int) -> int:
        """Drop the shard's acknowledged entries and forget its idle consumers that hold
        nothing; return the entries dropped. Safe without the shard's lock (it never drops an
        unacknowledged entry); the periodic sweep runs it on every shard, for what a drain left
        (one killed between its last acknowledgement and its trim, say)."""
        outbox = self.keys.outbox(shard)
        self._ensure_group(outbox)
        trimmed = self._trim(outbox)
        self._forget_idle_consumers(shard)
        return trimmed

    def _trim(self, outbox: str) -> int:
        """Drop entries below the oldest one not yet acknowledged (never an unread one). Exact:
        ``XTRIM MINID ~`` drops only whole stream nodes, at most 100 of them per call, and left
        thousands of acknowledged entries behind every drain."""
        # the group first: its last delivered id only grows, so a read between the two calls
        # leaves the floor at or below what it read
        info = next(g for g in self.redis.xinfo_groups(outbox) if g["name"] == GROUP)
        pending = self.redis.xpending(outbox, GROUP)
        floor = pending["min"] if pending["pending"] else next_id(info["last-delivered-id"])
        return int(self.redis.xtrim(outbox, minid=floor, approximate=False))

    def _forget_idle_consumers(self, shard: int) -> int:
        """Delete the consumers idle for ``consumer_idle_ms`` that hold no entry: each worker
        process joins the group under a name of its own, which would otherwise stay for ever."""
        idle = [
            c["name"]
            for c in self.redis.xinfo_consumers(self.keys.outbox(shard), GROUP)
            if not c["pending"]
            and c["idle"] >= self.consumer_idle_ms
            and c["name"] != self.consumer
        ]
        if not idle:
            return 0
        return forget_consumers.run(self.redis, self.keys, shard, GROUP, idle)


def _frozen_days(days: str | None) -> str | None:
    """An award entry's ``frozen`` (local day numbers, ","-joined) as the ``frozen_days``
    column has it: ISO dates joined by ","; None when the award froze no day."""
    if not days:
        return None
    return ",".join(day_to_date(int(d)).isoformat() for d in days.split(","))


def _entry_error(exc: SQLAlchemyError) -> bool:
    """Whether SQL refused the data itself (a constraint, a value out of range, a value the
    driver cannot convert), as opposed to being unreachable or misconfigured (a missing table,
    a lost connection), which is no entry's fault and must not push entries to the dead letters.
    """
    if isinstance(exc, IntegrityError | DataError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id in the order of the stream."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)
