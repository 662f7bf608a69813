"""HTTP API benchmark: the real server under wrk, against a bare FastAPI endpoint's ceiling.

    .venv/bin/python -m bench.api_bench [--quick]

Starts the real server as ``scoring serve`` does (``python -m scoring.cli serve --workers 2``) and,
in a run of its own with the same host, workers and uvicorn settings, a bare FastAPI app
(``bench.bare_app``: one async endpoint doing one Redis GET, the framework's ceiling), and loads
them with ``wrk`` (one thread; Lua scripts written to a temporary folder). Each measure runs 10 s
(3 s with ``--quick``) after a 2 s warm-up. Measures, and prints one table (a missed target is
marked MISS; it never fails):

1. ``GET /bare`` on the bare app (async, the ceiling), 50 connections: req/s, p50, p99; and
   ``GET /bare-sync`` (the same read from a sync endpoint, in the thread pool), for comparison.
2. ``POST /v1/users/{id}/awards`` with ``{"activity_type":"comment"}``, a random user of 10,000
   per request, 50 connections: req/s (target: at least 80 % of the bare endpoint's), p50, p99
   (target: at most 10 ms), error responses (target: none). Also at 2 connections, where
   queueing adds little: the service time of one award.
3. ``GET /v1/leaderboards/all_time?limit=10`` (the board the awards filled), 50 connections.
4. ``POST /v1/awards/batch`` with 500 awards per request (16 bodies pre-built by the script,
   random users), 8 connections: awards/s = req/s x 500 (target: at least 30,000), p50, p99, and
   the responses that were not 200 with ``"refused":0``.
5. The award at a fixed rate (open loop), 70 % of the req/s measure 2 found: ``hey`` (Debian's
   package) in 10 processes, each awarding a user of its own (hey sends one URL) over 2
   connections at ``-q`` = its share (hey's ``-q`` is per connection), started a connection's
   tick apart so that their requests interleave rather than arrive in bursts: p50, p99 (target:
   at most 10 ms), the rate answered (a hey connection waits for its answer, so a slow server is
   sent less than asked), answers other than 201. No warm-up: it runs on the server measure 4
   has just warmed.
6. ``ScoringEngine.award_many`` x500 from this process, one connection, back to back, with no
   server running, on the same Redis and data as measure 4 and the same awards: awards/s, and
   the batch endpoint's awards/s as a share of it (target: at least 85 %).
7. Measures 2 (50 connections) and 4 (8 connections) again on ``scoring serve
   --no-reuse-port`` (uvicorn's workers on one shared socket, the mode before each worker
   listened on a SO_REUSEPORT socket of its own), in a server of its own: rate, p50, p99 and
   the workers' CPU split beside the default's.

8. ``GET /v1/users/{id}`` (a user's status; a random user of the 10,000 the awards reached),
   50 connections.

The two reads (measures 3 and 8) give their req/s as a share of the bare endpoint's (target: at
least 80 %). For each measure against ``scoring serve`` the workers' CPU split (each worker's
share of the CPU the workers used) shows whether the connections were spread over the workers.

For each measure the table also gives the CPU used by the server's processes (uvicorn master and
workers, and each worker on its own), by Redis and by wrk, from ``/proc`` and ``getrusage``, as a
share of one core: on two cores, 200 % is all there is, and whoever holds it is the limit. For the
award measures it gives the award script's Redis-side time per call (``INFO commandstats`` after
``CONFIG RESETSTAT``, server-wide): a wall time, which grows when the busy workers keep Redis
from a core, and the awards/s Redis alone could do at that cost.

Server environment: ``REDIS_URL`` (and ``RQ_REDIS_URL``, queue ``scoring-bench``) is the
benchmarks' database (``REDIS_URL`` if set, else database 12 of redis://127.0.0.1:6379), flushed
only if it is empty or holds the marker key the benchmarks leave in it, as ``award_bench`` does;
``DATABASE_URL`` is SQLite in a temporary folder (``scoring db upgrade`` run first);
``SCORING_API_KEYS`` holds one key with the award and read scopes, sent as ``X-API-Key``. No
outbox worker runs: the outbox grows in Redis during the run and is flushed with the database.

Without ``wrk`` on PATH, every row says how to install it; without ``hey``, measure 5's row.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.bare_app import KEY as BARE_KEY
from bench.harness import (
    API_KEY,
    CONNECTIONS,
    PYTHON,
    WARMUP,
    WORKERS,
    WRK_MISSING,
    WRK_THREADS,
    CpuMeter,
    Load,
    Row,
    Server,
    command_stats,
    connect,
    db_upgrade,
    free_port,
    fresh_db,
    log,
    parser,
    redis_pid,
    redis_url,
    render,
    reset_stats,
    run_wrk,
    running,
    scoring_server,
    server_env,
    summary,
    verdict,
)
from engine import AwardRequest, ScoringEngine

LOW_CONNECTIONS = 2
BATCH_CONNECTIONS = 8
BATCH = 500
BATCH_BODIES = 16
USERS = 10_000

AWARD_VS_BARE = 0.80
READ_VS_BARE = 0.80
AWARD_P99_MS = 10.0
BATCH_TARGET = 30_000
BATCH_VS_IN_PROCESS = 0.85

#: The fixed-rate award run: this share of the closed-loop award req/s, sent by this many hey
#: processes (each its own user, started one after the other so that their ticks interleave)
#: with this many connections each.
OPEN_LOOP_SHARE = 0.70
OPEN_LOOP_PROCESSES = 10
OPEN_LOOP_CONNECTIONS = 2
HEY_MISSING = "skipped: install hey (apt-get install hey)"


# -- wrk scripts -------------------------------------------------------------------------------

#: Shared by every script: the API key, a per-thread count of bad responses (set by the scripts
#: that check bodies) and a done() that prints the figures on one parseable line.
LUA_COMMON = f"""
wrk.headers["X-API-Key"] = "{API_KEY}"
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f max_us=%.0f non2xx=%d "
    .. "connect=%d read=%d write=%d timeout=%d bad=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout, bad))
end
"""

LUA_AWARD = f"""
wrk.method = "POST"
wrk.body = '{{"activity_type":"comment"}}'
wrk.headers["Content-Type"] = "application/json"
function init(args)
  math.randomseed(os.time())
end
function request()
  return wrk.format(nil, string.format("/v1/users/u%07d/awards", math.random(0, {USERS - 1})))
end
"""

LUA_LEADERBOARD = """
wrk.method = "GET"
wrk.path = "/v1/leaderboards/all_time?limit=10"
"""

LUA_STATUS = f"""
wrk.method = "GET"
function init(args)
  math.randomseed(os.time())
end
function request()
  return wrk.format(nil, string.format("/v1/users/u%07d", math.random(0, {USERS - 1})))
end
"""

LUA_BARE = """
wrk.method = "GET"
wrk.path = "/bare"
"""

LUA_BARE_SYNC = """
wrk.method = "GET"
wrk.path = "/bare-sync"
"""

LUA_BATCH = f"""
wrk.headers["Content-Type"] = "application/json"
local reqs = {{}}
local n = 0
bad = 0
function init(args)
  math.randomseed(os.time())
  for i = 1, {BATCH_BODIES} do
    local items = {{}}
    for j = 1, {BATCH} do
      items[j] = string.format('{{"user_id":"u%07d","activity_type":"comment"}}',
                               math.random(0, {USERS - 1}))
    end
    reqs[i] = wrk.format("POST", "/v1/awards/batch", nil,
                         '{{"awards":[' .. table.concat(items, ",") .. ']}}')
  end
end
function request()
  n = n % #reqs + 1
  return reqs[n]
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"refused":0,', 1, true) then bad = bad + 1 end
end
"""

SCRIPTS = {
    "award": LUA_AWARD,
    "leaderboard": LUA_LEADERBOARD,
    "bare": LUA_BARE,
    "bare_sync": LUA_BARE_SYNC,
    "batch": LUA_BATCH,
    "status": LUA_STATUS,
}


def write_scripts(folder: Path) -> dict[str, Path]:
    paths = {}
    for name, body in SCRIPTS.items():
        path = folder / f"{name}.lua"
        path.write_text(body + LUA_COMMON)
        paths[name] = path
    return paths


# -- wrk ---------------------------------------------------------------------------------------


def measure_load(
    name: str,
    server: Server,
    script: Path,
    connections: int,
    seconds: float,
    r: redis.Redis,
    rpid: int | None,
) -> Load:
    """A warm-up, then the timed wrk run, with the CPU each party used meanwhile and the Redis
    server's EVALSHA statistics (``CONFIG RESETSTAT`` first)."""
    load = Load(name, connections)
    try:
        log(f"{name}: {connections} connections, {WARMUP:g} s warm-up + {seconds:g} s")
        run_wrk(script, server.url, connections, WARMUP)
        meter = CpuMeter(server, rpid)
        reset_stats(r)
        meter.start()
        figures = run_wrk(script, server.url, connections, seconds)
        meter.stop()
        load.script_calls, load.script_usec = command_stats(r).get("script", (0, 0))
    except (RuntimeError, OSError, subprocess.TimeoutExpired, redis.RedisError) as exc:
        load.failed = f"failed: {exc}"[:200]
        return load
    load.take(figures)
    load.bad = figures["bad"]
    meter.into(load)
    return load


# -- hey: the award at a fixed rate (open loop) ------------------------------------------------


def hey_argv(url: str, user: str, rate: float, seconds: float) -> list[str]:
    """One hey process awarding ``user`` at ``rate`` req/s over OPEN_LOOP_CONNECTIONS
    connections (hey's ``-q`` is per connection), its responses as CSV on stdout."""
    return [
        "hey", "-z", f"{seconds:g}s", "-c", str(OPEN_LOOP_CONNECTIONS),
        "-q", f"{rate / OPEN_LOOP_CONNECTIONS:.3f}", "-t", "10", "-o", "csv",
        "-m", "POST", "-T", "application/json", "-H", f"X-API-Key: {API_KEY}",
        "-d", '{"activity_type":"comment"}', f"{url}/v1/users/{user}/awards",
    ]  # fmt: skip


def measure_open_loop(
    server: Server, rate: float, seconds: float, rpid: int | None, tmp: Path
) -> Load:
    """``POST /v1/users/{id}/awards`` at ``rate`` req/s in all, from OPEN_LOOP_PROCESSES hey
    processes (each awarding a user of its own: hey sends one URL) started a tick apart, so that
    their connections' ticks interleave instead of arriving in one burst. ``requests`` is what
    was answered (hey's CSV lists answers only: a refused or timed-out request shows as a rate
    under the one asked for), ``non2xx`` the answers other than 201."""
    load = Load(f"award at {rate:,.0f} req/s", OPEN_LOOP_PROCESSES * OPEN_LOOP_CONNECTIONS)
    if shutil.which("hey") is None:
        load.failed = HEY_MISSING
        return load
    each = rate / OPEN_LOOP_PROCESSES
    log(f"award at a fixed {rate:,.0f} req/s: {OPEN_LOOP_PROCESSES} hey x "
        f"{OPEN_LOOP_CONNECTIONS} connections x {each / OPEN_LOOP_CONNECTIONS:.1f} req/s, "
        f"{seconds:g} s")  # fmt: skip
    outs = [tmp / f"hey-{i}.csv" for i in range(OPEN_LOOP_PROCESSES)]
    meter = CpuMeter(server, rpid)
    meter.start()
    procs = []
    for i, out in enumerate(outs):
        with open(out, "wb") as f:
            argv = hey_argv(server.url, f"u{i:07d}", each, seconds)
            procs.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT))
        time.sleep(OPEN_LOOP_CONNECTIONS / rate)  # a connection's tick over the processes
    codes = [p.wait(timeout=seconds + 60) for p in procs]
    meter.stop()
    if any(codes):
        load.failed = f"failed: hey exited {codes}: {outs[0].read_text()[-150:]}"
        return load
    latencies, statuses = [], []
    for out in outs:
        for line in out.read_text().splitlines()[1:]:
            fields = line.split(",")
            latencies.append(float(fields[0]) * 1000)
            statuses.append(fields[6])
    if len(latencies) < 2:
        load.failed = f"failed: hey got {len(latencies)} answers"
        return load
    load.requests, load.seconds = len(latencies), seconds
    load.p50_ms = statistics.median(latencies)
    load.p99_ms = statistics.quantiles(latencies, n=100)[98]
    load.max_ms = max(latencies)
    load.non2xx = sum(1 for x in statuses if x != "201")
    meter.into(load)
    return load


# -- in-process award_many, for the batch endpoint's ratio -------------------------------------


@dataclass
class InProcess:
    """``ScoringEngine.award_many`` from this process: what it did and its Redis-side cost."""

    awards: int = 0
    seconds: float = 0.0
    errors: int = 0
    script_calls: int = 0
    script_usec: int = 0
    failed: str | None = None

    @property
    def rate(self) -> float:
        return self.awards / self.seconds if self.seconds else 0.0


def measure_in_process(r: redis.Redis, url: str, seconds: float) -> InProcess:
    """``award_many`` in batches of BATCH, back to back for ``seconds`` after a warm-up, from
    this process (one connection, no server running): the batch measure's awards (comment,
    random users of USERS, BATCH_BODIES batches in turn) on the same Redis and its data."""
    log(f"in-process award_many x{BATCH}: {WARMUP:g} s warm-up + {seconds:g} s")
    out = InProcess()
    rng = random.Random(15)
    batches = [[AwardRequest(f"u{rng.randrange(USERS):07d}", "comment") for _ in range(BATCH)]
               for _ in range(BATCH_BODIES)]  # fmt: skip
    engine = ScoringEngine(connect(url), shards=1)
    try:
        n = 0
        warm = time.perf_counter() + WARMUP
        while time.perf_counter() < warm:
            engine.award_many(batches[n % BATCH_BODIES])
            n += 1
        reset_stats(r)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            done = engine.award_many(batches[n % BATCH_BODIES])
            n += 1
            out.awards += len(done)
            out.errors += sum(1 for x in done if isinstance(x, Exception))
        out.seconds = time.perf_counter() - start
        out.script_calls, out.script_usec = command_stats(r).get("script", (0, 0))
    except redis.RedisError as exc:
        out.failed = f"failed: {exc}"[:200]
    finally:
        engine.close()
    return out


# -- uvicorn's shared socket, for the A/B of the workers' balance ------------------------------


def shared_socket_server(env: dict[str, str], tmp: Path) -> Server:
    """``scoring serve --no-reuse-port``: uvicorn's workers accepting from one socket their
    parent bound (the mode before each worker had a SO_REUSEPORT socket of its own)."""
    port = free_port()
    return Server(
        "scoring serve --no-reuse-port",
        [PYTHON, "-m", "scoring.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(WORKERS), "--log-level", "warning", "--no-reuse-port"],
        env, port, tmp / "serve-shared.log",
    )  # fmt: skip


def listening_sockets(port: int) -> int:
    """The TCP sockets listening on ``port`` (Linux's /proc/net/tcp; 0 elsewhere)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for x in lines if x.split()[3] == "0A" and int(x.split()[1][-4:], 16) == port)


def every_worker_listens(server: Server) -> None:
    """Wait (up to 60 s) until each worker of ``scoring serve`` listens on its own socket, so
    that no measure starts while one worker has not joined the port yet (not for uvicorn's
    shared socket). Where /proc does not show them, it returns at once."""
    deadline = time.monotonic() + 60
    while 0 < listening_sockets(server.port) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)


# -- the runs ----------------------------------------------------------------------------------


@dataclass
class Results:
    bare: Load
    bare_sync: Load
    award: Load
    award_low: Load
    leaderboard: Load
    batch: Load
    status: Load
    # measured in the same run for issue 15's comparisons
    open_loop: Load = field(default_factory=lambda: Load("award at a fixed rate", 0))
    in_process: InProcess = field(default_factory=InProcess)
    shared_award: Load = field(default_factory=lambda: Load("award, shared socket", 0))
    shared_batch: Load = field(default_factory=lambda: Load("batch, shared socket", 0))


#: (measure name, wrk script, connections), in the order they run against the real server.
API_LOADS = (
    ("award", "award", CONNECTIONS),
    ("award, few connections", "award", LOW_CONNECTIONS),
    ("leaderboard", "leaderboard", CONNECTIONS),
    ("batch", "batch", BATCH_CONNECTIONS),
    ("status", "status", CONNECTIONS),
)
#: Against ``scoring serve --no-reuse-port``.
SHARED_LOADS = (
    ("award, shared socket", "award", CONNECTIONS),
    ("batch, shared socket", "batch", BATCH_CONNECTIONS),
)


def serve_and_measure(
    server: Server,
    loads: Sequence[tuple[str, str, int]],
    scripts: dict[str, Path],
    seconds: float,
    r: redis.Redis,
    rpid: int | None,
    *,
    ready: Callable[[Server], None] | None = None,
    after: Callable[[Server, list[Load]], None] | None = None,
) -> list[Load]:
    """Start ``server``, wait for ``ready(server)``, run ``loads`` against it one after the
    other, then ``after(server, measured)``, and stop it. A server that does not start fails its
    measures; a measure that fails does not stop the others."""
    try:
        with running(server):
            if ready is not None:
                ready(server)
            out = [
                measure_load(name, server, scripts[script], conns, seconds, r, rpid)
                for name, script, conns in loads
            ]
            if after is not None:
                after(server, out)
            if any(x.failed for x in out):
                log(f"{server.name} log:\n{server.tail()}")
            return out
    except RuntimeError as exc:
        return [Load(name, conns, failed=f"failed: {exc}"[:200]) for name, _, conns in loads]


def measure(seconds: float) -> Results:
    url = redis_url()
    r = connect(url)
    r.ping()
    rpid = redis_pid(r)
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp_name:
        tmp = Path(tmp_name)
        scripts = write_scripts(tmp)
        env = server_env(url, tmp)
        common = ["--host", "127.0.0.1", "--workers", str(WORKERS), "--log-level", "warning"]
        try:
            fresh_db(r)
            r.set(BARE_KEY, "bare value")
            port = free_port()
            bare_server = Server(
                "bare FastAPI app",
                [PYTHON, "-m", "uvicorn", "bench.bare_app:create_app", "--factory",
                 "--port", str(port), "--no-access-log", *common],
                env, port, tmp / "bare.log",
            )  # fmt: skip
            loads = [("GET /bare", "bare", CONNECTIONS),
                     ("GET /bare-sync", "bare_sync", CONNECTIONS)]  # fmt: skip
            bare, bare_sync = serve_and_measure(bare_server, loads, scripts, seconds, r, rpid)

            fresh_db(r)
            why = db_upgrade(env)
            if why:
                failed = [Load(name, conns, failed=why) for name, _, conns in API_LOADS]
                return Results(bare, bare_sync, *failed)
            open_loop = Load("award at a fixed rate", 0, failed="failed: the award measure")

            def at_fixed_rate(server: Server, measured: list[Load]) -> None:
                nonlocal open_loop
                award = measured[0]
                if not award.failed and award.rate:
                    rate = OPEN_LOOP_SHARE * award.rate
                    open_loop = measure_open_loop(server, rate, seconds, rpid, tmp)

            api = scoring_server(env, tmp)
            api_loads = serve_and_measure(
                api, API_LOADS, scripts, seconds, r, rpid,
                ready=every_worker_listens, after=at_fixed_rate,
            )  # fmt: skip
            # the same Redis and data, no server running
            in_process = measure_in_process(r, url, seconds)
            shared = shared_socket_server(env, tmp)
            shared_award, shared_batch = serve_and_measure(
                shared, SHARED_LOADS, scripts, seconds, r, rpid
            )
        finally:
            fresh_db(r)
    return Results(bare, bare_sync, *api_loads, open_loop=open_loop, in_process=in_process,
                   shared_award=shared_award, shared_batch=shared_batch)  # fmt: skip


# -- the table ---------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x:.1f} ms"


def latency(load: Load) -> str:
    return f"{ms(load.p50_ms)} / {ms(load.p99_ms)}"


def cpu_row(label: str, load: Load, client: str = "wrk") -> Row:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0f}%"

    workers = " + ".join(pct(v) for v in load.worker_cpu)
    total = os.cpu_count() or 1
    return Row(
        f"  CPU, {label}",
        f"server {pct(load.cpu.get('server'))} (workers {workers}), "
        f"Redis {pct(load.cpu.get('redis'))}, {client} {pct(load.cpu.get('wrk'))} "
        f"(of {100 * total}%)",
    )


def cpu_per_request(load: Load, who: str) -> float | None:
    """CPU time (us) that ``who`` ("server", "redis") spent per request of ``load``."""
    share = load.cpu.get(who)
    return None if share is None or not load.rate else share / 100 * 1e6 / load.rate


def cost_rows(award: Load, bare: Load) -> list[Row]:
    """What one award costs the server's processes and Redis in CPU against one bare request:
    on two shared cores the award's Redis work takes CPU the workers would use, so the req/s
    ratio mixes the HTTP path's cost with Redis's; the server's CPU per request is the HTTP
    path's alone."""
    rows = []
    for who, name in (("server", "server processes"), ("redis", "Redis")):
        a, b = cpu_per_request(award, who), cpu_per_request(bare, who)
        if a is not None and b is not None:
            rows.append(Row(f"  CPU per request, {name}: award / bare",
                            f"{a:,.0f} / {b:,.0f} us = {a / b:.2f}x"))  # fmt: skip
    return rows


def split_row(label: str, load: Load) -> Row:
    """Each worker's share of the CPU the workers used: about even when the connections are
    spread over the workers, lopsided when one worker holds most of them."""
    total = sum(load.worker_cpu)
    if len(load.worker_cpu) < 2 or total <= 0:
        return Row(f"  workers' CPU split, {label}", "n/a")
    shares = " / ".join(f"{100 * w / total:.0f}%" for w in load.worker_cpu)
    return Row(f"  workers' CPU split, {label}", f"{shares} of the workers' {total:.0f}%")


def script_row(label: str, load: Load) -> Row:
    """The award script's Redis-side time per award, and the awards/s it allows Redis."""
    if not load.script_calls:
        return Row(f"  award script, Redis-side, {label}", "n/a")
    usec = load.script_usec / load.script_calls
    return Row(
        f"  award script, Redis-side, {label}",
        f"{usec:.1f} us/award wall: Redis alone allows {1e6 / usec:,.0f} awards/s",
    )


def error_row(label: str, load: Load, *, bodies: bool = False) -> Row:
    parts = [f"{load.non2xx:,} non-2xx/3xx", f"{load.socket_errors:,} socket errors"]
    count = load.errors
    if bodies:
        parts.append(f"{load.bad:,} not 200 with refused 0")
        count = max(count, load.bad)
    return Row(f"  {label} error responses", ", ".join(parts), "0", verdict(count == 0))


def failed_rows(label: str, load: Load) -> list[Row]:
    return [Row(label, load.failed or "", "", "n/a")]


def open_loop_rows(res: Results) -> list[Row]:
    """The award at a fixed rate (hey), OPEN_LOOP_SHARE of the closed-loop award req/s."""
    load, award = res.open_loop, res.award
    conns = OPEN_LOOP_PROCESSES * OPEN_LOOP_CONNECTIONS
    label = f"POST /v1/users/{{id}}/awards at a fixed {OPEN_LOOP_SHARE:.0%} of its max, hey"
    if load.failed:
        return failed_rows(label, load)
    asked = OPEN_LOOP_SHARE * award.rate
    return [
        Row(label, f"{asked:,.0f} req/s asked, {load.rate:,.0f} answered, {conns} conn"),
        Row("  fixed-rate award p50", ms(load.p50_ms)),
        Row("  fixed-rate award p99", ms(load.p99_ms), f"<= {AWARD_P99_MS:g} ms",
            verdict(load.p99_ms <= AWARD_P99_MS)),
        Row("  fixed-rate award answers not 201", f"{load.non2xx:,}", "0",
            verdict(load.non2xx == 0)),
        cpu_row("fixed rate", load, client="hey"),
        split_row("fixed rate", load),
    ]  # fmt: skip


def shared_socket_rows(res: Results) -> list[Row]:
    """The award and batch measures again on ``scoring serve --no-reuse-port`` (uvicorn's
    shared socket), beside the default's."""
    rows = []
    for kind, load, base, conns in (
        ("award", res.shared_award, res.award, CONNECTIONS),
        ("batch", res.shared_batch, res.batch, BATCH_CONNECTIONS),
    ):
        path = "/v1/users/{id}/awards" if kind == "award" else f"/v1/awards/batch x{BATCH}"
        label = f"POST {path}, {conns} conn, --no-reuse-port (shared socket)"
        if load.failed:
            rows += failed_rows(label, load)
            continue
        unit = 1 if kind == "award" else BATCH
        rows += [
            Row(label, f"{load.rate * unit:,.0f} {'req' if unit == 1 else 'awards'}/s"),
            Row(f"  {kind} p50 / p99, shared socket", latency(load)),
            error_row(f"{kind}, shared socket,", load, bodies=kind == "batch"),
            cpu_row(f"{kind}, shared socket", load),
            split_row(f"{kind}, shared socket", load),
            Row(f"  {kind} rate, SO_REUSEPORT / shared socket",
                f"{base.rate / load.rate:.0%}" if load.rate and not base.failed else "n/a"),
        ]  # fmt: skip
    return rows


def in_process_rows(res: Results) -> list[Row]:
    """In-process award_many x BATCH beside the batch endpoint."""
    inproc, batch = res.in_process, res.batch
    label = f"ScoringEngine.award_many x{BATCH}, in-process, 1 connection"
    if inproc.failed:
        return [Row(label, inproc.failed, "", "n/a")]
    rows = [
        Row(label, f"{inproc.rate:,.0f} awards/s"),
        Row("  in-process award_many errors", f"{inproc.errors:,}", "0",
            verdict(inproc.errors == 0)),
    ]  # fmt: skip
    if inproc.script_calls:
        usec = inproc.script_usec / inproc.script_calls
        rows.append(Row("  award script, Redis-side, in-process", f"{usec:.1f} us/award wall"))
    if not batch.failed and inproc.rate:
        ratio = batch.rate * BATCH / inproc.rate
        target = f">= {BATCH_VS_IN_PROCESS:.0%}"
        ok = verdict(ratio >= BATCH_VS_IN_PROCESS)
        rows.append(
            Row("  batch endpoint / in-process award_many awards/s", f"{ratio:.0%}", target, ok)
        )
    return rows


def rows_for(res: Results) -> list[Row]:
    rows: list[Row] = []
    bare, award, low, board, batch = (
        res.bare, res.award, res.award_low, res.leaderboard, res.batch,
    )  # fmt: skip

    label = f"GET /bare (1 Redis GET), {CONNECTIONS} conn"
    if bare.failed:
        rows += failed_rows(label, bare)
    else:
        rows += [
            Row(label, f"{bare.rate:,.0f} req/s"),
            Row("  bare p50 / p99", latency(bare)),
            error_row("bare", bare),
            cpu_row("bare", bare),
        ]
    sync = res.bare_sync
    label = f"GET /bare-sync (sync def, thread pool), {CONNECTIONS} conn"
    if sync.failed:
        rows += failed_rows(label, sync)
    else:
        rows.append(Row(label, f"{sync.rate:,.0f} req/s, p50 / p99 {latency(sync)}"))

    label = f"POST /v1/users/{{id}}/awards, {CONNECTIONS} conn"
    if award.failed:
        rows += failed_rows(label, award)
    else:
        need = AWARD_VS_BARE * bare.rate if not bare.failed else None
        target = f">= {AWARD_VS_BARE:.0%} of bare" + (f" = {need:,.0f}" if need else "")
        ratio = award.rate / bare.rate if need else None
        rows += [
            Row(label, f"{award.rate:,.0f} req/s", target,
                verdict(award.rate >= need) if need else "n/a"),
            Row("  award / bare req/s", f"{ratio:.0%}" if ratio else "n/a",
                f">= {AWARD_VS_BARE:.0%}", verdict(ratio >= AWARD_VS_BARE) if ratio else "n/a"),
            Row("  award / bare-sync req/s",
                f"{award.rate / sync.rate:.0%}" if not sync.failed else "n/a"),
            Row("  award p50", ms(award.p50_ms)),
            Row("  award p99", ms(award.p99_ms), f"<= {AWARD_P99_MS:g} ms",
                verdict(award.p99_ms <= AWARD_P99_MS)),
            error_row("award", award),
            cpu_row("award", award),
            split_row("award", award),
            script_row("award", award),
            *cost_rows(award, bare),
        ]  # fmt: skip

    rows += open_loop_rows(res) + shared_socket_rows(res)

    label = f"POST /v1/users/{{id}}/awards, {LOW_CONNECTIONS} conn"
    if low.failed:
        rows += failed_rows(label, low)
    else:
        rows += [
            Row(label, f"{low.rate:,.0f} req/s"),
            Row(f"  award p50 / p99, {LOW_CONNECTIONS} conn", latency(low)),
            error_row(f"award, {LOW_CONNECTIONS} conn,", low),
        ]

    label = f"GET /v1/leaderboards/all_time?limit=10, {CONNECTIONS} conn"
    rows += read_rows(label, "leaderboard", board, bare)
    if not board.failed:
        rows.append(split_row("leaderboard", board))

    label = f"POST /v1/awards/batch x{BATCH}, {BATCH_CONNECTIONS} conn"
    if batch.failed:
        rows += failed_rows(label, batch)
    else:
        awards = batch.rate * BATCH
        rows += [
            Row(label, f"{awards:,.0f} awards/s", f">= {BATCH_TARGET:,}",
                verdict(awards >= BATCH_TARGET)),
            Row("  batch req/s", f"{batch.rate:,.1f} req/s"),
            Row("  batch p50 / p99", latency(batch)),
            error_row("batch", batch, bodies=True),
            cpu_row("batch", batch),
            split_row("batch", batch),
            script_row("batch", batch),
        ]  # fmt: skip
    rows += in_process_rows(res)

    label = f"GET /v1/users/{{id}} (status), {CONNECTIONS} conn"
    rows += read_rows(label, "status", res.status, bare)
    return rows


def read_rows(label: str, name: str, load: Load, bare: Load) -> list[Row]:
    """A read's rows: req/s, its share of the bare endpoint's (target 80 %), latency, errors,
    CPU."""
    if load.failed:
        return failed_rows(label, load)
    ratio = load.rate / bare.rate if not bare.failed and bare.rate else None
    return [
        Row(label, f"{load.rate:,.0f} req/s"),
        Row(f"  {name} / bare req/s", f"{ratio:.0%}" if ratio else "n/a",
            f">= {READ_VS_BARE:.0%}", verdict(ratio >= READ_VS_BARE) if ratio else "n/a"),
        Row(f"  {name} p50 / p99", latency(load)),
        error_row(name, load),
        cpu_row(name, load),
    ]  # fmt: skip


def skipped_rows() -> list[Row]:
    return [
        Row(f"GET /bare (1 Redis GET), {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"GET /bare-sync (sync def, thread pool), {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"POST /v1/users/{{id}}/awards, {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"POST /v1/users/{{id}}/awards, {LOW_CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"GET /v1/leaderboards/all_time?limit=10, {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"POST /v1/awards/batch x{BATCH}, {BATCH_CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row("POST /v1/users/{id}/awards at a fixed rate, hey", WRK_MISSING, "", "n/a"),
        Row("POST /v1/users/{id}/awards, --no-reuse-port", WRK_MISSING, "", "n/a"),
        Row(f"GET /v1/users/{{id}} (status), {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
    ]


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parser("api_bench", __doc__, "3 s per measure, for a smoke run").parse_args(argv)
    seconds = 3.0 if args.quick else 10.0
    started = time.perf_counter()
    if shutil.which("wrk") is None:
        rows = skipped_rows()
    else:
        rows = rows_for(measure(seconds))
    print(render(rows))
    print(
        summary(
            args.quick,
            started,
            redis_url(),
            f"{WORKERS} uvicorn workers, wrk -t{WRK_THREADS}, hey",
            f"{seconds:g} s per measure after {WARMUP:g} s warm-up",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
