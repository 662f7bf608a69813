"""Rebuild the Redis state from SQL, and reconcile the two.

``rebuild`` recomputes every user's hash (totals, counters, tier, level, streaks), day bitmap,
frozen-day bitmap (from ``point_activity.frozen_days``), reversal markers (from
``point_activity.reverses``) and every leaderboard (all-time, per type, and the day, week and
month boards still within their retention) from ``point_activity``
and the ``user_score`` profiles, the same pure functions of the activities that the award
script maintains incrementally. Drain the outbox first: entries not
yet in SQL are not in the rebuild (the CLI drains before it rebuilds). Idempotency records are
not rebuilt, and neither are the streak freezes a user holds (grants and earnings are not in
SQL: a rebuilt user holds none); the days frozen are. Deleted users stay deleted: rows under a
pseudonym (``SCORING_DELETE_MODE=anonymise``) and users with a tombstone in SQL
(``deleted_user``) are skipped, and the Redis tombstones still in force are written again.

Adjustments (type ``adjustment``) count with their signed amounts, and are no days of
activity; a reversal's amount counts in the type and window boards of the activity it
reverses (joined in SQL), as ``lua/adjust.lua`` counts it. With ``[adjustments] keep_peak``,
tier and level are those of the highest total the activities reach in time order.

``reconcile`` compares, per user, the Redis total with the sum of the user's amounts in SQL and
with the user's all-time board score, and reports every difference.

Both count the months that retention dropped (``SCORING_ACTIVITY_RETENTION_MONTHS``) from their
per-user, per-type sums in ``point_activity_rollup``: totals, type counters and type boards come
out as before the drop; the dropped days are no longer in the rebuilt day bitmap and streaks
(the longest streak is kept from the ``user_score`` snapshot when it is longer), and they are
past every window board's retention anyway.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from engine.commands.delete_user import write_tombstones
from engine.domain.deletion import is_pseudonym
from engine.domain.keys import user_digest
from engine.domain.periods import (
    WindowBoard,
    day_to_date,
    lifetimes,
    local_day,
    local_week,
    window_boards,
)
from engine.domain.rules import ADJUSTMENT_TYPE, DECAY_REASON
from engine.runtime.connect import scan_keys
from engine.storage.store import SqlStore

_CHUNK_USERS = 2000
_DAWN = datetime.min.replace(tzinfo=UTC)
_EPOCH = date(1970, 1, 1)


def streaks(days: Iterable[int], frozen: Iterable[int] = ()) -> tuple[int, int]:
    """(current, longest) streak of a set of active day numbers and a set of frozen ones: a run
    is consecutive days each active or frozen, and its length counts its active days; current
    is the run holding the last active day. The same function the award script keeps up to
    date award by award."""
    active = set(days)
    current = longest = 0
    previous = None
    for day in sorted(active | set(frozen)):
        if previous is None or day != previous + 1:
            current = 0
        current += day in active
        longest = max(longest, current)
        previous = day
    return current, longest


def run_start(days: set[int], frozen: set[int]) -> int:
    """The first day of the run (through active and frozen days) holding the last active day."""
    day = max(days)
    while day - 1 in days or day - 1 in frozen:
        day -= 1
    return day


def day_bitmap(days: set[int]) -> tuple[int, bytes]:
    """(day0, bitmap) as the award script keeps them: bit i (most significant bit first) is
    day0 + i, and day0 is the first day rounded down to a multiple of 8."""
    day0 = min(days) - min(days) % 8
    return day0, _bitmap_from(day0, days)


def _bitmap_from(day0: int, days: set[int]) -> bytes:
    """A bitmap of ``days`` whose bit 0 (most significant first) is ``day0``."""
    bits = bytearray((max(days) - day0) // 8 + 1)
    for day in days:
        offset = day - day0
        bits[offset // 8] |= 0x80 >> (offset % 8)
    return bytes(bits)


@dataclass
class RebuildReport:
    users: int = 0
    activities: int = 0
    boards: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Drift:
    """A user whose Redis state disagrees with SQL."""

    user_id: str
    redis_total: int | None  # None: no state in Redis
    sql_total: int | None  # None: no activities in SQL
    board_score: int | None  # the all-time board's score, None when absent

    def __str__(self) -> str:
        return (
            f"{self.user_id}: redis total {self.redis_total}, sql sum {self.sql_total}, "
            f"all-time board {self.board_score}"
        )


class _User:
    __slots__ = ("user_id", "total", "counts", "points", "days", "frozen", "windows", "n",
                 "reversed", "moves", "rolled")  # fmt: skip

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.total = 0
        self.n = 0
        self.counts: dict[str, int] = defaultdict(int)
        self.points: dict[str, int] = defaultdict(int)
        self.days: set[int] = set()
        self.frozen: set[int] = set()  # days frozen with streak freezes
        self.windows: dict[str, int] = defaultdict(int)  # window board id -> points
        self.reversed: set[str] = set()  # ids of the activities the user's reversals took back
        self.moves: list[tuple[datetime, int]] = []  # (time, amount), for keep_peak's peak

        self.rolled = False  # has activities in months retention dropped

    def peak(self) -> int:
        """The highest total the user reached (the activities in time order)."""
        total = peak = 0
        for _, amount in sorted(self.moves, key=lambda m: (m[0], -m[1])):  # gains first
            total += amount
            peak = max(peak, total)
        return peak


def rebuild(
    engine: Any,
    store: SqlStore,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    """Replace the engine's user state and leaderboards in Redis with what SQL implies."""
    started = datetime.now(UTC)
    now = engine.clock()
    rules, keys, r = engine.rules, engine.keys, engine.redis
    kept: dict[date, list[str]] = {}  # UTC day -> ids of its window boards still kept
    windows_of: dict[str, WindowBoard] = {}  # every window board written

    def window_ids(at: datetime) -> list[str]:
        day = at.astimezone(UTC).date()
        ids = kept.get(day)
        if ids is None:
            windows = window_boards(at, rules)
            ids = kept[day] = []
            for window, ttl in zip(windows, lifetimes(windows, now)):
                if ttl:
                    ids.append(window.board_id)
                    windows_of[window.board_id] = window
        return ids

    gone = {digest for digest, _, _ in store.tombstones(now)}

    def deleted(user_id: str) -> bool:
        return is_pseudonym(user_id) or (bool(gone) and user_digest(user_id) in gone)

    profiles = {u: p for u, p in store.snapshots().items() if not deleted(u)}
    decays = store.last_decays()
    rollups = store.rollups()  # the months retention dropped, per user and type
    total = store.count_activities()
    report = RebuildReport()
    _wipe(r, keys)

    pipe = r.pipeline(transaction=False)
    pending = 0
    current: _User | None = None
    tz = "UTC"
    keep_peak = rules.adjustments.keep_peak
    skipping: str | None = None  # a deleted user whose rows are being passed over
    for row in store.activities_by_user():
        user_id, activity_type, amount, created_at, frozen = row[:5]
        if user_id == skipping:
            continue
        if current is None or user_id != current.user_id:
            if deleted(user_id):
                skipping = user_id
                continue
            if current is not None:
                _write_user(pipe, engine, current, profiles.get(current.user_id), decays)
                pending += 1
                report.users += 1
                if pending >= _CHUNK_USERS:
                    pipe.execute()
                    pending = 0
            current = _User(user_id)
            _add_rollup(current, rollups.pop(user_id, None))
            snapshot = profiles.get(user_id)
            tz = (snapshot.time_zone if snapshot is not None else None) or "UTC"
        current.total += amount
        current.n += 1
        current.counts[activity_type] += 1
        # a reversal takes its points from the boards of the activity it reverses (its type's,
        # the windows of its time), as lua/adjust.lua does
        board_type, board_at = activity_type, created_at
        if row.reverses is not None:
            current.reversed.add(row.reverses)
            if row.reversed_type is not None and row.reversed_at is not None:
                board_type, board_at = row.reversed_type, row.reversed_at
        current.points[board_type] += amount
        if keep_peak:
            current.moves.append((created_at, amount))
        spec = rules.activity_types.get(activity_type)
        # a streak bonus is not a day of activity, and neither is an adjustment
        if activity_type != ADJUSTMENT_TYPE and (spec is None or spec.streak):
            current.days.add(local_day(created_at, tz))
        if frozen:  # ISO dates in the user's zone
            current.frozen.update((date.fromisoformat(d) - _EPOCH).days for d in frozen.split(","))
        if row.reason != DECAY_REASON or row.reverses is not None:  # a decay: in no window
            for board_id in window_ids(board_at):
                current.windows[board_id] += amount
        report.activities += 1
        if progress is not None and report.activities % 10_000 == 0:
            progress(report.activities, total)
    if current is not None:
        _write_user(pipe, engine, current, profiles.get(current.user_id), decays)
        report.users += 1
    for user_id, by_type in rollups.items():  # users whose every activity was dropped
        if deleted(user_id):
            continue
        current = _User(user_id)
        _add_rollup(current, by_type)
        _write_user(pipe, engine, current, profiles.get(user_id), decays)
        report.users += 1
    for snapshot in profiles.values():  # users with a profile and no activity
        if snapshot.state_version == 0 and snapshot.profile_version > 0:
            _write_profile_only(pipe, engine, snapshot)
    boards = list(windows_of.values())
    for window, ttl in zip(boards, lifetimes(boards, engine.clock())):
        for shard in range(keys.shards):
            if ttl:
                pipe.expire(keys.board(shard, window.board_id), ttl)
            else:  # its retention ended while the rebuild ran
                pipe.delete(keys.board(shard, window.board_id))
    pipe.execute()
    _restore_achievements(engine, store, deleted)
    _restore_freezes(engine, store, deleted)
    # after a loss of Redis, a deleted user stays refused
    write_tombstones(r, keys, store.tombstones(now), now)
    if progress is not None:
        progress(report.activities, total)
    report.boards = 2 + len(rules.activity_types) + len(boards)
    report.seconds = (datetime.now(UTC) - started).total_seconds()
    return report


def _add_rollup(u: _User, by_type: dict[str, tuple[int, int]] | None) -> None:
    """Count the user's activities of the months retention dropped: in the total, the type
    counters and boards (their days and window boards are gone with them)."""
    for activity_type, (points, n) in (by_type or {}).items():
        u.rolled = True
        u.total += points
        u.n += n
        u.counts[activity_type] += n
        u.points[activity_type] += points
        u.moves.append((_DAWN, points))  # (keep_peak: the dropped months come first)


def _restore_freezes(engine: Any, store: SqlStore, deleted: Callable[[str], bool]) -> None:
    """The streak freezes each user holds, from SQL (``user_streak_freeze``)."""
    keys, r = engine.keys, engine.redis
    pipe = r.pipeline(transaction=False)
    for i, (user_id, held) in enumerate(store.streak_freezes().items(), start=1):
        if held and not deleted(user_id):
            pipe.hset(keys.user(user_id), "fz", held)
        if i % 5000 == 0:
            pipe.execute()
    pipe.execute()


def _restore_achievements(engine: Any, store: SqlStore, deleted: Callable[[str], bool]) -> None:
    """The achievement levels in SQL, back in Redis: each user's levels with their times, the
    level held in the user hash (what the scripts test), and the shards' holder counts."""
    keys, r = engine.keys, engine.redis
    pipe = r.pipeline(transaction=False)
    pending = 0
    # levels come lowest first, so the last level written to the user hash is the highest
    for user_id, ach_id, level, earned_at in store.achievements_by_user():
        if deleted(user_id):
            continue
        shard = keys.shard_of(user_id)
        ms = int(earned_at.timestamp() * 1000)
        pipe.hset(keys.achievements(user_id, shard), f"{ach_id}:{level}", ms)
        pipe.hset(keys.user(user_id, shard), f"a:{ach_id}", level)
        pending += 1
        if pending >= 5000:
            pipe.execute()
            pending = 0
    pipe.execute()
    engine.badges.recount_holders()


def _wipe(r: Any, keys: Any) -> None:
    """Delete every user hash, day bitmap and board (not the outbox or idempotency records)."""
    for shard in range(keys.shards):
        for pattern in keys.rebuildable(shard):
            batch = []
            for key in scan_keys(r, pattern, near=keys.outbox(shard)):
                batch.append(key)
                if len(batch) >= 5000:
                    r.unlink(*batch)
                    batch = []
            if batch:
                r.unlink(*batch)


def _profile_fields(snapshot: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if snapshot is None:
        return fields
    for name, column in (("username", "username"), ("display_name", "display_name"),
                         ("tz", "time_zone")):  # fmt: skip
        value = getattr(snapshot, column)
        if value is not None:
            fields[name] = value
    return fields


def _write_user(
    pipe: Any, engine: Any, u: _User, snapshot: Any, decays: dict[str, tuple[datetime, int]]
) -> None:
    rules, keys = engine.rules, engine.keys
    shard = keys.shard_of(u.user_id)
    version = u.n
    if snapshot is not None:
        version = max(version, snapshot.state_version, snapshot.profile_version)
    held = u.total
    if rules.adjustments.keep_peak:  # tier and level of the highest total reached
        peak = u.peak()
        held = max(held, peak)
    fields: dict[str, Any] = {
        "total": u.total,
        "tier": rules.tier_for(held),
        "level": rules.level_for(held),
        "version": version,
        **{f"n:{t}": n for t, n in u.counts.items()},
        **{f"pts:{t}": p for t, p in u.points.items()},
        **_profile_fields(snapshot),
    }
    if u.days:  # none when all of the user's awards were of types that are not activity
        current, longest = streaks(u.days, u.frozen)
        if u.rolled and snapshot is not None:  # a longer run may lie in the dropped months
            longest = max(longest, snapshot.longest_streak_days)
        day0, bitmap = day_bitmap(u.days)
        fields.update(streak=current, longest=longest, last_day=max(u.days), day0=day0,
                      run0=run_start(u.days, u.frozen))  # fmt: skip
        pipe.set(keys.days(u.user_id, shard), bitmap)
        frozen = {d for d in u.frozen if d >= day0}  # (a frozen day follows an active one)
        if frozen:
            fields["fz_used"] = len(u.frozen)
            pipe.set(keys.frozen(u.user_id, shard), _bitmap_from(day0, frozen))
    if held > u.total:
        fields["pk"] = held
    decay = decays.get(u.user_id)
    if decay is not None:  # the week of the last decay: the decay job decays once a week
        tz = (snapshot.time_zone if snapshot is not None else None) or "UTC"
        fields["decay_wk"] = local_week(day_to_date(local_day(decay[0], tz)))
        fields["decay_pts"] = -decay[1]
    pipe.hset(keys.user(u.user_id, shard), mapping=fields)
    if u.reversed:  # the reversal markers: a second reversal stays refused after a rebuild
        pipe.sadd(keys.reversed(u.user_id, shard), *u.reversed)
    pipe.zadd(keys.board(shard, "all"), {u.user_id: -u.total})
    for activity_type, points in u.points.items():
        pipe.zadd(keys.type_board(shard, activity_type), {u.user_id: -points})
    for board_id, points in u.windows.items():
        pipe.zadd(keys.board(shard, board_id), {u.user_id: -points})


def _write_profile_only(pipe: Any, engine: Any, snapshot: Any) -> None:
    keys = engine.keys
    fields = {**_profile_fields(snapshot), "version": snapshot.profile_version}
    pipe.hset(keys.user(snapshot.user_id), mapping=fields)


def reconcile(engine: Any, store: SqlStore) -> list[Drift]:
    """Every user whose Redis total differs from SQL's sum or from its all-time board score."""
    sql = {u: total for u, total, _ in store.user_totals() if not is_pseudonym(u)}
    keys, r = engine.keys, engine.redis
    redis_totals: dict[str, tuple[int | None, int | None]] = {}
    for shard in range(keys.shards):
        prefix = keys.user_prefix(shard)
        user_keys = list(scan_keys(r, prefix + "*", near=keys.outbox(shard)))
        for i in range(0, len(user_keys), 1000):
            chunk = user_keys[i : i + 1000]
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.hget(key, "total")
                pipe.zscore(keys.board(shard, "all"), key[len(prefix) :])
            replies = pipe.execute()
            for key, total, score in zip(chunk, replies[0::2], replies[1::2]):
                redis_totals[key[len(prefix) :]] = (
                    int(total) if total is not None else None,
                    int(-score) if score is not None else None,
                )
    drifts = []
    for user_id in sorted(set(sql) | set(redis_totals)):
        total, score = redis_totals.get(user_id, (None, None))
        expected = sql.get(user_id)
        if (total or 0) != (expected or 0) or (score or 0) != (total or 0):
            drifts.append(Drift(user_id, total, expected, score))
    return drifts


def print_progress(done: int, total: int, *, label: str = "rebuild") -> None:
    """A one-line progress bar on stderr (``label`` first: what is in progress)."""
    width = 30
    share = done / total if total else 1.0
    bar = "#" * int(width * share)
    sys.stderr.write(f"\r{label} [{bar:<{width}}] {done:,}/{total:,} activities ({share:.0%})")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
