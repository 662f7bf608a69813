"""Prometheus metrics of one app: awards, errors, request latency, the outbox backlog and the
webhook deliveries (counted in Redis by the delivery jobs of every worker)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from engine.storage.outbox import backlog

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """A registry per app, so that several apps (tests) never share counters."""

    def __init__(self, state: Any) -> None:
        """``state``: the app's state; its ``engine`` is read when Prometheus scrapes."""
        self.registry = CollectorRegistry()
        self.awards = Counter(
            "scoring_awards", "Awards by outcome", ["outcome"], registry=self.registry
        )
        self.errors = Counter(
            "scoring_errors", "Error responses by code", ["code"], registry=self.registry
        )
        self.latency = Histogram(
            "scoring_request_seconds",
            "Request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Backlog(state))
        self.registry.register(_Webhooks(state))

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Backlog:
    """Outbox entries not yet in SQL, per shard, read when Prometheus scrapes."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Any:
        gauge = GaugeMetricFamily(
            "scoring_outbox_backlog", "Outbox entries not yet written to SQL", labels=["shard"]
        )
        engine = self.state.engine
        try:
            for shard in range(engine.keys.shards):
                gauge.add_metric([str(shard)], backlog(engine.redis, engine.keys.outbox(shard)))
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is away
            return
        yield gauge


#: The buckets (seconds) of the webhook delivery latency, as workers.webhooks counts them.
WEBHOOK_BUCKETS = ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0")


class _Webhooks:
    """Webhook delivery attempts by outcome, and their latency, read from Redis at a scrape."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Any:
        engine = self.state.engine
        try:
            counts = engine.redis.hgetall(engine.keys.webhook_metrics())
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is away
            return
        for name, text in (
            ("delivered", "Webhook deliveries delivered (a 2xx answer)"),
            ("failed", "Webhook deliveries failed (attempts used up, or a 410 answer)"),
            ("retried", "Webhook delivery attempts that failed and will be retried"),
        ):
            yield CounterMetricFamily(
                f"scoring_webhook_{name}", text, value=float(counts.get(name, 0))
            )
        cumulative, buckets = 0.0, []
        for le in (*WEBHOOK_BUCKETS, "+Inf"):
            cumulative += float(counts.get(f"le:{le}", 0))
            buckets.append((le, cumulative))
        yield HistogramMetricFamily(
            "scoring_webhook_seconds",
            "Webhook delivery attempt latency",
            buckets=buckets,
            sum_value=float(counts.get("latency_sum", 0)),
        )
