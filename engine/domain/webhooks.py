"""Webhooks, the pure part: event types, the signature scheme, event ids, subscriptions and
delivery-log entries as the engine returns them, and the checks of a target URL.

A request to a subscriber carries ``Scoring-Signature: t=<unix seconds>,v1=<hex>``, the
HMAC-SHA256 under the subscription's secret of ``f"{t}."`` followed by the exact body bytes
(Stripe's scheme); a receiver recomputes it (:func:`verify`) and refuses a timestamp further
than :data:`TOLERANCE_S` from its own clock, so a captured request cannot be replayed later.

Nothing here resolves a host name: :func:`check_url` parses and checks the URL itself,
:func:`refused_address` says whether an address may be a target; the service resolves the host
(``engine.services.webhooks``) and checks every address it gets.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from engine.domain.errors import InvalidWebhook, WebhookUrlRefused

#: Every event type a subscription may ask for.
EVENT_TYPES = (
    "tier.changed",
    "level.changed",
    "goal.completed",
    "quest.completed",
    "achievement.earned",
    "streak.milestone",
    "activity.created",
)
#: The headers of a delivery.
SIGNATURE_HEADER = "Scoring-Signature"
EVENT_ID_HEADER = "Scoring-Event-Id"
EVENT_TYPE_HEADER = "Scoring-Event-Type"
#: Seconds a receiver accepts between a signature's timestamp and its own clock.
TOLERANCE_S = 300
#: Seconds the previous secret stays valid after a rotation, unless the rotation says.
ROTATION_GRACE_S = 24 * 3600
#: The longest grace period a rotation may ask for (7 days).
MAX_ROTATION_GRACE_S = 7 * 24 * 3600
#: The longest target URL.
MAX_URL_LENGTH = 2000
#: The range of a subscription's concurrent deliveries.
MIN_IN_FLIGHT, MAX_IN_FLIGHT, DEFAULT_IN_FLIGHT = 1, 64, 4
#: Delivery statuses.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)

#: The well-known NAT64 prefix (RFC 6052): its addresses stand for the IPv4 address in their end.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: The namespace of event ids (uuid5): fixed, so an event's id never changes.
_NAMESPACE = uuid.UUID("5c0f7f3e-2b1a-5d0c-9e47-8a5b3c2d1e0f")


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription as the engine shows it: never its secrets (``previous_secret_until``:
    until when the secret before the last rotation is valid too, or None)."""

    id: str
    url: str
    events: tuple[str, ...]
    enabled: bool
    max_in_flight: int
    disabled_reason: str | None
    previous_secret_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookWithSecret:
    """A subscription just made or rotated, with its new secret: the one time it is shown."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event queued for one subscription: its state in the delivery log. ``last_status``:
    the HTTP status of the last attempt (None: no answer, see ``last_error``)."""

    id: int
    subscription_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


# -- signatures -----------------------------------------------------------------------------


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Scoring-Signature`` header of ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secrets: Sequence[str], header: str, body: bytes, now: int, tolerance: int = TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` under one of ``secrets`` (during a rotation's grace
    period: the new and the previous) with a timestamp within ``tolerance`` seconds of
    ``now``. A header may carry several ``v1=`` values; one matching is enough."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            macs.append(value)
    if timestamp is None or not macs or abs(now - timestamp) > tolerance:
        return False
    expected = [_mac(secret, timestamp, body) for secret in secrets if secret]
    return any(hmac.compare_digest(e, m) for e in expected for m in macs)


def event_id(event_type: str, source: str) -> str:
    """The stable id of an event: the same type and cause (``source``: an activity id, a reward
    key, ``"<user>:<tier>:<activity id>"``...) always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{event_type}:{source}"))


# -- subscriptions' input -------------------------------------------------------------------


def check_events(events: object) -> tuple[str, ...]:
    """The event types of a subscription, de-duplicated in :data:`EVENT_TYPES`' order."""
    if not isinstance(events, list | tuple) or not events:
        raise InvalidWebhook("events must be a non-empty list of event types", field="events")
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidWebhook(
            f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}", field="events"
        )
    return tuple(t for t in EVENT_TYPES if t in events)


def check_in_flight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidWebhook("max_in_flight must be an integer", field="max_in_flight")
    if not MIN_IN_FLIGHT <= value <= MAX_IN_FLIGHT:
        raise InvalidWebhook(
            f"max_in_flight must be {MIN_IN_FLIGHT} to {MAX_IN_FLIGHT}", field="max_in_flight"
        )
    return value


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL, its host (without brackets) and port."""

    url: str
    host: str
    port: int


def check_url(url: object) -> Target:
    """Check a target URL's form: http or https, a host, no credentials or fragment, at most
    :data:`MAX_URL_LENGTH` characters, no control characters or spaces.

    Raises:
        InvalidWebhook: it is not such a URL (``field`` ``url``).
    """
    if not isinstance(url, str) or not url:
        raise InvalidWebhook("url must be a non-empty string", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"url is longer than {MAX_URL_LENGTH} characters", field="url")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidWebhook("url must not contain spaces or control characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhook(f"url is not a valid URL ({exc})", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook("url must be http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidWebhook("url has no host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("url must not hold credentials", field="url")
    if parts.fragment:
        raise InvalidWebhook("url must not have a fragment", field="url")
    return Target(url, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` is written as (``127.0.0.1``, ``::1``), or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def refused_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a delivery must not go to ``address`` (unless private targets are allowed):
    private, loopback, link-local, multicast, reserved, unspecified, shared (100.64.0.0/10) or
    any other address that is not globally reachable, an IPv4 one written as IPv6 (mapped,
    6to4 or NAT64) included."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and ip in _NAT64:  # 64:ff9b::a.b.c.d reaches a.b.c.d through NAT64
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if mapped is not None:
            return refused_address(mapped)
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    """Refuse a host any of whose ``addresses`` is :func:`refused_address` (every address the
    name resolves to: a client may connect to any of them).

    Raises:
        WebhookUrlRefused: one is, or there is none.
    """
    seen = list(addresses)
    if not seen:
        raise WebhookUrlRefused(f"url host {host!r} resolves to no address", field="url")
    for address in seen:
        if refused_address(address.split("%", 1)[0]):
            raise WebhookUrlRefused(
                f"url host {host!r} is (or resolves to) {address}, a private, loopback, "
                "link-local, multicast or reserved address (SCORING_WEBHOOKS_ALLOW_PRIVATE=true "
                "allows such targets)",
                field="url",
            )
