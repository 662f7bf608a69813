"""Weekly goals, side quests, streak bonuses and archived leaderboard periods.

:class:`Engagement` is a part of :class:`~engine.service.ScoringEngine` (which inherits it); it
uses the engine's Redis client, keys, rules, clock and SQL store. Goal and quest progress move
inside the award script (``lua/award.lua``), atomically with the award; what is here reads
them, manages the quest catalog (SQL) and runs the quest calls (``lua/quest.lua``) and the
periodic jobs' work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import validation
from .errors import (
    IdempotencyConflict,
    InvalidPaging,
    QuestAlreadyCompleted,
    QuestAlreadyStarted,
    QuestInactive,
    QuestNotOpen,
    QuestNotStarted,
    ScoringError,
    ScriptCode,
    UnknownBoard,
    UnknownGoal,
    UnknownQuest,
    ValidationError,
    check_code,
)
from .outbox import FLAG_TTL
from .periods import (
    WINDOWS,
    day_to_date,
    lifetimes,
    local_day,
    period_end,
    period_of,
    window_boards,
)
from .results import GoalProgress, LeaderboardEntry, Quest, QuestResult, Reward, UserQuest
from .rules import GOAL_REWARD_TYPE, QUEST_REWARD_TYPE, STREAK_BONUS_TYPE, reward_id

if TYPE_CHECKING:
    from .service import AwardRequest

#: Streak bonus: 5 points per streak day, counting at most 100 days.
BONUS_PER_DAY = 5
BONUS_MAX_DAYS = 100
#: How long a day's streak bonus is remembered (the idempotency record): longer than the day
#: board it is computed from lives, so the job cannot pay a day twice.
BONUS_KEY_TTL = 9 * 86400
#: Users handled per round trip by the streak bonus job.
BONUS_BATCH = 2000

_TEXT = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
QUEST_FIELDS = ("title", "description", "quest_type", "difficulty", "points_reward",
                "is_active", "activity_type", "target_count", "starts_at", "ends_at")  # fmt: skip


def week_of(day: int) -> int:
    """The week number (Monday first) of day number ``day``; week n starts on day 7n - 3."""
    return (day + 3) // 7


class Engagement:
    """Goals, quests, streak bonuses and period archives (mixed into ScoringEngine)."""

    if TYPE_CHECKING:
        from .keys import Keys
        from .rules import Rules
        from .store import SqlStore

        redis: Any
        _quest: Any  # lua/quest.lua with the rules defined
        keys: Keys
        rules: Rules
        store: SqlStore | None
        drain_queue: Any

        clock: Callable[[], datetime]

        def _sql(self) -> SqlStore: ...
        def queue_drain(self, shard: int) -> None: ...
        def award_many(self, items: Any, *, key_ttl: int | None = ...) -> list[Any]: ...
        def leaderboard(self, board: str = ..., *, period: str | None = ...) -> Any: ...

    # -- weekly goals ---------------------------------------------------------------------

    def weekly_goals(self, user_id: str) -> list[GoalProgress]:
        """The user's goals for the current week (in the user's time zone), with progress."""
        uid = validation.user_id(user_id)
        ids = list(self.rules.weekly_goals)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.user(uid), "tz")
        pipe.hmget(self.keys.goals(uid), ["wk", *(f"g:{g}" for g in ids)])
        tz, values = pipe.execute()
        week = week_of(local_day(self.clock(), tz or "UTC"))
        current = values[0] is not None and int(values[0]) == week
        start = day_to_date(week * 7 - 3)
        out = []
        for goal_id, value in zip(ids, values[1:], strict=True):
            goal = self.rules.weekly_goals[goal_id]
            progress = int(value) if current and value is not None else 0
            out.append(GoalProgress(
                goal_id=goal_id, title=goal.title, kind=goal.kind,
                activity_type=goal.activity_type, week_start=start,
                week_end=start + timedelta(days=6), current_progress=progress,
                target_progress=goal.target, is_completed=progress >= goal.target,
                points_reward=goal.reward,
            ))  # fmt: skip
        return out

    def goal_week(self, user_id: str) -> tuple[date, date]:
        """The first and last day (Monday, Sunday) of the user's current goal week."""
        uid = validation.user_id(user_id)
        tz = self.redis.hget(self.keys.user(uid), "tz") or "UTC"
        start = day_to_date(week_of(local_day(self.clock(), tz)) * 7 - 3)
        return start, start + timedelta(days=6)

    def weekly_goal(self, user_id: str, goal_id: str) -> GoalProgress:
        """One of the user's goals this week; :class:`UnknownGoal` if the rules have no such."""
        if not isinstance(goal_id, str) or goal_id not in self.rules.weekly_goals:
            raise UnknownGoal(f"unknown weekly goal {goal_id!r}", field="goal_id")
        return next(g for g in self.weekly_goals(user_id) if g.goal_id == goal_id)

    def create_weekly_goals(self, *, now: datetime | None = None) -> int:
        """Write this week's ``weekly_goal`` rows (week starting Monday, UTC) for every user
        active this week or in the 4 weeks before (on the week boards), in bulk; rows that
        exist are kept, so running it twice adds nothing. Returns the number of rows added."""
        now = now or self.clock()
        monday = now.astimezone(UTC).date() - timedelta(days=now.astimezone(UTC).weekday())
        users: set[str] = set()
        for weeks_back in range(5):
            period = period_of("week", datetime.combine(
                monday - timedelta(days=7 * weeks_back), datetime.min.time(), UTC))  # fmt: skip
            for key in self.keys.boards(f"week:{period}"):
                for member, _ in self.redis.zscan_iter(key, count=5000):
                    users.add(member)
        goals = self.rules.weekly_goals
        rows = (  # made as they are inserted, a chunk at a time
            {"user_id": u, "goal_type": goal_id, "week_start": monday,
             "week_end": monday + timedelta(days=6), "current_progress": 0,
             "target_progress": g.target, "is_completed": False, "points_reward": g.reward}
            for u in sorted(users) for goal_id, g in goals.items()
        )  # fmt: skip
        return self._sql().insert_weekly_goals(rows)

    # -- side quests: the catalog (SQL) ---------------------------------------------------

    def create_quest(self, **fields: Any) -> Quest:
        """Add a quest to the catalog. Fields: title, description, quest_type, difficulty,
        points_reward, activity_type, target_count (default 1), is_active (default True),
        starts_at and ends_at (optional aware datetimes)."""
        fields.setdefault("description", "")
        fields.setdefault("target_count", 1)
        fields.setdefault("is_active", True)
        fields.setdefault("starts_at", None)
        fields.setdefault("ends_at", None)
        return self._sql().create_quest(self._quest_fields(fields, partial=False))

    def update_quest(self, quest_id: int, **fields: Any) -> Quest:
        """Change catalog fields of a quest (e.g. ``is_active=False``). Users who started it
        keep the target and reward they started with."""
        current = self.quest(quest_id)
        merged = {**{f: getattr(current, f) for f in QUEST_FIELDS}, **fields}
        self._quest_fields(merged, partial=False)  # the whole quest stays valid
        quest = self._sql().update_quest(current.id, self._quest_fields(fields, partial=True))
        if quest is None:
            raise UnknownQuest(f"no quest {quest_id}", field="quest_id")
        return quest

    def quest(self, quest_id: int) -> Quest:
        quest = self._sql().get_quest(_quest_id(quest_id))
        if quest is None:
            raise UnknownQuest(f"no quest {quest_id}", field="quest_id")
        return quest

    def quests(self, *, active_only: bool = False) -> list[Quest]:
        return self._sql().list_quests(active_only=active_only)

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
                cap = self.rules.activity_types[QUEST_REWARD_TYPE].max_points
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
                validation.activity_type(self.rules, value)
                if value in (GOAL_REWARD_TYPE, QUEST_REWARD_TYPE, STREAK_BONUS_TYPE):
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

    # -- side quests: a user's progress (Redis, lua/quest.lua) ----------------------------

    def start_quest(self, user_id: str, quest_id: int) -> QuestResult:
        """Start a quest for a user: it must be active and open (after starts_at, before
        ends_at). Awards of its activity type made from now on advance it."""
        uid = validation.user_id(user_id)
        quest = self.quest(quest_id)
        now = self.clock()
        if not quest.is_active:
            raise QuestInactive(f"quest {quest.id} is not active", field="quest_id")
        if quest.starts_at is not None and now < quest.starts_at:
            raise QuestNotOpen(f"quest {quest.id} has not begun", field="quest_id")
        if quest.ends_at is not None and now >= quest.ends_at:
            raise QuestNotOpen(f"quest {quest.id} has ended", field="quest_id")
        ends = int(quest.ends_at.timestamp() * 1000) if quest.ends_at else 0
        spec = "\x1f".join(str(v) for v in (quest.activity_type, quest.target_count,
                                             quest.points_reward, ends, quest.title))  # fmt: skip
        return self._quest_call("start", uid, quest.id, spec)

    def advance_quest(self, user_id: str, quest_id: int, by: int = 1) -> QuestResult:
        """Advance a started quest by ``by`` steps (for progress the app tracks itself);
        reaching the target completes it and awards its reward."""
        uid = validation.user_id(user_id)
        if isinstance(by, bool) or not isinstance(by, int) or not 0 < by <= 10**6:
            raise ValidationError("by must be a whole number from 1 to 1000000", field="by")
        quest = self.quest(quest_id)
        return self._quest_call("progress", uid, quest.id, str(by))

    def complete_quest(self, user_id: str, quest_id: int) -> QuestResult:
        """Complete a started quest now and award its reward (the seed's
        ``UserSideQuest.complete()``); a second call is refused, so the reward is given once."""
        uid = validation.user_id(user_id)
        quest = self.quest(quest_id)
        return self._quest_call("complete", uid, quest.id, "")

    def user_quests(self, user_id: str) -> list[UserQuest]:
        """The user's quests, in progress and completed, by quest id."""
        uid = validation.user_id(user_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.quests(uid))
        pipe.hgetall(self.keys.quests_done(uid))
        open_, done = pipe.execute()
        quests = [UserQuest.from_record(q, r) for q, r in {**open_, **done}.items()]
        return sorted(quests, key=lambda q: q.quest_id)

    def _quest_call(self, op: str, uid: str, quest_id: int, arg: str) -> QuestResult:
        now = self.clock()
        shard = self.keys.shard_of(uid)
        windows = window_boards(now, self.rules)
        now_s = now.timestamp()
        reply = self._quest(
            self.redis,
            self.keys.quest(uid, shard, [w.board_id for w in windows]),
            [op, uid, quest_id, int(now_s * 1000), int(now_s // 86400), arg,
             *lifetimes(windows, now), FLAG_TTL],
        )  # fmt: skip
        code = check_code(reply[0])
        if code is ScriptCode.QUEST_STARTED:
            raise QuestAlreadyStarted(f"quest {quest_id} is already in progress", field="quest_id")
        if code is ScriptCode.QUEST_COMPLETED:
            raise QuestAlreadyCompleted(f"quest {quest_id} is already completed", field="quest_id")
        if code is ScriptCode.QUEST_NOT_STARTED:
            raise QuestNotStarted(f"quest {quest_id} was not started", field="quest_id")
        if reply[2] == 1:
            self.queue_drain(shard)
        reward = None
        if reply[3]:
            points, key = reply[3].split("\x1e")
            reward = Reward(QUEST_REWARD_TYPE, str(quest_id), int(points), reward_id(key))
        return QuestResult(UserQuest.from_record(str(quest_id), reply[1]), reward)

    # -- streak bonuses ---------------------------------------------------------------------

    def streak_bonuses(
        self, day: date | None = None, *, batch: int = BONUS_BATCH
    ) -> dict[str, int]:
        """Give every user active on UTC day ``day`` (default: today) whose streak is alive
        5 x min(streak days, 100) points (``streak_bonus``), at most once per user and day.

        The day's active users are its day board's members, read in batches (ZSCAN over each
        shard); each batch costs one pipelined read of the users' streaks and one
        ``award_many``. Each bonus carries the idempotency key ``streak_bonus:<day>``, so
        running the job again (or two at once) pays nobody twice. The bonus is dated the
        day's last millisecond (it lands on that day's boards) and does not count as a day of
        activity for the streak.
        """
        from .service import AwardRequest

        now = self.clock()
        day = day or now.astimezone(UTC).date()
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        at = min(end - timedelta(milliseconds=1), now)
        day_number = (day - date(1970, 1, 1)).days
        key = f"{STREAK_BONUS_TYPE}:{day.isoformat()}"
        report = {"users": 0, "awarded": 0, "already": 0, "skipped": 0}
        for users in self._day_users(day, batch):
            pipe = self.redis.pipeline(transaction=False)
            for u in users:
                pipe.hmget(self.keys.user(u), "streak", "last_day")
            items: list[AwardRequest] = []
            for u, (streak, last_day) in zip(users, pipe.execute(), strict=True):
                report["users"] += 1
                # alive: active on the day (in any zone, the local day is within one of it)
                if not streak or not last_day or int(last_day) < day_number - 1:
                    report["skipped"] += 1
                    continue
                points = BONUS_PER_DAY * min(int(streak), BONUS_MAX_DAYS)
                items.append(AwardRequest(u, STREAK_BONUS_TYPE, points,
                                          f"{int(streak)}-day streak!", key, at))  # fmt: skip
            # remembered longer than the rules' key TTL: as long as the day board lives
            for result in self.award_many(items, key_ttl=BONUS_KEY_TTL):
                if isinstance(result, IdempotencyConflict) or (
                    not isinstance(result, ScoringError) and result.replayed
                ):
                    report["already"] += 1
                elif isinstance(result, ScoringError):
                    report["skipped"] += 1
                else:
                    report["awarded"] += 1
        return report

    def _day_users(self, day: date, batch: int) -> Iterator[list[str]]:
        """The members of day ``day``'s board, shard by shard, ``batch`` at a time."""
        for key in self.keys.boards(f"day:{day.isoformat()}"):
            cursor = 0
            while True:
                cursor, members = self.redis.zscan(key, cursor, count=batch)
                if members:
                    yield [m for m, _ in members]
                if cursor == 0:
                    break

    # -- leaderboard periods ----------------------------------------------------------------

    def archive_ended_periods(self, *, now: datetime | None = None) -> list[tuple[str, str, int]]:
        """Archive to SQL the final standings of the day, week and month that ended last
        (if not archived yet); returns (window, period, users) of each one archived. Safe to
        run twice or concurrently: rows are inserted once, the period marked last."""
        now = now or self.clock()
        done = []
        for window in WINDOWS:
            # the period that contains the instant just before the current one began
            current = period_of(window, now)
            start = _period_start(window, current)
            previous = period_of(window, start - timedelta(seconds=1))
            users = self.archive_period(window, previous)
            if users is not None:
                done.append((window, previous, users))
        return done

    def archive_period(self, window: str, period: str) -> int | None:
        """Archive one ended period's standings; None if it was archived already or has not
        ended. The standings are read from Redis in rank order, a chunk at a time."""
        if window not in WINDOWS:
            raise ValidationError(f"unknown window {window!r}", field="window")
        if period_end(window, period) > self.clock():
            return None
        store = self._sql()
        if store.period_archived(window, period):
            return None
        board = self.leaderboard(window, period=period)
        return store.archive_period(window, period, _standings(board))

    def archived_top(
        self, board: str, period: str, *, limit: int = 10, offset: int = 0
    ) -> tuple[int, list[LeaderboardEntry]] | None:
        """(users, entries) of an archived period's board; None if it was not archived."""
        _check_window(board)
        period_end(board, period)  # validates the period
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidPaging("limit must be a whole number from 1 to 1000", field="limit")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidPaging("offset must be a whole number >= 0", field="offset")
        return self._sql().archived_top(board, period, limit=limit, offset=offset)

    def archived_rank(self, board: str, period: str, user_id: str) -> tuple[int, int, int] | None:
        """(rank, points, users) of a user on an archived period; None if not there."""
        _check_window(board)
        period_end(board, period)
        return self._sql().archived_rank(board, period, validation.user_id(user_id))


def _standings(board: Any, chunk: int = 1000) -> Iterator[tuple[int, str, int]]:
    """(rank, user id, points) of every user on ``board``, best first, a page at a time."""
    offset = 0
    while True:
        entries = board.top(chunk, offset)
        for e in entries:
            yield e.rank, e.user_id, e.score
        if len(entries) < chunk:
            return
        offset += chunk


def _period_start(window: str, period: str) -> datetime:
    end = period_end(window, period)
    if window == "day":
        return end - timedelta(days=1)
    if window == "week":
        return end - timedelta(days=7)
    first = end - timedelta(days=1)
    return datetime(first.year, first.month, 1, tzinfo=UTC)


def _check_window(board: str) -> None:
    if board not in WINDOWS:
        raise UnknownBoard("only day, week and month boards have archived periods", field="board")


def _quest_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        raise UnknownQuest(f"no quest {value!r}", field="quest_id")
    return value
