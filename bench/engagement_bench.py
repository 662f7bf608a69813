"""Goals, quests and streak bonuses: what they cost the award path, and the daily bonus job.

    .venv/bin/python -m bench.engagement_bench [--quick]

1. The award script's Redis-side time (``INFO commandstats``, EVALSHA usec per call after
   ``CONFIG RESETSTAT``) over the same workload (``award_many``, 50,000 awards of comments,
   quizzes and reactions on 10,000 users; 10,000 with ``--quick``) twice, on a fresh database
   each time: with rules that have no weekly goals and no quest started, and with the default
   rules' five goals and two quests in progress for every user (one advanced by comments, one
   by reactions). Target: with them, at most 1.5x the time without.
2. Achievements and events: the award script's Redis-side time over the same workload with the
   default achievements and a seasonal event (x2 on every type) in force, against neither (both
   without weekly goals, so only those differ). Target: at most 1.3x.
3. ``scoring achievements backfill`` (``ScoringEngine.backfill_achievements``) over 100,000 users
   with points (10,000 with ``--quick``) after an achievement every one of them qualifies for
   (with a reward) is added to the rules. Target: under 30 s. A second run grants nothing.
4. ``check_streak_bonuses`` (``ScoringEngine.streak_bonuses``) over 100,000 users active today
   (10,000 with ``--quick``), each with a streak, set up by ``award_many``. Target: under 30 s.
   A second run must pay nobody (shown).

Redis: ``REDIS_URL``, else database 12 of redis://127.0.0.1:6379, flushed only when empty or
marked by the benchmarks (as ``award_bench``). SQL (the quest catalog): SQLite in a temporary
folder. Prints one table; a missed target is marked MISS and never fails the run.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import (
    Row,
    command_stats,
    connect,
    fresh_db,
    log,
    parser,
    redis_url,
    render,
    reset_stats,
    summary,
    verdict,
)
from engine import AwardRequest, ScoringEngine
from engine.commands.quest import QuestOp
from engine.domain.rules import build_rules
from engine.storage.store import SqlStore

USERS = 10_000
TYPES = ("comment", "quiz_complete", "reaction")
COST_TARGET = 1.5
ACHIEVEMENT_COST_TARGET = 1.3
BACKFILL_SECONDS = 30.0
BONUS_SECONDS = 30.0
CHUNK = 5_000


def workload(n: int, seed: int = 7) -> list[AwardRequest]:
    rng = random.Random(seed)
    return [AwardRequest(f"u{rng.randrange(USERS):06d}", rng.choice(TYPES)) for _ in range(n)]


def script_usec(engine: ScoringEngine, items: list[AwardRequest]) -> tuple[float, int]:
    """(EVALSHA usec per call, rewards given) for ``items`` sent with award_many."""
    r = engine.redis
    engine.award_many(items[:100])  # loads the script
    reset_stats(r)
    rewards = 0
    for i in range(100, len(items), CHUNK):
        for result in engine.award_many(items[i : i + CHUNK]):
            rewards += len(result.rewards)
    calls, usec = command_stats(r).get("script", (0, 0))
    return usec / (calls or 1), rewards


def bench_cost(url: str, awards: int, tmp: Path) -> tuple[float, float, int, int]:
    r = connect(url)
    items = workload(awards)

    fresh_db(r)
    plain = ScoringEngine(r, rules=build_rules({"weekly_goals": {}}))
    log(f"award path without goals or quests: {awards:,} awards")
    without, _ = script_usec(plain, items)

    fresh_db(r)
    store = SqlStore(f"sqlite:///{tmp / 'quests.db'}")
    store.upgrade()
    engine = ScoringEngine(r, store=store)
    quests = [
        engine.create_quest(title=f"{t} quest", quest_type="bench", difficulty="easy",
                            points_reward=50, activity_type=t, target_count=1_000_000)
        for t in ("comment", "reaction")
    ]  # fmt: skip
    log(f"starting 2 quests for each of {USERS:,} users")
    for q in quests:
        spec = engine.quest(q.id)
        for u in range(USERS):
            # what start_quest does after its catalog checks (done once above)
            engine.side_quests._quest_call(QuestOp.START, f"u{u:06d}", spec.id,
                               f"{spec.activity_type}\x1f{spec.target_count}\x1f"
                               f"{spec.points_reward}\x1f0\x1f{spec.title}")  # fmt: skip
    log(f"award path with 5 goals and 2 quests per user: {awards:,} awards")
    with_, rewards = script_usec(engine, items)
    store.close()
    return without, with_, rewards, len(engine.rules.weekly_goals)


def bench_achievements(url: str, awards: int) -> tuple[float, float, int]:
    """(script usec without achievements, with the defaults, levels earned in the run)."""
    r = connect(url)
    items = workload(awards)
    fresh_db(r)
    none = ScoringEngine(r, rules=build_rules({"weekly_goals": {}, "achievements": {}}))
    log(f"award path without achievements: {awards:,} awards")
    without, _ = script_usec(none, items)
    fresh_db(r)
    now = datetime.now(UTC)
    event = {"start": now - timedelta(days=1), "end": now + timedelta(days=1), "multiplier": 2,
             "title": "Double points"}  # fmt: skip
    engine = ScoringEngine(r, rules=build_rules({"weekly_goals": {}, "events": {"x2": event}}))
    log(f"award path with the {len(engine.rules.achievements)} default achievements and an event")
    with_, _ = script_usec(engine, items)
    earned = sum(int(n) for n in r.hvals(engine.keys.achievement_holders(0)))
    return without, with_, earned


def bench_backfill(url: str, users: int) -> tuple[float, int, int, int]:
    """(seconds, users tested, levels granted, levels granted by a second run)."""
    r = connect(url)
    fresh_db(r)
    plain = ScoringEngine(r, rules=build_rules({"weekly_goals": {}, "achievements": {}}))
    log(f"{users:,} users with points")
    items = [AwardRequest(f"b{i:07d}", "comment") for i in range(users)]
    for i in range(0, users, CHUNK):
        plain.award_many(items[i : i + CHUNK])
    added = build_rules({"weekly_goals": {}, "achievements": {
        "welcome": {"kind": "points", "target": 1, "reward": 5, "title": "Welcome"},
    }})  # fmt: skip
    engine = ScoringEngine(r, rules=added)
    log("backfill_achievements")
    started = time.perf_counter()
    first = engine.backfill_achievements()
    seconds = time.perf_counter() - started
    second = engine.backfill_achievements()
    return seconds, first.users, first.granted, second.granted


def bench_bonus(url: str, users: int) -> tuple[float, dict[str, int], dict[str, int]]:
    r = connect(url)
    fresh_db(r)
    engine = ScoringEngine(r)
    log(f"{users:,} users active today")
    items = [AwardRequest(f"s{i:07d}", "daily_login") for i in range(users)]
    for i in range(0, users, CHUNK):
        engine.award_many(items[i : i + CHUNK])
    log("check_streak_bonuses")
    started = time.perf_counter()
    first = engine.streak_bonuses(datetime.now(UTC).date())
    seconds = time.perf_counter() - started
    second = engine.streak_bonuses(datetime.now(UTC).date())
    return seconds, first, second


def main(argv: list[str] | None = None) -> int:
    args = parser("engagement_bench", __doc__, "small sizes, for a smoke run").parse_args(argv)
    awards = 10_000 if args.quick else 50_000
    bonus_users = 10_000 if args.quick else 100_000
    url = redis_url()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="engagement-bench-") as tmp:
        without, with_, rewards, goals = bench_cost(url, awards, Path(tmp))
    ach_without, ach_with, earned = bench_achievements(url, awards)
    backfill_s, tested, granted, regranted = bench_backfill(url, bonus_users)
    seconds, first, second = bench_bonus(url, bonus_users)
    fresh_db(connect(url))
    ratio = with_ / without
    ach_ratio = ach_with / ach_without
    rows = [
        Row("award script, Redis-side, no goals or quests", f"{without:.2f} us/call"),
        Row(f"award script, Redis-side, {goals} goals + 2 quests/user", f"{with_:.2f} us/call"),
        Row(
            "  with / without", f"{ratio:.2f}x", f"<= {COST_TARGET}x", verdict(ratio <= COST_TARGET)
        ),
        Row("  goal rewards given in the run", f"{rewards:,}"),
        Row("award script, Redis-side, no achievements, no event", f"{ach_without:.2f} us/call"),
        Row("award script, Redis-side, default achievements + event", f"{ach_with:.2f} us/call"),
        Row(
            "  with / without",
            f"{ach_ratio:.2f}x",
            f"<= {ACHIEVEMENT_COST_TARGET}x",
            verdict(ach_ratio <= ACHIEVEMENT_COST_TARGET),
        ),  # fmt: skip
        Row("  achievement levels earned in the run", f"{earned:,}"),
        Row(
            f"backfill_achievements, {bonus_users:,} users",
            f"{backfill_s:.1f} s",
            f"< {BACKFILL_SECONDS:g} s",
            verdict(backfill_s < BACKFILL_SECONDS),
        ),  # fmt: skip
        Row("  users tested / levels granted", f"{tested:,} / {granted:,}"),
        Row("  second run: levels granted", f"{regranted:,}", "0", verdict(regranted == 0)),
        Row(
            f"check_streak_bonuses, {bonus_users:,} active users",
            f"{seconds:.1f} s",
            f"< {BONUS_SECONDS:g} s",
            verdict(seconds < BONUS_SECONDS),
        ),  # fmt: skip
        Row("  first run: awarded / skipped", f"{first['awarded']:,} / {first['skipped']:,}"),
        Row(
            "  second run: awarded / already paid",
            f"{second['awarded']:,} / {second['already']:,}",
            "0 awarded",
            verdict(second["awarded"] == 0),
        ),  # fmt: skip
    ]
    print(render(rows))
    print(summary(args.quick, started, url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
