"""`scoring up` as a newcomer runs it: one command on the embedded default (a private Redis with
its append-only file, SQLite), the dashboard and its stream without credentials on 127.0.0.1,
Ctrl-C stops everything cleanly, and a second start has everything the first one had."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.harness import free_port
from engine.storage.store import SqlStore
from scoring.up import port_free
from tests.serving import EventReader

KEY = "up-test-key-0123456789abcdef"


class Up:
    """``scoring up`` in a subprocess, its output collected."""

    def __init__(
        self, data_dir: Path, port: int, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        given = env or {}
        env = {k: v for k, v in os.environ.items()
               if k not in ("REDIS_URL", "DATABASE_URL", "RQ_REDIS_URL")}  # fmt: skip
        env |= {"SCORING_DATA_DIR": str(data_dir), "SCORING_API_KEYS": f"t:{KEY}:admin",
                "SCORING_QUEUE": "up-test", **given}  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scoring.cli", "up", "--port", str(port), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(pattern, self.output):
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the output:\n{self.output[-3000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.reader.join(5)
        return code


def give(up: Up, user: str, points: int) -> httpx.Response:
    """An award through the API."""
    body = {"activity_type": "quiz_complete", "amount": points}
    return httpx.post(f"{up.url}/v1/users/{user}/awards", headers={"X-API-Key": KEY}, json=body)


def test_up_runs_everything_and_a_restart_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    up = Up(tmp_path, port)
    try:
        up.wait_until(r"dashboard\s+http://127\.0\.0\.1:\d+/")
        assert "leaderboard reads without credentials: local" in up.output
        # the dashboard and its data need no credentials from this machine
        assert httpx.get(up.url + "/", timeout=5).status_code == 200
        stream = EventReader(up.url + "/v1/leaderboards/all_time/stream")
        assert stream.next("board").data["rows"] == []
        award = give(up, "ann", 40)
        assert award.status_code == 201, award.text
        assert stream.next("board", timeout=2).data["rows"][0]["points"] == 40
        store = SqlStore(f"sqlite:///{tmp_path / 'scoring.db'}")
        deadline = time.monotonic() + 20  # the worker writes the audit trail
        while store.count_activities() < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.count_activities() == 1
        # Ctrl-C with a stream open: everything stops, cleanly and promptly
        started = time.monotonic()
        assert up.stop() == 0, up.output[-3000:]
        assert time.monotonic() - started < 20
        assert "scoring up: stopped;" in up.output and "not cleanly" not in up.output
        assert "embedded Redis shut down" in up.output
        assert "Traceback" not in up.output, up.output[-3000:]
        assert stream.ended()  # the server ended the stream rather than drop it
        stream.close()
        assert port_free("127.0.0.1", port)
        assert (tmp_path / "appendonly.aof").exists() or (tmp_path / "appendonlydir").exists()
    finally:
        if up.proc.poll() is None:
            up.proc.kill()

    up = Up(tmp_path, port)
    try:
        up.wait_until(r"dashboard\s+http")
        ann = httpx.get(up.url + "/v1/users/ann", headers={"X-API-Key": KEY}, timeout=5)
        assert ann.json()["total_points"] == 40  # the private Redis kept it
        assert give(up, "ann", 40).status_code == 201
        # a child that dies takes the others down; the outbox is still drained into SQL
        worker_pid = int(up.wait_until(r"worker \(pid (\d+)\)").group(1))
        os.kill(worker_pid, signal.SIGKILL)
        assert up.proc.wait(60) == 1
        up.reader.join(5)
        assert re.search(r"worker exited \(-9\); stopping", up.output), up.output[-2000:]
        assert "0 outbox entries not yet in SQL" in up.output
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    store = SqlStore(f"sqlite:///{tmp_path / 'scoring.db'}")
    assert store.count_activities() == 2


def test_up_on_an_external_cluster(
    redis_cluster, cluster_redis, real_redis, redis_url: str, tmp_path: Path
) -> None:
    """`scoring up` against a Redis Cluster (RQ on a single server): awards through the API on
    16 shards over three nodes reach SQL through the worker, and Ctrl-C stops cleanly."""
    port = free_port()
    env = {"REDIS_URL": redis_cluster.url, "RQ_REDIS_URL": redis_url, "SCORING_SHARDS": "16"}
    up = Up(tmp_path, port, env=env)
    try:
        up.wait_until(r"dashboard\s+http://127\.0\.0\.1:\d+/")
        assert f"scoring engine up on {redis_cluster.url}" in up.output
        for i in range(20):
            assert give(up, f"c{i}", 10 + i).status_code == 201
        top = httpx.get(f"{up.url}/v1/leaderboards/all_time?limit=3", headers={"X-API-Key": KEY})
        assert [e["user_id"] for e in top.json()["entries"]] == ["c19", "c18", "c17"]
        store = SqlStore(f"sqlite:///{tmp_path / 'scoring.db'}")
        deadline = time.monotonic() + 30  # the worker drains the shards' outboxes
        while store.count_activities() < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.count_activities() == 20
        assert up.stop() == 0, up.output[-3000:]
        assert "0 outbox entries not yet in SQL" in up.output
        assert "Traceback" not in up.output, up.output[-3000:]
    finally:
        if up.proc.poll() is None:
            up.proc.kill()


#: Lines RQ's worker prints (several per job) and its start-up lines.
RQ_LINES = re.compile(r"Job OK|Successfully completed|result is kept|Listening on|started with PID")


def test_up_is_quiet_unless_verbose(tmp_path: Path) -> None:
    """`scoring up --demo` at 10 awards/s: no RQ line per job (nor RQ's start-up lines) without
    --verbose; the worker says once that it writes the audit trail, and every award reaches
    SQL. With --verbose RQ's own lines are back."""
    port = free_port()
    up = Up(tmp_path, port, "--demo")
    try:
        up.wait_until(r"dashboard\s+http")
        up.wait_until(r"demo \| demo: 50 users")
        time.sleep(6)
        assert up.stop() == 0, up.output[-3000:]
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    worker = [line for line in up.lines if line.lstrip().startswith("worker |")]
    assert not [line for line in up.lines if RQ_LINES.search(line)], up.output[-3000:]
    assert len(worker) <= 5, worker  # not a line per job: 60 awards were drained
    assert any("audit trail: the worker writes the outbox to SQL" in line for line in worker)
    assert "FutureWarning" not in up.output  # rq-scheduler's crontab, on every start
    assert "0 outbox entries not yet in SQL" in up.output
    assert "Traceback" not in up.output, up.output[-3000:]
    store = SqlStore(f"sqlite:///{tmp_path / 'scoring.db'}")
    assert store.count_activities() >= 50

    up = Up(tmp_path, port, "--verbose")
    try:
        up.wait_until(r"dashboard\s+http")
        up.wait_until(r"worker \| .*Listening on up-test")  # RQ's own
        assert give(up, "ann", 40).status_code == 201
        up.wait_until(r"worker \| .*Job OK")
        assert up.stop() == 0, up.output[-3000:]
    finally:
        if up.proc.poll() is None:
            up.proc.kill()


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "scoring.cli", "up", "--port", str(port)],
            env={**os.environ, "SCORING_DATA_DIR": str(tmp_path)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"{port} is in use" in done.stderr


@pytest.mark.parametrize("args", [["--rate", "-1"], ["--users", "0"], ["--awards", "-5"]])
def test_demo_refuses_bad_numbers(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scoring.cli", "demo", *args],
        env={**os.environ, "SCORING_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "scoring:" in done.stderr
