"""``lua/quest.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.commands.achieve import earned
from engine.commands.scripts import LuaScript, scripts
from engine.domain.errors import ScriptCode, check_code
from engine.domain.keys import Keys
from engine.domain.rules import ACHIEVEMENT_REWARD_TYPE, QUEST_REWARD_TYPE, Rules


class QuestOp(StrEnum):
    """What a call does to the user's quest."""

    START = "start"
    PROGRESS = "progress"
    COMPLETE = "complete"


def script(rules: Rules) -> LuaScript:
    """The quest script for ``rules`` (their tables defined as ``RULES``)."""
    return scripts.get("quest", RULES=rules.script_tables)


def keys(k: Keys, user_id: str, shard: int, windows: list[str]) -> list[str]:
    """The KEYS of one call; ``windows``: the day, week and month board ids."""
    day, week, month = windows
    return [
        k.user(user_id, shard), k.quests(user_id, shard), k.quests_done(user_id, shard),
        k.outbox(shard), k.board(shard, "all"), k.type_board(shard, QUEST_REWARD_TYPE),
        k.board(shard, day), k.board(shard, week), k.board(shard, month), k.drain_flag(shard),
        k.feed(shard), k.achievements(user_id, shard), k.achievement_holders(shard),
        k.type_board(shard, ACHIEVEMENT_REWARD_TYPE), k.tombstone(user_id, shard),
    ]  # fmt: skip


def args(
    *,
    op: QuestOp,
    user_id: str,
    quest_id: int,
    now_ms: int,
    today: int,
    operand: str,
    lifetimes: Sequence[int],
    flag_ttl: int,
) -> list[Any]:
    """The ARGV of one call. ``operand``: for START the quest ("activity type\\x1ftarget
    \\x1freward\\x1fends ms (0 = never)\\x1ftitle"), for PROGRESS the steps, else ""; ``today``
    in UTC days; ``lifetimes``: the TTLs of the day, week and month boards."""
    day_ttl, week_ttl, month_ttl = lifetimes
    return [
        QuestOp(op).value, user_id, quest_id, now_ms, today, operand, day_ttl, week_ttl,
        month_ttl, flag_ttl,
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class QuestReply:
    """A quest script's reply. ``record``: the quest's record (after the call when OK; as it
    stands for QUEST_STARTED and QUEST_COMPLETED; "" for QUEST_NOT_STARTED)."""

    code: ScriptCode
    record: str = ""
    #: whether the call raised the shard's drain flag (its caller queues the drain job)
    raised_flag: bool = False
    #: the reward's points and key when this call completed the quest, else 0 and ""
    reward_points: int = 0
    reward_key: str = ""
    #: the achievement levels the completion earned, as (achievement id, level)
    achievements: tuple[tuple[str, int], ...] = ()


def parse(reply: list[Any]) -> QuestReply:
    code = check_code(reply[0])
    if code is not ScriptCode.OK:
        return QuestReply(code, reply[1] if len(reply) > 1 else "")
    points, key = reply[3].split("\x1e") if reply[3] else ("0", "")
    return QuestReply(code, reply[1], reply[2] == 1, int(points), key, earned(reply[4]))
