"""Webhook benchmark: deliveries/s with two workers, and the drain's cost of webhooks.

    .venv/bin/python -m bench.webhook_bench [--quick]

Prints one table (it never fails; a figure is what it is):

1. **Drain throughput, 3 subscriptions on ``activity.created`` against none (A/B).** The outbox
   is filled with N awards (an engine with no drain queue), then one
   ``Drainer(..., batch=1000).drain(0)`` into PostgreSQL is timed, alternately with no
   subscription (A) and with three enabled subscriptions that want ``activity.created`` (B:
   3 delivery rows per activity, written in the batch's transaction, and their RQ jobs queued
   after each commit), 2 rounds each, A first; the row gives each side's median rate and B / A.
   N = 20,000 (5,000 with ``--quick``).
2. **Deliveries/s.** E events (``activity.created``) to 3 subscriptions on one local receiver
   (``http.server`` in a thread, answering 200 at once) are drained first; then two
   ``scoring worker --burst`` processes deliver the 3 E jobs, timed from their start until
   every row is delivered. E = 1,000 (300 with ``--quick``). The figure includes a worker's
   start (about a second), so it understates the steady rate.

Redis: ``REDIS_URL`` (an empty database, or the benchmarks' own); PostgreSQL as
``bench.drain_bench`` finds it, in a database of its own created and dropped by the run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from rq import Queue
from sqlalchemy import text

from bench.drain_bench import AWARDS_ONLY, bench_database, fill_outbox, find_postgres
from bench.harness import connect, fresh_db, parser, redis_url
from engine import ScoringEngine
from engine.storage.models import WebhookSubscription
from engine.storage.store import SqlStore
from engine.storage.webhook_store import WebhookDeliveries
from workers.drain import Drainer
from workers.webhooks import WebhookOutlet

PG_DATABASE = "scoring_webhook_bench"
QUEUE = "webhooks-bench"
ROUNDS = 2


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server calls it by this name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def subscribe(store: SqlStore, url: str, n: int) -> None:
    now = datetime.now(UTC)
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM webhook_delivery"))
        c.execute(text("DELETE FROM webhook_subscription"))
        rows = [{"id": f"wh_bench{i}", "url": url, "events": "activity.created",
                 "secret": "bench-secret", "enabled": True, "max_in_flight": 4,
                 "created_at": now, "updated_at": now} for i in range(n)]  # fmt: skip
        if rows:
            c.execute(WebhookSubscription.__table__.insert(), rows)


def empty(store: SqlStore) -> None:
    with store.engine.begin() as c:
        c.execute(text("TRUNCATE point_activity, user_score, webhook_delivery"))


def drain_rate(r: redis.Redis, store: SqlStore, queue: Queue, awards: int, subs: int) -> float:
    fresh_db(r)
    empty(store)
    subscribe(store, "http://127.0.0.1:9/none", subs)
    engine = ScoringEngine(r, rules=AWARDS_ONLY)
    fill_outbox(engine, awards, 5000)
    outlet = WebhookOutlet(WebhookDeliveries(store), queue)
    drainer = Drainer(r, store, engine.keys, engine.rules, batch=1000, webhooks=outlet)
    start = time.perf_counter()
    report = drainer.drain(0)
    seconds = time.perf_counter() - start
    # written: the awards' entries and their rewards' (achievements of the default rules)
    assert report.written >= awards and not report.errors and not report.dead, report
    return report.written / seconds


def delivery_rate(r: redis.Redis, store: SqlStore, pg_url: str, events: int) -> tuple[float, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fresh_db(r)
        empty(store)
        subscribe(store, f"http://127.0.0.1:{server.server_address[1]}/hook", 3)
        queue = Queue(QUEUE, connection=redis.Redis.from_url(redis_url()))
        engine = ScoringEngine(r, rules=AWARDS_ONLY)
        fill_outbox(engine, events, 500)
        Drainer(r, store, engine.keys, engine.rules,
                webhooks=WebhookOutlet(WebhookDeliveries(store), queue)).drain(0)  # fmt: skip
        env = {"REDIS_URL": redis_url(), "DATABASE_URL": pg_url, "SCORING_WEBHOOK_QUEUE": QUEUE,
               "SCORING_DRAIN_LINGER_MS": "0", "PATH": "/usr/bin:/bin"}  # fmt: skip
        args = [sys.executable, "-m", "scoring.cli", "worker", "--burst", "--log-level", "ERROR"]
        start = time.perf_counter()
        procs = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
        for p in procs:
            p.wait(120)
        seconds = time.perf_counter() - start
        with store.engine.connect() as c:
            done = c.execute(
                text("SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'")
            ).scalar_one()
        return int(done) / seconds, int(done)
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    args = parser("webhook_bench", __doc__, "fewer awards and events").parse_args()
    awards, events = (5000, 300) if args.quick else (20_000, 1000)
    r = connect(redis_url())
    pg = find_postgres(PG_DATABASE)
    with bench_database(pg):
        store = SqlStore(pg.url)
        store.upgrade()
        queue = Queue(QUEUE, connection=redis.Redis.from_url(redis_url()))
        a, b = [], []
        for _ in range(ROUNDS):
            a.append(drain_rate(r, store, queue, awards, 0))
            b.append(drain_rate(r, store, queue, awards, 3))
        rate, delivered = delivery_rate(r, store, pg.url, events)
        store.close()
    fresh_db(r)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{'measure':<52} {'result':>24}")
    print(f"{'drain, no subscription (entries/s, median)':<52} {ma:>24,.0f}")
    print(f"{'drain, 3 subscriptions on activity.created':<52} {mb:>24,.0f}")
    print(f"{'  ratio B / A':<52} {mb / ma:>24.2f}")
    print(f"{'deliveries/s, 2 workers (' + str(delivered) + ' delivered)':<52} {rate:>24,.0f}")


if __name__ == "__main__":
    main()
