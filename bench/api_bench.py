"""HTTP API benchmark: the real server under wrk, against a bare FastAPI endpoint's ceiling.

    .venv/bin/python -m bench.api_bench [--quick]

Starts the real server as ``scoring serve`` does (``python -m engine.cli serve --workers 2``) and,
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

Without ``wrk`` on PATH, every row says how to install it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.award_bench import (
    Row,
    command_stats,
    connect,
    fresh_db,
    log,
    redis_url,
    render,
    reset_stats,
    verdict,
)
from bench.bare_app import KEY as BARE_KEY

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

WORKERS = 2
WRK_THREADS = 1
CONNECTIONS = 50
LOW_CONNECTIONS = 2
BATCH_CONNECTIONS = 8
BATCH = 500
BATCH_BODIES = 16
USERS = 10_000
WARMUP = 2.0
API_KEY = "bench-key-0123456789abcdef"
API_KEYS = f"bench:{API_KEY}:award+read"
QUEUE = "scoring-bench"

AWARD_VS_BARE = 0.80
AWARD_P99_MS = 10.0
BATCH_TARGET = 30_000

START_TIMEOUT = 60.0  # seconds a server may take to answer /healthz with all its workers
STOP_TIMEOUT = 15.0
WRK_MISSING = "skipped: install wrk (apt-get install wrk)"
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
}


def write_scripts(folder: Path) -> dict[str, Path]:
    paths = {}
    for name, body in SCRIPTS.items():
        path = folder / f"{name}.lua"
        path.write_text(body + LUA_COMMON)
        paths[name] = path
    return paths


# -- processes and their CPU -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process, from /proc; None if it is not visible."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (uvicorn's workers and multiprocessing's helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_pid(r: redis.Redis) -> int | None:
    """The Redis server's pid if it runs on this machine where /proc shows it."""
    try:
        pid = int(r.info("server")["process_id"])
        return pid if Path(f"/proc/{pid}/comm").read_text().startswith("redis") else None
    except (OSError, KeyError, ValueError, redis.RedisError):
        return None


class Server:
    """One uvicorn server, started in a session of its own so that it can be stopped whole."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path):
        self.name, self.argv, self.env, self.port, self.log_path = name, argv, env, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            if len(self.workers()) >= WORKERS and self._healthy():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer /healthz in {START_TIMEOUT:g} s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def workers(self) -> list[int]:
        assert self.proc is not None
        return [p for p in descendants(self.proc.pid) if "spawn_main" in cmdline(p)]

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *descendants(self.proc.pid)]

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: the server and workers
            self.proc.wait()


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        log(f"starting {server.name} on {server.url}")
        server.start()
        yield server
    finally:
        server.stop()


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class Load:
    """One wrk measure: what it did and what it cost whom."""

    name: str
    connections: int
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    non2xx: int = 0
    socket_errors: int = 0
    bad: int = 0  # responses the script's response() refused (batch: not 200 or items refused)
    cpu: dict[str, float | None] = field(default_factory=dict)  # who: % of one core
    worker_cpu: list[float] = field(default_factory=list)  # each uvicorn worker: % of one core
    script_calls: int = 0  # EVALSHA calls Redis counted during the timed run
    script_usec: int = 0  # and their Redis-side time
    failed: str | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def children_cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


BENCH_LINE = re.compile(r"^BENCH (.*)$", re.M)


def run_wrk(script: Path, url: str, connections: int, seconds: float) -> dict[str, int]:
    """One wrk run; the figures its done() printed."""
    argv = [
        "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "--latency", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    match = BENCH_LINE.search(done.stdout)
    if done.returncode or not match:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}


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
        pids, workers = server.pids(), server.workers()
        before_workers = [cpu_seconds(p) or 0.0 for p in workers]
        before_server = sum(c or 0.0 for c in map(cpu_seconds, pids))
        before_redis = cpu_seconds(rpid) if rpid else None
        before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
        reset_stats(r)
        started = time.perf_counter()
        figures = run_wrk(script, server.url, connections, seconds)
        wall = time.perf_counter() - started
        after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
        after_redis = cpu_seconds(rpid) if rpid else None
        after_server = sum(c or 0.0 for c in map(cpu_seconds, pids))
        after_workers = [cpu_seconds(p) or 0.0 for p in workers]
        load.script_calls, load.script_usec = command_stats(r).get("evalsha", (0, 0))
    except (RuntimeError, OSError, subprocess.TimeoutExpired, redis.RedisError) as exc:
        load.failed = f"failed: {exc}"[:200]
        return load
    load.requests = figures["requests"]
    load.seconds = figures["duration_us"] / 1e6
    load.p50_ms = figures["p50_us"] / 1000
    load.p99_ms = figures["p99_us"] / 1000
    load.max_ms = figures["max_us"] / 1000
    load.non2xx = figures["non2xx"]
    load.socket_errors = sum(figures[k] for k in ("connect", "read", "write", "timeout"))
    load.bad = figures["bad"]
    wrk_cpu = children_cpu(after_wrk) - children_cpu(before_wrk)
    load.cpu = {
        "server": 100 * (after_server - before_server) / wall,
        "redis": (
            100 * (after_redis - before_redis) / wall
            if after_redis is not None and before_redis is not None
            else None
        ),
        "wrk": 100 * wrk_cpu / wall,
    }
    load.worker_cpu = [100 * (a - b) / wall for a, b in zip(after_workers, before_workers)]
    return load


# -- the runs ----------------------------------------------------------------------------------


@dataclass
class Results:
    bare: Load
    bare_sync: Load
    award: Load
    award_low: Load
    leaderboard: Load
    batch: Load


def server_env(url: str, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("SCORING_RULES", "SCORING_KEY_PREFIX", "SCORING_JWT_SECRET"):
        env.pop(name, None)  # the default rules and keys: what the workload assumes
    env.update(
        REDIS_URL=url,
        RQ_REDIS_URL=url,
        SCORING_QUEUE=QUEUE,
        SCORING_SHARDS="1",
        DATABASE_URL=f"sqlite:///{tmp / 'scoring.db'}",
        SCORING_DATA_DIR=str(tmp),
        SCORING_API_KEYS=API_KEYS,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
    )
    return env


#: (measure name, wrk script, connections), in the order they run against the real server.
API_LOADS = (
    ("award", "award", CONNECTIONS),
    ("award, few connections", "award", LOW_CONNECTIONS),
    ("leaderboard", "leaderboard", CONNECTIONS),
    ("batch", "batch", BATCH_CONNECTIONS),
)


def db_upgrade(env: dict[str, str]) -> str | None:
    """``scoring db upgrade`` in the servers' environment; why it failed, or None."""
    log("scoring db upgrade (SQLite in a temporary folder)")
    upgrade = subprocess.run(
        [PYTHON, "-m", "scoring.cli", "db", "upgrade"], env=env, cwd=ROOT,
        capture_output=True, text=True,
    )  # fmt: skip
    if upgrade.returncode:
        return f"failed: scoring db upgrade: {upgrade.stderr.strip()}"[:200]
    return None


def scoring_server(env: dict[str, str], tmp: Path) -> Server:
    """``scoring serve`` with the benchmarks' workers, on a free port, logging to ``tmp``."""
    port = free_port()
    return Server(
        "scoring serve",
        [PYTHON, "-m", "scoring.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(WORKERS), "--log-level", "warning"],
        env, port, tmp / "serve.log",
    )  # fmt: skip


def serve_and_measure(
    server: Server,
    loads: Sequence[tuple[str, str, int]],
    scripts: dict[str, Path],
    seconds: float,
    r: redis.Redis,
    rpid: int | None,
) -> list[Load]:
    """Start ``server``, run ``loads`` against it one after the other, stop it. A server that
    does not start fails its measures; a measure that fails does not stop the others."""
    try:
        with running(server):
            out = [
                measure_load(name, server, scripts[script], conns, seconds, r, rpid)
                for name, script, conns in loads
            ]
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
                api_loads = [Load(name, conns, failed=why) for name, _, conns in API_LOADS]
            else:
                api = scoring_server(env, tmp)
                api_loads = serve_and_measure(api, API_LOADS, scripts, seconds, r, rpid)
        finally:
            fresh_db(r)
    return Results(bare, bare_sync, *api_loads)


# -- the table ---------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x:.1f} ms"


def latency(load: Load) -> str:
    return f"{ms(load.p50_ms)} / {ms(load.p99_ms)}"


def cpu_row(label: str, load: Load) -> Row:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0f}%"

    workers = " + ".join(pct(v) for v in load.worker_cpu)
    total = os.cpu_count() or 1
    return Row(
        f"  CPU, {label}",
        f"server {pct(load.cpu.get('server'))} (workers {workers}), "
        f"Redis {pct(load.cpu.get('redis'))}, wrk {pct(load.cpu.get('wrk'))} "
        f"(of {100 * total}%)",
    )


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
            script_row("award", award),
        ]  # fmt: skip

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
    if board.failed:
        rows += failed_rows(label, board)
    else:
        rows += [
            Row(label, f"{board.rate:,.0f} req/s"),
            Row("  leaderboard p50 / p99", latency(board)),
            error_row("leaderboard", board),
            cpu_row("leaderboard", board),
        ]

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
            script_row("batch", batch),
        ]  # fmt: skip
    return rows


def skipped_rows() -> list[Row]:
    return [
        Row(f"GET /bare (1 Redis GET), {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"GET /bare-sync (sync def, thread pool), {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"POST /v1/users/{{id}}/awards, {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"POST /v1/users/{{id}}/awards, {LOW_CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"GET /v1/leaderboards/all_time?limit=10, {CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
        Row(f"POST /v1/awards/batch x{BATCH}, {BATCH_CONNECTIONS} conn", WRK_MISSING, "", "n/a"),
    ]


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="3 s per measure, for a smoke run")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else 10.0
    started = time.perf_counter()
    if shutil.which("wrk") is None:
        rows = skipped_rows()
    else:
        rows = rows_for(measure(seconds))
    print(render(rows))
    print(
        f"\n{'quick' if args.quick else 'full'} run, {os.cpu_count()} cores, {redis_url()}, "
        f"{WORKERS} uvicorn workers, wrk -t{WRK_THREADS}, {seconds:g} s per measure after "
        f"{WARMUP:g} s warm-up, {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
