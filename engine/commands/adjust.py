"""``lua/adjust.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.errors import ScriptCode, check_code
from engine.domain.keys import Keys
from engine.domain.rules import Rules


def script(rules: Rules) -> LuaScript:
    """The adjust script for ``rules`` (their tables defined as ``RULES``)."""
    return scripts.get("adjust", RULES=rules.script_tables)


def keys(
    k: Keys, user_id: str, shard: int, activity_id: str, board_type: str, windows: list[str]
) -> list[str]:
    """The KEYS of one adjustment; ``board_type``: the type whose board it changes (the
    adjustment type, or a reversed activity's); ``windows``: the day, week and month board ids
    (of the adjustment's time, or of the reversed activity's)."""
    day, week, month = windows
    return [
        k.user(user_id, shard), k.idempotency(shard, activity_id), k.outbox(shard),
        k.board(shard, "all"), k.type_board(shard, board_type), k.board(shard, day),
        k.board(shard, week), k.board(shard, month), k.drain_flag(shard), k.feed(shard),
        k.reversed(user_id, shard), k.tombstone(user_id, shard),
    ]  # fmt: skip


def args(
    *,
    activity_id: str,
    user_id: str,
    amount: int,
    board_type: str,
    reason: str,
    created_ms: int,
    today: int,
    record_ttl: int,
    fingerprint: str,
    lifetimes: list[int],
    flag_ttl: int,
    reverses: str | None,
    floor: int = 0,
    cut: bool = False,
    decay_week: str = "",
    seen_last_day: str = "",
    tier_floor: bool = False,
) -> list[Any]:
    """The ARGV of one adjustment (see the script's header for each one's meaning and unit)."""
    day_ttl, week_ttl, month_ttl = lifetimes
    return [
        activity_id, user_id, amount, board_type, reason, created_ms, today, record_ttl,
        fingerprint, day_ttl, week_ttl, month_ttl, flag_ttl, reverses or "", floor,
        "1" if cut else "0", decay_week, seen_last_day, "1" if tier_floor else "0",
    ]  # fmt: skip


@dataclass(slots=True)
class AdjustReply:
    """The adjust script's reply. ``code``: OK, DUPLICATE (a replay: the record is the first
    call's), ALREADY_REVERSED, USER_DELETED or BELOW_ZERO (nothing changed; ``total``: the
    user's total)."""

    code: ScriptCode
    raised_flag: bool = False
    fingerprint: str = ""
    created_ms: int = 0
    total_after: int = 0
    amount: int = 0
    #: the user hash after the call (a replay: now)
    user: dict[str, str] = field(default_factory=dict)
    total: int = 0


def parse(reply: list[Any]) -> AdjustReply:
    code = check_code(reply[0])
    if code is ScriptCode.ALREADY_REVERSED or code is ScriptCode.USER_DELETED:
        return AdjustReply(code)
    if code is ScriptCode.BELOW_ZERO:
        return AdjustReply(code, total=int(reply[1]))
    fingerprint, created_ms, total_after, amount = reply[1].split("\x1f")
    flat = reply[3]
    user = dict(zip(flat[::2], flat[1::2]))
    return AdjustReply(
        code, reply[2] == 1, fingerprint, int(created_ms), int(total_after), int(amount), user
    )
