"""``lua/delete_user.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def args(*, user_id: str, now_ms: int, lifetime: int) -> list[Any]:
    """``lifetime``: the tombstone's, in seconds (> 0)."""
    return [user_id, user_digest(user_id), now_ms, lifetime]


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
