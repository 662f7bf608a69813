"""Connections to the scoring Redis: one server, or a Redis Cluster reached through any node.

``SCORING_REDIS_CLUSTER`` decides: ``yes`` and ``no`` say it, ``auto`` (the default) asks the
server at ``REDIS_URL`` (``INFO cluster``: ``cluster_enabled:1``). On a cluster the engine uses
redis-py's cluster clients (sync and asyncio), which follow ``MOVED``/``ASK``, wait out
``TRYAGAIN`` and read the slot map again after a connection error, :data:`RETRIES` times at
most but without pausing: a read of a failed master's keys fails within milliseconds with a
``RedisError`` (an HTTP 503). Awards (single, batched and awaited) add pauses between their
tries (:func:`pause`: jittered, doubling up to :data:`RETRY_CAP_S`; about 3 s in all on average,
5.5 s at most, plus a connect timeout per try at a host that does not answer), so that a
failover with a short ``cluster-node-timeout`` passes unseen; after that they fail with a
``RedisError`` too. Nothing hangs. RQ cannot use a cluster, so the queues then need
``RQ_REDIS_URL``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

from engine.domain.errors import ConfigError
from engine.runtime.embedded import state_redis_url

log = logging.getLogger("engine.runtime")

#: hiredis's C command packer (one command to its wire bytes), or None without hiredis.
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency; the fallback is redis-py's
    _hiredis_pack = None
else:
    _hiredis_pack = pack_command

#: Tries of one command on a cluster (a failover is over after cluster-node-timeout plus an
#: election: about 2 s with a 1 s timeout, 15-20 s with Redis's default 15 s).
RETRIES = 8
#: The longest pause between two tries (s); the first is up to 0.1 s, each next up to twice that.
RETRY_CAP_S = 1.0
#: Socket timeouts of cluster connections (s): a dead node is given up on, not waited for.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 5.0


#: What a Redis call raises when the store is away: redis-py's errors, and on a cluster also its
#: RedisClusterException (no node reachable, slots not covered), which is not a RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    redis.exceptions.RedisClusterException,
)


#: Replies of a cluster whose slot was elsewhere, migrating or without a primary through every
#: retry: the call was not applied.
CLUSTER_UNSETTLED: tuple[type[Exception], ...] = (
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
)


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=RETRY_CAP_S, base=0.05)


_detected: dict[str, bool] = {}


def server_is_cluster(url: str) -> bool:
    """Whether the server at ``url`` runs in cluster mode (``INFO cluster``), asked once per
    process and URL. A server that cannot be reached is taken for a single server, with a
    warning, so that a process started while Redis is down still starts and answers 503s
    (``SCORING_REDIS_CLUSTER=yes`` says it is a cluster without asking)."""
    if url.startswith("unix:"):
        return False
    known = _detected.get(url)
    if known is not None:
        return known
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        known = str(client.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.RedisError as exc:
        log.warning("could not ask %s whether it is a cluster (%s): taken for one server", url, exc)
        return False
    finally:
        client.close()
    _detected[url] = known
    return known


def uses_cluster(settings: Any) -> bool:
    """Whether the engine's state lives on a Redis Cluster (``SCORING_REDIS_CLUSTER``)."""
    mode = settings.redis_cluster
    if not settings.redis_url:
        if mode == "yes":
            raise ConfigError(
                "SCORING_REDIS_CLUSTER=yes needs REDIS_URL (a node of the cluster); the "
                "embedded default is a single server"
            )
        return False
    if mode == "auto":
        return server_is_cluster(str(settings.redis_url))
    return bool(mode == "yes")


def queue_redis_url(settings: Any, cluster: bool | None = None) -> str:
    """Where RQ's queues live: ``RQ_REDIS_URL``, else the scoring Redis; on a cluster
    ``RQ_REDIS_URL`` is required (RQ needs one server), and :class:`ConfigError` names it."""
    if settings.rq_redis_url:
        return str(settings.rq_redis_url)
    if cluster is None:
        cluster = uses_cluster(settings)
    if cluster:
        raise ConfigError(
            "REDIS_URL is a Redis Cluster, which RQ cannot use: set RQ_REDIS_URL to a single "
            "Redis server for the job queues"
        )
    return state_redis_url(settings)


def cluster_url(url: str) -> str:
    """``url`` checked for a cluster client: a cluster has only database 0."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"a Redis Cluster is reached over redis:// or rediss://, not {url!r}")
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ConfigError(f"a Redis Cluster has only database 0; REDIS_URL names database {db}")
    return url


def cluster_client(url: str, **kwargs: Any) -> Any:
    """A redis-py :class:`~redis.cluster.RedisCluster` over the cluster ``url`` is a node of."""
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    return RedisCluster.from_url(cluster_url(url), **_cluster_options(Retry, kwargs))


def async_cluster_client(url: str, **kwargs: Any) -> Any:
    """The asyncio :class:`~redis.asyncio.cluster.RedisCluster` of :func:`cluster_client`."""
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry

    return RedisCluster.from_url(cluster_url(url), **_cluster_options(Retry, kwargs))


def _cluster_options(retry: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Socket timeouts, and the number of tries (redis-py's cluster clients take only the count
    from their Retry object: the pauses are the engine's, see :func:`pause`)."""
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    kwargs["retry"] = retry(_backoff(), RETRIES, supported_errors=(ConnectionError, TimeoutError))
    return kwargs


def clients(url: str, cluster: bool) -> tuple[Any, Callable[[], Any]]:
    """The engine's sync client of ``url`` and a factory of its asyncio clients (one per event
    loop), both with ``decode_responses=True``: cluster clients when ``cluster``."""
    if cluster:
        return (
            cluster_client(url, decode_responses=True),
            lambda: async_cluster_client(url, decode_responses=True),
        )
    from redis import asyncio as aioredis

    return (
        redis.Redis.from_url(url, decode_responses=True),
        lambda: aioredis.Redis.from_url(url, decode_responses=True),
    )


def pack_commands(connection: Any, commands: list[tuple[Any, ...]]) -> Any:
    """The wire form of ``commands`` for ``connection`` (sync or asyncio): hiredis's C packer
    when present (the engine's arguments are str, int and float, which it takes as they are;
    redis-py's own is Python), else the connection's."""
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(c) for c in commands])]
    return connection.pack_commands(commands)


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` is a redis-py cluster client (sync or asyncio)."""
    return hasattr(client, "nodes_manager")


def pause(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1`` (jittered, doubling, at most RETRY_CAP_S)."""
    return float(_backoff().compute(attempt + 1))


def refresh_topology(client: Any, attempt: int) -> None:
    """After a call found its slot moved or its node gone: wait the attempt's backoff, then
    read the cluster's slot map again (a failover's new primary, a migrated slot)."""
    time.sleep(pause(attempt))
    try:
        client.nodes_manager.initialize()
    except (ConnectionError, TimeoutError, redis.exceptions.RedisClusterException):
        pass  # no node answered yet: the next try refreshes again


def scan_keys(client: Any, match: str, *, near: str | None = None, count: int = 5000) -> Any:
    """The keys matching ``match`` (SCAN). On a cluster, every primary is scanned, or with
    ``near`` (a key of the same hash tag as every match) only the primary serving its slot."""
    if near is not None and is_cluster_client(client):
        node = client.get_node_from_key(near)
        return client.scan_iter(match=match, count=count, target_nodes=node)
    return client.scan_iter(match=match, count=count)
