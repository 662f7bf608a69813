"""``lua/set_friends.lua`` and the read of a friend list: keys, arguments and replies, once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.commands.reads import Cmd, cmd
from engine.commands.scripts import LuaScript, scripts
from engine.domain.errors import ScriptCode, UserDeleted
from engine.domain.keys import Keys


def script() -> LuaScript:
    return scripts["set_friends"]


def keys(k: Keys, user_id: str) -> list[str]:
    return [k.friends(user_id), k.tombstone(user_id)]


def args(friends: Sequence[str]) -> list[Any]:
    """``friends``: the user ids, validated, without duplicates."""
    return list(friends)


def parse(reply: Any) -> int:
    """The number of friends held after the call; :class:`UserDeleted` when the user's
    tombstone refused it."""
    if int(reply) == ScriptCode.USER_DELETED:
        raise UserDeleted("the user was deleted", field="user_id")
    return int(reply)


def read(k: Keys, user_id: str) -> Cmd:
    """The read (for :mod:`engine.commands.reads`) of ``user_id``'s friends."""
    return cmd("smembers", k.friends(user_id))


def parse_read(reply: Any) -> list[str]:
    """The friends, in byte order of their ids."""
    return sorted(reply or (), key=str.encode)
