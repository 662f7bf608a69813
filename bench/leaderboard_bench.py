"""Leaderboard reads and what ``?include=rank`` costs an award, in this process (no wrk).

    .venv/bin/python -m bench.leaderboard_bench [--quick]

The all-time board is filled with 100,000 users (10,000 with ``--quick``) whose points fall on
about 2,000 distinct scores, so ties are common. Then, one call at a time (p50 and mean):

1. ``POST /v1/users/{id}/awards`` through the app in this process (Starlette's TestClient, one
   connection; random users of the board), the three kinds interleaved: as most requests are
   answered (the hot handler), with a query string the hot handler leaves to the FastAPI route
   (``?x=1``), and with ``?include=rank`` (the FastAPI route and two rank reads). The rows give
   each one's time and what ``include=rank`` adds over the other two; the TestClient's own cost
   is in every row.
2. Engine reads on that board (sync client): ``rank`` in each tie mode, a page of 10 at
   offset 5,000 in each tie mode, and a friends board of a user with 1,000 friends.

Redis: ``REDIS_URL``, else database 12 of redis://127.0.0.1:6379, flushed only when empty or
marked by the benchmarks (as ``award_bench``). Prints one table; timings never fail the run.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import API_KEY, API_KEYS, Row, connect, fresh_db, log, parser, redis_url, summary
from bench.harness import render as table
from engine import AwardRequest, ScoringEngine
from engine.storage.store import SqlStore

CHUNK = 5_000


def timed(call: Callable[[int], Any], n: int) -> tuple[float, float]:
    """(p50, mean) microseconds of ``call(i)`` for i in range(n), one at a time."""
    latencies = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t)
    return statistics.median(latencies) * 1e6, statistics.fmean(latencies) * 1e6


def us(p50_mean: tuple[float, float]) -> str:
    return f"p50 {p50_mean[0]:,.0f} µs, mean {p50_mean[1]:,.0f} µs"


def main(argv: list[str] | None = None) -> int:
    args = parser("leaderboard_bench", __doc__, "10,000 users, fewer calls").parse_args(argv)
    started = time.perf_counter()
    users = 10_000 if args.quick else 100_000
    calls = 300 if args.quick else 2_000
    url = redis_url()
    r = connect(url)
    fresh_db(r)
    tmp = Path(tempfile.mkdtemp(prefix="leaderboard-bench-"))
    store = SqlStore(f"sqlite:///{tmp / 'bench.db'}")
    store.upgrade()
    engine = ScoringEngine.from_url(url, store=store)
    rng = random.Random(5)
    ids = [f"u{i:06d}" for i in range(users)]
    log(f"filling the board with {users:,} users")
    for start in range(0, users, CHUNK):
        engine.award_many(
            AwardRequest(u, "special_event", amount=1 + rng.randrange(2_000))
            for u in ids[start : start + CHUNK]
        )
    rows: list[Row] = []

    from fastapi.testclient import TestClient

    from api.app import create_app
    from engine.runtime.settings import Settings

    app = create_app(engine, Settings(SCORING_API_KEYS=API_KEYS))
    body = {"activity_type": "comment"}
    headers = {"X-API-Key": API_KEY}
    with TestClient(app) as client:

        def award(query: str) -> Callable[[int], Any]:
            def call(i: int) -> None:
                user = ids[rng.randrange(users)]
                response = client.post(f"/v1/users/{user}/awards{query}", json=body,
                                       headers=headers)  # fmt: skip
                assert response.status_code == 201, response.text

            return call

        log("awards over HTTP")
        variants = [award(""), award("?x=1"), award("?include=rank")]
        for call in variants:
            call(0)  # warm up: the scripts loaded, the clients connected
        # interleaved, so that a busy moment of the machine weighs on each alike
        times: list[list[float]] = [[], [], []]
        for i in range(calls):
            for call, spent in zip(variants, times, strict=True):
                t = time.perf_counter()
                call(i)
                spent.append(time.perf_counter() - t)
        hot, route, ranked = (
            (statistics.median(t) * 1e6, statistics.fmean(t) * 1e6) for t in times
        )
    rows += [
        Row("award (hot handler)", us(hot)),
        Row("award, FastAPI route (?x=1)", us(route)),
        Row("award?include=rank", us(ranked)),
        Row(
            "include=rank over the hot award",
            f"+{ranked[0] - hot[0]:,.0f} µs p50 ({ranked[0] / hot[0]:.2f}x)",
        ),  # fmt: skip
        Row(
            "include=rank over the FastAPI route",
            f"+{ranked[0] - route[0]:,.0f} µs p50 (the two rank reads)",
        ),  # fmt: skip
    ]

    log("engine reads")
    board = engine.leaderboard()
    for ties in ("competition", "dense", "ordinal"):
        rows.append(Row(f"rank, {ties}", us(timed(
            lambda i, t=ties: board.rank(ids[rng.randrange(users)], ties=t), calls))))  # fmt: skip
    for ties in ("competition", "dense", "ordinal"):
        rows.append(Row(f"top 10 at offset 5,000, {ties}", us(timed(
            lambda i, t=ties: board.top(10, 5_000, ties=t), calls))))  # fmt: skip
    engine.set_friends(ids[0], rng.sample(ids[1:], 1_000))
    rows.append(Row("friends board, 1,000 friends", us(timed(
        lambda i: board.friends_of(ids[0]), max(50, calls // 10)))))  # fmt: skip
    distinct = (
        len(board.top(1, users - 1, ties="dense"))
        and board.rank(board.top(1, users - 1)[0].user_id, ties="dense").rank
    )
    print(table(rows))
    print(summary(args.quick, started, f"{users:,} users on {distinct:,} distinct scores"))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
