"""The SQL side of webhook deliveries: the subscriptions the drain reads, and the delivery rows
the delivery jobs claim and settle (the subscriptions' own API is in :mod:`engine.storage.store`).

A delivery is ``pending`` until an attempt gets a 2xx (``delivered``) or the attempts run out
or the receiver answers 410 (``failed``). ``next_attempt_at`` is when the next attempt is due;
an attempt in progress moves it forward by a lease first (:meth:`WebhookDeliveries.claim`),
and sets ``last_attempt_at``,
so that a second job for the same delivery finds nothing to do, and a worker killed
mid-attempt leaves a row the sweeper finds due again once the lease is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from engine.storage.models import WebhookDelivery, WebhookSubscription
from engine.storage.store import SqlStore


@dataclass(frozen=True)
class Subscription:
    """What delivering to a subscription needs."""

    id: str
    url: str
    events: frozenset[str]
    secret: str
    max_in_flight: int
    enabled: bool


@dataclass(frozen=True)
class Delivery:
    """A delivery row, as an attempt needs it."""

    id: int
    subscription_id: str
    event_id: str
    event_type: str
    payload: str
    status: str
    attempts: int


def _subscription(row: Any) -> Subscription:
    return Subscription(
        row.id, row.url, frozenset(filter(None, row.events.split(","))), row.secret,
        row.max_in_flight, row.enabled,
    )  # fmt: skip


class WebhookDeliveries:
    """Delivery rows of ``store``'s database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def enabled_subscriptions(self) -> list[Subscription]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(WebhookSubscription).where(WebhookSubscription.enabled.is_(True))
            )
            return [_subscription(r) for r in rows]

    def subscription(self, subscription_id: str) -> Subscription | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(WebhookSubscription).where(WebhookSubscription.id == subscription_id)
            ).first()
        return None if row is None else _subscription(row)

    def get(self, subscription_id: str, event_id: str) -> Delivery | None:
        t = WebhookDelivery
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(t.id, t.subscription_id, t.event_id, t.event_type, t.payload, t.status,
                       t.attempts)
                .where(t.subscription_id == subscription_id, t.event_id == event_id)
            ).first()  # fmt: skip
        return None if row is None else Delivery(*row)

    def claim(self, delivery_id: int, now: datetime, lease: float) -> bool:
        """Take the pending delivery for one attempt if it is due, or was never attempted
        (the drain queued its job and gave the sweeper a grace): its next attempt moves a lease
        ahead. False if it is not pending, not due, or another job took it."""
        t = WebhookDelivery
        due = or_(t.next_attempt_at <= now, t.last_attempt_at.is_(None))
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(t)
                .where(t.id == delivery_id, t.status == "pending", due)
                .values(next_attempt_at=now + timedelta(seconds=lease), last_attempt_at=now)
            )
            return bool(result.rowcount)

    def settle(
        self,
        delivery_id: int,
        *,
        status: str,
        attempts: int,
        at: datetime,
        response: int | None,
        error: str | None,
        next_at: datetime | None,
    ) -> None:
        """Record an attempt: the delivery's new status, and when the next one is due."""
        t = WebhookDelivery
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t).where(t.id == delivery_id).values(
                    status=status, attempts=attempts, last_status=response,
                    last_error=None if error is None else error[:1000], last_attempt_at=at,
                    next_attempt_at=next_at,
                    delivered_at=at if status == "delivered" else None,
                )
            )  # fmt: skip

    def disable(self, subscription_id: str, reason: str, at: datetime) -> None:
        t = WebhookSubscription
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t).where(t.id == subscription_id)
                .values(enabled=False, disabled_reason=reason, updated_at=at)
            )  # fmt: skip

    def due(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(subscription id, event id) of the pending deliveries due, of enabled subscriptions,
        oldest due first."""
        d, s = WebhookDelivery, WebhookSubscription
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(d.subscription_id, d.event_id)
                .join(s, and_(s.id == d.subscription_id, s.enabled.is_(True)))
                .where(d.status == "pending", d.next_attempt_at <= now)
                .order_by(d.next_attempt_at)
                .limit(limit)
            )
            return [(r[0], r[1]) for r in rows]

    def statuses(self, subscription_id: str) -> Sequence[Any]:
        """Every delivery row of a subscription (tests and benchmarks)."""
        with self.store.engine.connect() as connection:
            return list(
                connection.execute(
                    select(WebhookDelivery).where(
                        WebhookDelivery.subscription_id == subscription_id
                    )
                )
            )
