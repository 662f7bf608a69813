"""``lua/grant_freezes.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.keys import Keys


def script() -> LuaScript:
    return scripts["grant_freezes"]


def keys(k: Keys, user_id: str, shard: int) -> list[str]:
    return [k.user(user_id, shard), k.outbox(shard), k.drain_flag(shard)]


def args(*, user_id: str, count: int, cap: int, flag_ttl: int) -> list[Any]:
    return [count, cap, flag_ttl, user_id]


def parse(reply: list[Any]) -> tuple[int, dict[str, str], bool] | None:
    """(freezes granted, the user hash after, whether the call raised the drain flag); None
    when the user has no state."""
    if reply[0] == -1:
        return None
    granted, flat, flag = reply
    return int(granted), dict(zip(flat[0::2], flat[1::2], strict=True)), flag == 1
