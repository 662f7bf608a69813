"""Live board stream benchmark: awards/s with 1,000 SSE clients on one board against none.

    .venv/bin/python -m bench.sse_bench [--quick] [--clients N] [--rounds R]

The target (the live board issue): with 1,000 Server-Sent Events clients connected to one board,
the API's awards/s drops by at most 10 % against none.

Starts the real server as ``bench.api_bench`` does (``python -m scoring.cli serve --workers 2``,
same environment, plus ``SCORING_PUBLIC_LEADERBOARDS=yes`` and ``SCORING_STREAM_INTERVAL_MS=500``),
gives each of the 10,000 users one award through ``POST /v1/awards/batch`` (so that no phase
pays for creating users), then alternates two phases, ``--rounds`` times (A, B, A, B, ...;
this machine's throughput drifts from minute to minute, so each B is compared with the As
around it and the verdict uses the medians):

A. ``wrk`` POSTs ``/v1/users/{id}/awards`` (api_bench's award script: a random user of 10,000
   per request, 50 connections, one thread) for 2 s of warm-up, then 10 s timed.
B. A client process (this module with ``--client``: asyncio protocols on raw sockets, one
   process, its file-descriptor limit raised to the hard limit) opens 1,000 streams
   ``GET /v1/leaderboards/all_time/stream?limit=10&upgrades=20`` and waits until each answered
   200 ``text/event-stream`` and delivered its first ``board`` event. Then the same wrk load as
   A runs while the clients stay connected and read everything. The client counts the events
   each connection received during the timed run, and for each ``board`` event the delay after
   the first client of the same API worker got the same bytes (the fan-out time of one tick;
   it includes the client process's own queueing).

Which worker holds which stream is read from ``/proc/net/tcp`` and the workers' ``/proc/<pid>/fd``
(uvicorn's workers share one listening socket; the kernel decides who accepts).

The table gives each run's awards/s (2xx req/s), p50/p99 and CPU (server, Redis, wrk, SSE
client), the ratio of the medians (target: >= 90 %), and the stream figures. A missed target is
marked MISS; the benchmark never fails. Redis: as ``award_bench`` (``REDIS_URL``, else database
12, flushed only when empty or marked), flushed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.api_bench import USERS as API_USERS
from bench.api_bench import write_scripts
from bench.harness import (
    API_KEY,
    CONNECTIONS,
    PYTHON,
    ROOT,
    WARMUP,
    WORKERS,
    WRK_MISSING,
    WRK_THREADS,
    CpuMeter,
    Load,
    Row,
    Server,
    connect,
    db_upgrade,
    fresh_db,
    log,
    redis_pid,
    redis_url,
    render,
    run_wrk,
    running,
    scoring_server,
    server_env,
    summary,
    verdict,
)
from bench.harness import parser as harness_parser

CLIENTS = 1_000
BOARD = "all_time"
LIMIT = 10
UPGRADES = 20
INTERVAL_MS = 500
ROUNDS = 4
SECONDS = 10.0
QUICK_SECONDS = 3.0
TARGET = 0.90  # awards/s with the clients / without
PREFILL_BATCH = 500
CONNECT_CONCURRENCY = 100  # streams being opened at once
CONNECT_TIMEOUT = 60.0  # seconds for all clients to get their first board event
CLIENT_START_TIMEOUT = 120.0

STREAM_PATH = f"/v1/leaderboards/{BOARD}/stream?limit={LIMIT}&upgrades={UPGRADES}"


# -- the SSE client process --------------------------------------------------------------------


class Stats:
    """What the client's connections received; counted from ``mark`` on."""

    def __init__(self) -> None:
        self.counting = False
        self.worker_of: dict[int, int] = {}  # client port -> API worker (sent with "mark")
        self.first_seen: dict[tuple[int, int], float] = {}  # (worker, hash of event) -> time
        self.delays: list[float] = []  # per board event: after the first client of its worker

    def mark(self, worker_of: dict[int, int]) -> None:
        self.counting = True
        self.worker_of = worker_of
        self.first_seen.clear()
        self.delays.clear()

    def board_event(self, conn: SseConn, ev: bytes, now: float) -> None:
        if not self.counting:
            return
        key = (self.worker_of.get(conn.port, -1), hash(ev))
        first = self.first_seen.setdefault(key, now)
        self.delays.append(now - first)


class SseConn(asyncio.Protocol):
    """One stream: the HTTP/1.1 response head, chunked transfer coding, then SSE events split
    at blank lines. Counts events by name; resolves ``first`` at the first ``board`` event."""

    def __init__(self, stats: Stats, request: bytes, first: asyncio.Future[None]) -> None:
        self.stats, self.request, self.first = stats, request, first
        self.raw = b""
        self.body = b""
        self.head_done = False
        self.chunked = False
        self.need: int | None = None  # bytes of the current chunk still to come
        self.status = 0
        self.open = False
        self.port = 0
        self.counts: dict[str, int] = {}  # event name -> events, since mark
        self.boards_total = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True
        self.port = transport.get_extra_info("sockname")[1]
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.first.done():
            self.first.set_exception(ConnectionError(f"closed before a board event: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.raw = self.raw[:end].lower(), self.raw[end + 4 :]
            self.head_done = True
            self.status = int(head.split(b" ", 2)[1])
            self.chunked = b"transfer-encoding: chunked" in head
            if self.status != 200 or b"content-type: text/event-stream" not in head:
                self.first.set_exception(ConnectionError(f"HTTP {self.status}"))
                self.transport.close()
                return
        if self.chunked:
            while True:
                if self.need is None:
                    eol = self.raw.find(b"\r\n")
                    if eol < 0:
                        break
                    self.need = int(self.raw[:eol].split(b";", 1)[0], 16)
                    self.raw = self.raw[eol + 2 :]
                    if self.need == 0:  # the end of the response
                        self.transport.close()
                        return
                if len(self.raw) < self.need + 2:
                    break
                self.body += self.raw[: self.need]
                self.raw, self.need = self.raw[self.need + 2 :], None
        else:
            self.body, self.raw = self.body + self.raw, b""
        if b"\n\n" not in self.body:
            return
        *events, self.body = self.body.split(b"\n\n")
        now = time.monotonic()
        for ev in events:
            if not ev.startswith(b"event: "):
                continue  # the retry field, a heartbeat comment
            name = ev[7 : ev.find(b"\n")].decode()
            self.counts[name] = self.counts.get(name, 0) + 1
            if name == "board":
                self.boards_total += 1
                if not self.first.done():
                    self.first.set_result(None)
                self.stats.board_event(self, ev, now)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


async def client_main(port: int, clients: int) -> None:
    """Open ``clients`` streams, print one ``READY {json}`` line, then answer the commands read
    from stdin, one per line: ``mark {port: worker}`` (start counting; answered ``OK``),
    ``report`` (answered ``REPORT {json}``) and ``quit``."""
    nofile = raise_nofile()
    loop = asyncio.get_running_loop()
    stats = Stats()
    request = (
        f"GET {STREAM_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    conns: list[SseConn] = []

    async def open_one() -> str | None:
        first: asyncio.Future[None] = loop.create_future()
        async with gate:
            try:
                _, conn = await loop.create_connection(
                    lambda: SseConn(stats, request, first), "127.0.0.1", port
                )
                conns.append(conn)
                await first
            except (OSError, ConnectionError) as exc:
                return str(exc) or type(exc).__name__
        return None

    started = time.perf_counter()
    try:
        errors = await asyncio.wait_for(
            asyncio.gather(*(open_one() for _ in range(clients))), CONNECT_TIMEOUT
        )
    except TimeoutError:
        errors = ["timed out"]
    failed = [e for e in errors if e]
    ready = {
        "clients": clients,
        "connected": len(conns),
        "status_200": sum(c.status == 200 for c in conns),
        "first_board": sum(c.boards_total > 0 for c in conns),
        "open_seconds": time.perf_counter() - started,
        "errors": sorted(set(failed))[:3],
        "error_count": len(failed),
        "nofile": nofile,
        "ports": [c.port for c in conns],
    }
    print("READY " + json.dumps(ready), flush=True)

    cpu0 = time.process_time()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command, _, arg = line.strip().partition(" ")
        if command == "mark":
            for c in conns:
                c.counts = {}
            stats.mark({int(k): v for k, v in json.loads(arg or "{}").items()})
            cpu0 = time.process_time()
            print("OK", flush=True)
        elif command == "report":
            stats.counting = False
            boards = [c.counts.get("board", 0) for c in conns]
            names: dict[str, int] = {}
            for c in conns:
                for name, n in c.counts.items():
                    names[name] = names.get(name, 0) + n
            delays = stats.delays
            report = {
                "open": sum(c.open for c in conns),
                "events": sum(names.values()),
                "by_name": names,
                "boards_min": min(boards, default=0),
                "boards_median": statistics.median(boards) if boards else 0,
                "boards_max": max(boards, default=0),
                "no_board": sum(b == 0 for b in boards),
                "ticks": len(stats.first_seen),
                "delay_p50_ms": 1000 * pct(delays, 50),
                "delay_p99_ms": 1000 * pct(delays, 99),
                "delay_max_ms": 1000 * max(delays, default=0.0),
                "cpu_seconds": time.process_time() - cpu0,
            }
            print("REPORT " + json.dumps(report), flush=True)
        elif command in ("quit", ""):
            for c in conns:
                c.transport.close()
            await asyncio.sleep(0.2)
            return


# -- the parent: streams, workers and the client process ---------------------------------------


def proc_limit(pid: int) -> int | None:
    """A process's soft limit of open files, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def stream_workers(port: int, workers: list[int]) -> dict[int, int]:
    """{client port: worker index} of the established connections to the server's ``port``,
    from /proc/net/tcp (the server side's socket inode) and each worker's open files."""
    remote_of: dict[str, int] = {}  # socket inode -> client port
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return {}
    for line in lines:
        f = line.split()
        local, remote, state, inode = f[1], f[2], f[3], f[9]
        if state == "01" and int(local.split(":")[1], 16) == port:
            remote_of[inode] = int(remote.split(":")[1], 16)
    out: dict[int, int] = {}
    for index, pid in enumerate(workers):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                client = remote_of.get(target[8:-1])
                if client is not None:
                    out[client] = index
    return out


class SseClients:
    """The client process: ``--client`` of this module, driven over its stdin and stdout."""

    def __init__(self, port: int, clients: int) -> None:
        self.port, self.clients = port, clients
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict = {}

    def start(self) -> dict:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "bench.sse_bench", "--client", "--port", str(self.port),
             "--clients", str(self.clients)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        self.ready = json.loads(self._expect("READY"))
        return self.ready

    def _expect(self, word: str) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            raise RuntimeError(f"SSE client: expected {word}, got {line.strip()!r}")
        return line[len(word) :].strip()

    def _send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def mark(self, worker_of: dict[int, int]) -> None:
        self._send("mark " + json.dumps(worker_of))
        self._expect("OK")

    def report(self) -> dict:
        self._send("report")
        return json.loads(self._expect("REPORT"))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self._send("quit")
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# -- the phases --------------------------------------------------------------------------------


@dataclass
class Run:
    kind: str  # "A" (no clients) or "B" (clients connected)
    load: Load
    ready: dict = field(default_factory=dict)  # the client's READY figures
    report: dict = field(default_factory=dict)  # the client's REPORT figures
    per_worker: list[int] = field(default_factory=list)  # streams each worker holds
    client_cpu: float | None = None  # % of one core
    failed: str | None = None


def timed_load(
    load: Load,
    server: Server,
    script: Path,
    seconds: float,
    rpid: int | None,
    on_start: Callable[[], None] = lambda: None,
    extra_pid: int | None = None,
) -> float | None:
    """api_bench's measure without its command statistics: a warm-up, ``on_start()``, the timed
    wrk run, with the CPU each party used meanwhile (in ``load``). Returns the CPU % of
    ``extra_pid`` (the SSE client) over the timed run."""
    run_wrk(script, server.url, load.connections, WARMUP)
    on_start()
    meter = CpuMeter(server, rpid, extra_pid)
    meter.start()
    figures = run_wrk(script, server.url, load.connections, seconds)
    meter.stop()
    load.take(figures)
    load.requests -= figures["non2xx"]
    return meter.into(load)


def run_a(server: Server, script: Path, seconds: float, rpid: int | None) -> Run:
    log(f"A: no SSE clients, {CONNECTIONS} connections, {WARMUP:g} s warm-up + {seconds:g} s")
    run = Run("A", Load("A", CONNECTIONS))
    try:
        timed_load(run.load, server, script, seconds, rpid)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        run.failed = f"failed: {exc}"[:200]
    return run


def run_b(server: Server, script: Path, seconds: float, rpid: int | None, clients: int) -> Run:
    run = Run("B", Load("B", CONNECTIONS))
    sse = SseClients(server.port, clients)
    try:
        log(f"B: opening {clients:,} streams {STREAM_PATH}")
        run.ready = sse.start()
        log(
            f"B: {run.ready['first_board']:,} of {clients:,} streams got their first board event "
            f"in {run.ready['open_seconds']:.1f} s"
        )
        workers = server.workers()
        worker_of = stream_workers(server.port, workers)
        run.per_worker = [
            sum(1 for p in run.ready["ports"] if worker_of.get(p) == i) for i in range(len(workers))
        ]
        log(f"B: streams per worker {run.per_worker}; {CONNECTIONS} connections of awards, "
            f"{WARMUP:g} s warm-up + {seconds:g} s")  # fmt: skip
        assert sse.proc is not None
        run.client_cpu = timed_load(
            run.load, server, script, seconds, rpid,
            on_start=lambda: sse.mark(worker_of), extra_pid=sse.proc.pid,
        )  # fmt: skip
        run.report = sse.report()
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        run.failed = f"failed: {exc}"[:200]
    finally:
        sse.stop()
    return run


def prefill(server: Server) -> None:
    """One award for each of the 10,000 users, so that no phase creates users."""
    for start in range(0, API_USERS, PREFILL_BATCH):
        items = [{"user_id": f"u{i:07d}", "activity_type": "comment"}
                 for i in range(start, min(API_USERS, start + PREFILL_BATCH))]  # fmt: skip
        req = urllib.request.Request(
            server.url + "/v1/awards/batch",
            data=json.dumps({"awards": items}).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            if resp.status != 200:
                raise RuntimeError(f"prefill: HTTP {resp.status}")


@dataclass
class Results:
    runs: list[Run]
    clients: int
    nofile_server: int | None = None
    failed: str | None = None


def measure(seconds: float, rounds: int, clients: int) -> Results:
    url = redis_url()
    r = connect(url)
    r.ping()
    rpid = redis_pid(r)
    res = Results([], clients)
    with tempfile.TemporaryDirectory(prefix="sse-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = write_scripts(tmp)["award"]
        env = server_env(url, tmp)
        env.update(SCORING_PUBLIC_LEADERBOARDS="yes", SCORING_STREAM_INTERVAL_MS=str(INTERVAL_MS))
        try:
            fresh_db(r)
            res.failed = db_upgrade(env)
            if res.failed:
                return res
            server = scoring_server(env, tmp)
            with running(server):
                res.nofile_server = min(
                    (n for n in map(proc_limit, server.workers()) if n is not None), default=None
                )
                log(f"prefill: one award for each of {API_USERS:,} users")
                prefill(server)
                for i in range(rounds):
                    log(f"round {i + 1} of {rounds}")
                    res.runs.append(run_a(server, script, seconds, rpid))
                    res.runs.append(run_b(server, script, seconds, rpid, clients))
                if any(x.failed for x in res.runs):
                    log(f"server log:\n{server.tail()}")
        except (RuntimeError, OSError) as exc:
            res.failed = f"failed: {exc}"[:200]
        finally:
            fresh_db(r)
    return res


# -- the table ---------------------------------------------------------------------------------


def num(x: float) -> str:
    return f"{x:,.0f}"


def cpu_text(load: Load, client: float | None = None) -> str:
    def p(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0f}%"

    text = (
        f"server {p(load.cpu.get('server'))} (workers "
        f"{' + '.join(p(v) for v in load.worker_cpu)}), Redis {p(load.cpu.get('redis'))}, "
        f"wrk {p(load.cpu.get('wrk'))}"
    )
    if client is not None:
        text += f", SSE client {p(client)}"
    return text


def rows_for(res: Results) -> list[Row]:
    label_a = "awards/s, no SSE clients"
    label_b = f"awards/s, {res.clients:,} SSE clients on {BOARD}"
    if res.failed:
        return [Row(label_a, res.failed, "", "n/a"), Row(label_b, res.failed, "", "n/a")]
    a = [x for x in res.runs if x.kind == "A" and not x.failed]
    b = [x for x in res.runs if x.kind == "B" and not x.failed]
    rows: list[Row] = []
    for x in res.runs:
        if x.failed:
            rows.append(Row(f"run {x.kind}", x.failed, "", "n/a"))

    def runs(xs: list[Run]) -> str:
        if not xs:
            return "n/a"
        med = statistics.median(x.load.rate for x in xs)
        return " / ".join(num(x.load.rate) for x in xs) + f" (median {num(med)})"

    rows += [Row(f"{label_a} (runs)", runs(a)), Row(f"{label_b} (runs)", runs(b))]
    if a and b:
        ratio = statistics.median(x.load.rate for x in b) / statistics.median(
            x.load.rate for x in a
        )
        rows.append(Row("  with / without (medians)", f"{ratio:.0%}", f">= {TARGET:.0%}",
                        verdict(ratio >= TARGET)))  # fmt: skip
        pairs = []  # each B against the As just before and after it
        for i, x in enumerate(res.runs):
            near = [y for y in res.runs[max(0, i - 1) : i + 2] if y.kind == "A" and not y.failed]
            if x.kind == "B" and not x.failed and near:
                pairs.append(x.load.rate / statistics.mean(y.load.rate for y in near))
        rows.append(Row("  each B / the As beside it", " / ".join(f"{p:.0%}" for p in pairs)))
        rows += [
            Row("award p50 / p99 without (runs)",
                " / ".join(f"{x.load.p50_ms:.1f} / {x.load.p99_ms:.1f} ms" for x in a)),
            Row("award p50 / p99 with (runs)",
                " / ".join(f"{x.load.p50_ms:.1f} / {x.load.p99_ms:.1f} ms" for x in b)),
        ]  # fmt: skip
        errors = sum(x.load.errors for x in a + b)
        rows.append(Row("award error responses (all runs)", f"{errors:,}", "0",
                        verdict(errors == 0)))  # fmt: skip
    if b:
        connected = [f"{x.ready['first_board']:,}" for x in b]
        ok = all(x.ready["first_board"] == res.clients for x in b)
        rows.append(Row(
            "SSE clients with 200 + first board event (runs)",
            " / ".join(connected) + f" of {res.clients:,}",
            f"{res.clients:,}", verdict(ok),
        ))  # fmt: skip
        rows.append(Row("  time to open them all (runs)",
                        " / ".join(f"{x.ready['open_seconds']:.1f} s" for x in b)))  # fmt: skip
        rows.append(Row("  streams per API worker (runs)",
                        " / ".join(" + ".join(map(str, x.per_worker)) for x in b)))  # fmt: skip
        still = [x.report.get("open", 0) for x in b]
        rows.append(Row("  still connected after the load (runs)",
                        " / ".join(f"{n:,}" for n in still), f"{res.clients:,}",
                        verdict(all(n == res.clients for n in still))))  # fmt: skip
        rows.append(Row(
            "SSE events received during the run, per s (runs)",
            " / ".join(f"{x.report['events'] / x.load.seconds:,.0f}" for x in b),
        ))  # fmt: skip
        rows.append(Row(
            "  board + upgrades + tiers events (runs)",
            " ; ".join(" + ".join(f"{x.report['by_name'].get(k, 0):,}"
                                  for k in ("board", "upgrades", "tiers")) for x in b),
        ))  # fmt: skip
        rows.append(Row(
            "  board events per client, min / median / max",
            " ; ".join(f"{x.report['boards_min']} / {x.report['boards_median']:g} / "
                       f"{x.report['boards_max']}" for x in b),
            "min > 0", verdict(all(x.report["boards_min"] > 0 for x in b)),
        ))  # fmt: skip
        rows.append(Row("  distinct board versions sent (runs)",
                        " / ".join(str(x.report["ticks"]) for x in b)))  # fmt: skip
        rows.append(Row(
            "  board fan-out delay p50 / p99 / max",
            " ; ".join(f"{x.report['delay_p50_ms']:.0f} / {x.report['delay_p99_ms']:.0f} / "
                       f"{x.report['delay_max_ms']:.0f} ms" for x in b),
        ))  # fmt: skip
    for x in a:
        rows.append(Row("CPU, A (no clients)", cpu_text(x.load)))
    for x in b:
        rows.append(Row("CPU, B (clients)", cpu_text(x.load, x.client_cpu)))
    if b:
        rows.append(
            Row(
                "open-files limit: API workers / SSE client",
                f"{res.nofile_server or 'n/a'} / {b[0].ready.get('nofile', 'n/a')}",
            )
        )
    return rows


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = harness_parser("sse_bench", __doc__, "1 round of 3 s, for a smoke run")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="SSE clients in B")
    parser.add_argument("--rounds", type=int, default=None, help=f"A+B rounds ({ROUNDS})")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        asyncio.run(client_main(args.port, args.clients))
        return 0
    seconds = QUICK_SECONDS if args.quick else SECONDS
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    started = time.perf_counter()
    if shutil.which("wrk") is None:
        rows = [Row("awards/s with and without SSE clients", WRK_MISSING, "", "n/a")]
    else:
        rows = rows_for(measure(seconds, rounds, args.clients))
    print(render(rows))
    plural = "" if rounds == 1 else "s"
    print(
        summary(
            args.quick,
            started,
            redis_url(),
            f"{WORKERS} uvicorn workers, wrk -t{WRK_THREADS} -c{CONNECTIONS}",
            f"{rounds} round{plural} of A+B, {seconds:g} s per run after {WARMUP:g} s warm-up",
            f"stream interval {INTERVAL_MS} ms",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
