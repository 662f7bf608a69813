"""Webhook subscriptions, part A: the admin API over HTTP (CRUD, the secret shown once,
rotation with a grace period, the refusal of private targets, bad input, the delivery log and
redelivery) on SQLite and PostgreSQL, and the signature scheme a receiver checks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest
import redis
from fastapi.testclient import TestClient
from helpers import ADMIN, API_KEYS, JWT_SECRET, PLAIN_RULES, READER, Clock, iso
from sqlalchemy import insert, select

from api.app import create_app
from api.schemas import EVENT_BODIES, EventType
from engine import ScoringEngine
from engine.domain import webhooks as wh
from engine.domain.errors import InvalidWebhook, WebhookUrlRefused
from engine.runtime.settings import Settings
from engine.storage.models import WebhookDelivery, WebhookSubscription
from engine.storage.store import SqlStore

PUBLIC = "93.184.216.34"
#: The tests' DNS: host name -> the addresses it resolves to.
DNS = {
    "hooks.example.com": [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"],
    "other.example.com": ["8.8.8.8"],
    # one address of several is private: refused (a client may connect to any of them)
    "internal.example.com": [PUBLIC, "10.0.0.5"],
    "metadata.example.com": ["169.254.169.254"],
    "rebind.example.com": ["::ffff:127.0.0.1"],
}
URL = "https://hooks.example.com/scoring"


def resolve(host: str, port: int) -> list[str]:
    return DNS.get(host, [])


def app_client(engine: ScoringEngine) -> TestClient:
    settings = Settings(SCORING_API_KEYS=API_KEYS, SCORING_JWT_SECRET=JWT_SECRET)
    return TestClient(create_app(engine, settings))


@pytest.fixture
def hooks_engine(real_redis: redis.Redis, clock: Clock, store: SqlStore) -> ScoringEngine:
    return ScoringEngine(
        real_redis, clock=clock, store=store, rules=PLAIN_RULES, webhook_resolver=resolve
    )


@pytest.fixture
def client(hooks_engine: ScoringEngine) -> TestClient:
    return app_client(hooks_engine)


def create(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/webhooks", json={"url": URL, "events": ["tier.changed"], **body},
                           headers=ADMIN)  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def refused(response, code: str | None = None, field: str | None = None) -> None:
    """A 422 (with ``code`` and ``field`` if given)."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert code is None or error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error


# -- signatures (pure) ----------------------------------------------------------------------


def test_sign_and_verify_refuse_a_tampered_body_an_old_timestamp_and_another_secret() -> None:
    body = json.dumps({"id": "e", "type": "tier.changed", "data": {"user_id": "u"}}).encode()
    now = 1_800_000_000
    header = wh.sign("s3cret", now, body)
    # the documented check: HMAC-SHA256 of "<t>." + body, hex
    expected = hmac.new(b"s3cret", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={expected}"
    assert wh.verify(["s3cret"], header, body, now)
    assert wh.verify(["other", "s3cret"], header, body, now + 300)  # within the tolerance
    assert not wh.verify(["s3cret"], header, body.replace(b'"u"', b'"v"'), now)  # tampered
    assert not wh.verify(["s3cret"], header, body, now + 301)  # too old: a replay
    assert not wh.verify(["s3cret"], header, body, now - 301)  # from the future
    assert not wh.verify(["other"], header, body, now)
    assert not wh.verify([], header, body, now)
    for bad in ("", "v1=" + expected, f"t={now}", f"t=x{now},v1={expected}", "garbage"):
        assert not wh.verify(["s3cret"], bad, body, now)
    # several v1 values (a sender signing with two secrets): one matching is enough
    assert wh.verify(["s3cret"], f"t={now},v1=00,v1={expected}", body, now)


def test_event_ids_are_stable_per_cause() -> None:
    first = wh.event_id("tier.changed", "u:gold:act-1")
    assert first == wh.event_id("tier.changed", "u:gold:act-1")
    assert first != wh.event_id("tier.changed", "u:gold:act-2")
    assert first != wh.event_id("level.changed", "u:gold:act-1")
    assert len(first) == 36


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "224.0.0.1",
     "0.0.0.0", "100.64.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
     "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::",
     "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe"],
)  # fmt: skip
def test_private_and_reserved_addresses_are_refused(address: str) -> None:
    assert wh.refused_address(address)


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not wh.refused_address(address)


# -- the admin API ---------------------------------------------------------------------------


def test_crud_over_http_needs_the_admin_scope(client: TestClient, clock: Clock) -> None:
    for method, path in (("get", "/v1/webhooks"), ("post", "/v1/webhooks"),
                         ("get", "/v1/webhooks/wh_0"), ("delete", "/v1/webhooks/wh_0"),
                         ("get", "/v1/webhooks/wh_0/deliveries")):  # fmt: skip
        kwargs = {"json": {"url": URL, "events": ["tier.changed"]}} if method == "post" else {}
        assert getattr(client, method)(path, **kwargs).status_code == 401
        assert getattr(client, method)(path, headers=READER, **kwargs).status_code == 403
    assert client.get("/v1/webhooks", headers=ADMIN).json() == []

    made = create(client, events=["level.changed", "tier.changed", "tier.changed"])
    secret = made.pop("secret")
    assert secret.startswith("whsec_") and len(secret) >= 40
    assert made["id"].startswith("wh_") and len(made["id"]) == 27
    assert made["url"] == URL and made["enabled"] is True and made["max_in_flight"] == 4
    assert made["events"] == ["tier.changed", "level.changed"]  # de-duplicated, in order
    assert made["created_at"] == made["updated_at"] == iso(clock.now)
    assert made["previous_secret_until"] is None and made["disabled_reason"] is None

    # the secret is never shown again
    one = client.get(f"/v1/webhooks/{made['id']}", headers=ADMIN)
    assert one.status_code == 200 and one.json() == made
    listed = client.get("/v1/webhooks", headers=ADMIN).json()
    assert listed == [made] and secret not in json.dumps(listed)

    clock.advance(minutes=5)
    patched = client.patch(
        f"/v1/webhooks/{made['id']}", headers=ADMIN,
        json={"events": ["activity.created"], "enabled": False, "max_in_flight": 64,
              "url": "https://other.example.com/h"},
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["events"] == ["activity.created"] and body["enabled"] is False
    assert body["max_in_flight"] == 64 and body["url"] == "https://other.example.com/h"
    assert body["updated_at"] == iso(clock.now) and body["created_at"] == made["created_at"]
    assert client.patch(f"/v1/webhooks/{made['id']}", json={}, headers=ADMIN).json() == body

    assert client.delete(f"/v1/webhooks/{made['id']}", headers=ADMIN).status_code == 204
    for response in (
        client.get(f"/v1/webhooks/{made['id']}", headers=ADMIN),
        client.delete(f"/v1/webhooks/{made['id']}", headers=ADMIN),
        client.patch(f"/v1/webhooks/{made['id']}", json={"enabled": True}, headers=ADMIN),
        client.post(f"/v1/webhooks/{made['id']}/rotate", headers=ADMIN),
        client.get("/v1/webhooks/wh_nonsense%00", headers=ADMIN),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "unknown_webhook"
    assert client.get("/v1/webhooks", headers=ADMIN).json() == []


def test_enabling_again_clears_the_disabled_reason(
    client: TestClient, hooks_engine: ScoringEngine, store: SqlStore
) -> None:
    made = create(client)
    with store.engine.begin() as connection:  # what the delivery side does on a 410
        connection.execute(
            WebhookSubscription.__table__.update().values(enabled=False, disabled_reason="410")
        )
    assert client.get(f"/v1/webhooks/{made['id']}", headers=ADMIN).json()["disabled_reason"]
    enabled = client.patch(f"/v1/webhooks/{made['id']}", json={"enabled": True}, headers=ADMIN)
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/h", "http://[::1]/h", "http://localhost/h", "http://api.localhost/h",
     "http://10.0.0.1/h", "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/",
     "https://internal.example.com/h", "https://metadata.example.com/h",
     "https://rebind.example.com/h", "https://unknown.example.com/h"],
)  # fmt: skip
def test_a_private_target_is_refused_unless_allowed(
    url: str, real_redis: redis.Redis, clock: Clock, store: SqlStore
) -> None:
    engine = ScoringEngine(
        real_redis, clock=clock, store=store, rules=PLAIN_RULES, webhook_resolver=resolve
    )
    client = app_client(engine)
    body = {"url": url, "events": ["tier.changed"]}
    refused(client.post("/v1/webhooks", json=body, headers=ADMIN), "webhook_url_refused", "url")
    made = create(client)
    patch = client.patch(f"/v1/webhooks/{made['id']}", json={"url": url}, headers=ADMIN)
    refused(patch, "webhook_url_refused", "url")
    assert client.get(f"/v1/webhooks/{made['id']}", headers=ADMIN).json()["url"] == URL
    with pytest.raises(WebhookUrlRefused):
        engine.create_webhook(url, ["tier.changed"])
    assert len(client.get("/v1/webhooks", headers=ADMIN).json()) == 1

    allowing = ScoringEngine(real_redis, clock=clock, store=store, rules=PLAIN_RULES,
                             webhooks_allow_private=True, webhook_resolver=resolve)  # fmt: skip
    assert app_client(allowing).post("/v1/webhooks", json=body, headers=ADMIN).status_code == 201


def test_the_setting_allows_private_targets() -> None:
    assert Settings().webhooks_allow_private is False
    assert Settings(SCORING_WEBHOOKS_ALLOW_PRIVATE="true").webhooks_allow_private is True


@pytest.mark.parametrize(
    ("body", "field"),
    [({"url": URL, "events": ["tier.changed", "nope"]}, "events.1"),
     ({"url": URL, "events": []}, "events"),
     ({"url": URL}, "events"),
     ({"url": URL, "events": ["tier.changed"], "max_in_flight": 0}, "max_in_flight"),
     ({"url": URL, "events": ["tier.changed"], "max_in_flight": 65}, "max_in_flight"),
     ({"url": URL, "events": ["tier.changed"], "max_in_flight": "4"}, "max_in_flight"),
     ({"url": URL + "/" + "a" * 2000, "events": ["tier.changed"]}, "url"),
     ({"url": 5, "events": ["tier.changed"]}, "url"),
     ({"url": URL, "events": ["tier.changed"], "secret": "mine"}, "secret")],
)  # fmt: skip
def test_bad_input_is_refused_over_http(client: TestClient, body: dict, field: str) -> None:
    refused(client.post("/v1/webhooks", json=body, headers=ADMIN), field=field)
    assert client.get("/v1/webhooks", headers=ADMIN).json() == []


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example.com/h", "hooks.example.com/h", "https:///h", "https://u:p@hooks.example.com/",
     "https://hooks.example.com/h#frag", "https://hooks.example.com:99999/",
     "https://hooks.example.com/\x00", "https://hooks.example.com/a b", ""],
)  # fmt: skip
def test_a_malformed_url_is_refused(
    client: TestClient, hooks_engine: ScoringEngine, url: str
) -> None:
    refused(client.post("/v1/webhooks", json={"url": url, "events": ["tier.changed"]},
                        headers=ADMIN), field="url")  # fmt: skip
    with pytest.raises(InvalidWebhook) as caught:
        hooks_engine.create_webhook(url, ["tier.changed"])
    assert caught.value.field == "url"


def test_the_service_checks_its_input_without_the_api(hooks_engine: ScoringEngine) -> None:
    for kwargs, field in (
        ({"events": ["nope"]}, "events"),
        ({"events": "tier.changed"}, "events"),
        ({"events": []}, "events"),
        ({"events": ["tier.changed"], "max_in_flight": True}, "max_in_flight"),
        ({"events": ["tier.changed"], "max_in_flight": 65}, "max_in_flight"),
        ({"events": ["tier.changed"], "enabled": "yes"}, "enabled"),
    ):
        with pytest.raises(InvalidWebhook) as caught:
            hooks_engine.create_webhook(URL, **kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
    made = hooks_engine.create_webhook(URL, ["tier.changed"]).webhook
    with pytest.raises(InvalidWebhook):
        hooks_engine.update_webhook(made.id, secret="mine")
    with pytest.raises(InvalidWebhook):
        hooks_engine.redeliver_webhook(made.id, event_id="e\x00")
    assert hooks_engine.webhooks() == [made]


def test_the_event_bodies_are_in_the_openapi_document(client: TestClient) -> None:
    assert get_args(EventType) == tuple(EVENT_BODIES) == wh.EVENT_TYPES
    document = client.get("/openapi.json").json()
    assert set(document["webhooks"]) == set(wh.EVENT_TYPES)
    schemas = document["components"]["schemas"]
    for event_type, operation in document["webhooks"].items():
        ref = operation["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[-1]]
        assert schema["properties"]["type"]["const"] == event_type
        assert {"id", "type", "created_at", "data"} <= set(schema["required"])


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_keeps_the_old_secret_valid_for_the_grace_period(
    client: TestClient, hooks_engine: ScoringEngine, clock: Clock
) -> None:
    made = create(client)
    old = made["secret"]
    body = b'{"id":"e1"}'

    def valid(secret: str) -> bool:
        """Whether a receiver holding the subscription's valid secrets accepts ``secret``'s
        signature made now."""
        now = int(clock.now.timestamp())
        secrets = hooks_engine.webhook_signing_secrets(made["id"])
        return wh.verify(secrets, wh.sign(secret, now, body), body, now)

    assert valid(old)
    rotated = client.post(f"/v1/webhooks/{made['id']}/rotate", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert rotated.json()["previous_secret_until"] == iso(clock.now + timedelta(hours=24))
    assert "secret" not in client.get(f"/v1/webhooks/{made['id']}", headers=ADMIN).json()
    assert hooks_engine.webhook_signing_secrets(made["id"]) == [new, old]  # the new signs
    assert valid(new) and valid(old)
    clock.advance(hours=23, minutes=59)
    assert valid(new) and valid(old)
    clock.advance(minutes=1)
    assert valid(new) and not valid(old)

    # a grace period of the body's; 0: the old secret is refused at once
    short = client.post(f"/v1/webhooks/{made['id']}/rotate", json={"grace_seconds": 60},
                        headers=ADMIN).json()  # fmt: skip
    assert valid(short["secret"]) and valid(new) and not valid(old)
    clock.advance(seconds=61)
    assert not valid(new)
    last = client.post(f"/v1/webhooks/{made['id']}/rotate", json={"grace_seconds": 0},
                       headers=ADMIN).json()  # fmt: skip
    assert valid(last["secret"]) and not valid(short["secret"])
    for grace in (-1, 7 * 24 * 3600 + 1, "60"):
        response = client.post(f"/v1/webhooks/{made['id']}/rotate",
                               json={"grace_seconds": grace}, headers=ADMIN)  # fmt: skip
        refused(response, field="grace_seconds")
    assert valid(last["secret"])


# -- the delivery log and redelivery ----------------------------------------------------------


def _deliveries(store: SqlStore, webhook_id: str, clock: Clock, n: int) -> list[str]:
    """``n`` deliveries of ``webhook_id``, a minute apart, ending now: delivered, failed and
    pending in turn; their event ids, oldest first."""
    statuses = ("delivered", "failed", "pending")
    rows = []
    for i in range(n):
        at = clock.now - timedelta(minutes=n - 1 - i)
        status = statuses[i % 3]
        rows.append({
            "subscription_id": webhook_id, "event_id": wh.event_id("activity.created", f"a{i}"),
            "event_type": "activity.created", "payload": json.dumps({"i": i}), "status": status,
            "attempts": {"delivered": 1, "failed": 6, "pending": 2}[status],
            "last_status": {"delivered": 200, "failed": 500, "pending": None}[status],
            "last_error": "timed out" if status == "pending" else None,
            "last_attempt_at": at, "next_attempt_at": at + timedelta(hours=1)
            if status == "pending" else None,
            "delivered_at": at if status == "delivered" else None, "created_at": at,
        })  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(insert(WebhookDelivery), rows)
    return [r["event_id"] for r in rows]


def test_the_delivery_log_and_redelivery(client: TestClient, store: SqlStore, clock: Clock) -> None:
    hook, other = create(client)["id"], create(client)["id"]
    events = _deliveries(store, hook, clock, 6)
    _deliveries(store, other, clock, 3)
    path = f"/v1/webhooks/{hook}"

    log = client.get(f"{path}/deliveries", headers=ADMIN)
    assert log.status_code == 200, log.text
    rows = log.json()
    assert [r["event_id"] for r in rows] == events[::-1]  # newest first
    newest = rows[0]
    assert newest["status"] == "pending" and newest["attempts"] == 2
    assert newest["last_status"] is None and newest["last_error"] == "timed out"
    assert newest["subscription_id"] == hook and "payload" not in newest
    failed = rows[1]
    assert failed["status"] == "failed" and failed["last_status"] == 500
    assert failed["last_attempt_at"] == iso(clock.now - timedelta(minutes=1))

    page = client.get(f"{path}/deliveries?limit=2", headers=ADMIN).json()
    assert [r["event_id"] for r in page] == events[:-3:-1]
    rest = client.get(f"{path}/deliveries?limit=10&before={page[-1]['id']}", headers=ADMIN)
    assert [r["event_id"] for r in rest.json()] == events[-3::-1]
    only = client.get(f"{path}/deliveries?status=failed", headers=ADMIN).json()
    assert [r["event_id"] for r in only] == [events[4], events[1]]
    for query in ("limit=0", "limit=501", "status=gone", "before=0", "before=x"):
        refused(client.get(f"{path}/deliveries?{query}", headers=ADMIN))
    assert client.get("/v1/webhooks/wh_0/deliveries", headers=ADMIN).status_code == 404

    # one event again: pending, due now, its attempts kept
    clock.advance(seconds=30)
    again = client.post(f"{path}/redeliver", json={"event_id": events[1]}, headers=ADMIN)
    assert again.status_code == 200 and again.json() == {"queued": 1}
    row = next(r for r in client.get(f"{path}/deliveries", headers=ADMIN).json()
               if r["event_id"] == events[1])  # fmt: skip
    assert row["status"] == "pending" and row["attempts"] == 6
    assert row["next_attempt_at"] == iso(clock.now) and row["last_status"] == 500
    missing = client.post(f"{path}/redeliver", json={"event_id": "nope"}, headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_webhook_delivery"

    # everything since a time: the last 3 (created 2, 1 and 0 minutes before the first now)
    since = iso(clock.now - timedelta(seconds=30) - timedelta(minutes=2))
    response = client.post(f"{path}/redeliver", json={"since": since}, headers=ADMIN)
    assert response.json() == {"queued": 3}
    states = {r["event_id"]: r for r in client.get(f"{path}/deliveries", headers=ADMIN).json()}
    assert [states[e]["status"] for e in events] == ["delivered", "pending", "pending",
                                                     "pending", "pending", "pending"]  # fmt: skip
    assert states[events[3]]["delivered_at"] is not None  # what happened before is kept
    assert {r["status"] for r in client.get(f"/v1/webhooks/{other}/deliveries",
                                            headers=ADMIN).json()} == {"delivered", "failed",
                                                                       "pending"}  # fmt: skip
    for body in ({}, {"event_id": events[0], "since": since}, {"since": "2026-01-01T00:00:00"},
                 {"event_id": ""}, {"event_id": "e" * 65}, {"at": since}):  # fmt: skip
        refused(client.post(f"{path}/redeliver", json=body, headers=ADMIN))
    assert client.post(f"{path}/redeliver", json={"event_id": events[0]}).status_code == 401

    # deleting a subscription deletes its log, not another's
    assert client.delete(path, headers=ADMIN).status_code == 204
    d = WebhookDelivery.__table__
    with store.engine.connect() as connection:
        left = connection.execute(select(d.c.subscription_id)).scalars().all()
    assert left == [other] * 3


def test_the_readme_verification_accepts_the_engine_signature_only() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    snippet = text.split("**Verifying a request**", 1)[1].split("```python\n", 1)[1]
    namespace: dict[str, object] = {}
    exec(snippet.split("```", 1)[0], namespace)  # the README's own example
    readme_verify = namespace["verify"]
    body = b'{"id":"e1","type":"tier.changed"}'
    now = int(time.time())
    header = wh.sign("whsec_new", now, body)
    assert readme_verify(["whsec_old", "whsec_new"], header, body)  # type: ignore[operator]
    assert not readme_verify(["whsec_new"], header, body + b" ")  # type: ignore[operator]
    assert not readme_verify(["whsec_old"], header, body)  # type: ignore[operator]
    old = wh.sign("whsec_new", now - 301, body)
    assert not readme_verify(["whsec_new"], old, body)  # type: ignore[operator]


def test_the_log_keeps_pending_deliveries_and_recent_ones(
    client: TestClient, hooks_engine: ScoringEngine, store: SqlStore, clock: Clock
) -> None:
    hook = create(client)["id"]
    events = _deliveries(store, hook, clock, 6)  # a minute apart, ending now
    clock.advance(days=30, minutes=-3, seconds=30)  # the first 3 were queued over 30 days ago
    with pytest.raises(InvalidWebhook):
        hooks_engine.prune_webhook_deliveries(0)
    assert hooks_engine.prune_webhook_deliveries(30) == 2  # delivered and failed; not pending
    left = [r.event_id for r in hooks_engine.webhook_deliveries(hook)]
    assert left == [events[5], events[4], events[3], events[2]]
    assert store.prune_webhook_deliveries(clock.now, chunk=1) == 2  # in chunks
    assert [r.status for r in hooks_engine.webhook_deliveries(hook)] == ["pending"] * 2
