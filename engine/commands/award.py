"""``lua/award.lua``: the script, its KEYS, its ARGV and its reply, written once.

:func:`keys` and :func:`args` build a call in the script's order, :func:`rezone` moves a call to
the user's real zone (after a ``TZ_MISMATCH`` reply) and :func:`parse` reads a reply into an
:class:`AwardReply`; no other module knows a position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.commands.scripts import LuaScript, scripts
from engine.domain.errors import ScriptCode, check_code
from engine.domain.events import multiplier_text
from engine.domain.keys import Keys
from engine.domain.results import Reward
from engine.domain.rules import (
    ACHIEVEMENT_REWARD_TYPE,
    GOAL_REWARD_TYPE,
    QUEST_REWARD_TYPE,
    STREAK_BONUS_TYPE,
    Rules,
    reward_id,
)

#: The lifetime counts in the state of a record written before 0.2, which held the state.
LEGACY_LIFETIME = ("quiz_complete", "project_create", "comment")
#: ARGV positions (0-based) that :func:`rezone` sets: the local day, its week, the zone.
_DAY, _WEEK, _TZ = 6, 7, 8
#: Fields of the reply's state before its lifetime counts (total ... points of the type).
_STATE_HEAD = 7


def script(rules: Rules) -> LuaScript:
    """The award script for ``rules`` (their tables defined as ``RULES``)."""
    return scripts.get("award", RULES=rules.script_tables)


def keys(
    k: Keys, user_id: str, shard: int, activity_id: str, activity_type: str, windows: list[str]
) -> list[str]:
    """The KEYS of one award; ``windows``: the day, week and month board ids."""
    day, week, month = windows
    return [
        k.user(user_id, shard), k.days(user_id, shard), k.idempotency(shard, activity_id),
        k.outbox(shard), k.board(shard, "all"), k.type_board(shard, activity_type),
        k.board(shard, day), k.board(shard, week), k.board(shard, month), k.drain_flag(shard),
        k.goals(user_id, shard), k.quests(user_id, shard), k.quests_done(user_id, shard),
        k.type_board(shard, GOAL_REWARD_TYPE), k.type_board(shard, QUEST_REWARD_TYPE),
        k.feed(shard), k.frozen(user_id, shard), k.type_board(shard, STREAK_BONUS_TYPE),
        k.achievements(user_id, shard), k.achievement_holders(shard),
        k.type_board(shard, ACHIEVEMENT_REWARD_TYPE), k.tombstone(user_id, shard),
    ]  # fmt: skip


def args(
    *,
    activity_id: str,
    user_id: str,
    amount: int,
    activity_type: str,
    description: str,
    created_ms: int,
    day: int,
    week: int,
    tz: str,
    record_ttl: int,
    fingerprint: str,
    lifetimes: Sequence[int],
    flag_ttl: int,
    streak: bool,
    base_amount: int | None = None,
    multiplier: float | None = None,
    event_id: str | None = None,
) -> list[Any]:
    """The ARGV of one award (see the script's header for each one's meaning and unit);
    ``lifetimes``: the TTLs of the day, week and month boards. When a seasonal event applied,
    ``amount`` is the multiplied amount and ``base_amount``, ``multiplier`` and ``event_id``
    say what it was multiplied from: they go to the outbox, and the multiplier and event id
    into the idempotency record, so that a replay answers with them."""
    day_ttl, week_ttl, month_ttl = lifetimes
    event = ("", "", "")
    if event_id is not None:
        assert base_amount is not None and multiplier is not None
        mult = multiplier_text(multiplier)
        fingerprint = f"{fingerprint} {mult} {event_id}"
        event = (str(base_amount), mult, event_id)
    return [
        activity_id, user_id, amount, activity_type, description, created_ms, day, week, tz,
        record_ttl, fingerprint, day_ttl, week_ttl, month_ttl, flag_ttl, "1" if streak else "0",
        *event,
    ]  # fmt: skip


def rezone(argv: list[Any], *, day: int, week: int, tz: str) -> None:
    """Make the call whose ARGV is ``argv`` assume zone ``tz``, in which the award falls on
    ``day`` of week ``week``."""
    argv[_DAY], argv[_WEEK], argv[_TZ] = day, week, tz


@dataclass(slots=True)
class AwardState:
    """The user's state in a reply: after the award and its rewards, or (a duplicate) now."""

    total: int
    streak: int
    longest: int
    last_day: int | None
    version: int
    #: awards and points of the awarded type
    count: int
    points: int
    #: activity type -> count, for each of the rules' lifetime types, in their order
    lifetime: dict[str, int]
    username: str | None
    display_name: str | None
    #: streak freezes the user holds, and has spent in all (0 in a record from before 0.3)
    freezes: int = 0
    freezes_used: int = 0
    #: the peak total tier and level follow when higher (``[adjustments] keep_peak``), else 0
    peak: int = 0


@dataclass(slots=True)
class AwardReply:
    """An award script's reply.

    ``code`` OK (applied) or DUPLICATE (a replay: the record is the first call's); for
    TZ_MISMATCH only ``zone`` (the user's) is set and nothing was changed; USER_DELETED: the
    user's tombstone refused the award, nothing was changed.
    """

    code: ScriptCode
    zone: str = ""
    #: whether this award raised the shard's drain flag (its caller queues the drain job)
    raised_flag: bool = False
    fingerprint: str = ""
    created_ms: int = 0
    #: the user's total after the award and its rewards (for a replay, as the first call left it)
    total_after: int = 0
    #: the goals and quests completed and the achievement levels earned that paid points
    rewards: tuple[Reward, ...] = ()
    state: AwardState | None = None
    #: the achievement levels earned, as (achievement id, level, reward points)
    achievements: tuple[tuple[str, int, int], ...] = ()
    #: the seasonal event that multiplied the (first call's) amount, and its multiplier
    multiplier: float | None = None
    event_id: str | None = None


def parse(reply: list[Any], lifetime: Sequence[str]) -> AwardReply:
    """Read a reply of the script built with rules whose ``lifetime_types`` are ``lifetime``.

    A record written before 0.2 holds all 15 fields of the state after the first call (with the
    three :data:`LEGACY_LIFETIME` counts); its replay answers with that state.
    """
    # the hot path: positional arguments, and the codes looked up without a new enum each time
    code = _CODES.get(reply[0])
    if code is None:
        code = check_code(reply[0])
    if code is ScriptCode.TZ_MISMATCH:
        return AwardReply(code, reply[1])
    if code is ScriptCode.USER_DELETED:
        return AwardReply(code)
    record = reply[1].split("\x1f")
    if len(record) == 15:
        fingerprint, created_ms, *fields, packed = record
        total_after = fields[0]
        lifetime = LEGACY_LIFETIME
    else:
        fingerprint, created_ms, total_after, packed = record
        fields = reply[3].split("\x1f")
    total, streak, longest, last_day, version, count, points = fields[:_STATE_HEAD]
    end = _STATE_HEAD + len(lifetime)
    username, display_name = fields[end : end + 2]
    freezes = fields[end + 2 : end + 4]
    held, used = (int(freezes[0]), int(freezes[1])) if len(freezes) == 2 else (0, 0)
    peak = int(fields[end + 4]) if len(fields) > end + 4 else 0
    state = AwardState(
        int(total), int(streak), int(longest), int(last_day) if last_day else None,
        int(version), int(count), int(points),
        dict(zip(lifetime, map(int, fields[_STATE_HEAD:end]))),
        username or None, display_name or None, held, used, peak,
    )  # fmt: skip
    multiplier = event_id = None
    if " " in fingerprint:  # a seasonal event applied (see args)
        fingerprint, mult, event_id = fingerprint.split(" ")
        multiplier = float(mult)
    rewards, achievements = _rewards(packed) if packed else _NONE
    return AwardReply(
        code, "", reply[2] == 1, fingerprint, int(created_ms), int(total_after), rewards, state,
        achievements, multiplier, event_id,
    )  # fmt: skip


#: Reply codes by value (``ScriptCode(value)`` costs a microsecond an award).
_CODES = {c.value: c for c in ScriptCode}


_NONE: tuple[tuple[Reward, ...], tuple[tuple[str, int, int], ...]] = ((), ())


def _rewards(packed: str) -> tuple[tuple[Reward, ...], tuple[tuple[str, int, int], ...]]:
    """The rewards that paid points and the achievement levels in a record
    ("kind\x1eref\x1epoints\x1ekey", "\x1d"-joined)."""
    out, achievements = [], []
    for item in packed.split("\x1d"):
        kind, ref, points, key = item.split("\x1e")
        n = int(points)
        if kind == ACHIEVEMENT_REWARD_TYPE:
            ach_id, _, level = ref.rpartition(":")
            achievements.append((ach_id, int(level), n))
            if not n:
                continue
        out.append(Reward(kind, ref, n, reward_id(key)))
    return tuple(out), tuple(achievements)
