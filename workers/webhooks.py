"""Webhooks: the events of a drained batch, and their delivery (RQ queue ``webhooks``).

The drain derives a batch's events (:func:`events`) and, when an enabled subscription wants
them, writes one ``webhook_delivery`` row per (subscription, event) in the batch's own SQL
transaction (:meth:`WebhookOutlet.rows`), so an event exists exactly when its activity is in
the audit trail; once the transaction commits it queues one delivery job per row
(:meth:`WebhookOutlet.enqueue`: one job per subscription and up to :data:`JOB_DELIVERIES`
events). Whatever is lost between the two (a crash, Redis away), the sweeper (:func:`sweep`,
every 15 s) queues again: it queues every pending delivery that is due (one the drain queued
is due :data:`QUEUED_GRACE` after its insertion, so a backlog of jobs is not queued twice).

A delivery job (:func:`deliver`) takes one of the subscription's ``max_in_flight`` slots (a
Redis sorted set of leases, so a killed worker's slot frees itself), claims the row (its next
attempt moves a lease ahead: a second job for it does nothing, and a killed worker's row is due
again when the lease ends), POSTs the signed body with a timeout and records the attempt: 2xx
delivered; 410 failed, and the subscription disabled; anything else (or no answer) retried
after a wait drawn at random below the next of ``SCORING_WEBHOOK_RETRY_S`` (full jitter), and
failed once they are used up. Delivery is at least once: a receiver de-duplicates on
``Scoring-Event-Id``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

import httpx

from engine.domain import webhooks as domain
from engine.domain.errors import ScoringError
from engine.domain.keys import Keys
from engine.storage.webhook_store import Subscription, WebhookDeliveries

log = logging.getLogger(__name__)

#: Seconds between two reads of the enabled subscriptions by a drain (a new subscription gets
#: the events of batches written from then on).
REFRESH_SECONDS = 5.0
#: Pending deliveries the sweeper queues per run at most (the oldest due first).
SWEEP_LIMIT = 5000
#: Seconds after its insertion that a delivery whose job the drain queued is due for the
#: sweeper (which queues it again only if that job was lost, or has not run by then).
QUEUED_GRACE = 60.0
#: Deliveries of one subscription per job queued by the drain (one enqueue costs about as
#: much as a drained entry: one per delivery would make the drain several times slower).
JOB_DELIVERIES = 100
#: Latency buckets (seconds) of the delivery histogram.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds a finished or failed delivery job's record stays in RQ.
JOB_TTL = 600


class BatchLike(Protocol):
    """What :func:`events` reads of a drained batch (``workers.drain._Batch``)."""

    activities: list[dict[str, Any]]
    changes: list[tuple[dict[str, Any], str, int]]
    milestones: list[tuple[dict[str, Any], str]]
    goals: dict[tuple[str, str, date], dict[str, Any]]
    quests: dict[tuple[str, int], dict[str, Any]]
    achievements: list[dict[str, Any]]


Event = tuple[str, str, datetime, dict[str, Any]]  # type, id, when, data


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def events(batch: BatchLike, wanted: frozenset[str], now: datetime) -> list[Event]:
    """The events of ``batch`` of the types in ``wanted``."""
    out: list[Event] = []

    def add(kind: str, source: str, at: datetime, data: dict[str, Any]) -> None:
        out.append((kind, domain.event_id(kind, source), at, data))

    if "activity.created" in wanted:
        for a in batch.activities:
            add("activity.created", str(a["id"]), a["created_at"], {
                "activity_id": str(a["id"]), "user_id": a["user_id"], "amount": a["amount"],
                "activity_type": a["activity_type"], "description": a["description"],
                "created_at": _iso(a["created_at"]), "total_points": a["total_points"],
                "tier": a["tier_at_time"], "level": a["level"],
            })  # fmt: skip
    for a, old_tier, old_level in batch.changes:
        user, activity = a["user_id"], str(a["id"])
        if "tier.changed" in wanted and old_tier != a["tier_at_time"]:
            add("tier.changed", f"{user}:{a['tier_at_time']}:{activity}", a["created_at"], {
                "user_id": user, "old_tier": old_tier, "new_tier": a["tier_at_time"],
                "total_points": a["total_points"], "activity_id": activity,
            })  # fmt: skip
        if "level.changed" in wanted and old_level != a["level"]:
            add("level.changed", f"{user}:{a['level']}:{activity}", a["created_at"], {
                "user_id": user, "old_level": old_level, "new_level": a["level"],
                "total_points": a["total_points"], "activity_id": activity,
            })  # fmt: skip
    if "streak.milestone" in wanted:
        for a, key in batch.milestones:
            add("streak.milestone", key, a["created_at"], {
                "user_id": a["user_id"], "days": int(key.rsplit(":", 1)[1]),
                "points": a["amount"], "activity_id": str(a["id"]),
            })  # fmt: skip
    if "goal.completed" in wanted:
        for g in batch.goals.values():
            source = f"{g['user_id']}:{g['goal_type']}:{g['week_start'].isoformat()}"
            add("goal.completed", source, now, {
                "user_id": g["user_id"], "goal_id": g["goal_type"],
                "week_start": g["week_start"].isoformat(), "progress": g["current_progress"],
                "target": g["target_progress"], "points_reward": g["points_reward"],
            })  # fmt: skip
    if "quest.completed" in wanted:
        for q in batch.quests.values():
            if q["is_completed"]:
                at = q["completed_at"] or now
                add("quest.completed", f"{q['user_id']}:{q['side_quest_id']}", at, {
                    "user_id": q["user_id"], "quest_id": q["side_quest_id"],
                    "progress": q["current_progress"], "target": q["target_progress"],
                    "points_awarded": q["points_awarded"], "completed_at": _iso(at),
                })  # fmt: skip
    if "achievement.earned" in wanted:
        for e in batch.achievements:
            source = f"{e['user_id']}:{e['achievement_id']}:{e['level']}"
            add("achievement.earned", source, e["earned_at"], {
                "user_id": e["user_id"], "achievement_id": e["achievement_id"],
                "level": e["level"], "points_reward": e["points_reward"],
                "earned_at": _iso(e["earned_at"]),
            })  # fmt: skip
    return out


def body(kind: str, event_id: str, at: datetime, data: dict[str, Any]) -> str:
    """The exact JSON body sent for an event."""
    return json.dumps(
        {"id": event_id, "type": kind, "created_at": _iso(at), "data": data},
        separators=(",", ":"),
    )


def job_id(subscription_id: str, event_id: str) -> str:
    """The RQ job id of a delivery: one job per delivery queued at a time."""
    return f"webhook-{subscription_id}-{event_id}"


class WebhookOutlet:
    """The drain's side of webhooks: the delivery rows of a batch, and their jobs.

    Reads the enabled subscriptions at most every ``refresh`` seconds (one query, whatever the
    batches); with none, a batch costs one dict lookup."""

    def __init__(
        self, deliveries: WebhookDeliveries, queue: Any | None, *, refresh: float = REFRESH_SECONDS
    ) -> None:
        self.deliveries = deliveries
        self.queue = queue
        self.refresh = refresh
        self._read_at = float("-inf")
        self._by_type: dict[str, list[Subscription]] = {}

    def subscribers(self) -> dict[str, list[Subscription]]:
        """Enabled subscriptions by event type wanted (cached for ``refresh`` seconds)."""
        now = time.monotonic()
        if now - self._read_at >= self.refresh:
            by_type: dict[str, list[Subscription]] = {}
            for s in self.deliveries.enabled_subscriptions():
                for kind in s.events:
                    by_type.setdefault(kind, []).append(s)
            self._by_type, self._read_at = by_type, now
        return self._by_type

    def rows(self, batch: BatchLike) -> list[dict[str, Any]]:
        """The webhook_delivery rows of ``batch``'s events (none without subscribers)."""
        by_type = self.subscribers()
        if not by_type:
            return []
        now = datetime.now(UTC)
        due = now + timedelta(seconds=QUEUED_GRACE)  # for the sweeper; its job is queued
        rows = []
        for kind, event_id, at, data in events(batch, frozenset(by_type), now):
            payload = body(kind, event_id, at, data)
            for s in by_type[kind]:
                rows.append({
                    "subscription_id": s.id, "event_id": event_id, "event_type": kind,
                    "payload": payload, "status": "pending", "attempts": 0,
                    "next_attempt_at": due, "created_at": now,
                })  # fmt: skip
        return rows

    def enqueue(self, rows: Sequence[dict[str, Any]]) -> None:
        """Queue the delivery jobs of committed rows. If the queue cannot take them, the
        sweeper queues them later (they are pending and due)."""
        if not rows or self.queue is None:
            return
        by_subscription: dict[str, list[str]] = {}
        for r in rows:
            by_subscription.setdefault(r["subscription_id"], []).append(r["event_id"])
        from rq import Queue

        try:
            self.queue.enqueue_many([
                Queue.prepare_data("workers.webhooks.deliver_many",
                                   (sub, ids[i : i + JOB_DELIVERIES]),
                                   result_ttl=JOB_TTL, failure_ttl=JOB_TTL)
                for sub, ids in by_subscription.items()
                for i in range(0, len(ids), JOB_DELIVERIES)
            ])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the rows wait for the sweeper
            log.warning(
                "webhooks: %d delivery jobs not queued (%s); the sweeper will", len(rows), exc
            )


def enqueue(queue: Any, deliveries: Sequence[tuple[str, str]]) -> None:
    """Queue one delivery job per (subscription id, event id), in one round trip."""
    from rq import Queue

    queue.enqueue_many([
        Queue.prepare_data("workers.webhooks.deliver", (sub, event), job_id=job_id(sub, event),
                           result_ttl=JOB_TTL, failure_ttl=JOB_TTL)
        for sub, event in deliveries
    ])  # fmt: skip


class Deliverer:
    """Attempts deliveries (see the module's docstring).

    Args:
        deliveries: the delivery rows in SQL.
        redis: the scoring Redis (subscription slots and counters).
        keys: the engine's key builder.
        queue: the RQ queue of delivery jobs (the sweeper queues into it).
        timeout: seconds to wait for a receiver's answer.
        waits: the longest wait before each retry (seconds); ``len(waits) + 1`` attempts.
    """

    def __init__(
        self,
        deliveries: WebhookDeliveries,
        redis: Any,
        keys: Keys,
        queue: Any | None,
        *,
        timeout: float = 10.0,
        waits: Sequence[float] = (60, 300, 1800, 7200, 28800),
        rng: Callable[[], float] = random.random,
        check: Callable[[str], object] | None = None,
    ) -> None:
        self.deliveries = deliveries
        # checks a target again before each attempt (raises ScoringError if refused): a name
        # may resolve to a private address now that did not when the subscription was made
        self.check = check
        self.redis = redis
        self.keys = keys
        self.queue = queue
        self.timeout = timeout
        self.waits = tuple(waits)
        self.rng = rng
        self.http = httpx.Client(timeout=timeout, follow_redirects=False)

    @property
    def lease(self) -> float:
        """Seconds an attempt holds its delivery and its slot: the timeout and half as much
        again (a worker killed mid-attempt delays the retry by this much)."""
        return self.timeout * 1.5 + 1

    def deliver(self, subscription_id: str, event_id: str) -> str:
        """One attempt at a delivery, if it is due; what happened: ``delivered``, ``retry``,
        ``failed``, ``gone`` (410: the subscription is disabled), or why nothing was done
        (``skipped``: not pending, not due, or taken by another job; ``disabled``; ``busy``:
        the subscription's slots are all taken, the sweeper queues it again)."""
        delivery = self.deliveries.get(subscription_id, event_id)
        if delivery is None or delivery.status != "pending":
            return "skipped"
        sub = self.deliveries.subscription(subscription_id)
        if sub is None or not sub.enabled:
            return "disabled"
        slot = self._acquire(sub)
        if slot is None:
            return "busy"
        try:
            if not self.deliveries.claim(delivery.id, datetime.now(UTC), self.lease):
                return "skipped"
            return self._attempt(sub, delivery)
        finally:
            self.redis.zrem(self.keys.webhook_inflight(sub.id), slot)

    def deliver_many(self, subscription_id: str, event_ids: Sequence[str]) -> dict[str, int]:
        """:meth:`deliver` each event in turn; how many had each outcome."""
        outcomes: dict[str, int] = {}
        for event_id in event_ids:
            outcome = self.deliver(subscription_id, event_id)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    def _attempt(self, sub: Subscription, delivery: Any) -> str:
        data = delivery.payload.encode()
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Scoring-Signature": domain.sign(sub.secret, now, data),
            "Scoring-Event-Id": delivery.event_id,
            "Scoring-Event-Type": delivery.event_type,
            "User-Agent": "scoring-webhooks/1",
        }
        started = time.monotonic()
        response: int | None = None
        error: str | None = None
        try:
            if self.check is not None:
                self.check(sub.url)
            response = self.http.post(sub.url, content=data, headers=headers).status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except ScoringError as exc:  # the target is refused now (see __init__): not sent
            error = f"target refused: {exc}"
        elapsed = time.monotonic() - started
        at = datetime.now(UTC)
        attempts = delivery.attempts + 1
        if response is not None and 200 <= response < 300:
            outcome, status, next_at = "delivered", "delivered", None
        elif response == 410:
            outcome, status, next_at = "gone", "failed", None
            self.deliveries.disable(sub.id, f"the receiver answered 410 Gone at {_iso(at)}", at)
            log.warning("webhooks: %s answered 410; subscription %s disabled", sub.url, sub.id)
        elif attempts > len(self.waits):
            outcome, status, next_at = "failed", "failed", None
        else:
            wait = self.rng() * self.waits[attempts - 1]  # full jitter
            outcome, status, next_at = "retry", "pending", at + timedelta(seconds=wait)
        if error is None and status != "delivered":
            error = f"HTTP {response}"
        self.deliveries.settle(delivery.id, status=status, attempts=attempts, at=at,
                               response=response, error=error, next_at=next_at)  # fmt: skip
        self._count(outcome, elapsed)
        return outcome

    def _acquire(self, sub: Subscription) -> str | None:
        """One of the subscription's ``max_in_flight`` slots (a lease that ends by itself),
        or None if all are taken."""
        key, token = self.keys.webhook_inflight(sub.id), uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        lease_ms = int(self.lease * 1000)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", now_ms)
        pipe.zadd(key, {token: now_ms + lease_ms})
        pipe.zrank(key, token)
        pipe.pexpire(key, lease_ms)
        rank = pipe.execute()[2]
        if rank is not None and rank >= max(1, sub.max_in_flight):
            self.redis.zrem(key, token)
            return None
        return token

    def _count(self, outcome: str, elapsed: float) -> None:
        key = self.keys.webhook_metrics()
        name = {"delivered": "delivered", "retry": "retried"}.get(outcome, "failed")
        bucket = next((b for b in LATENCY_BUCKETS if elapsed <= b), None)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, name, 1)
        pipe.hincrby(key, "latency_count", 1)
        pipe.hincrbyfloat(key, "latency_sum", elapsed)
        pipe.hincrby(key, f"le:{bucket if bucket is not None else '+Inf'}", 1)
        pipe.execute()

    def sweep(self, limit: int = SWEEP_LIMIT) -> int:
        """Queue the pending deliveries that are due and have no job waiting in the queue; the
        number queued. A job RQ thinks started counts for nothing: an attempt in progress
        holds its row (it is not due), so one due is a dead worker's."""
        if self.queue is None:
            return 0
        from rq.job import Job, JobStatus

        due = self.deliveries.due(datetime.now(UTC), limit)
        if not due:
            return 0
        ids = [job_id(s, e) for s, e in due]
        jobs = Job.fetch_many(ids, connection=self.queue.connection)
        live = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
        todo = [
            d for d, job in zip(due, jobs, strict=True)
            if job is None or job.get_status(refresh=False) not in live
        ]  # fmt: skip
        enqueue(self.queue, todo)
        return len(todo)


def metrics(redis: Any, keys: Keys) -> dict[str, float]:
    """The delivery counters (what :class:`Deliverer` counted), for Prometheus."""
    return {k: float(v) for k, v in redis.hgetall(keys.webhook_metrics()).items()}


# -- the RQ jobs -------------------------------------------------------------------------


def waits_of(setting: str) -> tuple[float, ...]:
    """``SCORING_WEBHOOK_RETRY_S`` as seconds."""
    return tuple(float(w) for w in setting.split(",") if w)


@lru_cache(maxsize=1)
def _deliverer() -> Deliverer:
    from engine.runtime.settings import get_settings

    from .jobs import context, sql_store

    settings = get_settings()
    engine, drainer = context()
    queue = drainer.webhooks.queue if drainer.webhooks is not None else None
    return Deliverer(
        WebhookDeliveries(sql_store(engine)), engine.redis, engine.keys, queue,
        timeout=settings.webhook_timeout_s, waits=waits_of(settings.webhook_retry_s),
        check=engine.subscriptions.check_target,
    )  # fmt: skip


def deliver(subscription_id: str, event_id: str) -> str:
    """RQ job: one attempt at delivering an event to a subscription (see :class:`Deliverer`)."""
    return _deliverer().deliver(subscription_id, event_id)


def deliver_many(subscription_id: str, event_ids: list[str]) -> dict[str, int]:
    """RQ job: :func:`deliver` each of ``event_ids`` (what the drain queues)."""
    return _deliverer().deliver_many(subscription_id, event_ids)


def sweep() -> int:
    """Periodic job: queue the pending deliveries due (retries, redeliveries, and jobs lost
    between a drain's commit and its enqueue); the number queued."""
    return _deliverer().sweep()
