"""Award and leaderboard benchmark: the engine against the seed's design and the bare ceiling.

    .venv/bin/python -m bench.award_bench [--quick]

Measures, in one run, and prints one table (a missed target is marked MISS; it never fails):

1. ``ScoringEngine.award()`` one call at a time (awards/s, client p50 latency).
2. ``ScoringEngine.award_many()`` in batches of 500, from 1 process and from N processes
   (to show whether the client or Redis is the limit), and with K=4 shards.
3. The award script's Redis-side cost (``INFO commandstats``: ``cmdstat_fcall``, where it runs as
   a Redis Function, and ``cmdstat_evalsha``), broken down
   into the commands it issues and the rest (Lua, argument handling).
4. A bare HINCRBY + ZINCRBY script, pipelined, as the physical ceiling; target: the award script
   costs at most 5x its Redis-side time. Beside it the floor script: the same calls as the
   award script's (its KEYS and ARGV), issuing only the commands an award cannot do without
   (:data:`FLOOR_SCRIPT`), and nothing else: what those commands cost alone.
5. The seed's design on PostgreSQL: a row-locking UPDATE ... RETURNING plus an INSERT per award,
   32 client threads; target: award_many does at least 15x its awards/s.
6. Leaderboard reads (top 100, rank, around) on a board of 1,000,000 users: server-side cost per
   read (the sum of the commands it issues; target <= 1 ms) and client p50 latency.

Redis: ``REDIS_URL`` if set, else database 12 of redis://127.0.0.1:6379. The database is flushed
between phases, and only if it is empty or holds the marker key this benchmark leaves in it.
``CONFIG RESETSTAT`` resets the server's statistics. Commands that other clients send meanwhile
are counted too, so a phase whose counts show them (an award phase whose script calls differ from
the awards sent; a read whose commands per call are not whole numbers) is measured again, up to
three times; the last row names any phase that stayed mixed.
"""

from __future__ import annotations

import getpass
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import redis

from bench.harness import (
    SCRIPT_CALLS,
    Row,
    Skipped,
    command_stats,
    connect,
    fresh_db,
    log,
    parser,
    redis_url,
    render,
    reset_stats,
    summary,
    timed_calls,
    timed_clients,
    verdict,
)
from engine import AwardRequest, ScoringEngine
from engine.domain.rules import Rules, load_rules

T = TypeVar("T")

#: Relative frequency of each activity type in the synthetic workload (default amounts).
ACTIVITY_MIX = {
    "reaction": 30, "comment": 20, "daily_login": 15, "project_update": 10,
    "quiz_complete": 10, "project_create": 4, "side_quest": 3, "weekly_goal": 3,
    "streak_bonus": 2, "referral": 2, "special_event": 1,
}  # fmt: skip

BATCH = 500
PROCESSES = 2
PG_THREADS = 32
AWARD_TARGET_VS_SEED = 15.0
SCRIPT_TARGET_VS_BARE = 5.0
READ_TARGET_US = 1000.0
READ_COMMANDS = ("zrange", "zcount", "zrank", "zscore", "zcard", "zrevrangebyscore", *SCRIPT_CALLS)
ATTEMPTS = 3
CLIENT_TIMEOUT = 300  # seconds a client process may take to start or to finish

BARE_SCRIPT = """
redis.call("HINCRBY", KEYS[1], "total", ARGV[2])
return redis.call("ZINCRBY", KEYS[2], "-" .. ARGV[2], ARGV[1])
"""

#: The commands an award cannot do without, called with the award script's own KEYS and ARGV
#: (lua/award.lua's header): read the user's state, claim the activity id (exactly once),
#: write the changed fields, count the points on the five boards (all-time, type, day, week,
#: month), append the audit entry to the outbox and raise the drain flag. No weekly goals,
#: side quests, day bitmap, feed, new-board TTLs or reply state: what those cost is the
#: difference to the award script.
FLOOR_SCRIPT = """
local h = redis.call("HMGET", KEYS[1], "total", "tier", "level", "streak", "longest",
  "last_day", "version", "n:" .. ARGV[4], "pts:" .. ARGV[4])
if not redis.call("SET", KEYS[3], ARGV[11], "NX", "EX", ARGV[10]) then return -1 end
local total = tonumber(h[1] or "0") + tonumber(ARGV[3])
redis.call("HSET", KEYS[1], "total", total, "version", tonumber(h[7] or "0") + 1,
  "n:" .. ARGV[4], tonumber(h[8] or "0") + 1, "pts:" .. ARGV[4], tonumber(h[9] or "0") + ARGV[3])
local negative = "-" .. ARGV[3]
for i = 5, 9 do redis.call("ZINCRBY", KEYS[i], negative, ARGV[2]) end
redis.call("XADD", KEYS[4], "*", "id", ARGV[1], "user", ARGV[2], "amount", ARGV[3],
  "type", ARGV[4], "desc", ARGV[5], "at", ARGV[6], "tier", h[2] or "",
  "state", total .. " " .. (h[3] or "1"))
return {0, total, redis.call("SET", KEYS[10], "1", "NX", "EX", ARGV[15]) and 1 or 0}
"""


@dataclass(frozen=True)
class Sizes:
    users: int
    single_awards: int
    batch_awards: int  # per phase; split over the processes in the N-process phase
    bare_awards: int
    pg_seconds: float
    board_users: int
    reads: int


FULL = Sizes(10_000, 20_000, 100_000, 200_000, 10.0, 1_000_000, 2_000)
QUICK = Sizes(1_000, 2_000, 10_000, 20_000, 2.0, 100_000, 300)


@dataclass
class Phase:
    """What one timed phase did: awards sent, wall time and the server's command statistics."""

    awards: int
    seconds: float
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)  # command: (calls, usec)
    errors: int = 0
    p50_us: float | None = None  # client latency, when calls were timed one by one

    @property
    def rate(self) -> float:
        return self.awards / self.seconds

    @property
    def clean(self) -> bool:
        """Whether the server counted exactly one script call per award sent, i.e. no others'."""
        return self.stats.get("script", (0, 0))[0] == self.awards

    def usec_per_call(self, command: str) -> float:
        calls, usec = self.stats.get(command, (0, 0))
        return usec / (calls or 1)


# -- measured again while others were counted --------------------------------------------------


def isolated(
    name: str, measure: Callable[[], T], clean: Callable[[T], bool], dirty: list[str]
) -> T:
    """``measure()`` again (up to ATTEMPTS times) while other clients' commands were counted in
    it; a phase that never came out clean is added to ``dirty``."""
    for attempt in range(ATTEMPTS):
        if attempt:
            log(f"{name}: other clients' commands were counted; measuring again")
            time.sleep(2)
        result = measure()
        if clean(result):
            return result
    dirty.append(name)
    return result


# -- workload ----------------------------------------------------------------------------------


def user_id(i: int) -> str:
    return f"u{i:07d}"


def user_numbers(n: int, users: int, seed: int) -> list[tuple[int, str]]:
    """``n`` (user number, activity type) pairs: users uniform, types by ACTIVITY_MIX."""
    rng = random.Random(seed)
    types = rng.choices(list(ACTIVITY_MIX), weights=list(ACTIVITY_MIX.values()), k=n)
    return [(rng.randrange(users), t) for t in types]


def workload(n: int, users: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (user id, activity type) pairs, as :func:`user_numbers`."""
    return [(user_id(i), t) for i, t in user_numbers(n, users, seed)]


def warm_up(engine: ScoringEngine) -> None:
    """Load the award script and open the connection before anything is timed."""
    engine.award_many([AwardRequest(f"warmup-{i}", "comment") for i in range(5)])


# -- 1. award(), one call at a time ------------------------------------------------------------


def bench_award_single(r: redis.Redis, sizes: Sizes) -> Phase:
    fresh_db(r)
    engine = ScoringEngine(r, shards=1)
    work = workload(sizes.single_awards, sizes.users, seed=1)
    warm_up(engine)
    reset_stats(r)
    seconds, p50_us = timed_calls(lambda w: engine.award(*w), work)
    stats = command_stats(r)
    return Phase(len(work), seconds, stats, p50_us=p50_us)


# -- 2. award_many(), batches from 1..N processes ----------------------------------------------


def _award_many_client(
    url: str, shards: int, awards: int, users: int, seed: int, ready: Any, go: Any, results: Any
) -> None:
    """One client process: prepare, wait for the start signal, send batches, report errors."""
    engine = ScoringEngine(connect(url), shards=shards)
    requests = [AwardRequest(uid, t) for uid, t in workload(awards, users, seed)]
    warm_up(engine)
    ready.wait(timeout=CLIENT_TIMEOUT)
    go.wait(timeout=CLIENT_TIMEOUT)
    errors = 0
    for i in range(0, len(requests), BATCH):
        out = engine.award_many(requests[i : i + BATCH])
        errors += sum(1 for x in out if isinstance(x, Exception))
    results.put(errors)


def bench_award_many(r: redis.Redis, sizes: Sizes, *, processes: int, shards: int) -> Phase:
    """award_many from ``processes`` client processes, timed from a common start to the last."""
    fresh_db(r)
    each = sizes.batch_awards // processes
    seconds, errors = timed_clients(
        _award_many_client,
        [(redis_url(), shards, each, sizes.users, 100 + i) for i in range(processes)],
        on_ready=lambda: reset_stats(r),
        timeout=CLIENT_TIMEOUT,
    )
    return Phase(each * processes, seconds, command_stats(r), sum(errors))


# -- 4. the bare two-command script ------------------------------------------------------------


def timed_evalsha(r: redis.Redis, calls: list[tuple[Any, ...]]) -> Phase:
    """``calls`` (EVALSHA arguments) in pipelined batches of BATCH, timed from a statistics
    reset: the phase they make."""
    errors = 0
    reset_stats(r)
    start = time.perf_counter()
    for i in range(0, len(calls), BATCH):
        pipe = r.pipeline(transaction=False)
        for args in calls[i : i + BATCH]:
            pipe.execute_command("EVALSHA", *args)
        errors += sum(isinstance(x, Exception) for x in pipe.execute(raise_on_error=False))
    seconds = time.perf_counter() - start
    return Phase(len(calls), seconds, command_stats(r), errors)


def bench_bare(r: redis.Redis, sizes: Sizes) -> Phase:
    """HINCRBY + ZINCRBY in one script, EVALSHA in pipelined batches: the ceiling."""
    fresh_db(r)
    keys = ScoringEngine(r, shards=1).keys
    board = keys.board(0, "all")
    rules = load_rules()
    sha = r.script_load(BARE_SCRIPT)
    calls = [
        (sha, 2, keys.user(uid, 0), board, uid, rules.activity_types[t].points)
        for uid, t in workload(sizes.bare_awards, sizes.users, seed=3)
    ]
    return timed_evalsha(r, calls)


def bench_floor(r: redis.Redis, sizes: Sizes) -> Phase:
    """:data:`FLOOR_SCRIPT` with the award script's own calls (the engine prepares them), in
    pipelined batches as award_many sends them."""
    fresh_db(r)
    engine = ScoringEngine(r, shards=1)
    sha = r.script_load(FLOOR_SCRIPT)
    calls: list[tuple[Any, ...]] = []
    for uid, t in workload(sizes.bare_awards, sizes.users, seed=3):
        p = engine.awards._prepare(uid, t, None, "", None, None)
        calls.append((sha, len(p.keys), *p.keys, *p.args))
    return timed_evalsha(r, calls)


# -- 5. the seed's design on PostgreSQL --------------------------------------------------------

PG_SCHEMA = "bench_seed"
_STREAK = """CASE WHEN last_activity_date = current_date THEN current_streak_days
                  WHEN last_activity_date = current_date - 1 THEN current_streak_days + 1
                  ELSE 1 END"""
PG_UPDATE = f"""
UPDATE {PG_SCHEMA}.users SET
    total_points = total_points + %(amount)s,
    tier = {PG_SCHEMA}.tier_for(total_points + %(amount)s),
    level = {PG_SCHEMA}.level_for(total_points + %(amount)s),
    current_streak_days = {_STREAK},
    longest_streak_days = GREATEST(longest_streak_days, {_STREAK}),
    last_activity_date = current_date,
    lifetime_quizzes_completed = lifetime_quizzes_completed + (%(type)s = 'quiz_complete')::int,
    lifetime_projects_created = lifetime_projects_created + (%(type)s = 'project_create')::int,
    lifetime_comments_posted = lifetime_comments_posted + (%(type)s = 'comment')::int
WHERE id = %(user)s
RETURNING total_points, tier, level, current_streak_days"""
PG_INSERT = f"""
INSERT INTO {PG_SCHEMA}.point_activity
    (id, user_id, amount, activity_type, description, tier_at_time)
VALUES (%s, %s, %s, %s, %s, %s)"""


def pg_schema_sql(rules: Rules, users: int) -> list[str]:
    """The seed's two tables (with its indexes), its users, and tier/level as SQL functions."""
    tiers = " ".join(
        f"WHEN p >= {points} THEN '{name}'" for name, points in reversed(list(rules.tiers.items()))
    )
    levels = rules.levels.thresholds
    return [
        f"CREATE SCHEMA {PG_SCHEMA}",
        f"""CREATE TABLE {PG_SCHEMA}.users (
            id bigint PRIMARY KEY,
            total_points integer NOT NULL DEFAULT 0,
            tier varchar(20) NOT NULL DEFAULT 'ember',
            level integer NOT NULL DEFAULT 1,
            current_streak_days integer NOT NULL DEFAULT 0,
            longest_streak_days integer NOT NULL DEFAULT 0,
            last_activity_date date,
            lifetime_quizzes_completed integer NOT NULL DEFAULT 0,
            lifetime_projects_created integer NOT NULL DEFAULT 0,
            lifetime_comments_posted integer NOT NULL DEFAULT 0)""",
        f"""CREATE TABLE {PG_SCHEMA}.point_activity (
            id uuid PRIMARY KEY,
            user_id bigint NOT NULL REFERENCES {PG_SCHEMA}.users (id),
            amount integer NOT NULL,
            activity_type varchar(30) NOT NULL,
            description varchar(255) NOT NULL,
            tier_at_time varchar(20) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""",
        f"CREATE INDEX ON {PG_SCHEMA}.point_activity (user_id, created_at DESC)",
        f"CREATE INDEX ON {PG_SCHEMA}.point_activity (activity_type, created_at DESC)",
        f"CREATE INDEX ON {PG_SCHEMA}.point_activity (user_id, activity_type)",
        f"""CREATE FUNCTION {PG_SCHEMA}.tier_for(p integer) RETURNS varchar
            LANGUAGE sql IMMUTABLE AS $$ SELECT CASE {tiers} END $$""",
        f"""CREATE FUNCTION {PG_SCHEMA}.level_for(p integer) RETURNS integer
            LANGUAGE sql IMMUTABLE AS $$ SELECT CASE
                WHEN p >= {levels[-1]}
                THEN {len(levels)} + (p - {levels[-1]}) / {rules.levels.step_after}
                ELSE (SELECT count(*)::int FROM unnest(ARRAY{levels}) t WHERE t <= p) END $$""",
        f"INSERT INTO {PG_SCHEMA}.users (id) SELECT generate_series(0, {users - 1})",
    ]


def pg_conninfo() -> str:
    """A conninfo that connects to the ``test`` database, as ``postgres`` or the current user."""
    import psycopg

    for user in dict.fromkeys(("postgres", getpass.getuser())):
        conninfo = f"host=127.0.0.1 port=5432 dbname=test user={user} connect_timeout=3"
        try:
            psycopg.connect(conninfo).close()
            return conninfo
        except psycopg.Error:
            continue
    raise Skipped("skipped: PostgreSQL unreachable")


def _seed_client(
    conninfo: str,
    rules: Rules,
    work: Sequence[tuple[int, str]],
    seconds: float,
    start: threading.Barrier,
    counts: list[int | Exception],
    slot: int,
) -> None:
    """One thread of the seed design: one transaction (UPDATE ... RETURNING, INSERT) per award.
    Leaves its count of awards, or what went wrong, in ``counts[slot]``."""
    import psycopg

    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            start.wait(timeout=CLIENT_TIMEOUT)
            deadline = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < deadline:
                user, activity_type = work[n % len(work)]
                amount = rules.activity_types[activity_type].points
                with conn.transaction():
                    row = conn.execute(
                        PG_UPDATE, {"amount": amount, "type": activity_type, "user": user}
                    ).fetchone()
                    conn.execute(PG_INSERT, (uuid.uuid4(), user, amount, activity_type, "", row[1]))
                n += 1
            counts[slot] = n
    except Exception as exc:  # noqa: BLE001 - reported in the table
        counts[slot] = exc
        start.abort()


def bench_seed(sizes: Sizes) -> Phase:
    """The seed's PostgreSQL design under PG_THREADS client threads; :class:`Skipped` if
    PostgreSQL is unreachable or a client failed."""
    import psycopg

    conninfo = pg_conninfo()
    rules = load_rules()
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        try:
            for statement in pg_schema_sql(rules, sizes.users):
                admin.execute(statement)
            admin.execute(f"ANALYZE {PG_SCHEMA}.users")
            start = threading.Barrier(PG_THREADS + 1)
            counts: list[int | Exception] = [0] * PG_THREADS
            threads = []
            for i in range(PG_THREADS):
                work = user_numbers(20_000, sizes.users, seed=200 + i)
                args = (conninfo, rules, work, sizes.pg_seconds, start, counts, i)
                threads.append(threading.Thread(target=_seed_client, args=args, daemon=True))
            for t in threads:
                t.start()
            try:
                start.wait(timeout=CLIENT_TIMEOUT)
            except threading.BrokenBarrierError:
                pass  # a client failed to connect: its exception is in counts
            began = time.perf_counter()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - began
        finally:
            admin.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
    failed = [c for c in counts if isinstance(c, Exception)]
    if failed:  # name a cause, not a thread that merely saw the start barrier break
        failed.sort(key=lambda exc: isinstance(exc, threading.BrokenBarrierError))
        raise Skipped(f"failed: {failed[0]!r}"[:120])
    return Phase(sum(counts), seconds)


# -- 6. leaderboard reads on a large board -----------------------------------------------------


def fill_board(r: redis.Redis, key: str, users: int, chunk: int = 10_000) -> None:
    """``users`` members with random negated points 0..1e6, ZADDed in pipelined chunks."""
    rng = random.Random(6)
    pipe = r.pipeline(transaction=False)
    for lo in range(0, users, chunk):
        members = range(lo, min(lo + chunk, users))
        pipe.zadd(key, {user_id(i): -rng.randint(0, 1_000_000) for i in members})
        if len(pipe) >= 10:
            pipe.execute()
    pipe.execute()


@dataclass
class ReadResult:
    name: str
    server_us: float  # per read: the sum of the usec of the commands it issued
    per_read: dict[str, float]  # command: calls per read
    p50_us: float

    @property
    def clean(self) -> bool:
        """Whole numbers of commands per read: no other client's commands were counted."""
        return all(abs(n - round(n)) < 0.005 for n in self.per_read.values())


def time_reads(
    r: redis.Redis, name: str, read: Callable[[str], Any], users: Sequence[str]
) -> ReadResult:
    for uid in users[:20]:
        read(uid)
    reset_stats(r)
    _, p50_us = timed_calls(read, users)
    stats = command_stats(r)
    n = len(users)
    used = {c: stats[c] for c in READ_COMMANDS if c in stats}
    return ReadResult(
        name,
        sum(usec for _, usec in used.values()) / n,
        {c: calls / n for c, (calls, _) in used.items()},
        p50_us,
    )


def bench_reads(r: redis.Redis, sizes: Sizes, dirty: list[str]) -> list[ReadResult]:
    fresh_db(r)
    engine = ScoringEngine(r, shards=1)
    fill_board(r, engine.keys.board(0, "all"), sizes.board_users)
    board = engine.leaderboard("all_time")
    rng = random.Random(7)
    users = [user_id(rng.randrange(sizes.board_users)) for _ in range(sizes.reads)]
    reads: dict[str, Callable[[str], Any]] = {
        "top(100)": lambda _: board.top(100),
        "rank(user)": board.rank,
        "around(user, 5)": lambda uid: board.around(uid, 5),
    }
    return [
        isolated(name, partial(time_reads, r, name, read, users), lambda x: x.clean, dirty)
        for name, read in reads.items()
    ]


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Results:
    single: Phase
    many: Phase  # 1 process, K=1
    many_n: Phase  # PROCESSES processes, K=1
    many_k4: Phase  # 1 process, K=4
    bare: Phase
    floor: Phase
    seed: Phase | Skipped
    reads: list[ReadResult]
    board_users: int
    dirty: list[str]  # phases that other clients' commands kept mixing into


def rate(x: float) -> str:
    return f"{x:,.0f} awards/s"


def script_us(phase: Phase) -> str:
    return f"{phase.usec_per_call('script'):.2f} us/call"


def award_rows(res: Results) -> list[Row]:
    need = AWARD_TARGET_VS_SEED * res.seed.rate if isinstance(res.seed, Phase) else None
    target = f">= {AWARD_TARGET_VS_SEED:g}x seed" + (f" = {need:,.0f}/s" if need else "")

    def vs_seed(phase: Phase) -> str:
        return verdict(phase.rate >= need) if need else "n/a"

    rows = [
        Row("award(), one at a time, K=1", rate(res.single.rate)),
        Row("award() client p50 latency", f"{res.single.p50_us:.0f} us"),
        Row(f"award_many x{BATCH}, 1 process, K=1", rate(res.many.rate), target, vs_seed(res.many)),
        Row(
            f"award_many x{BATCH}, {PROCESSES} processes, K=1",
            rate(res.many_n.rate),
            target,
            vs_seed(res.many_n),
        ),
        Row(f"award_many x{BATCH}, 1 process, K=4", rate(res.many_k4.rate)),
    ]
    phases = (res.single, res.many, res.many_n, res.many_k4, res.bare, res.floor)
    errors = sum(p.errors for p in phases)
    if errors:
        rows.append(Row("award or bare calls that failed", f"{errors:,}", "0", "MISS"))
    return rows


def script_breakdown(phase: Phase, script: str = "script") -> list[Row]:
    """Per award: each command the script issued, and what is left (Lua itself)."""
    inner = {c: v for c, v in phase.stats.items() if c not in (*SCRIPT_CALLS, "script")}
    rows = [
        Row(
            f"  in {script}: {command.upper()} x{calls / phase.awards:.2f}",
            f"{usec / phase.awards:.2f} us/award",
        )
        for command, (calls, usec) in sorted(inner.items(), key=lambda kv: -kv[1][1])
    ]
    rest = phase.stats.get("script", (0, 0))[1] - sum(usec for _, usec in inner.values())
    rows.append(Row(f"  in {script}: Lua and the rest", f"{rest / phase.awards:.2f} us/award"))
    return rows


def script_rows(res: Results) -> list[Row]:
    award_us = res.many.usec_per_call("script")
    ratio = award_us / res.bare.usec_per_call("script")
    floor_us = res.floor.usec_per_call("script")
    return [
        Row("award script, Redis-side, award()", script_us(res.single)),
        Row("award script, Redis-side, award_many", script_us(res.many)),
        *script_breakdown(res.many),
        Row(f"award script, Redis-side, {PROCESSES} processes", script_us(res.many_n)),
        Row("award script, Redis-side, K=4", script_us(res.many_k4)),
        Row(f"bare HINCRBY+ZINCRBY script, x{BATCH} pipelined", rate(res.bare.rate)),
        Row("bare script, Redis-side", script_us(res.bare)),
        Row(f"floor script (bench.award_bench.FLOOR_SCRIPT), x{BATCH}", rate(res.floor.rate)),
        Row("floor script, Redis-side", script_us(res.floor)),
        *script_breakdown(res.floor, "floor"),
        Row(
            "award script / bare script, Redis-side",
            f"{ratio:.1f}x",
            f"<= {SCRIPT_TARGET_VS_BARE:g}x",
            verdict(ratio <= SCRIPT_TARGET_VS_BARE),
        ),
        Row(
            "floor script / bare script, Redis-side",
            f"{floor_us / res.bare.usec_per_call('script'):.1f}x",
        ),
        Row("award script / floor script, Redis-side", f"{award_us / floor_us:.1f}x"),
    ]


def seed_rows(res: Results) -> list[Row]:
    if isinstance(res.seed, Skipped):
        return [Row("seed design (PostgreSQL)", str(res.seed), "", "n/a")]
    best = max(res.many.rate, res.many_n.rate) / res.seed.rate
    return [
        Row(f"seed design (PostgreSQL, {PG_THREADS} threads)", rate(res.seed.rate)),
        Row(
            "best award_many / seed design",
            f"{best:.1f}x",
            f">= {AWARD_TARGET_VS_SEED:g}x",
            verdict(best >= AWARD_TARGET_VS_SEED),
        ),
    ]


def read_rows(res: Results) -> list[Row]:
    rows = []
    for x in res.reads:
        mix = ", ".join(f"{c} x{round(n, 2):g}" for c, n in x.per_read.items())
        rows += [
            Row(
                f"{x.name}, {res.board_users:,} users, server-side",
                f"{x.server_us:.1f} us",
                f"<= {READ_TARGET_US:g} us",
                verdict(x.server_us <= READ_TARGET_US),
            ),
            Row(f"  commands per {x.name}", mix),
            Row(f"{x.name}, client p50 latency", f"{x.p50_us:.0f} us"),
        ]
    return rows


def isolation_row(res: Results) -> Row:
    if not res.dirty:
        return Row("commandstats isolation", "no other client's commands counted", "", "ok")
    return Row(
        "commandstats isolation", "other clients counted in: " + ", ".join(res.dirty), "", "CHECK"
    )


# -- main --------------------------------------------------------------------------------------


def measure(sizes: Sizes) -> Results:
    r = connect(redis_url())
    r.ping()
    dirty: list[str] = []

    def award_phase(name: str, run: Callable[[], Phase]) -> Phase:
        return isolated(name, run, lambda p: p.clean, dirty)

    log(f"award() x {sizes.single_awards:,}")
    single = award_phase("award()", lambda: bench_award_single(r, sizes))
    log(f"award_many x {sizes.batch_awards:,}: 1 process, {PROCESSES} processes, K=4")
    many = award_phase("award_many", lambda: bench_award_many(r, sizes, processes=1, shards=1))
    many_n = award_phase(
        f"award_many {PROCESSES} processes",
        lambda: bench_award_many(r, sizes, processes=PROCESSES, shards=1),
    )
    many_k4 = award_phase(
        "award_many K=4", lambda: bench_award_many(r, sizes, processes=1, shards=4)
    )
    log(f"bare script x {sizes.bare_awards:,}")
    bare = award_phase("bare script", lambda: bench_bare(r, sizes))
    log(f"floor script x {sizes.bare_awards:,}")
    floor = award_phase("floor script", lambda: bench_floor(r, sizes))
    log(f"seed design on PostgreSQL, {PG_THREADS} threads, {sizes.pg_seconds:g} s")
    try:
        seed: Phase | Skipped = bench_seed(sizes)
    except Skipped as why:
        seed = why
    log(f"leaderboard reads on {sizes.board_users:,} users")
    reads = bench_reads(r, sizes, dirty)
    fresh_db(r)
    return Results(
        single, many, many_n, many_k4, bare, floor, seed, reads, sizes.board_users, dirty
    )


def main(argv: list[str] | None = None) -> int:
    args = parser("award_bench", __doc__, "small sizes, for a smoke run").parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    res = measure(sizes)
    rows = [
        *award_rows(res),
        *script_rows(res),
        *seed_rows(res),
        *read_rows(res),
        isolation_row(res),
    ]
    print(render(rows))
    print(summary(args.quick, started, redis_url()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
