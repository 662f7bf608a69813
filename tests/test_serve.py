"""`scoring serve --workers 2` as a real process: each worker listens on a SO_REUSEPORT socket of
its own and the kernel spreads the connections over them; a SIGKILLed worker is replaced while
the port keeps answering; SIGTERM and SIGINT stop every process; a port in use fails at once.

Which worker holds which connection is read from /proc: the server side of each connection is a
socket in /proc/net/tcp, and the worker holding it has that socket among its open files. A
connection that was answered and is held by a worker was served by that worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis

from bench.harness import Server, free_port, wait_until
from engine import ScoringEngine
from scoring.serve import reuse_port_balances

pytestmark = pytest.mark.skipif(
    not reuse_port_balances() or not Path("/proc/net/tcp").exists(),
    reason="SO_REUSEPORT balancing and /proc are Linux's",
)

KEY = "serve-test-key-0123456789abcdef"
CONNECTIONS = 40
LISTEN, ESTABLISHED = "0A", "01"


def _env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "SCORING_DATA_DIR": str(tmp_path),  # SQLite there, its schema made by serve itself
        "SCORING_API_KEYS": f"t:{KEY}:award+read",
        "SCORING_QUEUE": "serve-test",
    }


def _server(env: dict[str, str], tmp_path: Path, *extra: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "scoring.cli", "serve", "--port", str(port), "--workers", "2",
            "--log-level", "info", *extra]  # fmt: skip
    return Server("scoring serve", argv, env, port, tmp_path / "serve.log")


def _sockets(port: int) -> dict[str, str]:
    """The TCP sockets on local port ``port``: inode -> state (LISTEN, ESTABLISHED, ...)."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].rsplit(":", 1)[1], 16) == port:
            out[f[9]] = f[3]
    return out


def _held(pid: int, port: int, state: str) -> int:
    """How many of the sockets in ``state`` on ``port`` process ``pid`` has open."""
    wanted = {inode for inode, s in _sockets(port).items() if s == state}
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return 0
    return sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in wanted)


def _award(conn: http.client.HTTPConnection, user: str) -> dict:
    conn.request(
        "POST", f"/v1/users/{user}/awards", body=json.dumps({"activity_type": "comment"}),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )  # fmt: skip
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 201, body
    assert resp.getheader("Connection", "keep-alive").lower() != "close"
    return json.loads(body)


def _spread(server: Server, tag: str) -> Counter[int]:
    """Open CONNECTIONS keep-alive connections, award once on each, and count which worker holds
    each (the connections stay open while counted, then close)."""
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
             for _ in range(CONNECTIONS)]  # fmt: skip
    try:
        for i, conn in enumerate(conns):
            _award(conn, f"{tag}-{i}")
        for i, conn in enumerate(conns):  # a second request on the same connection
            _award(conn, f"{tag}-{i}")
        held = Counter({pid: _held(pid, server.port, ESTABLISHED) for pid in server.workers()})
    finally:
        for conn in conns:
            conn.close()
    return held


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: its sockets are closed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _answers(port: int, tries: int = 1) -> bool:
    """A fresh connection gets /healthz answered (within ``tries`` connections: a client
    retries a connection reset before its request was read)."""
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            conn.close()
    return False


def test_workers_share_connections_survive_a_kill_and_stop_on_sigterm(
    real_redis: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    server = _server(_env(redis_url, tmp_path), tmp_path)
    server.start()  # /healthz answers and both workers are up
    try:
        workers = server.workers()
        assert len(workers) == 2, workers
        # each worker its own listening socket on the port; the parent listens on none
        assert wait_until(lambda: all(_held(p, server.port, LISTEN) == 1 for p in workers), 30)
        assert _held(server.pid, server.port, LISTEN) == 0

        held = _spread(server, "a")
        assert sum(held.values()) == CONNECTIONS, (held, server.tail())
        # binomial(40, 1/2): fewer than 6 on one side has a probability under 1e-6
        assert min(held.values()) >= 6, held
        assert ScoringEngine(real_redis).status("a-7").total_points == 10  # two comments

        # SIGKILL one worker: fresh connections keep being answered, and it is replaced
        victim, survivor = workers
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: _gone(victim), 10)
        # a connection the kernel had handed to the dying worker's socket as it closed is
        # reset (CI saw one in twenty, once): it is tried again, as a client would
        answered = [_answers(server.port, tries=2) for _ in range(20)]
        assert all(answered), answered
        assert wait_until(
            lambda: len(server.workers()) == 2 and victim not in server.workers(), 30
        ), server.tail()
        (replacement,) = set(server.workers()) - {survivor}
        assert wait_until(lambda: _held(replacement, server.port, LISTEN) == 1, 60), server.tail()
        assert "exited (signal SIGKILL); starting another" in server.tail(40)
        held = _spread(server, "b")
        assert set(held) == {survivor, replacement}
        assert sum(held.values()) == CONNECTIONS and min(held.values()) >= 6, held
        assert _answers(server.port)

        # SIGTERM: every worker stops gracefully, then the parent, with status 0
        current = server.workers()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, server.tail()
        assert wait_until(lambda: all(_gone(p) for p in current), 10)
        assert LISTEN not in _sockets(server.port).values()
        log = server.tail(60)
        assert log.count("Application shutdown complete") == 2, log
    finally:
        server.stop()


def test_no_reuse_port_shares_one_socket_and_stops_on_sigint(
    real_redis: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """`--no-reuse-port`: uvicorn's own workers on one socket the parent bound (the old mode,
    for comparison); it serves, and SIGINT stops it with status 0."""
    server = _server(_env(redis_url, tmp_path), tmp_path, "--no-reuse-port")
    server.start()
    try:
        listening = [inode for inode, s in _sockets(server.port).items() if s == LISTEN]
        assert len(listening) == 1  # one socket, shared by the parent and both workers
        assert all(_held(p, server.port, LISTEN) == 1 for p in [server.pid, *server.workers()])
        held = _spread(server, "c")
        assert sum(held.values()) == CONNECTIONS, held
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        assert server.wait(30) == 0, server.tail()
    finally:
        server.stop()


def test_port_in_use_fails_at_once(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "scoring.cli", "serve", "--port", str(port), "--workers", "2"],
            env=_env(redis_url, tmp_path), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr
    assert "Started server process" not in done.stderr  # no worker was started
