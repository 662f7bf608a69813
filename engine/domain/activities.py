"""A user's activities from two sources, as one list: SQL's audit trail and the outbox's entries
not yet drained into it (read first; an entry drained meanwhile is in both)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from engine.domain.results import Activity


def merge_activities(
    pending: list[Activity],
    stored: list[Activity],
    *,
    limit: int,
    activity_type: str | None = None,
    before: tuple[datetime, str] | None = None,
) -> list[Activity]:
    """The outbox's activities and SQL's, each id once, newest first (by time, then id, as SQL
    orders them), of ``activity_type`` and before the cursor ``before`` if given, at most
    ``limit``."""
    if not pending:
        return stored[:limit]
    merged = {a.id: a for a in pending}
    merged.update((a.id, a) for a in stored)
    wanted = [
        a for a in merged.values()
        if (activity_type is None or a.activity_type == activity_type)
        and (before is None or _order(a) < _cursor(before))
    ]  # fmt: skip
    wanted.sort(key=_order, reverse=True)
    return wanted[:limit]


def _order(a: Activity) -> tuple[datetime, uuid.UUID]:
    """SQL's order of activities: by time, then id (as a UUID)."""
    return a.created_at, uuid.UUID(a.id)


def _cursor(before: tuple[datetime, str]) -> tuple[datetime, uuid.UUID]:
    return before[0].astimezone(UTC), uuid.UUID(str(before[1]))
