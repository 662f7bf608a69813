"""``scoring serve``: the HTTP API under uvicorn, its worker processes balanced by the kernel.

With ``--workers N`` (N > 1) on Linux, each worker process binds a listening socket of its own
to the same host and port with ``SO_REUSEPORT``, and the kernel spreads new connections over
those sockets (by a hash of each connection's addresses), so every worker takes about 1/N of
them. uvicorn's own ``--workers`` binds one socket in its parent that every worker accepts
from: whichever worker's event loop wakes first takes the connection, and under keep-alive load
one worker can end up holding nearly all of them while the others idle.

The parent is a small supervisor with uvicorn's semantics:

- it binds the address first, without listening (so it is given no connections): a port in use
  fails at once with a clear message, port 0 becomes one port for every worker, and the port
  stays ours while a worker is being replaced;
- it spawns the workers (``multiprocessing``'s spawn, as uvicorn does) and replaces one that
  exits or is killed; a worker that fails to start (uvicorn's exit status 3: the app's start-up
  or the bind failed, and would again) stops the server, with that status;
- SIGINT or SIGTERM sends SIGTERM to every worker, which shuts down as uvicorn does (stops
  accepting, ends the live streams, finishes open requests, ``timeout_graceful_shutdown``), and
  waits for them; a second signal sends SIGINT, uvicorn's "force exit".
- each worker asks the kernel for SIGTERM when the parent dies (Linux), so that no orphaned
  worker keeps answering on the port, unseen beside a new server's workers.

With ``--workers 1``, with ``--no-reuse-port``, or where ``SO_REUSEPORT`` does not balance
connections (it does on Linux 3.9 and later; on macOS and the BSDs it does not), this is
``uvicorn.run`` as before: one process, or uvicorn's workers on one shared socket.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

#: The ASGI app, as an import string of a factory (uvicorn's workers import it themselves).
APP = "api.app:create_app"
#: Seconds the workers get to finish on SIGTERM before they are killed: uvicorn's graceful
#: shutdown (``timeout_graceful_shutdown``, 10 s) and some to spare.
GRACEFUL_TIMEOUT = 10
STOP_TIMEOUT = GRACEFUL_TIMEOUT + 5.0
#: A worker slot is refilled at most this often (a worker dying at once again and again).
RESTART_INTERVAL = 1.0
TICK = 0.2

logger = logging.getLogger("uvicorn.error")


def reuse_port_balances() -> bool:
    """Whether ``SO_REUSEPORT`` spreads connections over the sockets sharing a port here."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening yet."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(*, host: str, port: int, workers: int, log_level: str, reuse_port: bool = True) -> int:
    """Run the API until SIGINT or SIGTERM; the exit status."""
    options: dict[str, Any] = dict(
        factory=True,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        # live streams end on SIGINT/SIGTERM (api.live); this bounds whatever else is open
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
    )
    if workers > 1 and reuse_port and reuse_port_balances():
        return Supervisor(uvicorn.Config(APP, workers=workers, **options), workers).run()
    if workers > 1 and reuse_port:
        logging.getLogger("scoring.serve").warning(
            "SO_REUSEPORT does not balance connections on %s: the %d workers share one socket",
            sys.platform, workers,
        )  # fmt: skip
    uvicorn.run(APP, workers=workers, **options)
    return 0


def _worker(config: uvicorn.Config, parent: int) -> None:  # pragma: no cover - a spawned child
    """One worker: a socket of its own on the shared port, and uvicorn's server on it. The
    socket listens (joins the port's group, and gets its share of connections) only once the
    app has started: uvicorn's ``create_server`` calls ``listen()``."""
    _die_with_parent(parent)
    config.configure_logging()
    try:
        sock = bind_reuse_port(config.host, config.port)
    except OSError as exc:
        logger.error("cannot bind %s:%d: %s", config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)
    uvicorn.Server(config).run(sockets=[sock])


def _die_with_parent(parent: int) -> None:  # pragma: no cover - a spawned child
    """SIGTERM to this process when the supervisor dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


@dataclass
class Slot:
    """One worker's place: the process in it now, and when that one was started."""

    process: BaseProcess
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """``workers`` processes, each listening with ``SO_REUSEPORT`` on ``config``'s address."""

    def __init__(self, config: uvicorn.Config, workers: int) -> None:
        self.config = config
        self.count = workers
        self.slots: list[Slot] = []
        self.signals: list[int] = []
        self._spawn = multiprocessing.get_context("spawn")

    def run(self) -> int:
        config = self.config
        try:
            reserved = bind_reuse_port(config.host, config.port)  # holds the port, never listens
        except OSError as exc:
            logger.error("cannot bind %s:%d: %s", config.host, config.port, exc)
            return STARTUP_FAILURE
        with reserved:
            config.port = reserved.getsockname()[1]  # port 0: the one the kernel chose
            previous = {
                s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                return self._run()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _run(self) -> int:
        config = self.config
        host = f"[{config.host}]" if ":" in config.host else config.host
        logger.info("Started parent process [%d]", os.getpid())
        self.slots = [Slot(self._start()) for _ in range(self.count)]
        logger.info(
            "Uvicorn running on http://%s:%d with %d workers, each on a SO_REUSEPORT socket of "
            "its own (Press CTRL+C to quit)", host, config.port, self.count,
        )  # fmt: skip
        status = 0
        while not self.signals:
            status = self._keep_alive()
            if status:
                break
            time.sleep(TICK)
        self._stop()
        return status

    def _start(self) -> BaseProcess:
        process = self._spawn.Process(target=_worker, args=(self.config, os.getpid()))
        process.start()
        return process

    def _keep_alive(self) -> int:
        """Replace each worker that has exited; a start-up failure's status stops us."""
        for slot in self.slots:
            process = slot.process
            if process.is_alive():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker [%d] failed to start; stopping", process.pid)
                return STARTUP_FAILURE
            if time.monotonic() - slot.started < RESTART_INTERVAL:
                continue  # it died at once: give it a moment before the next
            logger.warning("worker [%d] exited (%s); starting another", process.pid,
                           _exit_reason(process.exitcode))  # fmt: skip
            slot.process, slot.started = self._start(), time.monotonic()
        return 0

    def _stop(self) -> None:
        """SIGTERM to every worker, then wait; a second signal forces them, time kills them."""
        self._send(signal.SIGTERM)
        handled = len(self.signals)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(s.process.is_alive() for s in self.slots) and time.monotonic() < deadline:
            if len(self.signals) > handled:  # Ctrl-C again: uvicorn's force exit
                handled = len(self.signals)
                self._send(signal.SIGINT)
            time.sleep(0.05)
        for slot in self.slots:
            if slot.process.is_alive():
                logger.warning("worker [%d] did not stop in %g s; killing it",
                               slot.process.pid, STOP_TIMEOUT)  # fmt: skip
                slot.process.kill()
            slot.process.join()
        logger.info("Stopping parent process [%d]", os.getpid())

    def _send(self, sig: int) -> None:
        for slot in self.slots:
            if slot.process.is_alive() and slot.process.pid is not None:
                try:
                    os.kill(slot.process.pid, sig)
                except ProcessLookupError:
                    pass


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
