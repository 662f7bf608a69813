"""Fault injection: real processes killed or starved while the engine works, and one verdict.

    .venv/bin/python -m bench.faults [redis-kill] [worker-kill] [sql-outage] [malformed]
                                     [--quick] [--appendfsync always|everysec]

Every scenario starts what it needs as real processes, each in a temporary folder of its own:
a private ``redis-server`` on a free port with AOF on (``appendonly yes``, ``appendfsync
always`` unless ``--appendfsync everysec``), a database in a private PostgreSQL cluster
(``initdb`` as the ``postgres`` user when run as root; ``fsync=off``, since only processes are
killed here, never the machine), ``scoring serve`` (uvicorn, 2 workers, as ``bench.api_bench``
runs it) and ``scoring worker`` processes. Scenarios (names or ``a`` to ``d``):

- ``redis-kill`` (a): client threads send awards over HTTP, each with an ``Idempotency-Key``
  (and the key as description), retrying a 503 or a broken connection with the same key; Redis
  is killed with SIGKILL part way, then restarted on the same port from the same AOF.
- ``worker-kill`` (b): a backlog in the outbox; a ``scoring worker`` is killed with SIGKILL
  (1) at a random point while it drains a large backlog, (2) inside a batch's SQL transaction and
  (3) between a batch's commit and its XACK. (2) and (3) are placed exactly: a statement trigger
  on ``point_activity`` takes a shared advisory lock that the harness holds, so the worker waits
  inside its transaction; for (3) Redis is paused for writes (``CLIENT PAUSE WRITE``) before the
  lock is let go, so the worker commits and then waits on its XACK. After each kill a fresh
  ``scoring worker --burst`` must finish the backlog.
- ``sql-outage`` (c): awards over HTTP while the PostgreSQL cluster is stopped with ``pg_ctl -m
  immediate`` and started again; two workers and the scheduler keep running.
- ``malformed`` (d): malformed and oversized requests through raw sockets.

Each ends in the same verdict: every acknowledged award (201 or 200) is in SQL exactly once
(rows of ``point_activity`` per activity id and per idempotency key), ``scoring reconcile``
reports no drift, nothing went to the dead letters, memory stayed bounded (Redis
``used_memory``, the outbox's XLEN, the RQ queue and failed-job registry, the RSS of every API
process: the bounds are the constants below) and no answer was a 5xx other than the documented
503 while a dependency was down (retried by the clients with the same key). A table per
scenario gives each expectation's PASS or FAIL; the harness never exits non-zero.
``tests/test_faults.py`` runs small versions of the same scenarios and asserts the verdicts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
import redis

from bench.harness import (
    API_KEY,
    PYTHON,
    ROOT,
    Proc,
    RedisServer,
    Row,
    Server,
    db_upgrade,
    free_port,
    log,
    render,
    scoring_server,
    server_env,
    summary,
    wait_until,
)
from bench.harness import parser as harness_parser
from engine import AwardRequest, ScoringEngine
from engine.domain.keys import Keys
from engine.storage.outbox import DrainQueue
from workers.drain import GROUP

SHARDS = 2
QUEUE = "faults"
PREFIX = "scoring"  # the processes' SCORING_KEY_PREFIX (the default)
TYPES = ("comment", "quiz_complete", "reaction")

# -- the bounds every verdict checks --------------------------------------------------------

#: Outbox entries (all shards) while SQL is up: one drain batch (``SCORING_DRAIN_BATCH``'s
#: default). The drain keeps up with the award rate here, and an acknowledged entry is trimmed.
MAX_XLEN = 5_000
#: Outbox entries per shard after the final drain (an approximate XTRIM keeps part of a node).
MAX_XLEN_DRAINED = 100
#: Redis ``used_memory`` above the scenario's start: 16 MB plus 1 KB per award acknowledged
#: (an award's state, idempotency record and outbox entry measure about 0.5 KB).
REDIS_BASE_MB = 16
REDIS_PER_AWARD = 1024
#: RQ jobs waiting in the queue: a drain job per shard (the award path queues one per shard at a
#: time), the outbox sweep's and the webhook sweep's jobs (rq-scheduler queues each every 15 s
#: whether or not the last one has run, so twice while every worker waits out an outage's
#: backoff), and one to spare. Seen: the two drains and a sweep in most samples, 6 once with
#: both sweeps; an unbounded queue (a job per award) would hold thousands.
MAX_QUEUED = SHARDS + 5
#: Failed RQ jobs a fault may leave: one per shard (the job that was running).
FAILED_PER_FAULT = SHARDS
#: During an SQL outage: at most one failed drain attempt per shard per this many seconds.
BACKOFF_FLOOR_S = 1.0
#: Growth of any API process's RSS over a scenario, and after the 100 MB body.
RSS_GROWTH_MB = 50
RSS_GROWTH_BODY_MB = 20
#: A fresh ``scoring worker --burst`` after a killed worker: done within this many seconds.
RECOVERY_S = 10.0
#: After the last award (or after SQL came back), the running workers drain the backlog within.
DRAINED_WITHIN_S = 15.0
#: An oversized body is refused within this many seconds of its first byte.
REFUSE_WITHIN_S = 2.0
#: While slow clients hold connections, other requests are answered within.
LATENCY_UNDER_SLOWLORIS_S = 1.0
#: 503s count as "during the outage" until this long after the dependency is back.
OUTAGE_GRACE_S = 2.0

#: ``SCORING_DRAIN_CLAIM_IDLE_MS``'s default, in seconds.
CLAIM_IDLE_S = 30.0
CLIENT_TIMEOUT_S = TIMEOUT = 10.0  # an answer slower than this is a hang
KEY_RETRY_S = 60.0  # a client retries one key this long, then gives up on it


@dataclass(frozen=True)
class Sizes:
    awards: int  # (a): awards sent over HTTP
    threads: int  # (a), (c): client threads
    users: int
    redis_kills: int  # (a)
    redis_down_s: float  # (a): how long Redis stays dead each time
    backlog: int  # (b): the backlog a worker is killed in at a random point (0: not run)
    gate_backlog: int  # (b): the backlog of each exactly placed kill
    outage_s: float  # (c)
    load_s: float  # (c): awards before and after the outage
    big_body_mb: int  # (d)
    slow_connections: int  # (d)
    slow_s: float  # (d)
    drain_wait_s: float  # (a), (c): how long to wait for the workers to drain, to show how long


FULL = Sizes(awards=20_000, threads=8, users=2_000, redis_kills=2, redis_down_s=2.0,
             backlog=50_000, gate_backlog=10_000, outage_s=10.0, load_s=5.0, big_body_mb=100,
             slow_connections=1_000, slow_s=8.0, drain_wait_s=100.0)  # fmt: skip
QUICK = Sizes(awards=1_500, threads=4, users=100, redis_kills=1, redis_down_s=1.0, backlog=0,
              gate_backlog=1_500, outage_s=3.0, load_s=1.5, big_body_mb=100,
              slow_connections=200, slow_s=3.0, drain_wait_s=20.0)  # fmt: skip


# -- the report -----------------------------------------------------------------------------


@dataclass
class Check:
    measure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: a figure without a target
    group: str = ""  # the probe it belongs to (malformed)


@dataclass
class Report:
    scenario: str
    title: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.checks.append(Check(measure, value, target, ok))

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        rows = [
            Row(c.measure, c.value, c.target, "" if c.ok is None else "PASS" if c.ok else "FAIL")
            for c in self.checks
        ]
        targets = sum(c.ok is not None for c in self.checks)
        rows.append(Row("seconds", f"{self.seconds:.1f}"))
        rows.append(
            Row("verdict", f"{len(self.failures)} of {targets} expectations failed", "none",
                "PASS" if self.ok else "FAIL")
        )  # fmt: skip
        text = f"## {self.scenario}: {self.title}\n\n{render(rows)}"
        if self.notes:
            text += "\n\n" + "\n".join(self.notes)
        return text


def n(x: float) -> str:
    return f"{x:,.0f}"


def mb(x: float) -> str:
    return f"{x / 2**20:,.1f} MB"


# -- processes ------------------------------------------------------------------------------


def pg_bin() -> Path | None:
    """Where initdb and pg_ctl are: ``SCORING_PG_BIN``, the newest Debian cluster, or PATH."""
    if os.environ.get("SCORING_PG_BIN"):
        return Path(os.environ["SCORING_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def pg_unavailable() -> str | None:
    """Why a private PostgreSQL cluster cannot run here, or None."""
    if pg_bin() is None:
        return "no initdb (install postgresql, or set SCORING_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (initdb refuses root)"
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return "no redis-server"
    return None


class PgCluster:
    """A private PostgreSQL cluster in a temporary folder (run as ``postgres`` when root)."""

    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries")
        self.bin = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> float:
        started = time.monotonic()
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c unix_socket_directories={self.folder} -c max_connections=200")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-t", "60",
                  "-o", options, "start")  # fmt: skip
        return time.monotonic() - started

    def crash(self) -> None:
        """``pg_ctl -m immediate stop``: every backend killed at once, no checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def conninfo(self, db: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db} connect_timeout=3"

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def fresh_database(self, db: str) -> str:
        with psycopg.connect(self.conninfo(), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {db}")
        return self.url(db)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def process_env(r: RedisServer, sql_url: str, folder: Path) -> dict[str, str]:
    """The environment of every scoring process of a scenario: ``api_bench``'s (its API key,
    the default rules and key prefix) over this scenario's Redis, database and queue, with the
    drain settings at their defaults."""
    env = server_env(r.url, folder)
    for name in ("SCORING_DRAIN_BATCH", "SCORING_DRAIN_CLAIM_IDLE_MS", "SCORING_DRAIN_MAX_FAILURES",
                 "SCORING_PUBLIC_LEADERBOARDS", "SCORING_SELF_AWARD_TYPES"):  # fmt: skip
        env.pop(name, None)
    env.update(DATABASE_URL=sql_url, SCORING_SHARDS=str(SHARDS), SCORING_QUEUE=QUEUE)
    return env


def worker_proc(env: dict[str, str], folder: Path, name: str, *, burst: bool = False) -> Proc:
    argv = [PYTHON, "-m", "scoring.cli", "worker", "--log-level", "WARNING"]
    return Proc(name, argv + (["--burst"] if burst else []), env, folder / f"{name}.log")


class Supervisor:
    """Long-running processes (``scoring worker``, ``scoring scheduler``), each started again
    when it exits, as a process supervisor would; the exits are counted."""

    def __init__(self, procs: Sequence[Proc]) -> None:
        self.procs = list(procs)
        self.exits: list[tuple[str, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @classmethod
    def production(cls, env: dict[str, str], folder: Path, workers: int = 2) -> Supervisor:
        """``workers`` workers and a scheduler, as README's "Running in production" has it."""
        argv = [PYTHON, "-m", "scoring.cli", "scheduler"]
        scheduler = Proc("scheduler", argv, env, folder / "scheduler.log")
        return cls([*(worker_proc(env, folder, f"worker-{i}") for i in range(workers)), scheduler])

    def __enter__(self) -> Supervisor:
        for p in self.procs:
            p.start()
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for p in self.procs:
                if not p.alive and not self._stop.is_set():
                    self.exits.append((p.name, p.proc.returncode if p.proc else None))
                    p.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for p in self.procs:
            p.stop()

    def exited(self) -> str:
        return ", ".join(f"{name} ({rc})" for name, rc in self.exits) or "none"


# -- watching memory ------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    used_memory: int | None = None
    xlen: int | None = None  # all shards' outboxes
    queued: int | None = None  # RQ jobs waiting
    failed: int | None = None  # RQ failed-job registry
    rss: dict[int, int] = field(default_factory=dict)  # API process: RSS bytes


def rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Monitor:
    """Samples Redis and the API processes every ``interval`` seconds in a thread."""

    def __init__(self, r: RedisServer, api: Server | None, interval: float = 0.2) -> None:
        self.r, self.api, self.interval = r, api, interval
        self.keys = Keys(prefix=PREFIX, shards=SHARDS)
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._client = r.client(socket_timeout=0.5, socket_connect_timeout=0.5)

    def __enter__(self) -> Monitor:
        self.samples.append(self.sample())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(self.sample())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.sample())

    def sample(self) -> Sample:
        s = Sample(time.monotonic())
        if self.api is not None and self.api.proc is not None:
            with contextlib.suppress(OSError, AssertionError):
                for pid in self.api.pids():
                    if (rss := rss_of(pid)) is not None:
                        s.rss[pid] = rss
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.info("memory")
            for shard in range(SHARDS):
                pipe.xlen(self.keys.outbox(shard))
            pipe.llen(f"rq:queue:{QUEUE}")
            pipe.zcard(f"rq:failed:{QUEUE}")
            memory, *xlens, queued, failed = pipe.execute()
        except redis.RedisError:
            return s  # Redis is down or loading: a gap in the samples
        s.used_memory, s.queued, s.failed = memory["used_memory"], queued, failed
        s.xlen = sum(xlens)
        return s

    def peak(self, name: str, since: float = 0.0, until: float = float("inf")) -> int:
        values = [getattr(s, name) for s in self.samples if since <= s.t <= until]
        return max((v for v in values if v is not None), default=0)

    def first(self, name: str) -> int:
        return next((getattr(s, name) for s in self.samples if getattr(s, name) is not None), 0)

    def rss_growth(self, since: float = 0.0, until: float = float("inf")) -> tuple[int, int]:
        """(largest RSS of one API process, largest growth of one over its first sample)."""
        first: dict[int, int] = {}
        top = growth = 0
        for s in self.samples:
            for pid, rss in s.rss.items():
                if s.t < since:
                    first[pid] = rss
                    continue
                if s.t > until:
                    continue
                first.setdefault(pid, rss)
                top, growth = max(top, rss), max(growth, rss - first[pid])
        return top, growth


# -- clients --------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients were told."""

    acked: dict[str, str] = field(default_factory=dict)  # idempotency key: activity id
    acked_at: dict[str, float] = field(default_factory=dict)
    sent: int = 0  # keys sent at least once
    statuses: Counter[int] = field(default_factory=Counter)
    replays: int = 0
    conn_errors: int = 0
    timeouts: int = 0
    retried: set[str] = field(default_factory=set)  # keys sent again after a 503 or an error
    given_up: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # answered a 4xx
    times_503: list[float] = field(default_factory=list)
    times_5xx: list[float] = field(default_factory=list)  # 5xx other than 503
    unexpected: list[str] = field(default_factory=list)  # a few answers that were not 2xx/503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, text: str) -> None:
        if len(self.unexpected) < 5:
            self.unexpected.append(text[:300])


class AwardClients:
    """``threads`` threads POSTing ``/v1/users/{id}/awards`` with an ``Idempotency-Key`` each
    (the key is also the description), over keep-alive connections. A 503, any other 5xx or a
    broken connection is retried with the same key (backoff 50 ms doubling to 0.5 s) until a
    2xx, a 4xx, or :data:`KEY_RETRY_S`. Sends ``total`` awards in all, or until ``stop()``."""

    def __init__(self, port: int, tag: str, threads: int, users: int, total: int | None) -> None:
        self.port, self.tag, self.users, self.total = port, tag, users, total
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i, threads), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> AwardClients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    @property
    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def acked(self) -> int:
        return len(self.ledger.acked)

    def _run(self, me: int, threads: int) -> None:
        share = None if self.total is None else self.total // threads + (me < self.total % threads)
        conn: http.client.HTTPConnection | None = None
        i = 0
        while not self._stop.is_set() and (share is None or i < share):
            key = f"{self.tag}-{me}-{i}"
            user = f"{self.tag}-u{(me * 7919 + i) % self.users}"
            body = json.dumps({"activity_type": TYPES[i % 3], "description": key}).encode()
            conn = self._award(conn, key, user, body)
            i += 1
        if conn is not None:
            conn.close()

    def _award(
        self, conn: http.client.HTTPConnection | None, key: str, user: str, body: bytes
    ) -> http.client.HTTPConnection | None:
        ledger, deadline, pause = self.ledger, time.monotonic() + KEY_RETRY_S, 0.05
        headers = {"X-API-Key": API_KEY, "Idempotency-Key": key,
                   "Content-Type": "application/json"}  # fmt: skip
        with ledger.lock:
            ledger.sent += 1
        while True:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
                conn.request("POST", f"/v1/users/{user}/awards", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                with ledger.lock:
                    ledger.statuses[status] += 1
                    if status in (200, 201):
                        ledger.acked[key] = json.loads(data)["point_activity"]["id"]
                        ledger.acked_at[key] = time.monotonic()
                        ledger.replays += resp.getheader("Idempotent-Replayed") == "true"
                        return conn
                    if 400 <= status < 500:
                        ledger.refused.add(key)
                        ledger.note(f"{status} {key}: {data[:200]!r}")
                        return conn
                    ledger.retried.add(key)
                    if status == 503:
                        ledger.times_503.append(time.monotonic())
                    else:
                        ledger.times_5xx.append(time.monotonic())
                        ledger.note(f"{status} {key}: {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
                with ledger.lock:
                    if isinstance(exc, TimeoutError):
                        ledger.timeouts += 1
                    else:
                        ledger.conn_errors += 1
                    ledger.retried.add(key)
                if conn is not None:
                    conn.close()
                conn = None
            if time.monotonic() > deadline:
                with ledger.lock:
                    ledger.given_up.add(key)
                return conn
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


# -- the verdict ----------------------------------------------------------------------------


def backlog(r: redis.Redis) -> int:
    """Outbox entries not yet acknowledged by the drain's group (pending or never read)."""
    keys, left = Keys(prefix=PREFIX, shards=SHARDS), 0
    for shard in range(SHARDS):
        outbox = keys.outbox(shard)
        if not r.exists(outbox):
            continue
        groups = [g for g in r.xinfo_groups(outbox) if g["name"] == GROUP]
        if not groups:
            left += r.xlen(outbox)
            continue
        group = groups[0]
        lag = group.get("lag")
        left += int(group["pending"]) + (int(lag) if lag is not None else r.xlen(outbox))
    return left


def xlens(r: redis.Redis) -> tuple[list[int], int]:
    """(each shard's outbox XLEN, dead letters in all shards)."""
    keys = Keys(prefix=PREFIX, shards=SHARDS)
    outboxes = [r.xlen(keys.outbox(s)) for s in range(SHARDS)]
    return outboxes, sum(r.xlen(keys.dead_letters(s)) for s in range(SHARDS))


def sql_count(conninfo: str) -> int:
    with psycopg.connect(conninfo) as c:
        row = c.execute("SELECT count(*) FROM point_activity").fetchone()
    return int(row[0]) if row else 0


def check_drained(report: Report, r: redis.Redis, since: float, what: str, wait: float) -> None:
    """How long the running workers took to empty the backlog (target
    :data:`DRAINED_WITHIN_S`; waits up to ``wait`` seconds from ``since``, to show it)."""
    keys = Keys(prefix=PREFIX, shards=SHARDS)
    locks = {s: r.pttl(keys.drain_lock(s)) for s in range(SHARDS)}
    pending_now = pending(r)
    wait_until(lambda: backlog(r) == 0, wait - (time.monotonic() - since), 0.1)
    seconds, left = time.monotonic() - since, backlog(r)
    value = f"{seconds:.1f} s" if left == 0 else f"{n(left)} entries left after {seconds:.0f} s"
    ok = left == 0 and seconds <= DRAINED_WITHIN_S
    report.add(f"backlog drained by the running workers after {what}", value,
               f"<= {DRAINED_WITHIN_S:g} s", ok)  # fmt: skip
    held = [f"shard {s}: {ttl / 1000:.1f} s" for s, ttl in locks.items() if ttl > 0]
    report.add("  then: entries pending (read, not acknowledged); drain locks held (TTL)",
               f"{n(pending_now)}; {', '.join(held) or 'none'}")  # fmt: skip
    if left:
        flags = {s: r.pttl(keys.drain_flag(s)) for s in range(SHARDS)}
        raised = [f"shard {s}: {ttl / 1000:.1f} s" for s, ttl in flags.items() if ttl > 0]
        report.add("  at the end: drain flags raised (TTL); RQ jobs queued, running",
                   f"{', '.join(raised) or 'none'}; {r.llen(f'rq:queue:{QUEUE}')}, "
                   f"{r.zcard(f'rq:wip:{QUEUE}')}")  # fmt: skip


def reconcile(report: Report, env: dict[str, str], label: str) -> None:
    """``scoring reconcile`` (which drains every shard first)."""
    started = time.monotonic()
    done = subprocess.run([PYTHON, "-m", "scoring.cli", "reconcile"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    errors = [x for x in done.stderr.splitlines() if x.startswith("scoring:")]
    summary = lines[-1] if lines else (errors[-1][:120] + "...") if errors else "no output"
    report.add(label, f"{summary} (exit {done.returncode}, {time.monotonic() - started:.1f} s)",
               "no drift", done.returncode == 0 and summary == "no drift")  # fmt: skip
    if done.returncode:
        report.notes.append(f"{label}: " + " | ".join(lines[:5]))


def check_sql(report: Report, ledger: Ledger, conninfo: str, tag: str | None) -> None:
    """Every acknowledged award in SQL exactly once: by activity id, and (when the awards carry
    their idempotency key as description, ``tag``) one row per key, with the acknowledged id."""
    ids = [uuid.UUID(i) for i in ledger.acked.values()]
    with psycopg.connect(conninfo) as c:
        found = {
            str(row[0])
            for row in c.execute("SELECT id FROM point_activity WHERE id = ANY(%s)", (ids,))
        } if ids else set()  # fmt: skip
        by_key: dict[str, tuple[int, str]] = {}
        if tag is not None:
            rows = c.execute(
                "SELECT description, count(*), min(id::text) FROM point_activity "
                "WHERE starts_with(description, %s) GROUP BY description", (tag + "-",),
            )  # fmt: skip
            by_key = {d: (int(k), i) for d, k, i in rows}
    missing = [key for key, aid in ledger.acked.items() if aid not in found]
    report.add("acknowledged awards in SQL", f"{n(len(ledger.acked) - len(missing))} of "
               f"{n(len(ledger.acked))}", "all", not missing)  # fmt: skip
    if missing:
        report.notes.append(f"acknowledged but not in SQL (first 5): {missing[:5]}")
    if tag is None:
        return
    dups = {k: c for k, (c, _) in by_key.items() if c > 1}
    report.add("idempotency keys with more than one row", n(len(dups)), "0", not dups)
    wrong = [k for k, aid in ledger.acked.items() if k in by_key and by_key[k][1] != aid
             and by_key[k][0] == 1]  # fmt: skip
    report.add("rows whose id is not the acknowledged activity id", n(len(wrong)), "0", not wrong)
    extra = len(set(by_key) - set(ledger.acked))
    if extra:
        report.add("  rows of keys never acknowledged (the client gave up)", n(extra))


def check_answers(
    report: Report, ledger: Ledger, outages: Sequence[tuple[float, float]], *, allow_503: bool
) -> None:
    """The clients' side: 5xx, 503s inside and outside the outages, retries, hangs."""
    statuses = ", ".join(f"{s}: {n(c)}" for s, c in sorted(ledger.statuses.items()))
    report.add("answers by status", statuses or "none")
    report.add("5xx other than 503", n(len(ledger.times_5xx)), "0", not ledger.times_5xx)

    def during(t: float) -> bool:
        return any(a <= t <= b + OUTAGE_GRACE_S for a, b in outages)

    inside = sum(map(during, ledger.times_503))
    outside = len(ledger.times_503) - inside
    if allow_503:
        report.add("503s during the outage", n(inside))
        report.add(f"503s outside it (+{OUTAGE_GRACE_S:g} s)", n(outside), "0", outside == 0)
    else:
        report.add("503s (the award path does not need this dependency)",
                   n(len(ledger.times_503)), "0", not ledger.times_503)  # fmt: skip
    later = len([k for k in ledger.retried if k in ledger.acked])
    report.add(
        "keys retried after a 503 or a broken connection",
        f"{n(len(ledger.retried))}, same key each time; {n(later)} acknowledged later",
    )
    report.add("  of which answered as a replay (Idempotent-Replayed)", n(ledger.replays))
    report.add("keys given up (no 2xx within 60 s of retries)", n(len(ledger.given_up)), "0",
               not ledger.given_up)  # fmt: skip
    report.add("keys refused with a 4xx", n(len(ledger.refused)), "0", not ledger.refused)
    report.add(f"requests unanswered within {CLIENT_TIMEOUT_S:g} s (hangs)", n(ledger.timeouts),
               "0", ledger.timeouts == 0)  # fmt: skip
    report.add("broken connections to the API", n(ledger.conn_errors))
    if ledger.unexpected:
        report.notes.append("unexpected answers: " + " | ".join(ledger.unexpected))


def check_memory(
    report: Report,
    m: Monitor,
    awards: int,
    *,
    faults: int,
    steady: Sequence[tuple[float, float]] = ((0.0, float("inf")),),
    failed_bound: int | None = None,
) -> None:
    base = m.first("used_memory")
    peak = m.peak("used_memory")
    bound = REDIS_BASE_MB * 2**20 + REDIS_PER_AWARD * awards
    report.add("Redis used_memory, peak (start)", f"{mb(peak)} ({mb(base)})",
               f"<= start + {mb(bound)}", peak - base <= bound)  # fmt: skip
    if steady:
        xlen = max(m.peak("xlen", a, b) for a, b in steady)
        report.add("outbox XLEN, peak (all shards) while SQL is up", n(xlen), f"<= {n(MAX_XLEN)}",
                   xlen <= MAX_XLEN)  # fmt: skip
    else:
        report.add("outbox XLEN, peak (all shards)", n(m.peak("xlen")))
    queued = m.peak("queued")
    report.add("RQ queue length, peak", n(queued), f"<= {MAX_QUEUED}", queued <= MAX_QUEUED)
    failed = m.peak("failed") - m.first("failed")
    bound_failed = failed_bound if failed_bound is not None else FAILED_PER_FAULT * faults
    report.add("RQ failed-job registry, peak", n(failed), f"<= {n(bound_failed)}",
               failed <= bound_failed)  # fmt: skip
    if m.api is not None:
        top, growth = m.rss_growth()
        report.add("API process RSS, largest (growth)", f"{mb(top)} ({mb(growth)})",
                   f"growth <= {RSS_GROWTH_MB} MB", growth <= RSS_GROWTH_MB * 2**20)  # fmt: skip


def check_final(report: Report, r: redis.Redis) -> None:
    outboxes, dead = xlens(r)
    left = backlog(r)
    report.add("backlog after the final drain", n(left), "0", left == 0)
    report.add("outbox XLEN per shard after the final drain", " / ".join(map(n, outboxes)),
               f"<= {MAX_XLEN_DRAINED}", max(outboxes) <= MAX_XLEN_DRAINED)  # fmt: skip
    report.add("dead letters", n(dead), "0", dead == 0)


def verdict(
    report: Report,
    *,
    env: dict[str, str],
    r: redis.Redis,
    ledger: Ledger,
    conninfo: str,
    tag: str | None,
) -> None:
    """What every scenario ends with, after its own checks: ``scoring reconcile`` (which drains
    first); if its drain left entries in the outbox (read by a drain that failed, and not yet
    claimable: pending for less than the claim idle time), ``scoring reconcile`` again once
    they are; then SQL exactly once, the outbox drained and trimmed, no dead letters."""
    reconcile(report, env, "scoring reconcile (drains first)")
    left = backlog(r)
    if left:
        report.add("  entries its drain left in the outbox (not acknowledged)", n(left), "0", False)
        wait = CLAIM_IDLE_S + 3
        time.sleep(wait)
        reconcile(report, env, f"  scoring reconcile again, {wait:g} s later")
    check_sql(report, ledger, conninfo, tag)
    check_final(report, r)


@contextlib.contextmanager
def stage(folder: Path, pg: PgCluster, db: str, appendfsync: str) -> Iterator[Stage]:
    """Redis, a fresh database with the schema, and the processes' environment."""
    r = RedisServer(folder, appendfsync)
    r.start()
    try:
        sql_url = pg.fresh_database(db)
        env = process_env(r, sql_url, folder)
        why = db_upgrade(env)
        if why:
            raise RuntimeError(why)
        yield Stage(folder, r, env, pg.conninfo(db), r.client())
    finally:
        r.stop()


@dataclass
class Stage:
    folder: Path
    redis: RedisServer
    env: dict[str, str]
    conninfo: str
    client: redis.Redis


@contextlib.contextmanager
def api(st: Stage) -> Iterator[Server]:
    server = scoring_server(st.env, st.folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def api_alive(report: Report, server: Server, pids: set[int]) -> None:
    now = set(server.workers()) if server.proc and server.proc.poll() is None else set()
    report.add("API processes alive, none restarted",
               "yes" if now == pids else f"workers were {sorted(pids)}, now {sorted(now)}",
               "yes", now == pids)  # fmt: skip


# -- (a) Redis killed -----------------------------------------------------------------------


def redis_kill(sizes: Sizes, pg: PgCluster, folder: Path, appendfsync: str = "always") -> Report:
    report = Report("redis-kill", f"SIGKILL Redis (AOF on, appendfsync {appendfsync}) during "
                    f"awards over HTTP, restart on the same port and file")  # fmt: skip
    started = time.monotonic()
    tag = "fa"
    with stage(folder, pg, "faults_a", appendfsync) as st, api(st) as server:
        pids = set(server.workers())
        with Monitor(st.redis, server) as m, Supervisor.production(st.env, folder) as sup:
            outages: list[tuple[float, float]] = []
            restarts: list[float] = []
            keys = Keys(prefix=PREFIX, shards=SHARDS)
            locks = [keys.drain_lock(s) for s in range(SHARDS)]
            mid_drain = 0
            with AwardClients(server.port, tag, sizes.threads, sizes.users, sizes.awards) as cl:
                for k in range(sizes.redis_kills):
                    point = sizes.awards * (k + 1) // (sizes.redis_kills + 1)
                    wait_until(lambda p=point: cl.acked() >= p or cl.done, 600)
                    # the worst moment: while a drain holds a shard (it is mid-batch)
                    mid_drain += wait_until(lambda: any(map(st.client.exists, locks)), 3, 0.002)
                    killed = time.monotonic()
                    log(f"redis-kill: SIGKILL Redis at {cl.acked():,} acknowledged")
                    st.redis.kill()
                    time.sleep(sizes.redis_down_s)
                    restarts.append(st.redis.start())
                    outages.append((killed, time.monotonic()))
                cl.join()
            last = time.monotonic()
            ledger = cl.ledger
            report.add("awards sent (idempotency keys)", n(ledger.sent))
            report.add("acknowledged (201/200)", n(len(ledger.acked)))
            report.add(
                "Redis kills (while a drain held a shard); restart (AOF load) seconds",
                f"{len(restarts)} ({mid_drain}); " + ", ".join(f"{s:.2f}" for s in restarts),
            )
            check_answers(report, ledger, outages, allow_503=True)
            api_alive(report, server, pids)
            report.add("process exits (restarted, as a supervisor would)", sup.exited())
            check_drained(report, st.client, last, "the last award", sizes.drain_wait_s)
        # Redis is up between the outages: [start, kill 1], [back 1, kill 2], ... [back n, end]
        edges = [0.0, *(t for outage in outages for t in outage), float("inf")]
        steady = list(zip(edges[0::2], edges[1::2], strict=True))
        check_memory(report, m, len(ledger.acked), faults=len(outages), steady=steady)
        verdict(report, env=st.env, r=st.client, ledger=ledger, conninfo=st.conninfo, tag=tag)
    report.seconds = time.monotonic() - started
    return report


# -- (b) workers killed ---------------------------------------------------------------------

GATE_LOCK = 7_240_012
GATE_SQL = f"""
CREATE OR REPLACE FUNCTION faults_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({GATE_LOCK});
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS faults_gate ON point_activity;
CREATE TRIGGER faults_gate BEFORE INSERT ON point_activity
    FOR EACH STATEMENT EXECUTE FUNCTION faults_gate();
"""


class Gate:
    """A statement trigger on ``point_activity`` that waits for an advisory lock the harness
    may hold: while it does, a drain waits inside its transaction, before the INSERT."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(GATE_SQL)

    def close_gate(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))

    def open_gate(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))

    def waiting(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
            "AND NOT granted", (GATE_LOCK,),
        ).fetchone()  # fmt: skip
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


def fill(engine: ScoringEngine, ledger: Ledger, tag: str, count: int, users: int) -> None:
    """``count`` awards through ``award_many``, keys ``{tag}-{i}`` (also the descriptions)."""
    for start in range(0, count, 1000):
        items = []
        for i in range(start, min(start + 1000, count)):
            key = f"{tag}-{i}"
            items.append(AwardRequest(f"{tag}-u{i % users}", TYPES[i % 3], description=key,
                                      idempotency_key=key))  # fmt: skip
        for item, result in zip(items, engine.award_many(items), strict=True):
            assert item.idempotency_key is not None
            if isinstance(result, Exception):
                ledger.note(f"{item.idempotency_key}: {result}")
                continue
            ledger.acked[item.idempotency_key] = result.activity.id
        ledger.sent += len(items)


def pending(r: redis.Redis) -> int:
    keys = Keys(prefix=PREFIX, shards=SHARDS)
    total = 0
    for shard in range(SHARDS):
        with contextlib.suppress(redis.ResponseError):
            total += int(r.xpending(keys.outbox(shard), GROUP)["pending"])
    return total


def recover(report: Report, st: Stage, label: str) -> None:
    """A fresh ``scoring worker --burst``: how long it took, and what it left."""
    started = time.monotonic()
    burst = worker_proc(st.env, st.folder, f"burst-{label}", burst=True).start()
    rc = burst.wait(120)
    seconds = time.monotonic() - started
    if rc is None:
        burst.kill()
    left = backlog(st.client)
    report.add("  then scoring worker --burst: exit, seconds",
               f"{'timed out' if rc is None else rc}, {seconds:.1f} s",
               f"0, <= {RECOVERY_S:g} s", rc == 0 and seconds <= RECOVERY_S)  # fmt: skip
    report.add("  backlog after the burst", n(left), "0", left == 0)


def gated_kill(report: Report, st: Stage, gate: Gate, mode: str, size: int) -> None:
    """Kill a worker while it waits at the gate inside a batch's transaction (``transaction``),
    or after it committed the batch, while its XACK waits on ``CLIENT PAUSE WRITE``
    (``commit``)."""
    before = sql_count(st.conninfo)
    gate.close_gate()
    w = worker_proc(st.env, st.folder, f"worker-{mode}").start()
    try:
        at_gate = wait_until(lambda: gate.waiting() > 0 or not w.alive, 60)
        time.sleep(0.5)  # let it read its next batch too: it now waits on SQL only
        if mode == "transaction":
            w.kill()
            gate.open_gate()
        else:
            st.client.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
            try:
                gate.open_gate()
                wait_until(lambda: sql_count(st.conninfo) > before, 20, 0.01)
                time.sleep(0.3)  # the commit returned; the XACK waits on the pause
                w.kill()
            finally:
                st.client.execute_command("CLIENT", "UNPAUSE")
    finally:
        w.kill()
    rows, left = sql_count(st.conninfo) - before, pending(st.client)
    if mode == "transaction":
        where, target, ok = "inside a batch's SQL transaction", "0 rows", rows == 0
    else:
        where, target = "between a batch's commit and its XACK", "rows > 0, entries pending"
        ok = rows > 0 and left > 0
    report.add(f"backlog {n(size)}: killed {where}",
               f"{'at the gate' if at_gate else 'NOT at the gate'}: {n(rows)} rows committed, "
               f"{n(left)} entries pending", target, at_gate and ok)  # fmt: skip


def worker_kill(sizes: Sizes, pg: PgCluster, folder: Path, appendfsync: str = "always") -> Report:
    report = Report("worker-kill", "SIGKILL a worker mid-drain, inside a batch's transaction and "
                    "between its commit and XACK; a fresh worker --burst finishes")  # fmt: skip
    started = time.monotonic()
    tag = "fb"
    ledger = Ledger()
    with stage(folder, pg, "faults_b", appendfsync) as st, Monitor(st.redis, None) as m:
        # as the API's award path does: an award that raises a shard's drain flag queues its job
        queue = DrainQueue.from_url(st.redis.url, name=QUEUE)
        engine = ScoringEngine.from_url(st.redis.url, shards=SHARDS, drain_queue=queue)
        gate = Gate(st.conninfo)
        kills = 0
        try:
            if sizes.backlog:
                fill(engine, ledger, f"{tag}-r", sizes.backlog, sizes.users)
                before = sql_count(st.conninfo)
                target = before + random.uniform(0.2, 0.6) * sizes.backlog
                w = worker_proc(st.env, folder, "worker-random").start()
                wait_until(lambda: sql_count(st.conninfo) >= target or not w.alive, 120, 0.02)
                w.kill()
                kills += 1
                rows = sql_count(st.conninfo) - before
                report.add(
                    f"backlog {n(sizes.backlog)}: killed at a random point",
                    f"{n(rows)} rows written, {n(pending(st.client))} entries pending",
                )
                recover(report, st, "random")
            for mode in ("transaction", "commit"):
                fill(engine, ledger, f"{tag}-{mode[0]}", sizes.gate_backlog, sizes.users)
                gated_kill(report, st, gate, mode, sizes.gate_backlog)
                kills += 1
                recover(report, st, mode)
        finally:
            gate.close()
            engine.close()
        report.add("awards in the backlogs (acknowledged by award_many)", n(len(ledger.acked)))
        check_memory(report, m, len(ledger.acked), faults=kills, steady=())
        verdict(report, env=st.env, r=st.client, ledger=ledger, conninfo=st.conninfo, tag=tag)
    report.seconds = time.monotonic() - started
    return report


# -- (c) PostgreSQL away --------------------------------------------------------------------


def jobs_ended(r: redis.Redis) -> int:
    """RQ jobs of the queue finished or failed so far (kept 300 s and a day by the engine)."""
    return int(r.zcard(f"rq:finished:{QUEUE}")) + int(r.zcard(f"rq:failed:{QUEUE}"))


def sql_outage(sizes: Sizes, pg: PgCluster, folder: Path, appendfsync: str = "always") -> Report:
    report = Report("sql-outage", "PostgreSQL stopped (pg_ctl -m immediate) and started again "
                    "during awards over HTTP; two workers and the scheduler go on")  # fmt: skip
    started = time.monotonic()
    tag = "fc"
    with stage(folder, pg, "faults_c", appendfsync) as st, api(st) as server:
        pids = set(server.workers())
        with Monitor(st.redis, server) as m, Supervisor.production(st.env, folder) as sup:
            with AwardClients(server.port, tag, sizes.threads, sizes.users, None) as cl:
                time.sleep(sizes.load_s)
                down = time.monotonic()
                failed_before, ended_before = m.sample().failed or 0, jobs_ended(st.client)
                log(f"sql-outage: pg_ctl -m immediate stop at {cl.acked():,} acknowledged")
                pg.crash()
                acked_before = cl.acked()
                time.sleep(sizes.outage_s)
                failed_during = (m.sample().failed or 0) - failed_before
                ended_during = jobs_ended(st.client) - ended_before
                acked_during = cl.acked() - acked_before
                backlog_peak = backlog(st.client)
                pg.start()
                up = time.monotonic()
                time.sleep(sizes.load_s)
                cl.stop()
                cl.join()
            last = time.monotonic()
            ledger = cl.ledger
            report.add("awards sent (idempotency keys)", n(ledger.sent))
            report.add("acknowledged (201/200)", n(len(ledger.acked)))
            outage = up - down
            report.add("outage seconds", f"{outage:.1f}")
            report.add("awards acknowledged during the outage", n(acked_during), "> 0",
                       acked_during > 0)  # fmt: skip
            report.add("backlog at the end of the outage", n(backlog_peak))
            bound = int(SHARDS * (outage / BACKOFF_FLOOR_S + 1))
            per = f"<= {bound} (1 per shard per {BACKOFF_FLOOR_S:g} s)"
            report.add("failed RQ drain jobs during the outage", n(failed_during), per,
                       failed_during <= bound)  # fmt: skip
            report.add("RQ jobs that ended during it (finished or failed)", n(ended_during), per,
                       ended_during <= bound)  # fmt: skip
            check_answers(report, ledger, [], allow_503=False)
            api_alive(report, server, pids)
            report.add("process exits (restarted, as a supervisor would)", sup.exited())
            check_drained(report, st.client, up, "PostgreSQL came back", sizes.drain_wait_s)
            report.add("  seconds since the last award", f"{time.monotonic() - last:.1f}")
        check_memory(report, m, len(ledger.acked), faults=1, steady=[(0.0, down)],
                     failed_bound=bound + FAILED_PER_FAULT)  # fmt: skip
        verdict(report, env=st.env, r=st.client, ledger=ledger, conninfo=st.conninfo, tag=tag)
    report.seconds = time.monotonic() - started
    return report


# -- (d) malformed and oversized requests ---------------------------------------------------


@dataclass
class Answer:
    status: int | None  # None: no answer (the connection closed, or nothing within the timeout)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    timed_out: bool = False

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def error(self) -> dict[str, Any]:
        err = self.json().get("error")
        return err if isinstance(err, dict) else {}

    @property
    def client_error(self) -> bool:
        return self.status is not None and 400 <= self.status < 500

    @property
    def closed(self) -> bool:
        """The server closed the connection without answering (not a hang)."""
        return self.status is None and not self.timed_out

    def __str__(self) -> str:
        if self.status is None:
            return "no answer (timed out)" if self.timed_out else "closed without an answer"
        code, where = self.error.get("code"), self.error.get("field")
        return f"{self.status}" + (f" {code}" if code else "") + (f" ({where})" if where else "")


def read_answer(f: BinaryIO, started: float) -> Answer:
    """One HTTP/1.1 response from the socket file ``f``."""
    try:
        line = f.readline(65537)
        if not line:
            return Answer(None, seconds=time.monotonic() - started)
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (h := f.readline(65537).strip()) != b"":
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(f.readline().strip() or b"0", 16):
                body += f.read(size)
                f.readline()
            f.readline()
        else:
            body = f.read(int(headers.get("content-length", "0")))
        return Answer(status, headers, body, time.monotonic() - started)
    except TimeoutError:
        return Answer(None, seconds=time.monotonic() - started, timed_out=True)
    except (OSError, ValueError, IndexError):
        return Answer(None, seconds=time.monotonic() - started)


Headers = dict[str, str | bytes]
KEY_HEADERS: Headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}


def head(method: str, path: str, headers: Headers, length: int | None, extra: bytes = b"") -> bytes:
    """A request's head; ``extra``: raw header lines appended as they are."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in headers.items():
        raw = value if isinstance(value, bytes) else value.encode()
        lines.append(name.encode() + b": " + raw)
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    if extra:
        lines.append(extra)
    return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass
class Probes:
    """The malformed-request probes' connection to the server: every answer any probe got is
    kept (a 5xx fails the scenario whatever the probe expected), and every award it answered
    2xx joins the ledger (it must reach SQL like any other)."""

    port: int
    server: Server
    sizes: Sizes
    ledger: Ledger = field(default_factory=Ledger)
    answers: list[tuple[str, Answer]] = field(default_factory=list)
    probe: str = ""

    def seen(self, a: Answer) -> Answer:
        self.answers.append((self.probe, a))
        activity = a.json().get("point_activity")
        if a.status in (200, 201) and isinstance(activity, dict):
            self.ledger.acked[f"{self.probe}-{len(self.ledger.acked)}"] = activity["id"]
        return a

    def exchange(self, data: bytes, timeout: float = CLIENT_TIMEOUT_S) -> Answer:
        """Send ``data`` on a new connection; the first answer."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            with contextlib.suppress(OSError):  # it may answer and close before reading it all
                s.sendall(data)
            return self.seen(read_answer(s.makefile("rb"), started))

    def post(self, path: str, body: bytes, headers: Headers | None = None,
             method: str = "POST") -> Answer:  # fmt: skip
        headers = {**KEY_HEADERS, **(headers or {})}
        return self.exchange(head(method, path, headers, len(body)) + body)

    def get(self, path: str, headers: Headers | None = None) -> Answer:
        return self.exchange(head("GET", path, {"X-API-Key": API_KEY, **(headers or {})}, None))

    def api_rss(self) -> dict[int, int]:
        return {p: r for p in self.server.workers() if (r := rss_of(p)) is not None}

    def chunked(
        self, path: str, headers: Headers, total: int, pause_at: int | None
    ) -> tuple[Answer, int, int]:
        """POST a chunked body of ``total`` bytes (64 KB chunks) while reading the answer; with
        ``pause_at``, stop sending there for up to 3 s to see whether the server answers first.
        Returns (the answer, bytes sent when it came, peak RSS growth of one API worker)."""
        before = self.api_rss()
        peak = dict(before)
        s = socket.create_connection(("127.0.0.1", self.port), timeout=CLIENT_TIMEOUT_S)
        started = time.monotonic()
        s.sendall(head("POST", path, {**headers, "Transfer-Encoding": "chunked"}, None))
        box: list[Answer] = []
        answered = threading.Event()
        sent = at_answer = 0

        def reader() -> None:
            nonlocal at_answer
            box.append(read_answer(s.makefile("rb"), started))
            at_answer = sent
            answered.set()

        threading.Thread(target=reader, daemon=True).start()
        chunk = b"7" * 65536
        frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        sampled = 0.0
        try:
            while sent < total and not answered.is_set():
                if pause_at is not None and sent >= pause_at:
                    answered.wait(3.0)
                    pause_at = None
                    continue
                s.sendall(frame)
                sent += len(chunk)
                if time.monotonic() - sampled > 0.05:
                    sampled = time.monotonic()
                    for pid, rss in self.api_rss().items():
                        peak[pid] = max(peak.get(pid, 0), rss)
            if not answered.is_set():
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed, or stopped reading for 10 s
        answered.wait(CLIENT_TIMEOUT_S)
        for pid, rss in self.api_rss().items():
            peak[pid] = max(peak.get(pid, 0), rss)
        s.close()
        growth = max((peak[p] - before.get(p, peak[p]) for p in peak), default=0)
        if not box:
            return self.seen(Answer(None, seconds=CLIENT_TIMEOUT_S, timed_out=True)), sent, growth
        return self.seen(box[0]), at_answer, growth


def expect(name: str, a: Answer, statuses: set[int], code: str | None = None,
           where: str | None = None) -> Check:  # fmt: skip
    target = "/".join(map(str, sorted(statuses))) + (f" {code}" if code else "")
    target += f" ({where})" if where else ""
    ok = a.status in statuses and (code is None or a.error.get("code") == code)
    ok = ok and (where is None or a.error.get("field") == where)
    return Check(name, f"{a} in {a.seconds:.2f} s", target, ok)


def probe_big_body(p: Probes) -> list[Check]:
    total = p.sizes.big_body_mb * 2**20
    a, sent, growth = p.chunked("/v1/users/fd-big/awards", {"Content-Type": "application/json"},
                                total, None)  # fmt: skip
    return [
        Check(
            f"chunked {p.sizes.big_body_mb} MB body, no credentials",
            f"{a} after {mb(sent)} sent",
            "401/413",
            a.status in (401, 413),
        ),  # fmt: skip
        Check(
            "  answered within",
            f"{a.seconds:.2f} s",
            f"<= {REFUSE_WITHIN_S:g} s",
            a.status is not None and a.seconds <= REFUSE_WITHIN_S,
        ),  # fmt: skip
        Check(
            "  API worker RSS growth",
            mb(growth),
            f"<= {RSS_GROWTH_BODY_MB} MB",
            growth <= RSS_GROWTH_BODY_MB * 2**20,
        ),  # fmt: skip
    ]


def probe_3mb_body(p: Probes) -> list[Check]:
    total, pause = 3 * 2**20, 5 * 2**19  # stops at 2.5 MB for up to 3 s
    a, sent, _ = p.chunked("/v1/users/fd-3mb/awards", KEY_HEADERS, total, pause)
    return [
        Check(
            "chunked 3 MB body, valid key",
            f"{a} after {mb(sent)} sent",
            "413 too_large",
            a.status == 413 and a.error.get("code") == "too_large",
        ),  # fmt: skip
        Check(
            "  answered before the whole body was sent",
            f"{mb(sent)} of {mb(total)}",
            "< 3.0 MB",
            a.status is not None and sent < total,
        ),  # fmt: skip
    ]


def probe_length_over(p: Probes) -> list[Check]:
    a = p.exchange(head("POST", "/v1/users/fd-cl/awards", KEY_HEADERS, 3 * 2**20))
    return [expect("Content-Length: 3 MB, nothing sent", a, {413}, "too_large")]


def probe_length_longer(p: Probes) -> list[Check]:
    """Content-Length says more than comes, and the client half-closes."""
    body = b'{"activity_type": "comment"}'
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", p.port), timeout=CLIENT_TIMEOUT_S) as s:
        s.sendall(head("POST", "/v1/users/fd-short/awards", KEY_HEADERS, len(body) + 100) + body)
        s.shutdown(socket.SHUT_WR)
        a = p.seen(read_answer(s.makefile("rb"), started))
    return [Check("Content-Length 100 more than the body, then EOF", f"{a} in {a.seconds:.2f} s",
                  "4xx or closed", a.client_error or a.closed)]  # fmt: skip


def probe_length_shorter(p: Probes) -> list[Check]:
    """Content-Length says 10 of a 41-byte body: the rest reads as the next request."""
    body = b'{"activity_type": "comment", "amount": 5}'
    started = time.monotonic()
    answers = []
    with socket.create_connection(("127.0.0.1", p.port), timeout=3) as s:
        s.sendall(head("POST", "/v1/users/fd-long/awards", KEY_HEADERS, 10) + body)
        f = s.makefile("rb")
        for _ in range(3):
            a = p.seen(read_answer(f, started))
            if a.status is None:
                break
            answers.append(a)
    ok = bool(answers) and all(a.client_error for a in answers)
    return [
        Check("Content-Length 10 of a 41-byte body", ", ".join(map(str, answers)) or "closed",
              "4xx or closed", ok or not answers)
    ]  # fmt: skip


def probe_length_garbage(p: Probes) -> list[Check]:
    body = b'{"activity_type": "comment"}'
    chunked = b"1c\r\n" + body + b"\r\n0\r\n\r\n"
    cases = [
        ("Content-Length: 12abc", b"Content-Length: 12abc", body),
        ("Content-Length: -1", b"Content-Length: -1", body),
        ("two differing Content-Lengths", b"Content-Length: 28\r\nContent-Length: 5", body),
        ("Content-Length and chunked", b"Content-Length: 5\r\nTransfer-Encoding: chunked", chunked),
    ]
    checks = []
    for label, extra, framed in cases:
        a = p.exchange(head("POST", "/v1/users/fd-garbage/awards", KEY_HEADERS, None, extra)
                       + framed, timeout=3)  # fmt: skip
        checks.append(Check(label, f"{a} in {a.seconds:.2f} s", "4xx or closed",
                            a.client_error or a.closed))  # fmt: skip
    return checks


def json_probe(label: str, body: bytes) -> Callable[[Probes], list[Check]]:
    def run(p: Probes) -> list[Check]:
        return [expect(label, p.post("/v1/users/fd-json/awards", body), {422}, "invalid_json")]

    return run


def probe_nul(p: Probes) -> list[Check]:
    nul = "a\u0000b"
    award = json.dumps({"activity_type": "comment", "description": nul}).encode()
    seed = json.dumps({"amount": 5, "activity_type": "comment", "description": nul}).encode()
    checks = [
        expect("NUL in description (award)", p.post("/v1/users/fd-nul/awards", award), {422},
               where="description"),
        expect("NUL in description (seed award-points)",
               p.post("/api/v1/me/thrive-circle/award-points/", seed, {"X-User-Id": "fd-nul"}),
               {422}, where="description"),
    ]  # fmt: skip
    batch = {"awards": [{"user_id": "fd-nul", "activity_type": "comment", "description": nul}]}
    a = p.post("/v1/awards/batch", json.dumps(batch).encode())
    item = (a.json().get("results") or [{}])[0]
    if a.status == 200 and isinstance(item.get("result"), dict):
        p.ledger.acked[f"nul-batch-{len(p.ledger.acked)}"] = item["result"]["point_activity"]["id"]
    err = (item.get("error") or {}) if a.status == 200 else a.error
    checks.append(
        Check(
            "NUL in description (batch item)",
            f"{a.status}, item {err.get('code') or 'applied'} ({err.get('field')})",
            "item refused (description)",
            "description" in str(err.get("field")),
        )
    )
    for name in ("username", "display_name"):
        a = p.post("/v1/users/fd-nul/profile", json.dumps({name: nul}).encode(), method="PUT")
        checks.append(expect(f"NUL in {name} (profile)", a, {422}, where=name))
    a = p.post("/v1/users/fd%00nul/awards", b'{"activity_type": "comment"}')
    checks.append(expect("NUL in the user id (path %00)", a, {422}, where="user_id"))
    return checks


def probe_non_ascii_user(p: Probes) -> list[Check]:
    """X-User-Id as UTF-8 bytes: the same user as /v1/users/<percent-encoded>, or a 4xx."""
    checks = []
    body = json.dumps({"amount": 5, "activity_type": "comment"}).encode()
    for user in ("zoë-ü-fd", "東京-fd"):
        header: Headers = {"X-User-Id": user.encode()}
        a = p.post("/api/v1/me/thrive-circle/award-points/", body, header)
        status = p.get("/api/v1/me/thrive-circle/my-status/", header)
        path = f"/v1/users/{urllib.parse.quote(user)}"
        points = p.get(path).json().get("total_points")
        mine = (status.json().get("user") or {}).get("id")
        if a.status == 201:
            ok = points == 5 and mine == user
            value = (f"201 as {a.json()['user']['id']!r}; {path} has {points} points; "
                     f"my-status is {mine!r}")  # fmt: skip
        else:
            ok = a.client_error and bool(a.error.get("field")) and status.client_error
            value = f"award {a}; my-status {status}"
        checks.append(Check(f"X-User-Id {user!r} in UTF-8", value,
                            "the path's user, or a 4xx naming the header", ok))  # fmt: skip
    return checks


def probe_big_header(p: Probes) -> list[Check]:
    a = p.exchange(head("GET", "/v1/users/fd-hdr", {"X-Filler": "f" * 2**20}, None), 5)
    return [Check("a 1 MB header, no credentials", f"{a} in {a.seconds:.2f} s", "4xx or closed",
                  a.client_error or a.closed)]  # fmt: skip


def probe_slowloris(p: Probes) -> list[Check]:
    """Connections sending their headers or body a byte at a time while others are served."""
    count, seconds = p.sizes.slow_connections, p.sizes.slow_s
    socks: list[socket.socket] = []
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    dropped = 0
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            if i % 2:  # headers that never end
                s.sendall(b"POST /v1/users/fd-slow/awards HTTP/1.1\r\nHost: x\r\n")
            else:  # a body that never ends
                s.sendall(head("POST", "/v1/users/fd-slow/awards", KEY_HEADERS, 1000) + b'{"a')
            s.setblocking(False)
            socks.append(s)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for i, s in enumerate(socks):
                with contextlib.suppress(OSError):
                    s.send(b"X-a: b\r\n" if i % 2 else b" ")
            a = p.get("/v1/users/fd-slow-reader")
            latencies.append(a.seconds if a.status is not None else CLIENT_TIMEOUT_S)
            answers[str(a.status)] += 1
            time.sleep(0.25)
        for s in socks:
            try:
                dropped += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                dropped += 1
    finally:
        for s in socks:
            s.close()
    worst = max(latencies, default=CLIENT_TIMEOUT_S)
    return [
        Check(
            f"{n(count)} slow connections for {seconds:g} s: other requests",
            f"{sum(answers.values())} answered ({dict(answers)}), slowest {worst:.2f} s",
            f"all 200 within {LATENCY_UNDER_SLOWLORIS_S:g} s",
            set(answers) == {"200"} and worst <= LATENCY_UNDER_SLOWLORIS_S,
        ),  # fmt: skip
        Check("  slow connections the server had dropped by then", f"{n(dropped)} of {n(count)}"),
    ]


@dataclass(frozen=True)
class Probe:
    name: str
    run: Callable[[Probes], list[Check]]


PROBES = (
    Probe("chunked-big-no-credentials", probe_big_body),
    Probe("chunked-3MB-with-key", probe_3mb_body),
    Probe("content-length-over-limit", probe_length_over),
    Probe("content-length-longer-than-body", probe_length_longer),
    Probe("content-length-shorter-than-body", probe_length_shorter),
    Probe("content-length-garbage", probe_length_garbage),
    Probe("not-json", json_probe("body not JSON", b"hello, this is not JSON")),
    Probe("invalid-utf8", json_probe(
        "invalid UTF-8 in a string", b'{"activity_type": "comment", "description": "\xff\xfe"}')),
    Probe("nested-10k", json_probe(
        "arrays nested 10,000 deep", b'{"activity_type": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")),
    Probe("number-5000-digits", json_probe(
        "a 5,000-digit amount", b'{"activity_type": "comment", "amount": ' + b"9" * 5000 + b"}")),
    Probe("nul-characters", probe_nul),
    Probe("non-ascii-x-user-id", probe_non_ascii_user),
    Probe("header-1MB", probe_big_header),
    Probe("slowloris", probe_slowloris),
)  # fmt: skip


def malformed(sizes: Sizes, pg: PgCluster, folder: Path, appendfsync: str = "always") -> Report:
    report = Report("malformed", "malformed and oversized requests through a real socket")
    started = time.monotonic()
    with stage(folder, pg, "faults_d", appendfsync) as st, api(st) as server:
        pids = set(server.workers())
        p = Probes(server.port, server, sizes)
        unhealthy = []
        with Monitor(st.redis, server, interval=0.1) as m:
            for probe in PROBES:
                log(f"malformed: {probe.name}")
                p.probe = probe.name
                try:
                    checks = probe.run(p)
                except (OSError, ValueError, KeyError) as exc:
                    checks = [Check("", f"probe failed: {type(exc).__name__}: {exc}", "runs",
                                    False)]  # fmt: skip
                for c in checks:
                    c.group = probe.name
                    if not c.measure.startswith(" "):
                        c.measure = f"[{probe.name}] {c.measure}"
                report.checks.extend(checks)
                health = p.get("/healthz")
                if health.status != 200 or health.seconds > 1.0:
                    unhealthy.append(f"after {probe.name}: {health}")
        five = [f"{name}: {a}" for name, a in p.answers if a.status is not None and a.status >= 500]
        report.add("5xx answers to the probes", "; ".join(five) or "none", "none", not five)
        hung = [name for name, a in p.answers if a.timed_out]
        report.add(f"probes unanswered within {CLIENT_TIMEOUT_S:g} s (hangs)",
                   ", ".join(hung) or "none", "none", not hung)  # fmt: skip
        report.add("/healthz answered within 1 s after every probe",
                   "; ".join(unhealthy) or "yes", "yes", not unhealthy)  # fmt: skip
        api_alive(report, server, pids)
        top, growth = m.rss_growth()
        report.add("API process RSS, largest (growth)", f"{mb(top)} ({mb(growth)})",
                   f"growth <= {RSS_GROWTH_MB} MB", growth <= RSS_GROWTH_MB * 2**20)  # fmt: skip
        report.add("awards the probes had acknowledged", n(len(p.ledger.acked)))
        verdict(report, env=st.env, r=st.client, ledger=p.ledger, conninfo=st.conninfo, tag=None)
    report.seconds = time.monotonic() - started
    return report


# -- main -----------------------------------------------------------------------------------

RUNS: dict[str, Callable[..., Report]] = {
    "redis-kill": redis_kill,
    "worker-kill": worker_kill,
    "sql-outage": sql_outage,
    "malformed": malformed,
}
ALIASES = {"a": "redis-kill", "b": "worker-kill", "c": "sql-outage", "d": "malformed"}


def run(name: str, sizes: Sizes, pg: PgCluster, appendfsync: str, keep: bool = False) -> Report:
    """One scenario in a temporary folder (kept with ``keep``: the processes' logs); a harness
    failure is reported, not raised."""
    folder = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
    try:
        return RUNS[name](sizes, pg, folder, appendfsync)
    except Exception as exc:  # noqa: BLE001 - the harness reports, it never fails a run
        report = Report(name, "the scenario could not run")
        report.add("scenario", f"failed: {type(exc).__name__}: {exc}"[:300], "runs", False)
        return report
    finally:
        if keep:
            log(f"{name}: logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser("faults", __doc__, "the test suite's small sizes")
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"{', '.join(RUNS)} (or a to d); default: all")  # fmt: skip
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's folder (logs)")
    args = parser.parse_args(argv)
    names = [ALIASES.get(s, s) for s in args.scenarios] or list(RUNS)
    unknown = [s for s in names if s not in RUNS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    why = pg_unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    pg = PgCluster()
    try:
        reports = [run(name, sizes, pg, args.appendfsync, args.keep) for name in names]
    finally:
        pg.close()
    for report in reports:
        print(report.render() + "\n")
    failed = [r.scenario for r in reports if not r.ok]
    line = summary(args.quick, started, f"appendfsync {args.appendfsync}", f"{SHARDS} shards")
    print(f"{line.lstrip()}; failed: {', '.join(failed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
