"""Live boards for Server-Sent Events: one watcher per board and process, however many clients.

A watcher reads the board (:meth:`ScoringEngine.live_board`: two Redis round trips) every
``SCORING_STREAM_INTERVAL_MS`` while at least one client follows it, and hands each client only
the parts that changed since its last read: ``board`` (the rows), ``tiers`` (users per tier) and
``upgrades`` (the latest tier and level changes). A client keeps only the newest version of each
part, so a slow reader never makes the process buffer more than one message for it. Each part
is encoded once, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

from engine.domain.results import LiveBoard
from engine.services.facade import ScoringEngine

log = logging.getLogger(__name__)

#: A comment line is sent after this long without an event, so proxies keep the connection
#: open and a client that went away is noticed.
HEARTBEAT_S = 15.0
PING = b": ping\n\n"
#: What a browser waits before reconnecting (the SSE ``retry`` field), in ms.
RETRY_MS = 1000


def encode(live: LiveBoard, rules: Any) -> dict[str, bytes]:
    """The three SSE events of a board; equal boards give equal bytes."""
    board = {
        "board": live.board,
        "total_users": live.total_users,
        "rows": [
            {"rank": r.rank, "user_id": r.user_id, "name": r.name, "points": r.points,
             "tier": r.tier, "tier_display": r.tier_display, "level": r.level,
             "streak": r.streak}
            for r in live.rows
        ],
    }  # fmt: skip
    tiers = {
        "tiers": [
            {"tier": t, "display": rules.display_for(t), "users": n} for t, n in live.tiers.items()
        ]
    }
    upgrades = {
        "upgrades": [
            {"user_id": u.user_id, "name": u.name, "at": u.at.isoformat(),
             "from_tier": u.from_tier, "tier": u.tier, "tier_display": rules.display_for(u.tier),
             "from_level": u.from_level, "level": u.level}
            if u.achievement is None else
            {"user_id": u.user_id, "name": u.name, "at": u.at.isoformat(),
             "achievement": u.achievement, "level": u.level}
            for u in live.upgrades
        ]
    }  # fmt: skip
    # tiers first: a dashboard colours the board's tier badges by the tiers' order
    return {name: event(name, data) for name, data in
            (("tiers", tiers), ("board", board), ("upgrades", upgrades))}  # fmt: skip


def event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscriber:
    """One client's pending events: the newest version of each, in the order first offered."""

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}
        self.ready = asyncio.Event()
        self.closed = False

    def offer(self, events: dict[str, bytes]) -> None:
        self.pending.update(events)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    async def messages(self) -> AsyncIterator[bytes]:
        """What to write to the client: its pending events (the watcher offers a heartbeat
        comment when it has sent nothing for a while; a timer per client would cost a task
        per message)."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        # closed is checked after each wait: close() also sets ready, so a closed subscriber
        # never blocks here
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.closed:
                return
            chunk, self.pending = b"".join(self.pending.values()), {}
            if chunk:
                yield chunk


class _Watch:
    """Polls one (board, limit, upgrades) view for its subscribers."""

    def __init__(self, hub: LiveHub, key: tuple[str, int, int]) -> None:
        self.hub, self.key = hub, key
        self.subscribers: set[Subscriber] = set()
        self.last: dict[str, bytes] = {}
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        board, limit, upgrades = self.key
        failing = False
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while self.subscribers:
            changed: dict[str, bytes] = {}
            try:
                live = await asyncio.to_thread(self.hub.engine.live_board, board, limit, upgrades)
            except Exception as exc:  # noqa: BLE001 - Redis away: tell the clients, keep going
                if not failing:
                    log.warning("live board %s unavailable: %s", board, exc)
                    self.last = {}  # everything is sent again once it is back
                    message = str(exc)[:200]
                    changed = {"error": event("error", {"code": "unavailable", "message": message})}
                failing = True
            else:
                failing = False
                events = encode(live, self.hub.engine.rules)
                changed = {k: v for k, v in events.items() if self.last.get(k) != v}
                self.last = events
            if not changed and loop.time() - last_sent >= HEARTBEAT_S:
                changed = {"ping": PING}
            if changed:
                last_sent = loop.time()
                for sub in self.subscribers:
                    sub.offer(changed)
            await asyncio.sleep(self.hub.interval)
        self.hub.watches.pop(self.key, None)


class LiveHub:
    """The watchers of one API process (``app.state.live``)."""

    def __init__(self, state: Any, interval: float) -> None:
        """``state``: the app's state, whose ``engine`` is read at each use."""
        self.state = state
        self.interval = interval
        self.watches: dict[tuple[str, int, int], _Watch] = {}

    @property
    def engine(self) -> ScoringEngine:
        engine: ScoringEngine = self.state.engine
        return engine

    def subscribe(self, board: str, limit: int, upgrades: int, first: LiveBoard) -> Subscriber:
        """A new client of ``board``; ``first``: the board as just read for it, sent at once
        unless the board's watcher already holds a read (then that is sent)."""
        key = (board, limit, upgrades)
        watch = self.watches.get(key)
        if watch is None:
            watch = self.watches[key] = _Watch(self, key)
        if not watch.last:
            watch.last = encode(first, self.engine.rules)
        # the client starts from what the watcher holds, which the next change is compared with
        sub = Subscriber()
        sub.offer(watch.last)
        watch.subscribers.add(sub)
        if watch.task is None or watch.task.done():
            watch.task = asyncio.get_running_loop().create_task(watch.run())
        return sub

    def unsubscribe(self, board: str, limit: int, upgrades: int, sub: Subscriber) -> None:
        watch = self.watches.get((board, limit, upgrades))
        if watch is not None:
            watch.subscribers.discard(sub)

    def clients(self) -> int:
        return sum(len(w.subscribers) for w in self.watches.values())

    def started(self, loop: asyncio.AbstractEventLoop) -> None:
        """The app started on ``loop``. From now on SIGINT and SIGTERM end the streams before
        uvicorn's own handler runs: uvicorn waits for open responses before it stops, and a
        stream left open would only end when its graceful-shutdown timeout cancels it."""
        self.loop = loop
        if threading.current_thread() is not threading.main_thread():
            return  # a server in a thread (tests) calls close_soon() itself
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if callable(previous):

                def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                    self.close_soon()
                    previous(signum, frame)

                signal.signal(sig, handler)

    def close_soon(self) -> None:
        """End every stream (from any thread); clients reconnect after ``RETRY_MS``."""
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.close)

    def close(self) -> None:
        """End every stream and stop the watchers."""
        for watch in list(self.watches.values()):
            for sub in watch.subscribers:
                sub.close()
            watch.subscribers.clear()
            if watch.task is not None:
                watch.task.cancel()
        self.watches.clear()
