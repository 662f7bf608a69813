"""``scoring up``: the API, a worker and the scheduler (and optionally the demo) in one command.

Each runs as its own ``scoring`` process, in a session of its own so that Ctrl-C reaches only
this supervisor, which then stops them in order: the demo, the API and the scheduler first (no
new awards, no new jobs), then the worker (RQ's warm shutdown finishes the job it holds); it
drains what is left of the outbox into SQL and exits. On the embedded default this process
starts the private Redis (append-only file on) and holds it until the others have stopped, so
nothing is lost between two runs. A child that dies stops the others; the supervisor then exits
with status 1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

#: How long the API, the scheduler and the demo get to stop on SIGTERM, and then the worker.
STOP_TIMEOUT = 15.0
WORKER_STOP_TIMEOUT = 60.0
#: How long the API gets to answer /healthz after it starts.
START_TIMEOUT = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
            preexec_fn=_die_with_parent,  # the children are started before any thread
        )

    def relay(self, out: Callable[[str], None]) -> None:
        """Copy the child's output lines to ``out``, prefixed with its name (a thread)."""
        self.pump = threading.Thread(target=self._pump, args=(out,), daemon=True)
        self.pump.start()

    def _pump(self, out: Callable[[str], None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            out(f"{self.name:>9} | {line.decode(errors='replace').rstrip()}")

    @property
    def returncode(self) -> int | None:
        """The exit status: None while it runs, or if it was never started."""
        return None if self.proc is None else self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """The exit status; killed (and None returned) if it has not exited by ``timeout``."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        if self.pump is not None:
            self.pump.join(2)
        return code


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the supervisor dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(url: str, api: Child, timeout: float = START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and api.running:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


class Supervisor:
    """Starts the children, watches them, and stops them in order."""

    def __init__(self, children: list[Child], out: Callable[[str], None] = print) -> None:
        self.children = children
        self.out = out
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            self.out(line)
            sys.stdout.flush()

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for child in self.children:
            child.start(env)
        for child in self.children:
            child.relay(self.say)
        started = ", ".join(f"{c.name} (pid {c.proc.pid})" for c in self.children if c.proc)
        self.say(f"scoring up: started {started}")

    def handle_signals(self) -> None:
        def on_signal(signum: int, frame: object) -> None:
            if self.stopping.is_set():  # a second Ctrl-C: no more waiting
                for child in self.children:
                    if child.running and child.proc is not None:
                        child.proc.kill()
            self.stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    def watch(self) -> Child | None:
        """Until a signal (None) or a child's exit (that child)."""
        while not self.stopping.wait(0.2):
            for child in self.children:
                if not child.running:
                    return child
        return None

    def stop(self, last: str = "worker") -> bool:
        """Stop every child, ``last`` after the others; True if all exited cleanly."""
        first = [c for c in self.children if c.name != last]
        final = [c for c in self.children if c.name == last]
        clean = True
        for group, timeout in ((first, STOP_TIMEOUT), (final, WORKER_STOP_TIMEOUT)):
            for child in group:
                child.stop()
            for child in group:
                code = child.wait(timeout)
                if code is None:
                    self.say(f"scoring up: {child.name} did not stop in {timeout:.0f} s; killed")
                    clean = False
                elif code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                    clean = False
        return clean
