"""A real uvicorn server in a thread, and a Server-Sent Events reader, for the tests that need
a socket (streams, the browser test)."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port) until the block ends; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.live.close_soon()  # what SIGINT or SIGTERM does first in a served process
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "the test server did not stop"


@dataclass
class Event:
    name: str
    data: dict
    at: float  # time.monotonic() when it arrived


class EventReader:
    """Reads an SSE stream in a thread; ``next(name)`` waits for the next event of that name.

    A plain socket (HTTP/1.1, chunked body), so that ``close()`` ends the read at once."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.events: queue.Queue[Event] = queue.Queue()
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        lines = [
            f"GET {parts.path}?{parts.query} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Accept: text/event-stream",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers = {}
        while (line := self.file.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            self.headers[name.lower()] = value.strip()
        self.content_type = self.headers.get("content-type", "")
        self.comments = 0  # comment lines (heartbeats) seen
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _lines(self) -> Iterator[str]:
        """The body's lines (the body is chunked)."""
        pending = b""
        while size := int(self.file.readline().strip() or b"0", 16):
            pending += self.file.read(size)
            self.file.readline()
            *done, pending = pending.split(b"\n")
            yield from (line.decode() for line in done)

    def _read(self) -> None:
        name, data = "message", []
        try:
            for line in self._lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    self.events.put(Event(name, json.loads("\n".join(data)), time.monotonic()))
                    name, data = "message", []
        except (OSError, ValueError):
            pass  # closed by close(), or the server went away

    def next(self, name: str, timeout: float = 5.0) -> Event:
        """The next event called ``name`` (others are skipped); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(f"no {name!r} event within {timeout} s") from None
            if event.name == name:
                return event

    def drain(self, seconds: float) -> list[Event]:
        """Every event that arrives within ``seconds``."""
        out, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        return out

    def ended(self, timeout: float = 5.0) -> bool:
        """Whether the server ended the stream (within ``timeout``)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        assert not self._thread.is_alive()
