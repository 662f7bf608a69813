"""Every Redis key the engine uses is built here, and nowhere else.

Users are spread over K shards by ``crc32(user_id) % K``. Every key of one user, its shard's
outbox and its shard's leaderboards carry the same hash tag (``{s3}``), so each script touches a
single Redis Cluster slot. Scripts receive all their keys in KEYS and never build names.

Layout (``<p>`` is the key prefix, ``<t>`` the shard tag such as ``{s0}``):

=============================  ======================================================
``<p>:<t>:u:<user>``           hash: the user's live state and profile
``<p>:<t>:days:<user>``        bitmap: days (in the user's zone) with activity
``<p>:<t>:idem:<activity>``    string: an award's result, for de-duplication
``<p>:<t>:goals:<user>``       hash: the user's weekly goal progress (wk, g:<goal>)
``<p>:<t>:quests:<user>``      hash: the user's side quests in progress (quest id -> record)
``<p>:<t>:quests:done:<user>`` hash: the user's completed side quests
``<p>:<t>:ach:u:<user>``        hash: the user's achievements ("<id>:<level>" -> earned ms)
``<p>:<t>:ach:holders``        hash: "<id>:<level>" -> the shard's users holding it
``<p>:ach:backfilled``          string: the achievements digest last backfilled
``<p>:<t>:friends:<user>``     set: the user's friends (user ids, at most 1,000)
``<p>:<t>:rev:<user>``         set: ids of the user's activities a reversal took back
``<p>:<t>:gone:<digest>``      string: a deleted user's tombstone (when deleted, unix ms;
                               expires); ``<digest>``: :func:`user_digest` of the user id
``<p>:<t>:gone``               zset: the shard's live tombstones, digest -> expiry (unix ms)
``<p>:<t>:outbox``             stream: activities waiting to be written to SQL
``<p>:<t>:outbox:flag``        string: set while a drain job for the shard is queued
``<p>:<t>:outbox:lock``        string: held by the one drain running for the shard
``<p>:<t>:outbox:wanted``      string: set while a user deletion waits for the shard's lock
``<p>:<t>:outbox:outage``      hash: since, attempts, error while SQL fails the shard's drains
``<p>:<t>:outbox:failures``    hash: outbox entry id -> times writing it to SQL failed
``<p>:<t>:outbox:dead``        stream: entries that failed too often (dead letters)
``<p>:<t>:feed``               stream: recent tier and level upgrades (capped near 100)
``<p>:<t>:lb:all``             zset: all-time leaderboard (scores are negated points)
``<p>:<t>:lb:month:2026-11``   zset: monthly board (UTC), expires after retention
``<p>:<t>:lb:week:2026-W48``   zset: ISO-week board (UTC), expires after retention
``<p>:<t>:lb:day:2026-11-24``  zset: daily board (UTC), expires after retention
``<p>:<t>:lb:type:<type>``     zset: all-time board of one activity type
``<p>:events:version``         string: bumped on every change to the seasonal events in SQL
``<p>:webhooks:inflight:<id>``  zset: a subscription's deliveries in flight -> lease end (ms)
``<p>:webhooks:metrics``       hash: webhook delivery counters (delivered, failed, retried...)
=============================  ======================================================
"""

from __future__ import annotations

import hashlib
from binascii import crc32
from dataclasses import dataclass


def user_digest(user_id: str) -> str:
    """The SHA-256 of a user id (hex): what a deleted user's tombstones name them by, so that
    no key or row left after a deletion holds the id itself."""
    return hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds the key names for one prefix and shard count."""

    prefix: str = "scoring"
    shards: int = 1

    def shard_of(self, user_id: str) -> int:
        if self.shards == 1:
            return 0
        return crc32(user_id.encode()) % self.shards

    def tag(self, shard: int) -> str:
        return f"{self.prefix}:{{s{shard}}}"

    def user(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.user_prefix(self._shard(user_id, shard))}{user_id}"

    def days(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.tag(self._shard(user_id, shard))}:days:{user_id}"

    def frozen(self, user_id: str, shard: int | None = None) -> str:
        """The user's frozen days: a bitmap laid out as the day bitmap (same first day)."""
        return f"{self.tag(self._shard(user_id, shard))}:frozen:{user_id}"

    def idempotency(self, shard: int, activity_id: str) -> str:
        return f"{self.tag(shard)}:idem:{activity_id}"

    def goals(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.tag(self._shard(user_id, shard))}:goals:{user_id}"

    def quests(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.tag(self._shard(user_id, shard))}:quests:{user_id}"

    def quests_done(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.tag(self._shard(user_id, shard))}:quests:done:{user_id}"

    def achievements(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.tag(self._shard(user_id, shard))}:ach:u:{user_id}"

    def achievement_holders(self, shard: int) -> str:
        return f"{self.tag(shard)}:ach:holders"

    def achievements_backfilled(self) -> str:
        return f"{self.prefix}:ach:backfilled"

    def friends(self, user_id: str, shard: int | None = None) -> str:
        return f"{self.tag(self._shard(user_id, shard))}:friends:{user_id}"

    def reversed(self, user_id: str, shard: int | None = None) -> str:
        """The ids of the user's activities already reversed (permanent: a second reversal of
        one is refused; rebuild restores it from ``point_activity.reverses``)."""
        return f"{self.tag(self._shard(user_id, shard))}:rev:{user_id}"

    def tombstone(self, user_id: str, shard: int | None = None) -> str:
        """A deleted user's tombstone, named by the digest of the id, in the user's shard."""
        return self.tombstone_of(self._shard(user_id, shard), user_digest(user_id))

    def tombstone_of(self, shard: int, digest: str) -> str:
        """The tombstone of the user whose :func:`user_digest` is ``digest``, in ``shard``."""
        return f"{self.tag(shard)}:gone:{digest}"

    def tombstones(self, shard: int) -> str:
        """The shard's index of live tombstones (digest -> expiry, unix ms), read by drains."""
        return f"{self.tag(shard)}:gone"

    def user_keys(self, user_id: str, shard: int | None = None) -> list[str]:
        """Every key that belongs to the user alone: what deleting the user deletes (not the
        shard's boards, outbox, feed or idempotency records, which the user shares)."""
        s = self._shard(user_id, shard)
        return [
            self.user(user_id, s), self.days(user_id, s), self.frozen(user_id, s),
            self.goals(user_id, s), self.quests(user_id, s), self.quests_done(user_id, s),
            self.achievements(user_id, s), self.friends(user_id, s),
            self.reversed(user_id, s),
        ]  # fmt: skip

    def outbox(self, shard: int) -> str:
        return f"{self.tag(shard)}:outbox"

    def feed(self, shard: int) -> str:
        return f"{self.tag(shard)}:feed"

    def user_prefix(self, shard: int) -> str:
        """What every user hash key of ``shard`` starts with (the user id follows)."""
        return f"{self.tag(shard)}:u:"

    def rebuildable(self, shard: int) -> list[str]:
        """SCAN patterns of the state ``scoring rebuild`` replaces: user hashes, day bitmaps,
        frozen-day bitmaps, boards, achievements and reversal markers (not the outbox, its dead
        letters, or idempotency records)."""
        t = self.tag(shard)
        return [
            f"{t}:u:*", f"{t}:days:*", f"{t}:frozen:*", f"{t}:lb:*", f"{t}:ach:*", f"{t}:rev:*",
        ]  # fmt: skip

    def events_version(self) -> str:
        """The counter every change to the seasonal events in SQL bumps: each process reloads
        its event list when it sees another value (no hash tag: it belongs to no shard)."""
        return f"{self.prefix}:events:version"

    def webhook_inflight(self, subscription_id: str) -> str:
        """A subscription's deliveries in flight (sorted set: token -> lease end, unix ms): its
        concurrency limit (no hash tag: it belongs to no shard)."""
        return f"{self.prefix}:webhooks:inflight:{subscription_id}"

    def webhook_metrics(self) -> str:
        """The webhook deliveries' Prometheus counters (hash), shared by every worker."""
        return f"{self.prefix}:webhooks:metrics"

    def drain_flag(self, shard: int) -> str:
        return f"{self.tag(shard)}:outbox:flag"

    def drain_lock(self, shard: int) -> str:
        return f"{self.tag(shard)}:outbox:lock"

    def drain_wanted(self, shard: int) -> str:
        """A set of one member per user deletion waiting for the shard's drain lock (it lives
        a wait at most): while it exists, the drain
        holding it ends its run at the next beat of its lease."""
        return f"{self.tag(shard)}:outbox:wanted"

    def drain_outage(self, shard: int) -> str:
        return f"{self.tag(shard)}:outbox:outage"

    def drain_failures(self, shard: int) -> str:
        return f"{self.tag(shard)}:outbox:failures"

    def dead_letters(self, shard: int) -> str:
        return f"{self.tag(shard)}:outbox:dead"

    def board(self, shard: int, board_id: str) -> str:
        """A leaderboard key; ``board_id`` from :mod:`~engine.domain.periods` (``all``, ...)."""
        return f"{self.tag(shard)}:lb:{board_id}"

    def type_board(self, shard: int, activity_type: str) -> str:
        """The all-time board of one activity type."""
        return self.board(shard, f"type:{activity_type}")

    def boards(self, board_id: str) -> list[str]:
        """The key of ``board_id`` on every shard, in shard order."""
        return [self.board(s, board_id) for s in range(self.shards)]

    def _shard(self, user_id: str, shard: int | None) -> int:
        return self.shard_of(user_id) if shard is None else shard
