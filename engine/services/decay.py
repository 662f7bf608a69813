"""Decay of inactive users (``[decay]`` rules, off by default): the scheduled job's work.

A user whose last active day (in the user's own zone) is ``after_days`` or more days before
today (in that zone) loses ``percent`` of the total or ``points``, never below ``floor`` (a
number, or the threshold of the user's current tier), once per local week: each week's decay
is an adjustment (``lua/adjust.lua``, reason ``decay``) whose idempotency key is
``decay:<week>`` (``2026-W49``, the user's local ISO week), remembered for
:data:`RECORD_TTL`, so however often the job runs in a week it applies once. A decay is not
activity: it moves no streak and no last active day, so an inactive user keeps decaying week
after week, until the floor or the next activity.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from engine.domain.errors import ScoringError
from engine.domain.periods import day_to_date, local_day, local_week
from engine.services.adjustments import Adjustments
from engine.services.context import Context

log = logging.getLogger(__name__)

#: Users read per pipeline.
CHUNK = 500
#: How long a week's decay record lives (seconds): past the end of any local week it is for.
RECORD_TTL = 8 * 86400
_FIELDS = ("total", "last_day", "tz", "tier", "decay_wk")


@dataclass(slots=True)
class DecayReport:
    #: users looked at (every user on the all-time boards), decayed this run, points taken
    users: int = 0
    decayed: int = 0
    #: users whose decay failed (logged; tried again on the job's next run)
    failed: int = 0
    points: int = 0
    seconds: float = 0.0


class Decay:
    """Runs ``[decay]`` over every user (the facade's ``run_decay``)."""

    def __init__(self, ctx: Context, adjustments: Adjustments) -> None:
        self.ctx = ctx
        self.adjustments = adjustments

    def run(self) -> DecayReport:
        """Decay every inactive user due this week (nothing when ``[decay]`` is off). Users
        are read from the all-time boards, shard by shard, :data:`CHUNK` per pipeline (each
        shard's keys on its own node of a cluster)."""
        started = time.monotonic()
        report = DecayReport()
        rules, keys, r = self.ctx.rules, self.ctx.keys, self.ctx.redis
        if not rules.decay.enabled:
            return report
        for shard in range(keys.shards):
            batch: list[str] = []
            for member, _ in r.zscan_iter(keys.board(shard, "all"), count=1000):
                batch.append(member if isinstance(member, str) else member.decode())
                if len(batch) >= CHUNK:
                    self._decay(shard, batch, report)
                    batch = []
            if batch:
                self._decay(shard, batch, report)
        report.seconds = time.monotonic() - started
        return report

    def _decay(self, shard: int, users: list[str], report: DecayReport) -> None:
        ctx, rules = self.ctx, self.ctx.rules
        decay = rules.decay
        pipe = ctx.redis.pipeline(transaction=False)
        for uid in users:
            pipe.hmget(ctx.keys.user(uid, shard), *_FIELDS)
        now = ctx.clock()
        for uid, values in zip(users, pipe.execute()):
            report.users += 1
            due = _due(now, values, decay.after_days)
            if due is None:
                continue
            total = int(values[0] or 0)
            floor = rules.tiers.get(values[3] or "", 0) if decay.floor == "tier" else decay.floor
            assert isinstance(floor, int)
            if total <= floor:
                continue  # at the floor: nothing to take
            try:
                result = self.adjustments.decay_step(
                    uid, decay.loss(total), floor=floor, week=due, record_ttl=RECORD_TTL,
                    seen_last_day=values[1] or "", tier_floor=decay.floor == "tier",
                )  # fmt: skip
            except ScoringError as exc:  # (deleted meanwhile, ...): the others go on
                report.failed += 1
                log.warning("decay of user %r failed: %s", uid, exc)
                continue
            if result is not None and not result.replayed:
                report.decayed += 1
                report.points -= result.activity.amount


def _due(now: datetime, values: list[str | None], after_days: int) -> str | None:
    """The user's local week if a decay is due in it (inactive long enough, none yet this
    week), else None. A user without a last active day (never active) is not decayed."""
    _, last_day, tz, _, done = values
    if last_day is None:
        return None
    today = local_day(now, tz or "UTC")
    if today - int(last_day) < after_days:
        return None
    week = local_week(day_to_date(today))
    return None if done == week else week
