"""``lua/set_profile.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.errors import ScriptCode, UserDeleted
from engine.domain.keys import Keys


def script() -> LuaScript:
    return scripts["set_profile"]


def keys(k: Keys, user_id: str, shard: int) -> list[str]:
    return [
        k.user(user_id, shard),
        k.outbox(shard),
        k.drain_flag(shard),
        k.tombstone(user_id, shard),
    ]


def args(
    *,
    user_id: str,
    at_ms: int,
    flag_ttl: int,
    fields: Mapping[str, str],
    clear: Sequence[str],
) -> list[Any]:
    """The ARGV of one call: the profile ``fields`` to set (username, display_name, tz) and
    the names of those to ``clear``, at ``at_ms`` (unix ms)."""
    argv: list[Any] = [user_id, at_ms, flag_ttl, len(fields)]
    for name, value in fields.items():
        argv += [name, value]
    argv += clear
    return argv


@dataclass(frozen=True, slots=True)
class ProfileReply:
    #: whether the call raised the shard's drain flag (its caller queues the drain job)
    raised_flag: bool
    #: the user hash after the change
    user: dict[str, str]


def parse(reply: list[Any]) -> ProfileReply:
    """The reply; :class:`UserDeleted` when the user's tombstone refused the change."""
    if reply[0] == ScriptCode.USER_DELETED:
        raise UserDeleted("the user was deleted", field="user_id")
    flag, flat = reply
    return ProfileReply(flag == 1, dict(zip(flat[::2], flat[1::2])))
