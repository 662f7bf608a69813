"""Prometheus metrics of one app: awards, errors, request latency and the outbox backlog."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

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
