"""Drain a shard's outbox into SQL, exactly once, whatever crashes.

Per batch: read entries through the consumer group ``sql`` (first those a dead consumer left
pending longer than the claim idle time, then new ones), write them to SQL in one transaction
(while the next batch is read and parsed)
(activities inserted with ``ON CONFLICT DO NOTHING``, snapshots upserted newest-version-wins),
commit, and only then acknowledge. A crash before the acknowledgement leaves the entries pending;
whoever claims them writes them again, which changes nothing. An entry that fails on its own
(SQL is reachable but refuses it, or it cannot be parsed) counts a failure; after
``max_failures`` it moves to the dead-letter stream and the rest keep flowing. If SQL cannot be
reached at all, nothing is acknowledged and the error propagates (the job fails; the entries
wait). The stream is trimmed only below its oldest unacknowledged entry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.exceptions import LockError, ResponseError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)

from engine.keys import Keys
from engine.periods import day_to_date
from engine.rules import Rules, reward_id
from engine.store import SqlStore

log = logging.getLogger(__name__)

GROUP = "sql"
_LAG_COUNT_LIMIT = 10_000
#: Seconds a drain holds its shard's lock without renewing it (it renews after every batch);
#: after a crash, the next drain of the shard waits this long at most.
LOCK_TTL = 30.0


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
    errors: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    quests: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    goals: dict[tuple[str, str, date], dict[str, Any]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # entry id -> why it cannot be parsed

    def write_to(self, store: SqlStore) -> None:
        store.write(
            self.activities, list(self.states.values()), list(self.profiles.values()),
            quests=list(self.quests.values()), goals=list(self.goals.values()),
        )  # fmt: skip


class Drainer:
    """Drains outbox streams into a :class:`~engine.store.SqlStore`.

    Args:
        redis: client of the scoring Redis (``decode_responses=True``).
        store: the SQL audit trail.
        keys: the engine's key builder (prefix and shard count).
        rules: the scoring rules (a new user's tier before any award).
        batch: entries per SQL transaction.
        max_failures: failures after which an entry moves to the dead-letter stream.
        claim_idle_ms: how long an entry stays pending before another consumer claims it.
        consumer: this consumer's name in the group (default: host and process id).
        lock_ttl: seconds the shard's drain lock lasts unless renewed (see :data:`LOCK_TTL`).
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

    def drain(
        self, shard: int, *, max_batches: int | None = None, max_seconds: float | None = None
    ) -> DrainReport:
        """Write what the shard's outbox holds to SQL until it is empty (or a limit is reached:
        ``report.complete`` is then False); return what was done."""
        report = DrainReport(shard)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        outbox = self.keys.outbox(shard)
        # one drain per shard at a time: a second one (a job queued while this one runs) waits
        lock = self.redis.lock(
            self.keys.drain_lock(shard), timeout=self.lock_ttl, blocking_timeout=self.lock_ttl + 5
        )
        if not lock.acquire():
            report.complete = False  # another drain holds the shard for too long
            return report
        try:
            # lowered first: an award arriving from now on raises it again and queues the next
            self.redis.delete(self.keys.drain_flag(shard))
            self._ensure_group(outbox)
            self._drain(shard, outbox, report, max_batches, deadline, lock)
        finally:
            with contextlib.suppress(LockError):
                lock.release()
        return report

    def _drain(
        self,
        shard: int,
        outbox: str,
        report: DrainReport,
        max_batches: int | None,
        deadline: float | None,
        lock: Any,
    ) -> None:
        """Read and parse the next batch while the last one is being written: the SQL work
        (mostly the database's) overlaps with the Python work of reading and parsing."""
        in_flight: tuple[Future[None], list[tuple[str, dict[str, str]]], _Batch] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-sql") as writer:
            try:
                while True:
                    if (max_batches is not None and report.batches >= max_batches) or (
                        deadline is not None and time.monotonic() > deadline
                    ):
                        report.complete = False
                        break
                    # entries left pending are claimed only when no write is in flight (which
                    # would otherwise be claimed back from under itself when claim_idle_ms = 0)
                    entries = self._read(outbox) if in_flight else self._next(outbox)
                    batch = self._parse(entries) if entries else None
                    if in_flight is not None:
                        self._settle(shard, *in_flight, report)
                        in_flight = None
                        lock.reacquire()  # keep the shard for another lock_ttl seconds
                        if batch is None:
                            continue  # nothing new: look for pending entries before stopping
                    elif batch is None:
                        break
                    report.batches += 1
                    in_flight = (writer.submit(self._write_batch, batch), entries, batch)
            finally:
                if in_flight is not None:
                    self._settle(shard, *in_flight, report)
        report.trimmed = self._trim(outbox)

    def _next(self, outbox: str) -> list[tuple[str, dict[str, str]]]:
        return self._claim(outbox) or self._read(outbox)

    def backlog(self, shard: int) -> int:
        """Entries of the shard's outbox not yet acknowledged (pending or never read). On
        Redis < 7 (the embedded server is 6.2) entries never read count up to 10,000 at most."""
        outbox = self.keys.outbox(shard)
        self._ensure_group(outbox)
        info = next(g for g in self.redis.xinfo_groups(outbox) if g["name"] == GROUP)
        lag = info.get("lag")
        if lag is None:  # Redis < 7 reports no lag: count what follows the last delivered entry
            start = _next_id(info["last-delivered-id"])
            lag = len(self.redis.xrange(outbox, start, "+", count=_LAG_COUNT_LIMIT))
        return int(info["pending"]) + int(lag)

    # -- reading --------------------------------------------------------------------------

    def _ensure_group(self, outbox: str) -> None:
        try:
            self.redis.xgroup_create(outbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _claim(self, outbox: str) -> list[tuple[str, dict[str, str]]]:
        """Entries other consumers (or this one, earlier) read but never acknowledged."""
        reply = self.redis.xautoclaim(
            outbox, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=self.batch
        )
        return [e for e in reply[1] if e and e[1] is not None]

    def _read(self, outbox: str) -> list[tuple[str, dict[str, str]]]:
        reply = self.redis.xreadgroup(GROUP, self.consumer, {outbox: ">"}, count=self.batch)
        return reply[0][1] if reply else []

    # -- writing --------------------------------------------------------------------------

    def _settle(
        self,
        shard: int,
        written: Future[None],
        entries: list[tuple[str, dict[str, str]]],
        batch: _Batch,
        report: DrainReport,
    ) -> None:
        """Wait for a batch's write; acknowledge it, or sort out which entries SQL refused."""
        try:
            written.result()
        except SQLAlchemyError as exc:
            if not _entry_error(exc):
                raise  # SQL is unreachable or broken: acknowledge nothing, count nothing
            self.store.ping()
            log.warning(
                "shard %s: a batch of %d failed (%s); writing one by one", shard, len(entries), exc
            )
            self._write_one_by_one(shard, entries, batch, report)
            return
        done = [i for i in batch.ids if i not in batch.broken]
        self._ack(shard, done)
        report.written += len(done)
        if batch.broken:
            by_id = dict(entries)
            for entry_id, why in batch.broken.items():
                self._failed(shard, entry_id, by_id[entry_id], why, report)

    def _write_batch(self, batch: _Batch) -> None:
        """One transaction; tried again if the database broke a deadlock by aborting it."""
        for attempt in range(3):
            try:
                batch.write_to(self.store)
                return
            except OperationalError as exc:
                if attempt == 2 or "deadlock" not in str(exc).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _write_one_by_one(
        self,
        shard: int,
        entries: list[tuple[str, dict[str, str]]],
        batch: _Batch,
        report: DrainReport,
    ) -> None:
        refused: list[tuple[str, dict[str, str], str]] = []
        written = 0
        first_error: SQLAlchemyError | None = None
        for entry_id, fields in entries:
            if entry_id in batch.broken:
                refused.append((entry_id, fields, batch.broken[entry_id]))
                continue
            single = self._parse([(entry_id, fields)])
            try:
                single.write_to(self.store)
            except SQLAlchemyError as exc:
                if not _entry_error(exc):
                    raise
                first_error = first_error or exc
                refused.append((entry_id, fields, f"{type(exc).__name__}: {exc}"))
                continue
            self._ack(shard, [entry_id])
            written += 1
        report.written += written
        sql_refused = len(refused) - len(batch.broken)
        if written == 0 and sql_refused > 1 and first_error is not None:
            # every readable entry refused alike: the schema or the code is at fault, not them
            raise first_error
        for entry_id, fields, why in refused:
            self._failed(shard, entry_id, fields, why, report)

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

    def _parse(self, entries: list[tuple[str, dict[str, str]]]) -> _Batch:
        batch = _Batch()
        now = datetime.now(UTC)
        for entry_id, f in entries:
            batch.ids.append(entry_id)
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
        batch.activities.append({
            "id": uuid.UUID(activity_id), "user_id": user, "amount": int(f["amount"]),
            "activity_type": f["type"], "description": f["desc"], "tier_at_time": f["tier"],
            "created_at": created, "total_points": total, "level": level,
            "current_streak_days": streak, "longest_streak_days": longest,
            "last_activity_date": last, "version": version,
        })  # fmt: skip
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

    # -- trimming -------------------------------------------------------------------------

    def _trim(self, outbox: str) -> int:
        """Drop entries below the oldest one not yet acknowledged (never an unread one)."""
        info = next(g for g in self.redis.xinfo_groups(outbox) if g["name"] == GROUP)
        pending = self.redis.xpending(outbox, GROUP)
        floor = pending["min"] if pending["pending"] else _next_id(info["last-delivered-id"])
        return int(self.redis.xtrim(outbox, minid=floor))


def _entry_error(exc: SQLAlchemyError) -> bool:
    """Whether SQL refused the data itself (a constraint, a value out of range, a value the
    driver cannot convert), as opposed to being unreachable or misconfigured (a missing table,
    a lost connection), which is no entry's fault and must not push entries to the dead letters.
    """
    if isinstance(exc, IntegrityError | DataError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"
