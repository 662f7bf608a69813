"""``lua/grant_freezes.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.keys import Keys


def script() -> LuaScript:
    return scripts["grant_freezes"]


def keys(k: Keys, user_id: str, shard: int) -> list[str]:
    return [k.user(user_id, shard)]


def args(*, count: int, cap: int) -> list[Any]:
    return [count, cap]


def parse(reply: list[Any]) -> tuple[int, dict[str, str]]:
    """(freezes granted, the user hash after)."""
    granted, flat = reply
    return int(granted), dict(zip(flat[0::2], flat[1::2], strict=True))
