"""Periodic jobs, registered with rq-scheduler under stable ids (so restarting the scheduler never
piles up duplicates), in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: id -> (job function, interval in seconds)
PERIODIC: dict[str, tuple[str, int]] = {
    "scoring-sweep": ("workers.jobs.sweep", 60),
}


def register(scheduler: Any, *, queue_name: str) -> list[str]:
    """(Re)register every periodic job on ``scheduler``; returns their ids."""
    scheduled = {job.id for job in scheduler.get_jobs()}
    for job_id, (func, interval) in PERIODIC.items():
        if job_id in scheduled:
            scheduler.cancel(job_id)
        scheduler.schedule(
            scheduled_time=datetime.now(UTC),
            func=func,
            interval=interval,
            repeat=None,
            id=job_id,
            queue_name=queue_name,
            result_ttl=interval * 10,
        )
    return list(PERIODIC)
