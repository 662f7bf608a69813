"""What the services share: the Redis clients (sync, and asyncio per event loop), key builder,
rules, clock, SQL store and drain queue of one engine, and the time zones last seen of its
users.

One :class:`Context` is made by :class:`~engine.services.facade.ScoringEngine` and handed to
each of its services, so a change to it (a test swapping the Redis client) reaches them all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.domain.errors import ConfigError
from engine.domain.keys import Keys
from engine.domain.periods import local_day
from engine.domain.results import UserState
from engine.domain.rules import Rules
from engine.runtime.connect import REDIS_ERRORS
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore

log = logging.getLogger("engine.services")

#: Users whose time zone is remembered (beyond it the cache starts again).
ZONE_CACHE_SIZE = 100_000


class Zones:
    """The time zones last seen of users not in UTC (thread-safe), so that an award assumes
    the right zone on its first try; a wrong guess costs a second script call, nothing else."""

    def __init__(self) -> None:
        self._zones: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> str:
        return self._zones.get(user_id, "UTC")

    def remember(self, user_id: str, tz: str) -> None:
        with self._lock:
            if tz == "UTC":
                self._zones.pop(user_id, None)
                return
            if len(self._zones) >= ZONE_CACHE_SIZE:
                self._zones.clear()
            self._zones[user_id] = tz


@dataclass(eq=False)
class Context:
    """One engine's connections, rules and clock, shared by its services."""

    #: a redis-py client made with ``decode_responses=True`` (typed Any: its replies are str)
    redis: Any
    keys: Keys
    rules: Rules
    clock: Callable[[], datetime]
    store: SqlStore | None = None
    drain_queue: DrainQueue | None = None
    zones: Zones = field(default_factory=Zones)
    #: this event loop's asyncio client of the same Redis (``redis.asyncio``), or None when the
    #: engine has none (the reads' ``_async`` forms then run the sync read in a thread)
    async_redis: Callable[[], Any] = field(default=lambda: None)

    def sql(self) -> SqlStore:
        """The SQL store; :class:`ConfigError` if this engine has none."""
        if self.store is None:
            raise ConfigError("this engine has no SQL store (pass store= or use from_settings)")
        return self.store

    def state(self, user_id: str, h: dict[str, str]) -> UserState:
        """A user's state from the user hash ``h``, as of now in the user's zone."""
        return UserState.from_hash(
            user_id, h, self.rules, local_day(self.clock(), h.get("tz", "UTC"))
        )

    def queue_drain(self, shard: int) -> None:
        """Queue the shard's drain job: the call that raised its drain flag does. The change
        that raised it is applied and in the outbox whatever happens here, so a failure to queue
        (the queue's Redis away) is logged, not raised, and the flag is lowered, so that the
        next change queues the job (and the sweep catches a shard that has none)."""
        if self.drain_queue is None:
            return
        try:
            self.drain_queue.request(shard)
        except Exception as exc:  # noqa: BLE001 - any failure: the award stands, the drain waits
            log.warning("shard %s: its drain job could not be queued (%s)", shard, exc)
            with contextlib.suppress(*REDIS_ERRORS):
                self.redis.delete(self.keys.drain_flag(shard))
