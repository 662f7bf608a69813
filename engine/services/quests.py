"""Side quests: the catalog (SQL) and each user's progress (Redis, ``lua/quest.lua``).

Awards of a quest's activity type advance it inside the award script (``lua/award.lua``); what
is here manages the catalog and runs the quest calls (start, progress, complete).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from engine.commands import quest as quest_cmd
from engine.commands.quest import QuestOp
from engine.domain import validation
from engine.domain.errors import (
    QuestAlreadyCompleted,
    QuestAlreadyStarted,
    QuestInactive,
    QuestNotOpen,
    QuestNotStarted,
    ScriptCode,
    UnknownQuest,
    UserDeleted,
    ValidationError,
)
from engine.domain.periods import lifetimes, window_boards
from engine.domain.results import EarnedAchievement, Quest, QuestResult, Reward, UserQuest
from engine.domain.rules import (
    ACHIEVEMENT_REWARD_TYPE,
    GOAL_REWARD_TYPE,
    QUEST_REWARD_TYPE,
    STREAK_BONUS_TYPE,
    reward_id,
)
from engine.services.context import Context
from engine.storage.outbox import FLAG_TTL

_TEXT = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
QUEST_FIELDS = ("title", "description", "quest_type", "difficulty", "points_reward",
                "is_active", "activity_type", "target_count", "starts_at", "ends_at")  # fmt: skip


class Quests:
    """The side quest catalog and users' quests."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._quest = quest_cmd.script(ctx.rules)

    def create_quest(self, **fields: Any) -> Quest:
        """Add a quest to the catalog. Fields: title, description, quest_type, difficulty,
        points_reward, activity_type, target_count (default 1), is_active (default True),
        starts_at and ends_at (optional aware datetimes)."""
        fields.setdefault("description", "")
        fields.setdefault("target_count", 1)
        fields.setdefault("is_active", True)
        fields.setdefault("starts_at", None)
        fields.setdefault("ends_at", None)
        return self.ctx.sql().create_quest(self._quest_fields(fields, partial=False))

    def update_quest(self, quest_id: int, **fields: Any) -> Quest:
        """Change catalog fields of a quest (e.g. ``is_active=False``). Users who started it
        keep the target and reward they started with."""
        current = self.quest(quest_id)
        merged = {**{f: getattr(current, f) for f in QUEST_FIELDS}, **fields}
        self._quest_fields(merged, partial=False)  # the whole quest stays valid
        quest = self.ctx.sql().update_quest(current.id, self._quest_fields(fields, partial=True))
        if quest is None:
            raise UnknownQuest(f"no quest {quest_id}", field="quest_id")
        return quest

    def quest(self, quest_id: int) -> Quest:
        quest = self.ctx.sql().get_quest(_quest_id(quest_id))
        if quest is None:
            raise UnknownQuest(f"no quest {quest_id}", field="quest_id")
        return quest

    def quests(self, *, active_only: bool = False) -> list[Quest]:
        return self.ctx.sql().list_quests(active_only=active_only)

    def _quest_fields(self, fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        unknown = set(fields) - set(QUEST_FIELDS)
        if unknown:
            raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "title":
                value = validation.profile_text(value, field="title", limit=200).strip()
                if not value:
                    raise ValidationError("title must not be empty", field="title")
            elif name == "description":
                value = validation.profile_text(value, field="description", limit=2000)
            elif name in ("quest_type", "difficulty"):
                if not isinstance(value, str) or not _TEXT.match(value):
                    raise ValidationError(
                        f"{name} must be 1 to 20 lowercase letters, digits or _", field=name
                    )
            elif name == "points_reward":
                cap = self.ctx.rules.activity_types[QUEST_REWARD_TYPE].max_points
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= cap:
                    raise ValidationError(
                        f"points_reward must be a whole number from 1 to {cap}", field=name
                    )
            elif name == "target_count":
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**6:
                    raise ValidationError(
                        "target_count must be a whole number from 1 to 1000000", field=name
                    )
            elif name == "is_active":
                if not isinstance(value, bool):
                    raise ValidationError("is_active must be true or false", field=name)
            elif name == "activity_type":
                validation.activity_type(self.ctx.rules, value)
                if value in (
                    GOAL_REWARD_TYPE,
                    QUEST_REWARD_TYPE,
                    STREAK_BONUS_TYPE,
                    ACHIEVEMENT_REWARD_TYPE,
                ):
                    raise ValidationError(
                        f"a quest cannot count rewards ({value})", field="activity_type"
                    )
            elif name in ("starts_at", "ends_at") and value is not None:
                if not isinstance(value, datetime):
                    raise ValidationError(f"{name} must be a datetime", field=name)
                value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
            out[name] = value
        if not partial:
            missing = [f for f in QUEST_FIELDS if f not in out]
            if missing:
                raise ValidationError(f"missing field(s) {missing}", field=missing[0])
            if out["starts_at"] and out["ends_at"] and out["ends_at"] <= out["starts_at"]:
                raise ValidationError("ends_at must be after starts_at", field="ends_at")
        return out

    def start_quest(self, user_id: str, quest_id: int) -> QuestResult:
        """Start a quest for a user: it must be active and open (after starts_at, before
        ends_at). Awards of its activity type made from now on advance it."""
        uid = validation.user_id(user_id)
        quest = self.quest(quest_id)
        now = self.ctx.clock()
        if not quest.is_active:
            raise QuestInactive(f"quest {quest.id} is not active", field="quest_id")
        if quest.starts_at is not None and now < quest.starts_at:
            raise QuestNotOpen(f"quest {quest.id} has not begun", field="quest_id")
        if quest.ends_at is not None and now >= quest.ends_at:
            raise QuestNotOpen(f"quest {quest.id} has ended", field="quest_id")
        ends = int(quest.ends_at.timestamp() * 1000) if quest.ends_at else 0
        spec = "\x1f".join(str(v) for v in (quest.activity_type, quest.target_count,
                                             quest.points_reward, ends, quest.title))  # fmt: skip
        return self._quest_call(QuestOp.START, uid, quest.id, spec)

    def advance_quest(self, user_id: str, quest_id: int, by: int = 1) -> QuestResult:
        """Advance a started quest by ``by`` steps (for progress the app tracks itself);
        reaching the target completes it and awards its reward."""
        uid = validation.user_id(user_id)
        if isinstance(by, bool) or not isinstance(by, int) or not 0 < by <= 10**6:
            raise ValidationError("by must be a whole number from 1 to 1000000", field="by")
        quest = self.quest(quest_id)
        return self._quest_call(QuestOp.PROGRESS, uid, quest.id, str(by))

    def complete_quest(self, user_id: str, quest_id: int) -> QuestResult:
        """Complete a started quest now and award its reward (the seed's
        ``UserSideQuest.complete()``); a second call is refused, so the reward is given once."""
        uid = validation.user_id(user_id)
        quest = self.quest(quest_id)
        return self._quest_call(QuestOp.COMPLETE, uid, quest.id, "")

    def user_quests(self, user_id: str) -> list[UserQuest]:
        """The user's quests, in progress and completed, by quest id."""
        uid = validation.user_id(user_id)
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.hgetall(self.ctx.keys.quests(uid))
        pipe.hgetall(self.ctx.keys.quests_done(uid))
        open_, done = pipe.execute()
        quests = [UserQuest.from_record(q, r) for q, r in {**open_, **done}.items()]
        return sorted(quests, key=lambda q: q.quest_id)

    def _quest_call(self, op: QuestOp, uid: str, quest_id: int, operand: str) -> QuestResult:
        now = self.ctx.clock()
        shard = self.ctx.keys.shard_of(uid)
        windows = window_boards(now, self.ctx.rules)
        now_s = now.timestamp()
        reply = quest_cmd.parse(
            self._quest(
                self.ctx.redis,
                quest_cmd.keys(self.ctx.keys, uid, shard, [w.board_id for w in windows]),
                quest_cmd.args(
                    op=op, user_id=uid, quest_id=quest_id, now_ms=int(now_s * 1000),
                    today=int(now_s // 86400), operand=operand, lifetimes=lifetimes(windows, now),
                    flag_ttl=FLAG_TTL,
                ),
            )
        )  # fmt: skip
        if reply.code is ScriptCode.USER_DELETED:
            raise UserDeleted(f"user {uid!r} was deleted", field="user_id")
        if reply.code is ScriptCode.QUEST_STARTED:
            raise QuestAlreadyStarted(f"quest {quest_id} is already in progress", field="quest_id")
        if reply.code is ScriptCode.QUEST_COMPLETED:
            raise QuestAlreadyCompleted(f"quest {quest_id} is already completed", field="quest_id")
        if reply.code is ScriptCode.QUEST_NOT_STARTED:
            raise QuestNotStarted(f"quest {quest_id} was not started", field="quest_id")
        if reply.raised_flag:
            self.ctx.queue_drain(shard)
        reward = None
        if reply.reward_key:
            reward = Reward(
                QUEST_REWARD_TYPE, str(quest_id), reply.reward_points, reward_id(reply.reward_key)
            )
        rules = self.ctx.rules
        earned = tuple(
            EarnedAchievement.of(rules, ach_id, level, rules.achievement_reward(ach_id, level))
            for ach_id, level in reply.achievements
        )
        return QuestResult(UserQuest.from_record(str(quest_id), reply.record), reward, earned)


def _quest_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        raise UnknownQuest(f"no quest {value!r}", field="quest_id")
    return value
