"""Many writers at once: the script is atomic, so totals are exact and upgrades are seen once."""

from __future__ import annotations

import threading
from collections import Counter

import redis
from helpers import in_threads

from engine import AwardRequest, ScoringEngine

THREADS = 16
PER_THREAD = 500


def test_sixteen_threads_one_user(real_engine: ScoringEngine) -> None:
    engine = real_engine
    crossings: Counter[tuple[str, str]] = Counter()
    levels: Counter[int] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_THREAD):
                if i % 5 == 0:  # some awards go through award_many
                    [result] = engine.award_many([AwardRequest("hot", "comment", amount=3)])
                else:
                    result = engine.award("hot", "comment", amount=3)
                with lock:
                    if result.tier_upgraded:
                        crossings[(result.old_tier, result.new_tier)] += 1
                    if result.level_upgraded:
                        levels[result.new_level] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    in_threads(worker, [(n,) for n in range(THREADS)])
    assert not errors, errors[:3]
    total = THREADS * PER_THREAD * 3
    state = engine.status("hot")
    assert state.total_points == total == 24_000
    assert state.activity_counts == {"comment": THREADS * PER_THREAD}
    assert crossings == Counter(
        {
            ("ember", "spark"): 1,
            ("spark", "blaze"): 1,
            ("blaze", "beacon"): 1,
            ("beacon", "phoenix"): 1,
        }
    )
    # levels 2 .. level_for(24000) each reached exactly once
    assert levels == Counter({lv: 1 for lv in range(2, engine.rules.level_for(total) + 1)})
    assert engine.redis.xlen(engine.keys.outbox(0)) == THREADS * PER_THREAD
    assert engine.leaderboard().rank("hot").score == total


def test_client_retry_after_timeout_does_not_award_twice(real_redis: redis.Redis, clock) -> None:
    """redis-py re-sends a command after a timeout; the activity id makes the re-send harmless.

    The same prepared call is sent twice, as a retry would, and applies once.
    """
    engine = ScoringEngine(real_redis, clock=clock)
    p = engine.awards._prepare("rita", "quiz_complete", 40, "", None, None)
    first = engine.awards._finish(p, engine.awards._award(real_redis, p.keys, p.args))
    second = engine.awards._finish(p, engine.awards._award(real_redis, p.keys, p.args))
    assert not first.replayed and second.replayed
    assert second.user == first.user
    assert engine.status("rita").total_points == 40
