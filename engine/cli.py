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
from sqlalchemy.exc import SQLAlchemyError

from .embedded import state_redis_url
from .errors import ScoringError
from .rules import load_rules
from .service import AwardRequest
from .settings import Settings
from .store import SqlStore

DEMO_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
DEMO_MIX = [("quiz_complete", 30), ("comment", 30), ("reaction", 15), ("project_create", 8),
            ("project_update", 10), ("daily_login", 5), ("special_event", 2)]  # fmt: skip


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from workers.jobs import context

    engine, drainer = context()
    engine.store.upgrade()  # a demo sets itself up, on any database
    where = settings.redis_url or f"embedded Redis under {settings.data_dir.resolve()}"
    print(
        f"scoring engine on {where}, {settings.shards} shard(s); SQL: {_safe(engine.store.url)}\n"
    )
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
        else:
            if r.tier_upgraded:
                print(f"  {r.user.user_id} reached {r.user.tier_display} "
                      f"({r.user.total_points} points)")  # fmt: skip
            for reward in r.rewards:
                print(f"  {r.user.user_id} completed {reward.activity_type} {reward.ref} "
                      f"(+{reward.points})")  # fmt: skip
    print(f"\n{len(items)} awards in {elapsed * 1000:.1f} ms")
    written = sum(drainer.drain(shard).written for shard in range(engine.keys.shards))
    print(f"audit trail: {written} outbox entries written to SQL, "
          f"{engine.store.count_activities()} activities there in all\n")  # fmt: skip
    print(f"{'rank':>4}  {'user':<8} {'points':>7}  {'tier':<8} {'level':>5} {'streak':>6}")
    for entry in engine.leaderboard("all_time").top(args.top):
        u = engine.status(entry.user_id)
        print(f"{entry.rank:>4}  {u.user_id:<8} {u.total_points:>7}  {u.tier_display:<8} "
              f"{u.level:>5} {u.current_streak_days:>6}")  # fmt: skip
    return 0


def _rules(settings: Settings, args: argparse.Namespace) -> int:
    print(load_rules(settings.rules_path).model_dump_json(indent=2))
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    store = SqlStore.from_settings(settings)
    store.upgrade(args.revision)
    print(f"database {_safe(store.url)} is at revision {args.revision}")
    return 0


def _default_schema(settings: Settings) -> None:
    """On the embedded default (SQLite, no DATABASE_URL) keep the schema migrated by itself;
    a configured database is migrated by the operator with ``scoring db upgrade``."""
    if not settings.database_url:
        SqlStore.from_settings(settings).upgrade()


def _drain_all(settings: Settings) -> int:
    """Drain every shard's outbox now; return the number of entries still not in SQL."""
    from workers.jobs import context

    engine, drainer = context()
    left = 0
    for shard in range(engine.keys.shards):
        report = drainer.drain(shard)
        print(f"shard {shard}: {report.written} written, {report.dead} dead letters, "
              f"{report.failed} failed", file=sys.stderr)  # fmt: skip
        left += drainer.backlog(shard)
    return left


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import redis
    from rq import Queue, SimpleWorker

    from workers.jobs import context, sweep

    _default_schema(settings)
    context()  # fail fast on bad settings or an unreachable Redis
    conn = redis.Redis.from_url(settings.rq_redis_url or state_redis_url(settings))
    queue = Queue(settings.queue_name, connection=conn)
    if args.burst:
        _drain_all(settings)
    else:
        sweep()
    worker = SimpleWorker([queue], connection=conn)
    worker.work(burst=args.burst, logging_level=args.log_level)
    return 0


def _scheduler(settings: Settings, args: argparse.Namespace) -> int:
    import redis
    from rq_scheduler import Scheduler

    from workers.schedule import register

    conn = redis.Redis.from_url(settings.rq_redis_url or state_redis_url(settings))
    scheduler = Scheduler(queue_name=settings.queue_name, connection=conn, interval=args.interval)
    print(f"registered: {', '.join(register(scheduler, queue_name=settings.queue_name))}")
    scheduler.run()
    return 0


def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from workers.jobs import context

    from .recovery import print_progress, rebuild

    engine, _ = context()
    if _drain_all(settings):
        print("scoring: the outbox still holds entries SQL lacks; drain it first", file=sys.stderr)
        return 1
    report = rebuild(engine, engine.store, progress=print_progress)
    print(f"rebuilt {report.users:,} users from {report.activities:,} activities "
          f"in {report.seconds:.1f} s")  # fmt: skip
    return 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from workers.jobs import context

    from .recovery import reconcile

    engine, _ = context()
    if not args.no_drain:
        _drain_all(settings)
    drifts = reconcile(engine, engine.store)
    for drift in drifts:
        print(drift)
    print(f"{len(drifts)} user(s) drifted" if drifts else "no drift")
    return 1 if drifts else 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    _default_schema(settings)
    create_app(settings=settings)  # fail here, not in a worker, on bad settings
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level.lower(),
        access_log=False,
    )
    return 0


def _safe(url: str) -> str:
    """A URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoring", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="award points to a few users and print the leaderboard")
    demo.add_argument("--awards", type=int, default=200, help="number of awards (default 200)")
    demo.add_argument("--top", type=int, default=10, help="rows of the leaderboard to print")
    demo.set_defaults(run=_demo)
    rules = sub.add_parser("rules", help="print the rules in force")
    rules.set_defaults(run=_rules)
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create or migrate the schema")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(run=_db)
    worker = sub.add_parser("worker", help="run an RQ worker (drains the outbox into SQL)")
    worker.add_argument("--burst", action="store_true", help="drain everything pending, then exit")
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(run=_worker)
    scheduler = sub.add_parser("scheduler", help="run rq-scheduler with the periodic jobs")
    scheduler.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    scheduler.set_defaults(run=_scheduler)
    serve = sub.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(run=_serve)
    rebuild = sub.add_parser("rebuild", help="rebuild all Redis state from SQL")
    rebuild.set_defaults(run=_rebuild)
    reconcile = sub.add_parser("reconcile", help="report users whose Redis and SQL state differ")
    reconcile.add_argument("--no-drain", action="store_true", help="do not drain the outbox first")
    reconcile.set_defaults(run=_reconcile)
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        return args.run(settings, args)
    except SettingsError as exc:
        print(f"scoring: invalid settings: {exc}", file=sys.stderr)
    except ScoringError as exc:
        print(f"scoring: {exc}", file=sys.stderr)
    except SQLAlchemyError as exc:
        print(f"scoring: SQL error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
