"""Requests to drain a shard's outbox: at most one queued RQ drain job per shard.

The award and profile scripts raise a per-shard flag (``SET NX`` with a lifetime) in the same
atomic call that appends to the outbox; the caller that raised it enqueues the shard's drain
job. The job holds the flag while it runs: it reads until the outbox is empty, then lingers
(``SCORING_DRAIN_LINGER_MS``, 500 ms by default) for more entries, writing them as they come,
and lowers the flag only after a linger with nothing new, or when its time slice ends or
another job waits for the worker; it then looks once more for entries appended while the flag
stood and, if there are any, queues its successor. So a burst of awards queues one job, and so
does a steady trickle (at 10 awards/s, one job per time slice instead of one per award). The
flag a job holds lives one lease (:data:`workers.drain.LOCK_TTL`, renewed by the job); with
``SCORING_DRAIN_LINGER_MS=0`` the job lowers it at its first commit instead, as before lingering
existed. If a queued job is lost, the flag lapses after :data:`FLAG_TTL` seconds (a running
job's, within one lease of its death) and the next award queues another; the periodic sweep
(``workers.jobs.sweep``) catches anything left.

While SQL fails a shard's drains, the flag stays raised, for the current backoff (1 s
doubling to 60 s; see :mod:`workers.drain`): awards queue nothing until the retry is due. The
drain job makes the retries of its time slice itself (1, 2, 4, 8, 16 s); after that the first
award once the flag lapses, or the sweep, queues the one retry. So an outage costs one job per
shard per time slice or backoff interval, not one per burst of awards.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

#: The consumer group of every outbox stream: the drain's (entries it acknowledged are in SQL).
GROUP = "sql"
#: On Redis < 7 (no ``lag`` in XINFO GROUPS) entries never read are counted up to this many.
LAG_COUNT_LIMIT = 10_000
#: Seconds the drain flag lives if no drain job lowers it (an award raises it for this long).
FLAG_TTL = 15
#: Import path of the job RQ runs; a string, so the engine does not import the workers.
DRAIN_JOB = "workers.jobs.drain_shard"


class DrainQueue:
    """Enqueues drain jobs on an RQ queue (which may live on another Redis than the state)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    @classmethod
    def from_url(cls, url: str, *, name: str = "scoring") -> DrainQueue:
        import redis
        from rq import Queue

        return cls(Queue(name, connection=redis.Redis.from_url(url)))

    def queued(self) -> set[int]:
        """The shards that have a drain job waiting in the queue (a short list by design: one
        job per shard, and the queue's other jobs are the periodic ones)."""
        return {job.args[0] for job in self.queue.jobs if job.func_name == DRAIN_JOB and job.args}

    def waiting(self) -> int:
        """Jobs waiting in the queue (of any kind: drains, periodic jobs)."""
        return int(self.queue.count)

    def request(self, shard: int) -> None:
        """Queue a drain of ``shard``'s outbox."""
        self.queue.enqueue(
            DRAIN_JOB,
            shard,
            description=f"drain outbox of shard {shard}",
            result_ttl=300,
            failure_ttl=86400,
        )


def raise_flag(client: Any, key: str, *, force: bool = False) -> bool:
    """Raise a shard's drain flag (``key``: :meth:`~engine.domain.keys.Keys.drain_flag`) for
    :data:`FLAG_TTL` seconds, as the scripts do (``lua/includes/drain_flag.lua``); True when
    this call raised it, so its caller queues the drain job. ``force``: raise it even when it
    stands (its lifetime starts again)."""
    return bool(client.set(key, "1", nx=not force, ex=FLAG_TTL))


def ensure_group(client: Any, outbox: str) -> None:
    """Create the outbox stream's consumer group (and the stream) unless it exists."""
    try:
        client.xgroup_create(outbox, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def backlog(client: Any, outbox: str) -> int:
    """Entries of an outbox not yet acknowledged by the drain (pending or never read). On
    Redis < 7 (the embedded server is 6.2) entries never read count up to
    :data:`LAG_COUNT_LIMIT` at most."""
    ensure_group(client, outbox)
    info = next(g for g in client.xinfo_groups(outbox) if g["name"] == GROUP)
    lag = info.get("lag")
    if lag is None:  # Redis < 7 reports no lag: count what follows the last delivered entry
        start = next_id(info["last-delivered-id"])
        lag = len(client.xrange(outbox, start, "+", count=LAG_COUNT_LIMIT))
    return int(info["pending"]) + int(lag)


def next_id(entry_id: str) -> str:
    """The stream entry id right after ``entry_id``."""
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"
