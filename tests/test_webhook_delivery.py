"""Webhook events and their delivery: the drain writes a delivery row per (subscription, event)
with the batch's activities and queues its job; the delivery job signs, POSTs, retries and
disables. Real HTTP receivers on loopback, real Redis, real SQL (SQLite, and PostgreSQL for
the drain's writes), real ``scoring worker`` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from helpers import API_KEYS, PLAIN_RULES, Clock
from rq import Queue
from sqlalchemy import select, text

from api.app import create_app
from api.schemas import EVENT_BODIES
from engine import ScoringEngine
from engine.domain import webhooks as domain
from engine.domain.rules import build_rules
from engine.runtime.settings import Settings
from engine.storage.models import WebhookDelivery, WebhookSubscription
from engine.storage.store import SqlStore
from engine.storage.webhook_store import WebhookDeliveries
from workers.drain import Drainer
from workers.webhooks import Deliverer, WebhookOutlet, job_id

SECRET = "whsec_test_0123456789abcdef"
RULES = build_rules({"weekly_goals": {}, "achievements": {}, "streak": {"milestones": {"3": 300}}})


# -- a receiver on loopback -----------------------------------------------------------------


class Receiver:
    """An HTTP server in a thread. ``script``: the answers to give, in order (a status, or
    ``"hang"`` to wait ``hang`` seconds first, then 200); then ``then`` for ever."""

    def __init__(self, port: int = 0, *, script: list[Any] | None = None, then: int = 200):
        self.script = list(script or [])
        self.then = then
        self.hang = 5.0
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server calls it by this name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers), body))
                    answer = receiver.script.pop(0) if receiver.script else receiver.then
                if answer == "hang":
                    receiver.release.wait(receiver.hang)
                    answer = 200
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def event_ids(self) -> list[str]:
        with self.lock:
            return [h["Scoring-Event-Id"] for h, _ in self.requests]


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.stop()


def receiver(made: list[Receiver], **options: Any) -> Receiver:
    r = Receiver(**options)
    made.append(r)
    return r


# -- SQL and the engine ---------------------------------------------------------------------


def clear(store: SqlStore) -> None:
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM webhook_delivery"))
        c.execute(text("DELETE FROM webhook_subscription"))


def subscribe(store: SqlStore, sub_id: str, url: str, events: str, **fields: Any) -> None:
    now = datetime.now(UTC)
    row = {"id": sub_id, "url": url, "events": events, "secret": SECRET, "enabled": True,
           "max_in_flight": 4, "created_at": now, "updated_at": now, **fields}  # fmt: skip
    with store.engine.begin() as c:
        c.execute(WebhookSubscription.__table__.insert(), [row])


def deliveries(store: SqlStore) -> list[Any]:
    with store.engine.connect() as c:
        return list(c.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)))


@pytest.fixture
def wh_store(store: SqlStore) -> SqlStore:
    clear(store)
    return store


@pytest.fixture
def lite(tmp_path: Any) -> Iterator[SqlStore]:
    """SQLite only: the delivery job's tests (its SQL is a few plain statements)."""
    s = SqlStore(f"sqlite:///{tmp_path / 'scoring.db'}")
    s.upgrade()
    yield s
    s.close()


@pytest.fixture
def queue(redis_url: str, real_redis: redis.Redis) -> Queue:
    return Queue("webhooks", connection=redis.Redis.from_url(redis_url))


def drain_all(engine: ScoringEngine, store: SqlStore, outlet: WebhookOutlet | None) -> None:
    drainer = Drainer(engine.redis, store, engine.keys, engine.rules, webhooks=outlet)
    for shard in range(engine.keys.shards):
        report = drainer.drain(shard)
        assert report.dead == 0 and report.failed == 0, report


def deliverer(store: SqlStore, r: redis.Redis, queue: Queue | None = None, **kw: Any) -> Deliverer:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("waits", (0.0,) * 5)
    return Deliverer(WebhookDeliveries(store), r, ScoringEngine(r).keys, queue, **kw)


# -- events from the drain ------------------------------------------------------------------


def test_the_drain_writes_one_delivery_per_subscription_and_event_with_the_batch(
    real_redis: redis.Redis, clock: Clock, wh_store: SqlStore, queue: Queue
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=RULES, store=wh_store)
    subscribe(wh_store, "wh_all", "http://127.0.0.1:9/a", ",".join(domain.EVENT_TYPES))
    subscribe(wh_store, "wh_tier", "http://127.0.0.1:9/b", "tier.changed")
    subscribe(wh_store, "wh_off", "http://127.0.0.1:9/c", "activity.created", enabled=False)
    start = clock.now - timedelta(days=5)
    for n in range(3):  # three days in a row: the 3-day streak milestone
        engine.award("ann", "comment", occurred_at=(start + timedelta(days=n)).isoformat())
    # the milestone's reward (300) moved ann from ember to spark (250); this, to blaze (500)
    engine.award("ann", "special_event", amount=300)
    outlet = WebhookOutlet(WebhookDeliveries(wh_store), queue)
    drain_all(engine, wh_store, outlet)

    rows = deliveries(wh_store)
    kinds = sorted((r.subscription_id, r.event_type) for r in rows)
    activities = [r for r in rows if r.event_type == "activity.created"]
    assert len(activities) == 5  # 4 awards and the milestone's reward
    assert ("wh_all", "streak.milestone") in kinds and ("wh_all", "tier.changed") in kinds
    assert [k for k in kinds if k[0] == "wh_tier"] == [("wh_tier", "tier.changed")] * 2
    assert not [k for k in kinds if k[0] == "wh_off"]
    tiers = [json.loads(r.payload) for r in rows if r.subscription_id == "wh_tier"]
    assert all(t["type"] == "tier.changed" and t["data"]["user_id"] == "ann" for t in tiers)
    assert sorted((t["data"]["old_tier"], t["data"]["new_tier"]) for t in tiers) == [
        ("ember", "spark"), ("spark", "blaze")]  # fmt: skip
    assert {t["id"] for t in tiers} == {r.event_id for r in rows if r.subscription_id == "wh_tier"}
    milestone = json.loads(next(r.payload for r in rows if r.event_type == "streak.milestone"))
    assert milestone["data"]["days"] == 3 and milestone["data"]["points"] == 300
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
    # every body sent is what the OpenAPI document's schema for its type says, field for field
    for r in rows:
        sent = json.loads(r.payload)
        model = EVENT_BODIES[r.event_type]
        model.model_validate(sent)
        data_model = model.model_fields["data"].annotation
        assert set(sent["data"]) == set(data_model.model_fields), r.event_type  # type: ignore[union-attr]
    # their jobs queued after the commit: one per subscription (and 100 events)
    jobs = [queue.fetch_job(i) for i in queue.job_ids]
    queued = sorted((j.args[0], e) for j in jobs if j is not None for e in j.args[1])
    assert queued == sorted((r.subscription_id, r.event_id) for r in rows)
    assert len(jobs) == 2


def test_a_batch_written_again_queues_each_event_once_with_the_same_id(
    real_redis: redis.Redis, clock: Clock, wh_store: SqlStore, queue: Queue
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES, store=wh_store)
    subscribe(wh_store, "wh_a", "http://127.0.0.1:9/a", "activity.created")
    for i in range(5):
        engine.award(f"u{i}", "comment")
    outlet = WebhookOutlet(WebhookDeliveries(wh_store), queue)
    entries = real_redis.xrange(engine.keys.outbox(0))
    drain_all(engine, wh_store, outlet)
    first = {(r.event_id, r.payload) for r in deliveries(wh_store)}
    # a drain killed before its acknowledgement: the same entries are written again
    real_redis.xadd(engine.keys.outbox(0), dict(entries[0][1]))
    for _, fields in entries:
        real_redis.xadd(engine.keys.outbox(0), fields)
    drain_all(engine, wh_store, outlet)
    assert {(r.event_id, r.payload) for r in deliveries(wh_store)} == first
    assert len(first) == 5


def test_without_subscriptions_the_drain_writes_no_delivery(
    real_redis: redis.Redis, clock: Clock, wh_store: SqlStore, queue: Queue
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES, store=wh_store)
    engine.award("bob", "special_event", amount=300)
    drain_all(engine, wh_store, WebhookOutlet(WebhookDeliveries(wh_store), queue))
    assert deliveries(wh_store) == [] and queue.count == 0


# -- the delivery job -----------------------------------------------------------------------


def one_event(store: SqlStore, url: str, sub: str = "wh_1", **fields: Any) -> tuple[str, str]:
    """A subscription and one pending delivery to it; (subscription id, event id)."""
    subscribe(store, sub, url, "activity.created", **fields)
    now = datetime.now(UTC)
    event = domain.event_id("activity.created", f"test-{sub}")
    payload = json.dumps({"id": event, "type": "activity.created", "data": {"n": 1}})
    assert '"n": 1' in payload
    with store.engine.begin() as c:
        c.execute(WebhookDelivery.__table__.insert(), [{
            "subscription_id": sub, "event_id": event, "event_type": "activity.created",
            "payload": payload, "status": "pending", "attempts": 0, "next_attempt_at": now,
            "created_at": now,
        }])  # fmt: skip
    return sub, event


def row(store: SqlStore, event: str) -> Any:
    return next(r for r in deliveries(store) if r.event_id == event)


def test_a_signed_delivery_verifies_and_a_tampered_body_does_not(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    r = receiver(receivers)
    sub, event = one_event(lite, r.url)
    assert deliverer(lite, real_redis).deliver(sub, event) == "delivered"
    headers, body = r.requests[0]
    assert headers["Scoring-Event-Id"] == event
    assert headers["Scoring-Event-Type"] == "activity.created"
    assert headers["Content-Type"] == "application/json"
    assert body == row(lite, event).payload.encode()
    signature, now = headers["Scoring-Signature"], int(time.time())
    assert domain.verify([SECRET], signature, body, now)
    assert not domain.verify([SECRET], signature, body.replace(b'"n": 1', b'"n": 2'), now)
    assert not domain.verify(["another-secret"], signature, body, now)
    assert not domain.verify([SECRET], signature, body, now + 301)  # outside the tolerance
    done = row(lite, event)
    assert (done.status, done.attempts, done.last_status) == ("delivered", 1, 200)
    assert done.delivered_at is not None
    # a second job for a delivered event sends nothing
    assert deliverer(lite, real_redis).deliver(sub, event) == "skipped"
    assert len(r.requests) == 1


def test_500_three_times_then_200_is_delivered_on_the_fourth_attempt(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    r = receiver(receivers, script=[500, 500, 500])
    sub, event = one_event(lite, r.url)
    d = deliverer(lite, real_redis)
    assert [d.deliver(sub, event) for _ in range(4)] == ["retry"] * 3 + ["delivered"]
    done = row(lite, event)
    assert (done.status, done.attempts, done.last_status) == ("delivered", 4, 200)
    assert r.event_ids() == [event] * 4
    counts = real_redis.hgetall(ScoringEngine(real_redis).keys.webhook_metrics())
    assert (counts["retried"], counts["delivered"], counts["latency_count"]) == ("3", "1", "4")
    # the API's /metrics shows what every worker counted
    app = create_app(ScoringEngine(real_redis, store=lite), Settings(SCORING_API_KEYS=API_KEYS))
    scraped = TestClient(app).get("/metrics").text
    assert "scoring_webhook_delivered_total 1.0" in scraped
    assert "scoring_webhook_retried_total 3.0" in scraped
    assert "scoring_webhook_failed_total 0.0" in scraped
    assert "scoring_webhook_seconds_count 4.0" in scraped


def test_a_target_refused_at_send_time_is_not_sent(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    """The target is checked again before each attempt (a name can resolve to a private
    address later than when it was subscribed): refused, nothing is sent, and it is retried."""
    r = receiver(receivers)
    sub, event = one_event(lite, r.url)
    refuse = ScoringEngine(real_redis, store=lite).subscriptions.check_target  # loopback: refused
    d = deliverer(lite, real_redis, check=refuse)
    assert d.deliver(sub, event) == "retry"
    assert r.event_ids() == []
    done = row(lite, event)
    assert done.status == "pending" and "target refused" in done.last_error


def test_a_retry_waits_its_backoff_and_the_attempts_run_out(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    r = receiver(receivers, then=503)
    sub, event = one_event(lite, r.url)
    d = deliverer(lite, real_redis, waits=(3600.0,), rng=lambda: 0.5)
    assert d.deliver(sub, event) == "retry"
    wait = row(lite, event).next_attempt_at.replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(minutes=29) < wait <= timedelta(minutes=30)  # half of the hour: jitter
    assert d.deliver(sub, event) == "skipped"  # not due yet: nothing sent
    assert d.sweep() == 0
    quick = deliverer(lite, real_redis, waits=(0.0,))
    with lite.engine.begin() as c:
        c.execute(WebhookDelivery.__table__.update().values(next_attempt_at=datetime.now(UTC)))
    assert quick.deliver(sub, event) == "failed"  # 2 attempts for 1 wait
    failed = row(lite, event)
    assert (failed.status, failed.attempts, failed.last_status) == ("failed", 2, 503)
    assert failed.last_error == "HTTP 503" and len(r.requests) == 2


def test_a_receiver_down_then_up_receives_the_event(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    r = receiver(receivers)
    port = r.port
    r.stop()  # down: nothing listens on the port
    sub, event = one_event(lite, f"http://127.0.0.1:{port}/hook")
    d = deliverer(lite, real_redis)
    assert d.deliver(sub, event) == "retry"
    assert "ConnectError" in row(lite, event).last_error
    up = receiver(receivers, port=port)
    assert d.deliver(sub, event) == "delivered"
    assert up.event_ids() == [event]


def test_a_receiver_that_hangs_times_out_and_is_retried(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    r = receiver(receivers, script=["hang"])
    sub, event = one_event(lite, r.url)
    started = time.monotonic()
    assert deliverer(lite, real_redis, timeout=0.5).deliver(sub, event) == "retry"
    assert time.monotonic() - started < 2
    assert "Timeout" in row(lite, event).last_error and row(lite, event).last_status is None
    r.release.set()
    assert deliverer(lite, real_redis, timeout=0.5).deliver(sub, event) == "delivered"


def test_410_disables_the_subscription(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver], queue: Queue
) -> None:
    r = receiver(receivers, then=410)
    sub, event = one_event(lite, r.url)
    d = deliverer(lite, real_redis, queue)
    assert d.deliver(sub, event) == "gone"
    assert row(lite, event).status == "failed"
    s = WebhookDeliveries(lite).subscription(sub)
    assert s is not None and not s.enabled
    with lite.engine.connect() as c:
        reason = c.execute(select(WebhookSubscription.disabled_reason)).scalar_one()
    assert "410" in reason
    # its pending deliveries wait (for a redelivery once enabled again): none is attempted
    with lite.engine.begin() as c:
        c.execute(WebhookDelivery.__table__.update().values(status="pending"))
    assert d.deliver(sub, event) == "disabled" and d.sweep() == 0
    assert len(r.requests) == 1
    assert WebhookOutlet(WebhookDeliveries(lite), None).subscribers() == {}


def test_the_concurrency_limit_holds_a_delivery_back(
    lite: SqlStore, real_redis: redis.Redis, receivers: list[Receiver]
) -> None:
    r = receiver(receivers, script=["hang"])
    sub, first = one_event(lite, r.url, max_in_flight=1)
    now = datetime.now(UTC)
    second = domain.event_id("activity.created", "second")
    with lite.engine.begin() as c:
        c.execute(WebhookDelivery.__table__.insert(), [{
            "subscription_id": sub, "event_id": second, "event_type": "activity.created",
            "payload": "{}", "status": "pending", "attempts": 0, "next_attempt_at": now,
            "created_at": now,
        }])  # fmt: skip
    d = deliverer(lite, real_redis)
    t = threading.Thread(target=d.deliver, args=(sub, first))
    t.start()
    while not r.requests:
        time.sleep(0.01)
    assert d.deliver(sub, second) == "busy"  # its one slot is taken
    r.release.set()
    t.join()
    assert d.deliver(sub, second) == "delivered"


# -- real workers ---------------------------------------------------------------------------


def worker_env(redis_url: str, store: SqlStore, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_")}
    # (the receivers are on loopback: a worker checks each target before sending)
    env.update(REDIS_URL=redis_url, DATABASE_URL=store.url, SCORING_DRAIN_LINGER_MS="0",
               SCORING_WEBHOOKS_ALLOW_PRIVATE="true", **extra)  # fmt: skip
    return env


def worker(env: dict[str, str], *, burst: bool) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "scoring.cli", "worker", "--log-level", "WARNING"]
    return subprocess.Popen([*args, "--burst"] if burst else args, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def test_a_worker_killed_mid_delivery_loses_nothing(
    lite: SqlStore, real_redis: redis.Redis, redis_url: str, receivers: list[Receiver],
    queue: Queue,
) -> None:  # fmt: skip
    r = receiver(receivers, script=["hang"])
    r.hang = 30
    sub, event = one_event(lite, r.url)
    env = worker_env(redis_url, lite, SCORING_WEBHOOK_TIMEOUT_S="1")
    proc = worker(env, burst=False)
    try:
        Queue("webhooks", connection=queue.connection).enqueue(
            "workers.webhooks.deliver", sub, event, job_id=job_id(sub, event)
        )
        until = time.monotonic() + 20
        while not r.requests and time.monotonic() < until:
            time.sleep(0.05)
        assert r.requests, proc.stdout.read() if proc.poll() is not None else "no request"
        proc.send_signal(signal.SIGKILL)  # mid-delivery: the receiver holds the request
    finally:
        proc.kill()
        proc.wait()
    r.release.set()
    held = row(lite, event)
    assert held.status == "pending" and held.attempts == 0  # nothing was recorded
    d = deliverer(lite, real_redis, queue, timeout=1.0)
    assert d.sweep() == 0  # the attempt's lease (timeout x 1.5 + 1 s) is not over
    time.sleep(2.6)
    assert d.sweep() == 1  # due again: queued for the next worker
    done = worker(env, burst=True)
    assert done.wait(60) == 0, done.stdout.read() if done.stdout else ""
    assert row(lite, event).status == "delivered"
    assert r.event_ids() == [event, event]  # at least once


def test_1000_events_to_3_subscribers_with_two_workers(
    real_redis: redis.Redis, redis_url: str, clock: Clock, lite: SqlStore,
    receivers: list[Receiver], queue: Queue,
) -> None:  # fmt: skip
    engine = ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES, store=lite)
    subs = [receiver(receivers) for _ in range(3)]
    for i, s in enumerate(subs):
        subscribe(lite, f"wh_{i}", s.url, "activity.created")
    from engine import AwardRequest

    results = engine.award_many([AwardRequest(f"u{i % 50}", "comment") for i in range(1000)])
    assert not any(isinstance(x, Exception) for x in results)
    drain_all(engine, lite, WebhookOutlet(WebhookDeliveries(lite), queue))
    assert queue.count == 30  # 100 deliveries a job
    env = worker_env(redis_url, lite)
    procs = [worker(env, burst=True) for _ in range(2)]
    for p in procs:
        assert p.wait(120) == 0, p.stdout.read() if p.stdout else ""
    with lite.engine.connect() as c:
        t = WebhookDelivery.__table__
        rows = c.execute(select(t.c.status, t.c.attempts)).all()
    assert len(rows) == 3000 and {tuple(x) for x in rows} == {("delivered", 1)}
    for s in subs:
        ids = s.event_ids()
        assert len(ids) == 1000 and len(set(ids)) == 1000  # each once
    assert set(subs[0].event_ids()) == set(subs[1].event_ids()) == set(subs[2].event_ids())


def test_jobs_lost_after_the_drain_s_commit_are_queued_by_the_sweeper(
    real_redis: redis.Redis, clock: Clock, lite: SqlStore, queue: Queue,
    receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import workers.webhooks

    monkeypatch.setattr(workers.webhooks, "QUEUED_GRACE", 0.3)
    r = receiver(receivers)
    subscribe(lite, "wh_lost", r.url, "activity.created")
    engine = ScoringEngine(real_redis, clock=clock, rules=PLAIN_RULES, store=lite)
    for i in range(3):
        engine.award(f"u{i}", "comment")
    # a drain killed between its commit and its enqueue: the rows are there, no job
    drain_all(engine, lite, WebhookOutlet(WebhookDeliveries(lite), None))
    assert len(deliveries(lite)) == 3 and queue.count == 0
    d = deliverer(lite, real_redis, queue)
    assert d.sweep() == 0  # within the grace its job may still be waiting in the queue
    time.sleep(0.4)
    assert d.sweep() == 3 and d.sweep() == 0  # queued once: the jobs wait in the queue
    for job in [queue.fetch_job(i) for i in queue.job_ids]:
        assert job is not None and d.deliver(*job.args) == "delivered"
    assert sorted(r.event_ids()) == sorted(x.event_id for x in deliveries(lite))
