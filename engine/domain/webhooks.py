"""Webhook events and their signatures (stand-in for i18-api's module: same signatures).

A request is signed the Stripe way: ``Scoring-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>." + body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence

EVENT_TYPES = (
    "tier.changed",
    "level.changed",
    "goal.completed",
    "quest.completed",
    "achievement.earned",
    "streak.milestone",
    "activity.created",
)

#: The namespace of event ids (uuid5): fixed, so the same event always has the same id.
EVENT_NAMESPACE = uuid.UUID("0c6f6f4e-9d55-5b8e-a3f1-5c0f7e1b2d18")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Scoring-Signature`` header of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secrets: Sequence[str], header: str, body: bytes, now: int, tolerance: int = 300
) -> bool:
    """Whether ``header`` signs ``body`` with one of ``secrets``, within ``tolerance`` s."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance or "v1" not in parts:
        return False
    return any(
        hmac.compare_digest(sign(s, timestamp, body).split("v1=", 1)[1], parts["v1"])
        for s in secrets
    )


def event_id(event_type: str, source: str) -> str:
    """The stable id of the event ``event_type`` caused by ``source``."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{event_type}:{source}"))
