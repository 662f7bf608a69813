"""The ``scoring`` command.

scoring demo      award points to a few users and print the live leaderboard
scoring rules     print the rules in force (defaults, or SCORING_RULES laid over them)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence

from pydantic import ValidationError as SettingsError

from .errors import ScoringError
from .rules import load_rules
from .service import AwardRequest, ScoringEngine
from .settings import Settings

DEMO_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
DEMO_MIX = [("quiz_complete", 30), ("comment", 30), ("reaction", 15), ("project_create", 8),
            ("project_update", 10), ("daily_login", 5), ("special_event", 2)]  # fmt: skip


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    engine = ScoringEngine.from_settings(settings)
    where = settings.redis_url or f"embedded Redis under {settings.data_dir.resolve()}"
    print(f"scoring engine on {where}, {settings.shards} shard(s)\n")
    rng = random.Random()
    types = [t for t, _ in DEMO_MIX]
    weights = [w for _, w in DEMO_MIX]
    items = [
        AwardRequest(rng.choice(DEMO_USERS), rng.choices(types, weights)[0], description="demo")
        for _ in range(args.awards)
    ]
    started = time.perf_counter()
    results = engine.award_many(items)
    elapsed = time.perf_counter() - started
    for r in results:
        if isinstance(r, ScoringError):
            print(f"refused: {r}")
        elif r.tier_upgraded:
            print(
                f"  {r.user.user_id} reached {r.user.tier_display} ({r.user.total_points} points)"
            )
    print(f"\n{len(items)} awards in {elapsed * 1000:.1f} ms\n")
    print(f"{'rank':>4}  {'user':<8} {'points':>7}  {'tier':<8} {'level':>5} {'streak':>6}")
    for entry in engine.leaderboard("all_time").top(args.top):
        u = engine.status(entry.user_id)
        print(f"{entry.rank:>4}  {u.user_id:<8} {u.total_points:>7}  {u.tier_display:<8} "
              f"{u.level:>5} {u.current_streak_days:>6}")  # fmt: skip
    return 0


def _rules(settings: Settings, args: argparse.Namespace) -> int:
    print(load_rules(settings.rules_path).model_dump_json(indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoring", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="award points to a few users and print the leaderboard")
    demo.add_argument("--awards", type=int, default=200, help="number of awards (default 200)")
    demo.add_argument("--top", type=int, default=10, help="rows of the leaderboard to print")
    demo.set_defaults(run=_demo)
    rules = sub.add_parser("rules", help="print the rules in force")
    rules.set_defaults(run=_rules)
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        return args.run(settings, args)
    except SettingsError as exc:
        print(f"scoring: invalid settings: {exc}", file=sys.stderr)
    except ScoringError as exc:
        print(f"scoring: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
