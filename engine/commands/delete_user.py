"""``lua/delete_user.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.keys import Keys, user_digest


def script() -> LuaScript:
    return scripts["delete_user"]


def keys(k: Keys, user_id: str, shard: int, boards: Sequence[str]) -> list[str]:
    """The KEYS of one deletion; ``boards``: every leaderboard key of the shard."""
    return [
        k.tombstone(user_id, shard), k.tombstones(shard), k.achievement_holders(shard),
        k.feed(shard), *k.user_keys(user_id, shard), *boards,
    ]  # fmt: skip


def args(k: Keys, *, user_id: str, now_ms: int, lifetime: int) -> list[Any]:
    """``lifetime``: the tombstone's, in seconds (> 0)."""
    return [user_id, user_digest(user_id), now_ms, lifetime, len(k.user_keys(user_id))]


@dataclass(frozen=True, slots=True)
class DeleteReply:
    #: the user's own keys that existed (and were deleted)
    keys: int
    #: the boards the user was on
    boards: int
    #: the user's entries deleted from the upgrade feed
    feed: int
    #: achievement levels whose holder count went down
    achievements: int
    #: whether this call wrote the tombstone (False: the user was already deleted)
    first: bool


def parse(reply: list[Any]) -> DeleteReply:
    deleted, boards, feed, achievements, first = (int(x) for x in reply)
    return DeleteReply(deleted, boards, feed, achievements, first == 1)


def write_tombstones(
    client: Any, k: Keys, tombstones: Iterable[tuple[str, int, datetime]], now: datetime
) -> set[str]:
    """Write again the Redis tombstones (and their shards' index entries) of the deletions
    ``(digest, crc32 of the user id, expires_at)`` still in force at ``now``, as SQL keeps them
    (``deleted_user``): after a rebuild or a reshard, a deleted user stays refused. An existing
    tombstone is kept. Returns the keys written."""
    written: set[str] = set()
    longest: dict[str, int] = {}  # index -> the longest life of its members
    pipe = client.pipeline(transaction=False)
    for digest, crc, expires_at in tombstones:
        left = int((expires_at - now).total_seconds())
        if left <= 0:
            continue
        shard = 0 if k.shards == 1 else crc % k.shards
        key, index = k.tombstone_of(shard, digest), k.tombstones(shard)
        pipe.set(key, int(now.timestamp() * 1000), ex=left, nx=True)
        pipe.zadd(index, {digest: int(expires_at.timestamp() * 1000)}, gt=True)
        longest[index] = max(longest.get(index, 0), left)
        written.add(key)
    for index, left in longest.items():
        pipe.expire(index, left)
    pipe.execute()
    return written | set(longest)
