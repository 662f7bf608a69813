"""Webhook subscriptions (admin): made, listed, changed, deleted, their secrets rotated, their
delivery log read and events queued again.

A subscription is stored in SQL (``webhook_subscription``); the drain queues one
``webhook_delivery`` row per event and subscription that wants it, and the webhook workers
deliver them (``workers.webhooks``). The secret is made here (:func:`secrets.token_urlsafe`)
and returned only by :meth:`Webhooks.create_webhook` and :meth:`Webhooks.rotate_secret`.

A target URL is checked when it is set: its host, and every address the host resolves to, must
be a public address unless the operator allows private ones (``SCORING_WEBHOOKS_ALLOW_PRIVATE``),
so that the API cannot be used to reach the engine's own network. What :mod:`engine.domain.webhooks`
says of the checks; the resolution happens here (``resolve``, injected by tests).
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from engine.domain.errors import (
    InvalidWebhook,
    UnknownWebhook,
    UnknownWebhookDelivery,
    WebhookUrlRefused,
)
from engine.domain.webhooks import (
    DEFAULT_IN_FLIGHT,
    DELIVERY_STATUSES,
    MAX_ROTATION_GRACE_S,
    ROTATION_GRACE_S,
    Webhook,
    WebhookDelivery,
    WebhookWithSecret,
    check_addresses,
    check_events,
    check_in_flight,
    check_url,
    literal_address,
)
from engine.services.context import Context

#: A host name and port -> the addresses it resolves to.
Resolver = Callable[[str, int], Sequence[str]]
#: The fields :meth:`Webhooks.update_webhook` changes.
PATCH_FIELDS = ("url", "events", "enabled", "max_in_flight")
#: The most rows one page of the delivery log holds.
MAX_PAGE = 500

_ID = re.compile(r"wh_[0-9a-f]{24}")
_SECRET_BYTES = 32  # 43 URL-safe characters; the column holds 80


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6); an unknown host resolves to none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


class Webhooks:
    """The webhook subscriptions of one engine (thread-safe: every call reads and writes SQL).

    ``allow_private``: whether a target may be a private, loopback... address (tests, a
    private network); ``resolve``: the host name resolver (default: the system's).
    """

    def __init__(
        self, ctx: Context, *, allow_private: bool = False, resolve: Resolver | None = None
    ) -> None:
        self.ctx = ctx
        self.allow_private = allow_private
        self.resolve: Resolver = resolve or resolve_host

    # -- checks ---------------------------------------------------------------------------

    def check_target(self, url: object) -> str:
        """``url`` if deliveries may go to it; raises :class:`InvalidWebhook` or
        :class:`WebhookUrlRefused` (its host is or resolves to a refused address)."""
        target = check_url(url)
        if self.allow_private:
            return target.url
        literal = literal_address(target.host)
        if literal is not None:
            check_addresses(target.host, [str(literal)])
        elif target.host.rstrip(".").lower() == "localhost" or target.host.endswith(".localhost"):
            raise WebhookUrlRefused(f"url host {target.host!r} is the local host", field="url")
        else:
            check_addresses(target.host, self.resolve(target.host, target.port))
        return target.url

    def _stored(self, webhook_id: str) -> Webhook:
        found = self.ctx.sql().webhook(webhook_id) if _ID.fullmatch(webhook_id) else None
        if found is None:
            raise UnknownWebhook(f"no webhook subscription {webhook_id!r}", field="webhook_id")
        return found

    # -- subscriptions --------------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: Sequence[str],
        *,
        enabled: bool = True,
        max_in_flight: int = DEFAULT_IN_FLIGHT,
    ) -> WebhookWithSecret:
        """Subscribe ``url`` to ``events`` (types of :data:`~engine.domain.webhooks.EVENT_TYPES`).
        The result holds the secret that signs its deliveries: the only time it is shown.

        Raises:
            InvalidWebhook: a field is invalid (``field`` names it).
            WebhookUrlRefused: the URL's host is not a public address (and none is allowed).
        """
        types = check_events(list(events) if isinstance(events, list | tuple) else events)
        in_flight = check_in_flight(max_in_flight)
        if not isinstance(enabled, bool):
            raise InvalidWebhook("enabled must be true or false", field="enabled")
        url = self.check_target(url)
        now = self.ctx.clock()
        secret = _new_secret()
        webhook = self.ctx.sql().create_webhook({
            "id": "wh_" + secrets.token_hex(12), "url": url, "events": types, "secret": secret,
            "previous_secret": None, "previous_secret_until": None, "enabled": enabled,
            "max_in_flight": in_flight, "disabled_reason": None, "created_at": now,
            "updated_at": now,
        })  # fmt: skip
        return WebhookWithSecret(webhook, secret)

    def webhooks(self) -> list[Webhook]:
        """Every subscription, oldest first."""
        return self.ctx.sql().webhooks()

    def webhook(self, webhook_id: str) -> Webhook:
        """One subscription (:class:`UnknownWebhook` if there is none)."""
        return self._stored(webhook_id)

    def update_webhook(self, webhook_id: str, **fields: Any) -> Webhook:
        """Change ``url``, ``events``, ``enabled`` or ``max_in_flight`` (checked as on create).
        Enabling a subscription clears the reason the engine disabled it for.

        Raises:
            UnknownWebhook, InvalidWebhook, WebhookUrlRefused.
        """
        unknown = sorted(set(fields) - set(PATCH_FIELDS))
        if unknown:
            raise InvalidWebhook(f"unknown field(s) {unknown}", field=unknown[0])
        values: dict[str, Any] = {}
        if "url" in fields:
            values["url"] = self.check_target(fields["url"])
        if "events" in fields:
            values["events"] = check_events(fields["events"])
        if "max_in_flight" in fields:
            values["max_in_flight"] = check_in_flight(fields["max_in_flight"])
        if "enabled" in fields:
            if not isinstance(fields["enabled"], bool):
                raise InvalidWebhook("enabled must be true or false", field="enabled")
            values["enabled"] = fields["enabled"]
            if fields["enabled"]:
                values["disabled_reason"] = None
        self._stored(webhook_id)
        if not values:
            return self._stored(webhook_id)
        values["updated_at"] = self.ctx.clock()
        updated = self.ctx.sql().update_webhook(webhook_id, values)
        if updated is None:  # deleted meanwhile
            raise UnknownWebhook(f"no webhook subscription {webhook_id!r}", field="webhook_id")
        return updated

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete a subscription and its delivery log (deliveries under way may still land)."""
        if not (_ID.fullmatch(webhook_id) and self.ctx.sql().delete_webhook(webhook_id)):
            raise UnknownWebhook(f"no webhook subscription {webhook_id!r}", field="webhook_id")

    # -- secrets --------------------------------------------------------------------------

    def rotate_secret(
        self, webhook_id: str, *, grace_seconds: int = ROTATION_GRACE_S
    ) -> WebhookWithSecret:
        """Give a subscription a new secret (returned: the only time it is shown). Deliveries
        are signed with it at once; the secret it replaces stays valid for ``grace_seconds``
        (0 to 7 days, default 24 h), so a receiver can take the new one in meanwhile. A
        rotation within the grace period of the last ends that one's previous secret."""
        if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
            raise InvalidWebhook("grace_seconds must be an integer", field="grace_seconds")
        if not 0 <= grace_seconds <= MAX_ROTATION_GRACE_S:
            raise InvalidWebhook(
                f"grace_seconds must be 0 to {MAX_ROTATION_GRACE_S}", field="grace_seconds"
            )
        self._stored(webhook_id)
        now = self.ctx.clock()
        secret = _new_secret()
        rotated = self.ctx.sql().rotate_webhook_secret(
            webhook_id, secret, now + timedelta(seconds=grace_seconds), now
        )
        if rotated is None:
            raise UnknownWebhook(f"no webhook subscription {webhook_id!r}", field="webhook_id")
        return WebhookWithSecret(rotated, secret)

    def signing_secrets(self, webhook_id: str) -> list[str]:
        """The secrets a receiver may see valid signatures under now: the current one (which
        signs deliveries) first, then the previous one during its grace period."""
        found = self.ctx.sql().webhook_secrets(webhook_id) if _ID.fullmatch(webhook_id) else None
        if found is None:
            raise UnknownWebhook(f"no webhook subscription {webhook_id!r}", field="webhook_id")
        secret, previous, until = found
        valid = [secret]
        if previous and until is not None and until > self.ctx.clock():
            valid.append(previous)
        return valid

    # -- the delivery log -----------------------------------------------------------------

    def deliveries(
        self,
        webhook_id: str,
        *,
        limit: int = 100,
        before: int | None = None,
        status: str | None = None,
    ) -> list[WebhookDelivery]:
        """A subscription's deliveries, newest first (``before``: the id the last page ended
        at; ``status``: pending, delivered or failed only)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidWebhook(f"limit must be 1 to {MAX_PAGE}", field="limit")
        if before is not None and (
            isinstance(before, bool) or not isinstance(before, int) or not 0 < before < 2**63
        ):
            raise InvalidWebhook("before must be a delivery id", field="before")
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidWebhook(
                f"status must be one of {', '.join(DELIVERY_STATUSES)}", field="status"
            )
        self._stored(webhook_id)
        return self.ctx.sql().webhook_deliveries(
            webhook_id, limit=limit, before=before, status=status
        )

    def redeliver(
        self, webhook_id: str, *, event_id: str | None = None, since: datetime | None = None
    ) -> int:
        """Queue again the delivery of one event (``event_id``) or of every event queued for
        the subscription at or after ``since`` (an aware datetime), whatever became of it: it
        is pending and due now, its attempts so far kept. The number queued.

        Raises:
            InvalidWebhook: neither or both given, or one is invalid.
            UnknownWebhook: no such subscription.
            UnknownWebhookDelivery: the subscription has no delivery of ``event_id``.
        """
        if (event_id is None) == (since is None):
            raise InvalidWebhook("give event_id or since, not both", field="event_id")
        if event_id is not None and (
            not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or "\x00" in event_id
        ):
            raise InvalidWebhook("event_id must be 1 to 64 characters", field="event_id")
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise InvalidWebhook("since must be a datetime with an offset", field="since")
        self._stored(webhook_id)
        queued = self.ctx.sql().redeliver_webhook(
            webhook_id, self.ctx.clock(), event_id=event_id, since=since
        )
        if event_id is not None and not queued:
            raise UnknownWebhookDelivery(
                f"webhook {webhook_id!r} has no delivery of event {event_id!r}", field="event_id"
            )
        return queued

    def prune_deliveries(self, days: int) -> int:
        """Delete the delivered and failed deliveries queued more than ``days`` days ago
        (``SCORING_WEBHOOK_LOG_DAYS``, daily); the number deleted."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise InvalidWebhook("days must be a positive integer", field="days")
        return self.ctx.sql().prune_webhook_deliveries(self.ctx.clock() - timedelta(days=days))


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(_SECRET_BYTES)
