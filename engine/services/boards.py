"""Boards: one board's reads (:class:`~engine.services.leaderboard.Leaderboard`) and what a live
dashboard reads, in two round trips: a board's top rows with each user's name, tier, level and
streak; users per tier; the latest tier and level upgrades.

Users per tier are counted on the all-time boards (tier is a function of total points, and a
board's scores are the negated totals), so they cost nothing on the award path; the upgrade
feed is a capped stream per shard that the award script writes when a tier or level changes.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

from engine.domain.errors import InvalidPaging
from engine.domain.periods import board_id
from engine.domain.results import BoardRow, LiveBoard, Upgrade
from engine.domain.rules import Rules
from engine.services.context import Context
from engine.services.leaderboard import Leaderboard

#: The most upgrades one read returns (each shard's feed keeps about 100).
MAX_UPGRADES = 100


class Boards:
    """The leaderboards: one board's reads, and the live view of one."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def leaderboard(self, board: str = "all_time", *, period: str | None = None) -> Leaderboard:
        """A board: ``all_time``, ``month``, ``week``, ``day`` (current UTC period unless
        ``period`` is given: ``2026-11``, ``2026-W48``, ``2026-11-24``), or
        ``type:<activity_type>``."""
        ctx = self.ctx
        bid = board_id(board, period=period, now=ctx.clock(), rules=ctx.rules)
        return Leaderboard(ctx.redis, ctx.keys, bid, ctx.async_redis)

    def live_board(self, board: str = "all_time", limit: int = 10, upgrades: int = 20) -> LiveBoard:
        """The current period's ``board`` (as :meth:`leaderboard` names it) as a dashboard
        shows it: the top ``limit`` rows, the users per tier and the ``upgrades`` latest
        upgrades. Raises :class:`~engine.domain.errors.UnknownBoard` and
        :class:`~engine.domain.errors.InvalidPaging` as the board reads do."""
        lb = self.leaderboard(board)
        if (
            isinstance(upgrades, bool)
            or not isinstance(upgrades, int)
            or not (0 <= upgrades <= MAX_UPGRADES)
        ):
            raise InvalidPaging(f"upgrades must be from 0 to {MAX_UPGRADES}", field="upgrades")
        entries = lb.top(limit)
        pipe = self.ctx.redis.pipeline(transaction=False)
        for e in entries:
            pipe.hgetall(self.ctx.keys.user(e.user_id))
        for key in lb.shard_keys:
            pipe.zcard(key)
        bounds = self._tier_bounds()
        for key in self.ctx.keys.boards("all"):
            for low, high in bounds:
                pipe.zcount(key, "-inf" if high is None else f"({-high}", -low)
        shards = range(self.ctx.keys.shards) if upgrades else range(0)
        for shard in shards:
            pipe.xrevrange(self.ctx.keys.feed(shard), count=upgrades)
        replies = pipe.execute()

        users, replies = replies[: len(entries)], replies[len(entries) :]
        sizes, replies = replies[: len(lb.shard_keys)], replies[len(lb.shard_keys) :]
        counts, feeds = replies[: len(replies) - len(shards)], replies[len(replies) - len(shards) :]
        rows = []
        for e, h in zip(entries, users):
            u = self.ctx.state(e.user_id, h)
            rows.append(BoardRow(
                rank=e.rank, user_id=e.user_id, name=u.display_name or u.username or e.user_id,
                points=e.score, tier=u.tier, tier_display=u.tier_display, level=u.level,
                streak=u.current_streak_days if u.streak_active else 0,
            ))  # fmt: skip
        tiers = dict.fromkeys(self.ctx.rules.tier_names, 0)
        for i, n in enumerate(counts):
            tiers[self.ctx.rules.tier_names[i % len(bounds)]] += n
        return LiveBoard(
            board=board,
            total_users=sum(sizes),
            rows=rows,
            tiers=tiers,
            upgrades=_merge_feeds(feeds, upgrades, self.ctx.rules),
        )

    def _tier_bounds(self) -> list[tuple[int, int | None]]:
        """[low, high) points of each tier, lowest first (None: no upper bound)."""
        t = self.ctx.rules.tier_thresholds
        return [(low, t[i + 1] if i + 1 < len(t) else None) for i, low in enumerate(t)]


def _merge_feeds(
    feeds: list[list[tuple[str, dict[str, str]]]], limit: int, rules: Rules
) -> list[Upgrade]:
    """The shards' feeds (each newest first) merged, newest first, at most ``limit``."""

    def order(item: tuple[str, dict[str, str]]) -> tuple[int, int]:
        ms, _, seq = item[0].partition("-")
        return -int(ms), -int(seq or 0)

    out = []
    for entry_id, f in heapq.merge(*feeds, key=order):
        at = datetime.fromtimestamp(int(entry_id.partition("-")[0]) / 1000, tz=UTC)
        if f.get("e") == "ach":
            level, a = int(f["level"]), rules.achievements.get(f["ach"])
            out.append(Upgrade(
                user_id=f["user"], name=f["name"], at=at, from_tier="", tier="",
                from_level=level - 1, level=level, achievement=a.title if a else f["ach"],
            ))  # fmt: skip
        else:
            out.append(Upgrade(
                user_id=f["user"], name=f["name"], at=at, from_tier=f["from_tier"],
                tier=f["tier"], from_level=int(f["from_level"]), level=int(f["level"]),
            ))  # fmt: skip
        if len(out) == limit:
            break
    return out
