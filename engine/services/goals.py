"""Weekly goals: a user's progress this week (Redis) and the weekly ``weekly_goal`` rows (SQL).

Goal progress moves inside the award script (``lua/award.lua``), atomically with the award;
what is here reads it, and writes the week's rows for the seed's ``WeeklyGoal`` table.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from engine.domain import validation
from engine.domain.errors import UnknownGoal
from engine.domain.periods import day_to_date, local_day, period_of, week_of
from engine.domain.results import GoalProgress
from engine.services.context import Context


class Goals:
    """The rules' weekly goals, per user and week (Monday first, in the user's zone)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def weekly_goals(self, user_id: str) -> list[GoalProgress]:
        """The user's goals for the current week (in the user's time zone), with progress."""
        uid = validation.user_id(user_id)
        ids = list(self.ctx.rules.weekly_goals)
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.hget(self.ctx.keys.user(uid), "tz")
        pipe.hmget(self.ctx.keys.goals(uid), ["wk", *(f"g:{g}" for g in ids)])
        tz, values = pipe.execute()
        week = week_of(local_day(self.ctx.clock(), tz or "UTC"))
        current = values[0] is not None and int(values[0]) == week
        start = day_to_date(week * 7 - 3)
        out = []
        for goal_id, value in zip(ids, values[1:], strict=True):
            goal = self.ctx.rules.weekly_goals[goal_id]
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
        tz = self.ctx.redis.hget(self.ctx.keys.user(uid), "tz") or "UTC"
        start = day_to_date(week_of(local_day(self.ctx.clock(), tz)) * 7 - 3)
        return start, start + timedelta(days=6)

    def weekly_goal(self, user_id: str, goal_id: str) -> GoalProgress:
        """One of the user's goals this week; :class:`UnknownGoal` if the rules have no such."""
        if not isinstance(goal_id, str) or goal_id not in self.ctx.rules.weekly_goals:
            raise UnknownGoal(f"unknown weekly goal {goal_id!r}", field="goal_id")
        return next(g for g in self.weekly_goals(user_id) if g.goal_id == goal_id)

    def create_weekly_goals(self, *, now: datetime | None = None) -> int:
        """Write this week's ``weekly_goal`` rows (week starting Monday, UTC) for every user
        active this week or in the 4 weeks before (on the week boards), in bulk; rows that
        exist are kept, so running it twice adds nothing. Returns the number of rows added."""
        now = now or self.ctx.clock()
        monday = now.astimezone(UTC).date() - timedelta(days=now.astimezone(UTC).weekday())
        users: set[str] = set()
        for weeks_back in range(5):
            period = period_of("week", datetime.combine(
                monday - timedelta(days=7 * weeks_back), datetime.min.time(), UTC))  # fmt: skip
            for key in self.ctx.keys.boards(f"week:{period}"):
                for member, _ in self.ctx.redis.zscan_iter(key, count=5000):
                    users.add(member)
        goals = self.ctx.rules.weekly_goals
        rows = (  # made as they are inserted, a chunk at a time
            {"user_id": u, "goal_type": goal_id, "week_start": monday,
             "week_end": monday + timedelta(days=6), "current_progress": 0,
             "target_progress": g.target, "is_completed": False, "points_reward": g.reward}
            for u in sorted(users) for goal_id, g in goals.items()
        )  # fmt: skip
        return self.ctx.sql().insert_weekly_goals(rows)
