"""The ``scoring`` command.

scoring up        the API (with the dashboard), a worker and the scheduler, until Ctrl-C
scoring demo      made-up users earning points at a chosen rate
scoring serve | worker | scheduler    one of them (production runs each on its own)
scoring rules     print the rules in force (defaults, or SCORING_RULES laid over them)
scoring db upgrade | db partitions | rebuild | reconcile    schema, partitions, recovery
scoring import-seed --from postgresql://...  the seed app's database, into SQL and Redis
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError as SettingsError
from sqlalchemy.exc import SQLAlchemyError

from engine.domain.errors import ScoringError
from engine.domain.rules import load_rules
from engine.runtime.connect import queue_redis_url, uses_cluster
from engine.runtime.embedded import release_embedded
from engine.runtime.settings import Settings
from engine.storage.seed import SeedTables
from engine.storage.store import SqlStore

#: The demo's default pace (awards per second).
DEMO_RATE = 10.0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from scoring.demo import check_demo, run_demo
    from workers.jobs import context, sql_store

    check_demo(rate=args.rate, users=args.users, awards=args.awards)
    engine, drainer = context()
    store = sql_store(engine)
    store.upgrade()  # a demo sets itself up, on any database
    where = settings.redis_url or f"embedded Redis under {settings.data_dir.resolve()}"
    pace = f"{args.rate:g} awards/s" if args.rate else "as fast as it goes"
    until = f"{args.awards} awards" if args.awards is not None else "Ctrl-C"
    print(f"demo: {args.users} users, {pace}, until {until}; scoring engine on {where}",
          flush=True)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def show(r: object) -> None:
        if isinstance(r, ScoringError):
            print(f"  refused: {r}", flush=True)
            return
        u = r.user  # type: ignore[attr-defined]
        name = u.display_name or u.user_id
        if r.tier_upgraded:  # type: ignore[attr-defined]
            print(f"  {name} reached {u.tier_display} ({u.total_points} points)", flush=True)
        for reward in r.rewards:  # type: ignore[attr-defined]
            print(f"  {name} completed {reward.activity_type} {reward.ref} "
                  f"(+{reward.points})", flush=True)  # fmt: skip
        for a in r.achievements:  # type: ignore[attr-defined]
            level = f" (level {a.level})" if a.levels > 1 else ""
            print(f"  {name} earned {a.title}{level}", flush=True)

    report = run_demo(engine, rate=args.rate, users=args.users, awards=args.awards,
                      on_result=show, should_stop=stop.is_set)  # fmt: skip
    print(f"\n{report.awards} awards ({report.refused} refused) in {report.seconds:.1f} s")
    written = sum(drainer.drain(shard).written for shard in range(engine.keys.shards))
    print(f"audit trail: {written} outbox entries written to SQL, "
          f"{store.count_activities()} activities there in all\n")  # fmt: skip
    print(f"{'rank':>4}  {'user':<12} {'points':>7}  {'tier':<8} {'level':>5} {'streak':>6}")
    for row in engine.live_board("all_time", limit=args.top, upgrades=0).rows:
        print(f"{row.rank:>4}  {row.name:<12} {row.points:>7}  {row.tier_display:<8} "
              f"{row.level:>5} {row.streak:>6}")  # fmt: skip
    return 0


def _rules(settings: Settings, args: argparse.Namespace) -> int:
    print(load_rules(settings.rules_path).model_dump_json(indent=2))
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    store = SqlStore.from_settings(settings)
    store.upgrade(args.revision)
    print(f"database {_safe(store.url)} is at revision {args.revision}")
    return 0


def _partitions(settings: Settings, args: argparse.Namespace) -> int:
    """List the audit trail's partitions; ``--apply``: first make those due and apply
    retention, as the scheduler's daily job does."""
    from datetime import UTC, datetime

    from engine.services.retention import longest_window_days, maintain_partitions

    store = SqlStore.from_settings(settings)
    if not store.partitioned():
        print(f"database {_safe(store.url)}: point_activity is one unpartitioned table")
        return 0
    if args.apply:
        report = maintain_partitions(
            store, datetime.now(UTC), retention_months=settings.activity_retention_months,
            window_days=longest_window_days(load_rules(settings.rules_path)),
        )  # fmt: skip
        for name in report.created:
            print(f"created {name}")
        for name, rows, points in report.dropped:
            print(f"dropped {name}: {rows} activities, {points} points kept in the rollup")
        for name, missing in report.waiting.items():
            print(f"kept {name}: periods not archived yet: {', '.join(missing)}")
    for p in store.activity_partitions():
        size = "not analysed" if p.rows < 0 else f"~{p.rows} rows"
        print(f"{p.name}  {p.month.strftime('%Y-%m') if p.month else 'DEFAULT'}  {size}")
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


def _log_to_stderr(level: str, *names: str) -> None:
    """Lines of the ``names`` loggers at ``level`` and above on stderr, with the time, as RQ
    prints its own (without this only warnings would show, and without the time)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level.upper())


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import redis
    from rq import Queue, SimpleWorker

    import workers.jobs
    from workers.jobs import context, sweep

    class Worker(SimpleWorker):
        def request_stop(self, signum: Any, frame: Any) -> None:
            workers.jobs.stopping.set()  # a lingering drain job ends now, not at its slice's end
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    _log_to_stderr(args.log_level, "workers", "engine")
    _default_schema(settings)
    _, drainer = context()  # fail fast on bad settings or an unreachable Redis
    conn = redis.Redis.from_url(queue_redis_url(settings))
    queue = Queue(settings.queue_name, connection=conn)
    if args.burst:
        drainer.linger = 0.0  # drain what is there and exit: no job waits for more
        _drain_all(settings)
    else:
        sweep(force=True)  # a flag raised before a crash may stand for a job that was lost
    webhooks = Queue(settings.webhook_queue, connection=conn)
    worker = Worker([queue, webhooks], connection=conn)
    worker.work(burst=args.burst, logging_level=(args.rq_log_level or args.log_level).upper())
    return 0


def _scheduler(settings: Settings, args: argparse.Namespace) -> int:
    import redis
    from rq_scheduler import Scheduler

    from workers.schedule import register

    # rq-scheduler's crontab warns on every start that a future version changes a default it
    # does not use (it passes now= itself): noise on the terminal
    warnings.filterwarnings("ignore", category=FutureWarning, module="rq_scheduler")
    _log_to_stderr(args.log_level, "rq_scheduler")
    conn = redis.Redis.from_url(queue_redis_url(settings))
    scheduler = Scheduler(queue_name=settings.queue_name, connection=conn, interval=args.interval)
    print(f"registered: {', '.join(register(scheduler, queue_name=settings.queue_name))}")
    scheduler.run()
    return 0


def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from engine.services.recovery import print_progress, rebuild
    from workers.jobs import context, sql_store

    engine, _ = context()
    if _drain_all(settings):
        print("scoring: the outbox still holds entries SQL lacks; drain it first", file=sys.stderr)
        return 1
    report = rebuild(engine, sql_store(engine), progress=print_progress)
    print(f"rebuilt {report.users:,} users from {report.activities:,} activities "
          f"in {report.seconds:.1f} s")  # fmt: skip
    return 0


def _achievements(settings: Settings, args: argparse.Namespace) -> int:
    from workers.jobs import context

    def progress(done: int, total: int) -> None:
        print(f"\rbackfill: {done:,}/{total:,} users", end="", file=sys.stderr, flush=True)

    engine, _ = context()
    report = engine.backfill_achievements(progress=progress)
    print(file=sys.stderr)
    print(f"backfilled achievements: {report.users:,} users tested, {report.granted:,} levels "
          f"granted, {report.points:,} points paid, in {report.seconds:.1f} s")  # fmt: skip
    return 0


def _decay(settings: Settings, args: argparse.Namespace) -> int:
    from workers.jobs import context

    engine, _ = context()
    if not engine.rules.decay.enabled:
        print("decay is off ([decay] enabled = false in the rules)", file=sys.stderr)
        return 0
    report = engine.run_decay()
    print(f"decay: {report.users:,} users looked at, {report.decayed:,} decayed, "
          f"{report.points:,} points taken, {report.failed:,} failed, "
          f"in {report.seconds:.1f} s")  # fmt: skip
    return 1 if report.failed else 0


def _reshard(settings: Settings, args: argparse.Namespace) -> int:
    from engine.services.reshard import reshard
    from workers.jobs import context, sql_store

    engine, _ = context()
    if args.old_shards == engine.keys.shards:
        print(f"scoring: SCORING_SHARDS is already {args.old_shards}; set it to the new number "
              "of shards and pass the old one to --from", file=sys.stderr)  # fmt: skip
        return 2
    report = reshard(
        engine, sql_store(engine), args.old_shards, progress=lambda m: print(m, file=sys.stderr)
    )
    r = report
    print(f"resharded {r.old_shards} -> {r.new_shards} shards: {r.user_keys_moved:,} user keys, "
          f"{r.board_entries_moved:,} board entries and {r.idempotency_records_moved:,} "
          f"idempotency records moved ({r.idempotency_records_dropped:,} records of "
          "activities not in SQL dropped)")  # fmt: skip
    return 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from engine.services.recovery import reconcile
    from workers.jobs import context, sql_store

    engine, _ = context()
    if not args.no_drain:
        _drain_all(settings)
    drifts = reconcile(engine, sql_store(engine))
    for drift in drifts:
        print(drift)
    print(f"{len(drifts)} user(s) drifted" if drifts else "no drift")
    return 1 if drifts else 0


def _import_seed(settings: Settings, args: argparse.Namespace) -> int:
    from engine.services.recovery import print_progress
    from engine.services.seed_import import import_seed
    from workers.jobs import context, sql_store

    if args.chunk < 1:
        print("scoring import-seed: --chunk must be at least 1", file=sys.stderr)
        return 2
    _default_schema(settings)
    engine, _ = context()
    if _drain_all(settings):
        print("scoring: the outbox still holds entries SQL lacks; drain it first", file=sys.stderr)
        return 1
    tables = SeedTables(users=args.users_table, activities=args.activity_table,
                        goals=args.goal_table, quests=args.quest_table,
                        user_quests=args.user_quest_table)  # fmt: skip
    show = None if args.no_progress else print_progress
    report = import_seed(
        engine, sql_store(engine), args.source, tables=tables,
        user_id_column=args.user_id_column, trust=args.trust, chunk_users=args.chunk,
        progress=show and (lambda d, t: print_progress(d, t, label="import")),
        rebuild_progress=show,
        on_problem=lambda p: print(f"skipped: {p}", file=sys.stderr),
        on_drift=lambda d: print(f"drift: {d}"),
    )  # fmt: skip
    r = report
    print(f"imported {r.users:,} users, {r.activities:,} activities and {r.corrections:,} "
          f"corrections ({r.new_activities:,} rows new in the audit trail), {r.goals:,} weekly "
          f"goals, {r.quests:,} side quests, {r.user_quests:,} user quests; {r.skipped:,} rows "
          f"skipped, {r.drifted:,} users drifted (trusted: {args.trust}); in "
          f"{r.seconds:.1f} s")  # fmt: skip
    if r.rebuild is not None:
        print(f"rebuilt Redis: {r.rebuild.users:,} users from {r.rebuild.activities:,} "
              "activities")  # fmt: skip
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from api.app import create_app
    from scoring.serve import serve

    if args.workers < 1:
        print("scoring serve: --workers must be at least 1", file=sys.stderr)
        return 2
    _default_schema(settings)
    create_app(settings=settings)  # fail here, not in a worker, on bad settings
    return serve(host=args.host, port=args.port, workers=args.workers,
                 log_level=args.log_level, reuse_port=args.reuse_port)  # fmt: skip


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from scoring.up import Child, Supervisor, port_free, wait_healthy
    from workers.jobs import context

    if not port_free(args.host, args.port):
        print(f"scoring up: {args.host}:{args.port} is in use; choose another with --port",
              file=sys.stderr)  # fmt: skip
        return 2
    _default_schema(settings)
    # on the embedded default this starts the private Redis, which this process then holds
    # until the others have stopped; either way it fails here on bad settings or no Redis
    engine, _ = context()
    engine.redis.ping()
    me = [sys.executable, "-m", "scoring.cli"]
    # RQ's own lines (a few per job) and the scheduler's only with --verbose; the worker's
    # own lines (the first entries in SQL, then one every 30 s, outages) always
    rq_level = args.log_level if args.verbose else _at_least("WARNING", args.log_level)
    children = [
        Child("api", [*me, "serve", "--host", args.host, "--port", str(args.port),
                      "--workers", str(args.workers), "--log-level", args.log_level]),
        Child("worker", [*me, "worker", "--log-level", args.log_level,
                         "--rq-log-level", rq_level]),
        Child("scheduler", [*me, "scheduler", "--log-level", rq_level]),
    ]  # fmt: skip
    if args.demo is not None:
        children.append(Child("demo", [*me, "demo", "--rate", f"{args.demo:g}"]))
    supervisor = Supervisor(children)
    supervisor.handle_signals()
    supervisor.start()
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else host}:{args.port}"
    if wait_healthy(url, children[0]):
        if settings.redis_url:
            kind = " (a Redis Cluster)" if uses_cluster(settings) else ""
            where = f"{_safe(settings.redis_url)}{kind}"
        else:
            where = f"embedded Redis and SQLite under {settings.data_dir.resolve()}"
        supervisor.say(f"\n  scoring engine up on {where}\n"
                       f"  dashboard   {url}/\n  API docs    {url}/docs\n"
                       f"  leaderboard reads without credentials: "
                       f"{settings.leaderboard_access} (SCORING_PUBLIC_LEADERBOARDS)\n"
                       f"  Ctrl-C stops everything\n")  # fmt: skip
    failed = supervisor.watch()
    if failed is not None:
        supervisor.say(f"scoring up: {failed.name} exited ({failed.returncode}); stopping")
    else:
        supervisor.say("scoring up: stopping")
    clean = supervisor.stop(last="worker")
    left = _drain_all(settings)  # what the worker had not written yet
    supervisor.say(f"scoring up: stopped{'' if clean else ' (not cleanly)'}; "
                   f"{left} outbox entries not yet in SQL")  # fmt: skip
    if not settings.redis_url:
        engine.close()
        if release_embedded(settings.data_dir):
            supervisor.say("scoring up: embedded Redis shut down, its data saved")
        else:
            supervisor.say("scoring up: embedded Redis left running for its other clients")
    return 1 if failed is not None or not clean else 0


def _at_least(floor: str, level: str) -> str:
    """The higher of two logging level names."""
    names = logging.getLevelNamesMapping()
    return max(floor.upper(), level.upper(), key=lambda name: names.get(name, 0))


def _safe(url: str) -> str:
    """A URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoring", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the API, a worker and the scheduler until Ctrl-C")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=1, help="API worker processes (default 1)")
    up.add_argument("--log-level", default="INFO")
    up.add_argument("--demo", type=float, nargs="?", const=DEMO_RATE, metavar="RATE",
                    help=f"also run the demo at RATE awards/s (default {DEMO_RATE:g})")  # fmt: skip
    up.add_argument("--verbose", action="store_true",
                    help="also show RQ's own lines (worker, scheduler: a few per job)")  # fmt: skip
    up.set_defaults(run=_up)
    demo = sub.add_parser("demo", help="made-up users earning points at a chosen rate")
    demo.add_argument(
        "--rate",
        type=float,
        default=DEMO_RATE,
        help=f"awards per second (default {DEMO_RATE:g}; 0: as fast as possible)",
    )
    demo.add_argument("--users", type=int, default=50, help="demo users (default 50)")
    demo.add_argument("--awards", type=int, help="stop after this many awards (default: Ctrl-C)")
    demo.add_argument("--top", type=int, default=10, help="rows of the leaderboard to print")
    demo.set_defaults(run=_demo)
    rules = sub.add_parser("rules", help="print the rules in force")
    rules.set_defaults(run=_rules)
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create or migrate the schema")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(run=_db)
    partitions = db_sub.add_parser(
        "partitions", help="list point_activity's monthly partitions (PostgreSQL)"
    )
    partitions.add_argument(
        "--apply", action="store_true",
        help="first make the partitions due and apply SCORING_ACTIVITY_RETENTION_MONTHS",
    )  # fmt: skip
    partitions.set_defaults(run=_partitions)
    worker = sub.add_parser("worker", help="run an RQ worker (drains the outbox into SQL)")
    worker.add_argument("--burst", action="store_true", help="drain everything pending, then exit")
    worker.add_argument("--log-level", default="INFO", help="of the worker's lines (and RQ's)")
    worker.add_argument("--rq-log-level", help="of RQ's own lines (default: --log-level)")
    worker.set_defaults(run=_worker)
    scheduler = sub.add_parser("scheduler", help="run rq-scheduler with the periodic jobs")
    scheduler.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    scheduler.add_argument("--log-level", default="INFO", help="of rq-scheduler's lines")
    scheduler.set_defaults(run=_scheduler)
    serve = sub.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument(
        "--reuse-port",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --workers N: each worker listens on a SO_REUSEPORT socket of its own and "
        "the kernel spreads connections over them (Linux; the default); --no-reuse-port: "
        "uvicorn's workers accept from one shared socket",
    )
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(run=_serve)
    achievements = sub.add_parser("achievements", help="achievements")
    ach_sub = achievements.add_subparsers(dest="achievements_command", required=True)
    backfill = ach_sub.add_parser(
        "backfill", help="grant every user the achievement levels they already qualify for"
    )
    backfill.set_defaults(run=_achievements)
    decay = sub.add_parser("decay", help="decay of inactive users ([decay] rules)")
    decay_sub = decay.add_subparsers(dest="decay_command", required=True)
    decay_run = decay_sub.add_parser(
        "run", help="decay the inactive users due this week (once per user and week)"
    )
    decay_run.set_defaults(run=_decay)
    rebuild = sub.add_parser("rebuild", help="rebuild all Redis state from SQL")
    rebuild.set_defaults(run=_rebuild)
    reshard = sub.add_parser(
        "reshard",
        help="move the state to a new number of shards (SCORING_SHARDS) from the old one; stop "
        "the API and drain first",
    )
    reshard.add_argument("--from", dest="old_shards", type=int, required=True,
                         help="the number of shards the state has now")  # fmt: skip
    reshard.set_defaults(run=_reshard)
    reconcile = sub.add_parser("reconcile", help="report users whose Redis and SQL state differ")
    reconcile.add_argument("--no-drain", action="store_true", help="do not drain the outbox first")
    reconcile.set_defaults(run=_reconcile)
    seed = sub.add_parser(
        "import-seed",
        help="import the seed app's (Django) database into SQL, then rebuild Redis",
        description="Read the seed's Django tables (users' gamification columns, "
        "PointActivity, WeeklyGoal, SideQuest, UserSideQuest) in one snapshot, write them to "
        "the engine's SQL (DATABASE_URL) and rebuild Redis from SQL. Re-running imports "
        "nothing twice. Bad rows are reported on stderr and skipped; users whose stored "
        "total_points differs from the sum of their activities on stdout. Drain the outbox "
        "first (it does) and run it before the engine takes traffic: the rebuild replaces "
        "Redis's state. Exit 0 unless the import cannot run: 2 (database unreachable, a "
        "table or column missing), 1 (the outbox could not be drained).",
    )
    seed.add_argument("--from", dest="source", required=True, metavar="URL",
                      help="the seed's PostgreSQL database, postgresql://user@host/db")  # fmt: skip
    seed.add_argument(
        "--trust", choices=("activities", "totals"), default="activities",
        help="for a user whose total_points differs from its activities' sum: activities "
        "(default; the audit trail wins) or totals (the user row wins: one adjustment "
        "activity per such user for the difference)",
    )  # fmt: skip
    seed.add_argument("--user-id-column", default="id", metavar="COLUMN",
                      help="the user table's column that becomes the engine's user id: id "
                      "(default: the primary key as a string), or e.g. username")  # fmt: skip
    defaults = asdict(SeedTables())
    for flag, table, what in (("users", "users", "user"), ("activity", "activities",
                              "PointActivity"), ("goal", "goals", "WeeklyGoal"),
                              ("quest", "quests", "SideQuest"),
                              ("user-quest", "user_quests", "UserSideQuest")):  # fmt: skip
        seed.add_argument(f"--{flag}-table", default=defaults[table], metavar="TABLE",
                          help=f"the seed's {what} table, name or schema.name "
                          f"(default {defaults[table]})")  # fmt: skip
    seed.add_argument("--chunk", type=int, default=500,
                      help="users written per transaction (default 500)")  # fmt: skip
    seed.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    seed.set_defaults(run=_import_seed)
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        run: Callable[[Settings, argparse.Namespace], int] = args.run  # set by each subcommand
        return run(settings, args)
    except SettingsError as exc:
        print(f"scoring: invalid settings: {exc}", file=sys.stderr)
    except ScoringError as exc:
        print(f"scoring: {exc}", file=sys.stderr)
    except SQLAlchemyError as exc:
        print(f"scoring: SQL error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
