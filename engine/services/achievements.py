"""Achievements (badges): what users hold, the catalog, and the backfill.

Levels are earned inside the award and quest scripts (``lua/includes/achievements.lua``); the
backfill (``lua/achieve.lua``) grants the levels a user's state already qualifies for, after an
achievement is added to the rules. A level is held once: every script tests the level the user
hash records before granting one, atomically, so the backfill may run during live awards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.commands import achieve as achieve_cmd
from engine.commands.scripts import run_calls
from engine.domain import validation
from engine.domain.periods import lifetimes, window_boards
from engine.domain.results import (
    AchievementCatalog,
    AchievementLevel,
    AchievementProgress,
    Activity,
    BackfillReport,
    CatalogEntry,
    CatalogLevel,
    UserAchievements,
)
from engine.runtime.connect import scan_keys
from engine.services.context import Context
from engine.storage.outbox import FLAG_TTL

#: Users a backfill sends to Redis per pipeline.
BACKFILL_CHUNK = 500


class Achievements:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._achieve = achieve_cmd.script(ctx.rules)

    def achievements(self, user_id: str) -> UserAchievements:
        """The levels ``user_id`` earned (oldest first) and the progress toward each visible
        achievement not fully earned (a hidden one shows once its first level is earned)."""
        uid = validation.user_id(user_id)
        rules = self.ctx.rules
        fields = [
            "total",
            "streak",
            *(rules.achievement_field(a) for a in rules.achievements.values()),
        ]
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.hgetall(self.ctx.keys.achievements(uid))
        pipe.hmget(self.ctx.keys.user(uid), [f"a:{i}" for i in rules.achievements] + fields)
        got, values = pipe.execute()
        n = len(rules.achievements)
        held = {ach_id: int(v or 0) for ach_id, v in zip(rules.achievements, values[:n])}
        now = dict(zip(fields, (int(v or 0) for v in values[n:])))
        earned = []
        for ref, ms in got.items():
            ach_id, _, level = ref.rpartition(":")
            a = rules.achievements.get(ach_id)
            earned.append(AchievementLevel(
                achievement_id=ach_id, title=a.title if a else ach_id,
                description=a.description if a else "", level=int(level),
                levels=a.levels if a else int(level), earned_at=Activity.time_from_ms(int(ms)),
            ))  # fmt: skip
        earned.sort(key=lambda e: (e.earned_at, e.achievement_id, e.level))
        progress = []
        for ach_id, a in rules.achievements.items():
            have = held[ach_id]
            if have >= a.levels or (a.hidden and have == 0):
                continue
            progress.append(AchievementProgress(
                achievement_id=ach_id, title=a.title, description=a.description, kind=a.kind,
                level=have, levels=a.levels, next_level=have + 1,
                current=now[rules.achievement_field(a)],
                target=rules.achievement_thresholds(a)[have],
            ))  # fmt: skip
        return UserAchievements(uid, earned, progress)

    def catalog(self, *, include_hidden: bool = False) -> AchievementCatalog:
        """Every achievement (hidden ones only with ``include_hidden``) with how many users
        hold each level and what share of the users with points that is."""
        keys = self.ctx.keys
        pipe = self.ctx.redis.pipeline(transaction=False)
        for shard in range(keys.shards):
            pipe.hgetall(keys.achievement_holders(shard))
        holders: dict[str, int] = {}
        for h in pipe.execute():
            for ref, n in h.items():
                holders[ref] = holders.get(ref, 0) + int(n)
        users = sum(_zcards(self.ctx.redis, keys))
        entries = []
        for ach_id, a in self.ctx.rules.achievements.items():
            if a.hidden and not include_hidden:
                continue
            levels = []
            for i, (target, reward) in enumerate(zip(a.targets, a.rewards), start=1):
                n = holders.get(f"{ach_id}:{i}", 0)
                levels.append(CatalogLevel(i, target, reward, n, n / users if users else 0.0))
            entries.append(CatalogEntry(ach_id, a.title, a.description, a.kind, a.activity_type,
                                        a.hidden, levels))  # fmt: skip
        return AchievementCatalog(users, entries)

    def backfill(self, *, progress: Callable[[int, int], None] | None = None) -> BackfillReport:
        """Grant every user with points the achievement levels their state qualifies for and
        they do not hold, with their rewards (once: a level held is never granted again, also
        when an award earns it at the same moment). ``progress(done, total)`` is called after
        each batch of users."""
        started = time.monotonic()
        r, keys = self.ctx.redis, self.ctx.keys
        total = sum(_zcards(r, keys))
        report = BackfillReport()
        for shard in range(keys.shards):
            raised = False
            batch: list[str] = []
            for member, _ in r.zscan_iter(keys.board(shard, "all"), count=1000):
                batch.append(member if isinstance(member, str) else member.decode())
                if len(batch) >= BACKFILL_CHUNK:
                    raised = self._grant(shard, batch, report) or raised
                    batch = []
                    if progress is not None:
                        progress(report.users, total)
            if batch:
                raised = self._grant(shard, batch, report) or raised
            if raised:
                self.ctx.queue_drain(shard)
        if progress is not None:
            progress(report.users, total)
        report.seconds = time.monotonic() - started
        self.ctx.redis.set(
            self.ctx.keys.achievements_backfilled(), self.ctx.rules.achievements_digest
        )
        return report

    def backfill_if_changed(self) -> BackfillReport | None:
        """Backfill when the achievements changed since the last backfill (by their
        :attr:`~engine.domain.rules.Rules.achievements_digest`, kept in Redis); None when they
        did not. The scheduler runs this every minute, so an achievement added to the rules is
        granted to those who qualify soon after the engine restarts with them."""
        key = self.ctx.keys.achievements_backfilled()
        digest = self.ctx.rules.achievements_digest
        if self.ctx.redis.get(key) == digest:
            return None
        return self.backfill()

    def recount_holders(self, *, old_shards: int = 0) -> None:
        """Count each shard's holders of each level anew from its users' achievements (after a
        rebuild or a reshard moved them); ``old_shards``: shards whose counts to drop too."""
        r, keys = self.ctx.redis, self.ctx.keys
        for shard in range(max(keys.shards, old_shards)):
            r.delete(keys.achievement_holders(shard))
        for shard in range(keys.shards):
            counts: dict[str, int] = {}
            pattern = keys.achievements("*", shard)
            batch: list[str] = []
            for key in [*scan_keys(r, pattern, near=keys.outbox(shard)), None]:
                if key is not None:
                    batch.append(key)
                if batch and (key is None or len(batch) >= BACKFILL_CHUNK):
                    pipe = r.pipeline(transaction=False)
                    for k in batch:
                        pipe.hkeys(k)
                    for refs in pipe.execute():
                        for ref in refs:
                            counts[ref] = counts.get(ref, 0) + 1
                    batch = []
            if counts:
                r.hset(keys.achievement_holders(shard), mapping=counts)

    def _grant(self, shard: int, users: list[str], report: BackfillReport) -> bool:
        """Run the backfill script for ``users`` of ``shard``, pipelined, and count what it
        granted into ``report``; whether a call raised the shard's drain flag."""
        now = self.ctx.clock()
        windows = window_boards(now, self.ctx.rules)
        board_ids, ttls = [w.board_id for w in windows], lifetimes(windows, now)
        now_s = now.timestamp()
        keys, rules = self.ctx.keys, self.ctx.rules
        calls = [
            (self._achieve, achieve_cmd.keys(keys, uid, shard, board_ids),
             achieve_cmd.args(user_id=uid, now_ms=int(now_s * 1000), today=int(now_s // 86400),
                              lifetimes=ttls, flag_ttl=FLAG_TTL))
            for uid in users
        ]  # fmt: skip
        raised = False
        for reply in run_calls(self.ctx.redis, calls):
            if isinstance(reply, Exception):
                raise reply
            levels, flag = achieve_cmd.parse(reply)
            raised = raised or flag
            report.granted += len(levels)
            report.points += sum(rules.achievement_reward(*lv) for lv in levels)
        report.users += len(users)
        return raised


def _zcards(r: Any, keys: Any) -> list[int]:
    """The users on each shard's all-time board (the users with points)."""
    pipe = r.pipeline(transaction=False)
    for key in keys.boards("all"):
        pipe.zcard(key)
    return [int(n) for n in pipe.execute()]
