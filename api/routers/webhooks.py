"""Webhook subscriptions (admin): ``/v1/webhooks``, their secrets, delivery log and
redelivery; and the event bodies delivered, in the OpenAPI document's ``webhooks`` section."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from engine.domain.webhooks import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    Webhook,
    WebhookDelivery,
    WebhookWithSecret,
)

from ..auth import Scope
from ..deps import Caller, Engine
from ..schemas import (
    EVENT_BODIES,
    DeliveryOut,
    RedeliverIn,
    RedeliverOut,
    RotateIn,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["webhooks"])
ERRORS = error_responses(401, 403, 404, 422)
WebhookIdPath = Annotated[str, Path(max_length=40)]


def _with_secret(created: WebhookWithSecret) -> dict[str, Any]:
    return {**dataclasses.asdict(created.webhook), "secret": created.secret}


@router.post(
    "/webhooks", status_code=201, response_model=WebhookCreatedOut, responses=ERRORS,
    summary="Subscribe a URL to events (admin); the answer holds the secret, shown this once",
)  # fmt: skip
def create_webhook(body: WebhookIn, engine: Engine, caller: Caller) -> dict[str, Any]:
    """422 ``webhook_url_refused`` when the URL's host is, or resolves to, a private,
    loopback, link-local, multicast or reserved address (unless
    ``SCORING_WEBHOOKS_ALLOW_PRIVATE=true``)."""
    caller.require(Scope.ADMIN)
    return _with_secret(engine.create_webhook(**body.model_dump()))


@router.get(
    "/webhooks", response_model=list[WebhookOut], responses=ERRORS,
    summary="Every webhook subscription, oldest first (admin; never the secrets)",
)  # fmt: skip
def list_webhooks(engine: Engine, caller: Caller) -> list[Webhook]:
    caller.require(Scope.ADMIN)
    return engine.webhooks()


@router.get(
    "/webhooks/{webhook_id}", response_model=WebhookOut, responses=ERRORS,
    summary="A webhook subscription (admin)",
)  # fmt: skip
def get_webhook(webhook_id: WebhookIdPath, engine: Engine, caller: Caller) -> Webhook:
    caller.require(Scope.ADMIN)
    return engine.webhook(webhook_id)


@router.patch(
    "/webhooks/{webhook_id}", response_model=WebhookOut, responses=ERRORS,
    summary="Change a subscription's URL, events, enabled or max_in_flight (admin)",
)  # fmt: skip
def update_webhook(
    webhook_id: WebhookIdPath, body: WebhookPatch, engine: Engine, caller: Caller
) -> Webhook:
    caller.require(Scope.ADMIN)
    return engine.update_webhook(webhook_id, **body.model_dump(exclude_none=True))


@router.delete(
    "/webhooks/{webhook_id}", status_code=204, responses=ERRORS,
    summary="Delete a subscription and its delivery log (admin)",
)  # fmt: skip
def delete_webhook(webhook_id: WebhookIdPath, engine: Engine, caller: Caller) -> Response:
    caller.require(Scope.ADMIN)
    engine.delete_webhook(webhook_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhook_id}/rotate", response_model=WebhookCreatedOut, responses=ERRORS,
    summary="A new signing secret (admin), shown this once; the old stays valid grace_seconds",
)  # fmt: skip
def rotate_secret(
    webhook_id: WebhookIdPath, engine: Engine, caller: Caller, body: RotateIn | None = None
) -> dict[str, Any]:
    caller.require(Scope.ADMIN)
    grace = (body or RotateIn()).grace_seconds
    return _with_secret(engine.rotate_webhook_secret(webhook_id, grace_seconds=grace))


@router.get(
    "/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut], responses=ERRORS,
    summary="A subscription's delivery log, newest first (admin)",
)  # fmt: skip
def deliveries(
    webhook_id: WebhookIdPath,
    engine: Engine,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, description="the last page's last id")] = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
) -> list[WebhookDelivery]:
    caller.require(Scope.ADMIN)
    return engine.webhook_deliveries(webhook_id, limit=limit, before=before, status=status)


@router.post(
    "/webhooks/{webhook_id}/redeliver", response_model=RedeliverOut, responses=ERRORS,
    summary="Deliver one event again, or every event since a time (admin)",
)  # fmt: skip
def redeliver(
    webhook_id: WebhookIdPath, body: RedeliverIn, engine: Engine, caller: Caller
) -> RedeliverOut:
    """The deliveries become pending and due now (their attempts so far kept); 404
    ``unknown_webhook_delivery`` when the subscription has no delivery of ``event_id``."""
    caller.require(Scope.ADMIN)
    queued = engine.redeliver_webhook(webhook_id, event_id=body.event_id, since=body.since)
    return RedeliverOut(queued=queued)


#: The OpenAPI document's ``webhooks``: each event type's body (``create_app`` adds them).
events = APIRouter(tags=["webhook events"])
_HEADERS = (
    f'Headers: ``{SIGNATURE_HEADER}: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, '
    f"``{EVENT_ID_HEADER}`` (de-duplicate on it), ``{EVENT_TYPE_HEADER}``. Answer 2xx to "
    "acknowledge; 410 disables the subscription; anything else is retried."
)


def _document(event_type: str, model: type) -> None:
    def receive(body: Any) -> None:
        """What a subscriber receives."""

    receive.__annotations__ = {"body": model, "return": None}
    receive.__name__ = event_type.replace(".", "_")
    events.add_api_route(
        event_type, receive, methods=["POST"], summary=f"{event_type} (sent to subscribers)",
        description=_HEADERS, status_code=200,
    )  # fmt: skip


for _type, _model in EVENT_BODIES.items():
    _document(_type, _model)
