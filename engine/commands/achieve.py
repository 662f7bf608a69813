"""``lua/achieve.lua`` (an achievement backfill for one user): its KEYS, ARGV and reply, and the
achievement levels as every script replies them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.keys import Keys
from engine.domain.rules import ACHIEVEMENT_REWARD_TYPE, Rules


def script(rules: Rules) -> LuaScript:
    """The backfill script for ``rules`` (their tables defined as ``RULES``)."""
    return scripts.get("achieve", RULES=rules.script_tables)


def keys(k: Keys, user_id: str, shard: int, windows: list[str]) -> list[str]:
    """The KEYS of one user's backfill; ``windows``: the day, week and month board ids."""
    day, week, month = windows
    return [
        k.user(user_id, shard), k.achievements(user_id, shard), k.achievement_holders(shard),
        k.outbox(shard), k.board(shard, "all"), k.type_board(shard, ACHIEVEMENT_REWARD_TYPE),
        k.board(shard, day), k.board(shard, week), k.board(shard, month), k.drain_flag(shard),
        k.feed(shard),
    ]  # fmt: skip


def args(
    *, user_id: str, now_ms: int, today: int, lifetimes: Sequence[int], flag_ttl: int
) -> list[Any]:
    """The ARGV of one call (``today`` in UTC days; ``lifetimes``: the day, week and month
    boards' TTLs)."""
    return [user_id, now_ms, today, *lifetimes, flag_ttl]


def parse(reply: list[Any]) -> tuple[tuple[tuple[str, int], ...], bool]:
    """(the levels granted, whether the call raised the drain flag)."""
    return earned(reply[1]), reply[2] == 1


def earned(packed: str) -> tuple[tuple[str, int], ...]:
    """Achievement levels as the scripts reply them ("<id>:<level>", "\\x1d"-joined)."""
    if not packed:
        return ()
    out = []
    for item in packed.split("\x1d"):
        ach_id, _, level = item.rpartition(":")
        out.append((ach_id, int(level)))
    return tuple(out)
