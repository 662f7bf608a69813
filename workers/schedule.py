"""Periodic jobs, registered with rq-scheduler under stable ids (so restarting the scheduler never
piles up duplicates), in UTC.

Every job's effect is idempotent per period (a drain writes each activity once; weekly goal rows
are inserted once; a day's streak bonus is paid once per user; a period is archived once; a
partition is made once, a month dropped once), so two schedulers running at once, or a job run
twice, still apply each effect once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: id -> (job function, seconds between runs); interval jobs start at once
INTERVAL: dict[str, tuple[str, int]] = {
    # a drain job lost with its caller (an API process or a Redis that died between an award
    # and its enqueue) is queued again within a flag's lifetime and a sweep: 30 s
    "scoring-sweep": ("workers.jobs.sweep", 15),
    # webhooks: pending deliveries due (retries, redeliveries, and those whose job was lost
    # between a drain's commit and its enqueue) are queued within 15 s
    "scoring-webhooks-sweep": ("workers.webhooks.sweep", 15),
    # achievements added to the rules (or a target lowered) are granted to those who already
    # qualify within a minute of the engine running with them; a no-op otherwise
    "scoring-achievements-backfill": ("workers.jobs.backfill_achievements", 60),
    # [decay]: hourly, so each user's decay comes within an hour of their local week's start
    # (once per user and local week however often it runs); a no-op while decay is off
    "scoring-decay": ("workers.jobs.run_decay", 3600),
}

#: id -> how long a run may take (seconds; RQ's default is 180): a backfill tests every user
#: with points, about 3 s per 10,000 (``bench.engagement_bench``); the partition job copies the
#: rows of each month it makes out of DEFAULT and sums each month it drops
TIMEOUT: dict[str, int] = {"scoring-achievements-backfill": 6 * 3600,
                           "scoring-decay": 6 * 3600, "scoring-partitions": 3600}  # fmt: skip

#: id -> (job function, cron expression in UTC)
CRON: dict[str, tuple[str, str]] = {
    # every Monday at 00:00 UTC
    "scoring-create-weekly-goals": ("workers.jobs.create_weekly_goals", "0 0 * * 1"),
    # the end of every UTC day: the day's active users with a streak get their bonus
    "scoring-streak-bonuses": ("workers.jobs.check_streak_bonuses", "55 23 * * *"),
    # just after midnight UTC: the day (and week, month) that ended is archived
    "scoring-archive-periods": ("workers.jobs.archive_periods", "10 0 * * *"),
    # after the archive: the audit trail's partitions for this month and the next 3, and
    # retention (SCORING_ACTIVITY_RETENTION_MONTHS) of months whose periods are archived
    "scoring-partitions": ("workers.jobs.maintain_partitions", "30 0 * * *"),
    # the webhook delivery log: delivered and failed deliveries older than
    # SCORING_WEBHOOK_LOG_DAYS
    "scoring-webhook-log": ("workers.jobs.prune_webhook_log", "40 0 * * *"),
}

#: every periodic job id
PERIODIC = [*INTERVAL, *CRON]


def register(scheduler: Any, *, queue_name: str) -> list[str]:
    """(Re)register every periodic job on ``scheduler``; returns their ids. A job already
    registered under its id is replaced, never duplicated."""
    scheduled = {job.id for job in scheduler.get_jobs()}
    for job_id in PERIODIC:
        if job_id in scheduled:
            scheduler.cancel(job_id)
    for job_id, (func, interval) in INTERVAL.items():
        scheduler.schedule(
            scheduled_time=datetime.now(UTC),
            func=func,
            interval=interval,
            repeat=None,
            id=job_id,
            queue_name=queue_name,
            result_ttl=interval * 10,
            timeout=TIMEOUT.get(job_id),
        )
    for job_id, (func, cron) in CRON.items():
        scheduler.cron(
            cron, func=func, id=job_id, queue_name=queue_name, result_ttl=7 * 86400,
            use_local_timezone=False, timeout=TIMEOUT.get(job_id),
        )  # fmt: skip
    return list(PERIODIC)
