"""The audit trail's monthly partitions (PostgreSQL): made ahead, and dropped after retention.

:func:`maintain_partitions` (the scheduler's daily ``scoring-partitions`` job, and
``scoring db partitions --apply``):

1. carries and drops the month tables a stopped run left detached;
2. makes the partitions of the current UTC month and the next ``ahead`` ones, and of every
   month that has rows in the DEFAULT partition (a backdated ``occurred_at``, a clock far
   ahead), moving those rows into them;
3. with ``retention_months`` (``SCORING_ACTIVITY_RETENTION_MONTHS``; None keeps everything):
   each month partition that ended more than that many months ago is dropped once every
   leaderboard period with activity in it (each UTC day with rows, its ISO week, the month)
   is archived (``leaderboard_period``); otherwise it is kept, logged, and tried again on the
   next run. Before the drop the month's per-user, per-type sums go to
   ``point_activity_rollup``, which ``reconcile`` and ``rebuild`` add to the rows kept.

Every step is idempotent, so two runs at once or a run stopped midway leave the same result.
SQLite keeps one unpartitioned table: there this does nothing (retention included).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from engine.domain.periods import WINDOWS, period_of
from engine.domain.rules import Rules
from engine.storage import partitions as parts
from engine.storage.store import SqlStore

log = logging.getLogger(__name__)

#: Months made ahead of the current one.
AHEAD = 3


@dataclass
class PartitionReport:
    created: list[str] = field(default_factory=list)
    #: (partition, rows, points) of each month dropped
    dropped: list[tuple[str, int, int]] = field(default_factory=list)
    #: partition -> the first few periods with activity in it that are not archived yet
    waiting: dict[str, list[str]] = field(default_factory=dict)


def retention_cutoff(now: datetime, months: int) -> datetime:
    """The instant before which a month must have ended to be dropped: ``now`` less ``months``
    calendar months (the day clamped to the shorter month's last)."""
    now = now.astimezone(UTC)
    first = parts.add_months(now.date().replace(day=1), -months)
    last_day = parts.add_months(first, 1).toordinal() - first.toordinal()
    day = first.replace(day=min(now.day, last_day))
    return datetime.combine(day, now.timetz())


def unarchived_periods(store: SqlStore, partition: str) -> list[str]:
    """The leaderboard periods (``window/period``) with activity in ``partition`` that are not
    archived, in order."""
    periods: list[tuple[str, str]] = []
    for day in store.partition_days(partition):
        at = datetime.combine(day, time(12), tzinfo=UTC)
        for window in WINDOWS:
            period = (window, period_of(window, at))
            if period not in periods:
                periods.append(period)
    return [f"{w}/{p}" for w, p in periods if not store.period_archived(w, p)]


def maintain_partitions(
    store: SqlStore,
    now: datetime,
    *,
    retention_months: int | None,
    ahead: int = AHEAD,
    window_days: int = 0,
) -> PartitionReport:
    """Make partitions ahead and apply retention (see the module's docstring). A month is
    dropped only once it ended ``window_days`` days ago too: the longest window board's
    retention (``[retention] month_days``), so that no board still live in Redis loses the
    rows a rebuild would make it from."""
    report = PartitionReport()
    if not store.partitioned():
        return report
    report.dropped.extend(store.finish_detached())
    current = parts.month_of(now)
    report.created = store.create_partitions(parts.add_months(current, n) for n in range(ahead + 1))
    if retention_months is None:
        return report
    cutoff = min(retention_cutoff(now, retention_months), now - timedelta(days=window_days))
    for partition in store.activity_partitions():
        if partition.month is None:
            continue
        end = datetime.combine(parts.add_months(partition.month, 1), time(), tzinfo=UTC)
        if end > cutoff:
            break  # months are in order: the rest are newer
        missing = unarchived_periods(store, partition.name)
        if missing:
            report.waiting[partition.name] = missing[:5]
            log.warning(
                "retention keeps %s: %d leaderboard period(s) with activity in it are not "
                "archived yet (%s); it is dropped on a run after they are",
                partition.name, len(missing), ", ".join(missing[:5]),
            )  # fmt: skip
            continue
        rows, points = store.drop_partition(partition.name)
        report.dropped.append((partition.name, rows, points))
        log.info(
            "retention dropped %s: %d activities, %d points carried into %s",
            partition.name, rows, points, parts.ROLLUP,
        )  # fmt: skip
    return report


def longest_window_days(rules: Rules) -> int:
    """The longest retention of a window board (days after its window ends): retention keeps
    every month that ended more recently."""
    r = rules.retention
    return max(r.day_days, r.week_days, r.month_days)
