"""Streak bonuses (the daily job that pays every user with a live streak) and the grant of
streak freezes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from engine.commands import freezes
from engine.domain import validation
from engine.domain.errors import IdempotencyConflict, NotFound, ScoringError
from engine.domain.results import UserState
from engine.domain.rules import STREAK_BONUS_TYPE
from engine.services.awards import AwardRequest, Awards
from engine.services.context import Context
from engine.storage.outbox import FLAG_TTL

#: Streak bonus: 5 points per streak day, counting at most 100 days.
BONUS_PER_DAY = 5
BONUS_MAX_DAYS = 100
#: How long a day's streak bonus is remembered (the idempotency record): longer than the day
#: board it is computed from lives, so the job cannot pay a day twice.
BONUS_KEY_TTL = 9 * 86400
#: Users handled per round trip by the streak bonus job.
BONUS_BATCH = 2000


class Streaks:
    """Pays streak bonuses through :class:`~engine.services.awards.Awards`."""

    def __init__(self, ctx: Context, awards: Awards) -> None:
        self.ctx = ctx
        self.awards = awards

    def grant_freezes(self, user_id: str, count: int) -> UserState:
        """Give ``user_id`` ``count`` streak freezes (an operator's grant), holding at most the
        rules' ``[streak] freezes_max`` (with freezes off, 0: nothing is given).

        Returns:
            The user's state after the grant (``streak_freezes``: the freezes held); the
            freezes held reach SQL (``user_streak_freeze``) through the outbox.

        Raises:
            NotFound: the user has no state (no award yet).
        """
        uid = validation.user_id(user_id)
        n = validation.freeze_count(count)
        ctx = self.ctx
        shard = ctx.keys.shard_of(uid)
        reply = freezes.parse(
            freezes.script()(
                ctx.redis,
                freezes.keys(ctx.keys, uid, shard),
                freezes.args(user_id=uid, count=n, cap=ctx.rules.streak.freezes_max,
                             flag_ttl=FLAG_TTL),
            )
        )  # fmt: skip
        if reply is None:
            raise NotFound(f"user {uid!r} has no state yet", field="user_id")
        _, h, raised = reply
        if raised:
            ctx.queue_drain(shard)
        return ctx.state(uid, h)

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
        now = self.ctx.clock()
        day = day or now.astimezone(UTC).date()
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        at = min(end - timedelta(milliseconds=1), now)
        day_number = (day - date(1970, 1, 1)).days
        key = f"{STREAK_BONUS_TYPE}:{day.isoformat()}"
        report = {"users": 0, "awarded": 0, "already": 0, "skipped": 0}
        for users in self._day_users(day, batch):
            pipe = self.ctx.redis.pipeline(transaction=False)
            for u in users:
                pipe.hmget(self.ctx.keys.user(u), "streak", "last_day")
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
            for result in self.awards.award_many(items, key_ttl=BONUS_KEY_TTL):
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
        for key in self.ctx.keys.boards(f"day:{day.isoformat()}"):
            cursor = 0
            while True:
                cursor, members = self.ctx.redis.zscan(key, cursor, count=batch)
                if members:
                    yield [m for m, _ in members]
                if cursor == 0:
                    break
