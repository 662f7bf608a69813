"""Queries over the audit trail in SQL: a user's activities, points per type, the day's points,
users per tier and the most active users. Activities reach SQL when a worker drains the outbox,
normally within a second; a user's recent activities also list those still in the outbox
(read-your-writes: an award shows at once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.commands import outbox_recent
from engine.commands.reads import run
from engine.domain import validation
from engine.domain.activities import merge_activities
from engine.domain.errors import InvalidPaging
from engine.domain.results import Activity
from engine.services.context import Context
from engine.storage.outbox import GROUP


class Stats:
    """Reads the SQL audit trail (the engine's store; :class:`ConfigError` without one)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def recent_activities(
        self,
        user_id: str,
        *,
        limit: int = 20,
        activity_type: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[Activity]:
        """A user's activities, newest first (by time, then id), optionally of one type.
        ``before`` is the (created_at, id) of the last activity already seen (cursor paging).

        Read from SQL and from the user's shard's outbox (:meth:`pending_activities`), merged
        and de-duplicated by id, so an award is listed as soon as it is made, not only once a
        worker has drained it. The outbox is read first: an entry drained in between is then
        in SQL, and one id is listed once."""
        uid = validation.user_id(user_id)
        if activity_type is not None:
            validation.activity_type(self.ctx.rules, activity_type)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidPaging("limit must be a whole number from 1 to 1000", field="limit")
        store = self.ctx.sql()
        pending = run(self.ctx.redis, outbox_recent.plan(self.ctx.keys, uid, group=GROUP))
        stored = store.recent_activities(
            uid, limit=limit, activity_type=activity_type, before=before
        )
        return merge_activities(
            pending, stored, limit=limit, activity_type=activity_type, before=before
        )

    def pending_activities(self, user_id: str, *, limit: int = 20) -> list[Activity]:
        """The user's activities still in the outbox (after the drain's floor: the oldest entry
        it has not acknowledged), in the outbox's order, newest first: at most ``limit``, among
        at most :data:`~engine.commands.outbox_recent.SCAN_LIMIT` entries of the shard's outbox
        (the most recent). Some may be in SQL already (written, not yet acknowledged)."""
        uid = validation.user_id(user_id)
        k = self.ctx.keys
        reply = outbox_recent.lua()(
            self.ctx.redis,
            outbox_recent.keys(k, uid),
            outbox_recent.args(group=GROUP, user_id=uid, limit=limit),
        )
        return outbox_recent.parse(reply)

    def points_by_type(self, user_id: str) -> dict[str, int]:
        """The user's points per activity type, summed in SQL."""
        return self.ctx.sql().points_by_type(validation.user_id(user_id))

    def points_awarded_today(self) -> int:
        """Points awarded since midnight UTC (SQL)."""
        now = self.ctx.clock()
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return self.ctx.sql().points_between(start, start + timedelta(days=1))

    def tier_distribution(self) -> dict[str, int]:
        """Users per tier (SQL snapshots), every tier of the rules listed, lowest first."""
        counts = self.ctx.sql().tier_distribution()
        return {tier: counts.get(tier, 0) for tier in self.ctx.rules.tier_names}

    def most_active_users(self, *, days: int = 7, limit: int = 10) -> list[tuple[str, int]]:
        """(user id, points) of the users with the most points over the last ``days`` days."""
        return self.ctx.sql().most_active(self.ctx.clock() - timedelta(days=days), limit=limit)
