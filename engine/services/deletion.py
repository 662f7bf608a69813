"""Deleting a user (``lua/delete_user.lua``, then SQL) and exporting what the engine holds of one.

A deletion, in order (each step safe to repeat, so re-running a deletion that a crash cut short
finishes it):

0. The SQL tombstone (``deleted_user``, by digest), so that SQL holds every tombstone Redis
   does: a rebuild or a reshard after a deletion cut short still refuses the user. (SQL
   unreachable: the deletion stops here, having changed nothing.)
1. One script call, atomically: the user's tombstone (``Keys.tombstone``, named by the digest
   of the id, expiring after ``SCORING_DELETE_TOMBSTONE_DAYS``) and its entry in the shard's
   tombstone index; the user's keys (``Keys.user_keys``); the user on every board of the shard
   (all-time, every activity type's, every window board still retained: computed, not
   scanned); the holder counts of the user's achievements; the user's upgrade feed entries.
   From then on the award, quest, profile and friend-list scripts refuse the user
   (:class:`UserDeleted`).
2. The shard's drain lock (the drain holding it ends its run at the next beat of its lease:
   see ``Keys.drain_wanted``), so that no drain batch read before the tombstone can commit rows
   of the user after the erase below; every drain run that starts later reads the tombstone
   index and drops the user's entries.
3. Under the lock: the user's undrained outbox entries (and dead letters) are deleted, then in
   one SQL transaction the user's rows are erased (or moved to a pseudonym) and the SQL
   tombstone is written again. The idempotency records of the user's
   undrained activities are deleted before that transaction (their ids are nowhere else).
4. After the lock: the idempotency records of the user's activities in SQL.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from binascii import crc32
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import LockError

from engine.commands import delete_user as delete_cmd
from engine.domain import validation
from engine.domain.deletion import DeleteMode, new_pseudonym
from engine.domain.errors import NotFound, NotRanked, StoreUnavailable
from engine.domain.keys import user_digest
from engine.domain.periods import live_window_boards
from engine.domain.results import DeletionReport
from engine.domain.rules import REWARD_TYPES
from engine.services.achievements import Achievements
from engine.services.boards import Boards
from engine.services.context import Context
from engine.services.friends import Friends
from engine.services.goals import Goals
from engine.services.quests import Quests
from engine.services.users import Users
from engine.storage.outbox import GROUP

log = logging.getLogger("engine.services")

#: Seconds a deletion holds the shard's drain lock at most (it expires if the process dies).
LOCK_SECONDS = 60
#: Seconds a deletion waits for the lock: a drain gives it up at its lease's next beat (under
#: 2 s); a hung one loses it within 35 s (see workers/drain.py).
LOCK_WAIT_SECONDS = 40
#: Outbox entries read per XRANGE while looking for the user's.
PAGE = 1000
#: Boards ranked in an export.
EXPORT_BOARDS = ("all_time", "month", "week", "day")


class Deletion:
    """Deletes users and exports what the engine holds of one (the facade's ``delete_user``
    and ``export_user``)."""

    def __init__(
        self,
        ctx: Context,
        *,
        mode: DeleteMode,
        tombstone_days: int,
        users: Users,
        boards: Boards,
        goals: Goals,
        quests: Quests,
        badges: Achievements,
        friends: Friends,
    ) -> None:
        if tombstone_days < 1:
            raise ValueError("tombstone_days must be >= 1")
        self.ctx = ctx
        self.mode = DeleteMode(mode)
        self.tombstone_seconds = tombstone_days * 86400
        self._users, self._boards, self._goals = users, boards, goals
        self._quests, self._badges, self._friends = quests, badges, friends

    # -- deletion -------------------------------------------------------------------------

    def delete_user(self, user_id: str) -> DeletionReport:
        """Delete the user everywhere the engine holds them (see the module's docstring):
        idempotent, and a user never seen is deleted too (their tombstone keeps the id from
        being used until it expires).

        Raises:
            InvalidUserId: a bad id; nothing was written.
            StoreUnavailable: the shard's drain lock could not be had in time; the user is
                deleted from Redis and refused from now on; call again to finish.
        """
        uid = validation.user_id(user_id)
        ctx, k, r = self.ctx, self.ctx.keys, self.ctx.redis
        shard = k.shard_of(uid)
        now = ctx.clock()
        now_ms = int(now.timestamp() * 1000)
        boards = self._boards_of(shard, now)
        expires_at = now + timedelta(seconds=self.tombstone_seconds)
        if ctx.store is not None:  # first: see SqlStore.add_tombstone (SQL down: nothing done)
            ctx.store.add_tombstone(
                digest=user_digest(uid),
                crc=crc32(uid.encode()),
                at=now,
                expires_at=expires_at,
                mode=self.mode.value,
            )
        reply = delete_cmd.parse(
            delete_cmd.script()(
                r,
                delete_cmd.keys(k, uid, shard, boards),
                delete_cmd.args(k, user_id=uid, now_ms=now_ms, lifetime=self.tombstone_seconds),
            )
        )
        report = DeletionReport(
            uid, self.mode.value, not reply.first, reply.keys, reply.boards, reply.feed,
            reply.achievements,
        )  # fmt: skip
        activity_ids: set[str] = set()
        lock = r.lock(
            k.drain_lock(shard),
            timeout=LOCK_SECONDS,
            blocking_timeout=LOCK_WAIT_SECONDS,
            thread_local=False,
        )
        # the drains make way while any deletion waits: one member per waiter (a set, so that
        # the first to get the lock does not withdraw another's request)
        waiter = uuid.uuid4().hex
        pipe = r.pipeline(transaction=False)
        pipe.sadd(k.drain_wanted(shard), waiter)
        pipe.expire(k.drain_wanted(shard), math.ceil(LOCK_WAIT_SECONDS))
        pipe.execute()
        try:
            if not lock.acquire():
                raise StoreUnavailable(
                    f"shard {shard}'s drain lock stayed busy: the user is deleted from Redis; "
                    "call again to finish the deletion"
                )
        finally:
            r.srem(k.drain_wanted(shard), waiter)
        try:
            for stream in (k.outbox(shard), k.dead_letters(shard)):
                report.outbox_entries += self._drop_entries(stream, uid, activity_ids)
            # the ids of undrained entries are nowhere else: their records go before the erase
            report.idempotency_records += self._forget(shard, activity_ids)
            activity_ids.clear()
            store = ctx.store
            if store is not None:
                activity_ids.update(store.activity_ids(uid))
                report.sql_rows = store.erase_user(
                    uid,
                    digest=user_digest(uid),
                    crc=crc32(uid.encode()),
                    pseudonym=new_pseudonym() if self.mode is DeleteMode.ANONYMISE else None,
                    at=now,
                    expires_at=expires_at,
                    mode=self.mode.value,
                )
        finally:
            with contextlib.suppress(LockError):  # held past LOCK_SECONDS: it lapsed already
                lock.release()
        report.idempotency_records += self._forget(shard, activity_ids)
        # the log names the user by digest only
        counts = {name: n for name, n in report.to_dict().items() if name != "user_id"}
        log.info("deleted user (digest %s): %s", user_digest(uid)[:16], counts)
        return report

    def _boards_of(self, shard: int, now: datetime) -> list[str]:
        """Every board of the shard a user can be on: all-time, each activity type's (the
        rewards' types among them), and each window board still retained."""
        k, rules = self.ctx.keys, self.ctx.rules
        types = dict.fromkeys([*rules.activity_types, *REWARD_TYPES])
        return [
            k.board(shard, "all"), *(k.type_board(shard, t) for t in types),
            *(k.board(shard, board_id) for board_id in live_window_boards(now, rules)),
        ]  # fmt: skip

    def _forget(self, shard: int, activity_ids: set[str]) -> int:
        """Delete the idempotency records of ``activity_ids``; returns how many there were."""
        k, ids, forgotten = self.ctx.keys, sorted(activity_ids), 0
        for i in range(0, len(ids), PAGE):
            chunk = [k.idempotency(shard, a) for a in ids[i : i + PAGE]]
            forgotten += int(self.ctx.redis.unlink(*chunk))
        return forgotten

    def _entries_of(self, stream: str, uid: str) -> list[tuple[str, dict[str, str]]]:
        """The user's entries in ``stream`` (read a page at a time: an outbox that grew during
        an SQL outage is read whole, never in one call)."""
        r, mine, start = self.ctx.redis, [], "-"
        while True:
            page = r.xrange(stream, min=start, max="+", count=PAGE)
            mine += [(i, f) for i, f in page if f.get("user") == uid]
            if len(page) < PAGE:
                return mine
            start = "(" + page[-1][0]

    def _drop_entries(self, stream: str, uid: str, activity_ids: set[str]) -> int:
        """Delete the user's entries from ``stream`` (acknowledged too, so that the drain's
        group forgets them); the ids of the user's activities among them go to
        ``activity_ids``. Returns the entries deleted."""
        r, dropped = self.ctx.redis, 0
        mine = self._entries_of(stream, uid)
        activity_ids.update(f["id"] for _, f in mine if "id" in f)
        for i in range(0, len(mine), PAGE):
            ids = [entry_id for entry_id, _ in mine[i : i + PAGE]]
            r.xack(stream, GROUP, *ids)
            dropped += int(r.xdel(stream, *ids))
        return dropped

    def is_deleted(self, user_id: str) -> bool:
        """Whether the user's tombstone is in force."""
        uid = validation.user_id(user_id)
        return bool(self.ctx.redis.exists(self.ctx.keys.tombstone(uid)))

    # -- export ---------------------------------------------------------------------------

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything the engine holds of the user: live state, profile, activities (the SQL
        audit trail, oldest first), the user's outbox entries not yet drained (activities,
        profile, quest, goal changes: their fields as the outbox holds them), weekly goals,
        side quests, achievements, friends, streak freezes, ranks, and every SQL row of the user.

        Raises:
            InvalidUserId: a bad id.
            NotFound: the engine holds nothing of the user, or the user was deleted.
        """
        uid = validation.user_id(user_id)
        if self.is_deleted(uid):
            raise NotFound(f"user {uid!r} was deleted", field="user_id")
        r, k = self.ctx.redis, self.ctx.keys
        user_hash = r.hgetall(k.user(uid))
        store = self.ctx.store
        rows = store.user_rows(uid) if store is not None else {}
        if not user_hash and not any(rows.values()):
            raise NotFound(f"no user {uid!r}", field="user_id")
        state = self._users.status(uid)
        ranks: dict[str, Any] = {}
        for board in EXPORT_BOARDS:
            try:
                ranks[board] = asdict(self._boards.leaderboard(board).rank(uid))
            except NotRanked:
                ranks[board] = None
        shard = k.shard_of(uid)
        pending = [{"entry": i, **f} for i, f in self._entries_of(k.outbox(shard), uid)]
        return {
            "user_id": uid,
            "exported_at": self.ctx.clock(),
            "state": asdict(state),
            "profile": {
                "username": user_hash.get("username"),
                "display_name": user_hash.get("display_name"),
                "time_zone": user_hash.get("tz", "UTC"),
            },
            "streak_freezes": {
                "held": state.streak_freezes,
                "used": state.streak_freezes_used,
            },  # fmt: skip
            "ranks": ranks,
            "weekly_goals": [asdict(g) for g in self._goals.weekly_goals(uid)],
            "side_quests": [asdict(q) for q in self._quests.user_quests(uid)],
            "achievements": asdict(self._badges.achievements(uid)),
            "friends": self._friends.friends(uid),
            "pending": pending,
            "activities": rows.get("point_activity", []),
            "sql": {name: v for name, v in rows.items() if name != "point_activity"},
        }
