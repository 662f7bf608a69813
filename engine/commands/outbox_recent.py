"""``lua/outbox_recent.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.reads import Cmd, Plan, script
from engine.commands.scripts import LuaScript, scripts
from engine.domain.keys import Keys
from engine.domain.results import Activity
from engine.domain.rules import reward_id

#: The most outbox entries one read looks at (newest first, down to the drain's floor): the
#: read runs in one script call, so this bounds how long it holds Redis (about 0.5 ms).
SCAN_LIMIT = 500


def lua() -> LuaScript:
    return scripts["outbox_recent"]


def keys(k: Keys, user_id: str) -> list[str]:
    return [k.outbox(k.shard_of(user_id))]


def args(*, group: str, user_id: str, limit: int, scan: int = SCAN_LIMIT) -> list[Any]:
    """The drain's consumer ``group``; at most ``limit`` activities of ``user_id``, among at
    most ``scan`` entries."""
    return [group, user_id, limit, scan]


def command(k: Keys, user_id: str, *, group: str, limit: int) -> Cmd:
    """The read (for :mod:`engine.commands.reads`) of ``user_id``'s activities in its shard's
    outbox (see :func:`args`)."""
    return script(lua(), keys(k, user_id), args(group=group, user_id=user_id, limit=limit))


def plan(k: Keys, user_id: str, *, group: str) -> Plan[list[Activity]]:
    """The read (one round trip) of all of ``user_id``'s activities the bounded read finds,
    for a merge with SQL's (an activity's time is its own, not its place in the outbox: a late
    one may sort anywhere)."""
    (reply,) = yield [command(k, user_id, group=group, limit=SCAN_LIMIT)]
    return parse(reply)


def entries(reply: Any) -> list[dict[str, str]]:
    """The entries' fields, newest first."""
    out = []
    for i in range(0, len(reply or ()), 2):
        flat = reply[i + 1]
        out.append(dict(zip(flat[::2], flat[1::2])))
    return out


def parse(reply: Any) -> list[Activity]:
    """The activities, newest first (as the outbox holds them: a reward's entry carries its
    key, from which its id is derived, as the drain derives it)."""
    out = []
    for f in entries(reply):
        out.append(Activity(
            f["id"] if "id" in f else reward_id(f["key"]), f["user"], int(f["amount"]),
            f["type"], f["desc"], f["tier"], Activity.time_from_ms(int(f["at"])),
        ))  # fmt: skip
    return out
