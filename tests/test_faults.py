"""Fault injection against real processes: the small versions of ``bench.faults``' scenarios.

Each test starts its own processes: a private ``redis-server`` with AOF on (``appendfsync
always``), a database in a private PostgreSQL cluster (one cluster for the module, made with
``initdb``), ``scoring serve`` and ``scoring worker`` (and ``scoring scheduler``) processes; it
injects its fault with SIGKILL, ``pg_ctl -m immediate`` or raw sockets, and asserts the
scenario's verdict: every acknowledged award in SQL exactly once, ``scoring reconcile`` clean, no
dead letters, memory within the bounds of ``bench.faults``, no 5xx but the documented 503 while
a dependency is down. A failure prints the scenario's whole table. ``python -m bench.faults``
runs the same scenarios at full volume.

Without redis-server or PostgreSQL's binaries the tests skip, except on CI (``CI`` set), where
that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import faults
from bench.faults import QUICK, PgCluster, Report


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    why = faults.pg_unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"fault tests need a private PostgreSQL cluster: {why}")
        pytest.skip(why)
    cluster = PgCluster()
    yield cluster
    cluster.close()


def assert_verdict(report: Report, group: str | None = None) -> None:
    checks = [c for c in report.checks if group is None or c.group == group]
    failed = [c for c in checks if c.ok is False]
    assert not failed, "\n" + report.render()


def test_redis_killed_during_awards(pg: PgCluster, tmp_path: Path) -> None:
    """(a) SIGKILL Redis during awards over HTTP; restarted on the same port and AOF file."""
    assert_verdict(faults.redis_kill(QUICK, pg, tmp_path))


def test_worker_killed_inside_a_batch_and_after_its_commit(pg: PgCluster, tmp_path: Path) -> None:
    """(b) SIGKILL a worker inside a batch's SQL transaction, then one between the commit and
    the XACK; a fresh ``scoring worker --burst`` finishes each time."""
    assert_verdict(faults.worker_kill(QUICK, pg, tmp_path))


def test_sql_outage_during_awards(pg: PgCluster, tmp_path: Path) -> None:
    """(c) PostgreSQL stopped (immediate) and started during awards; they go on, 201."""
    assert_verdict(faults.sql_outage(QUICK, pg, tmp_path))


@pytest.fixture(scope="module")
def malformed(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Report:
    """(d) every probe against one server; each test below asserts one probe's checks."""
    return faults.malformed(QUICK, pg, tmp_path_factory.mktemp("malformed"))


@pytest.mark.parametrize("probe", [p.name for p in faults.PROBES])
def test_malformed_request(malformed: Report, probe: str) -> None:
    assert any(c.group == probe for c in malformed.checks), f"{probe} did not run"
    assert_verdict(malformed, probe)


def test_malformed_requests_verdict(malformed: Report) -> None:
    """No 5xx, no hang, the API alive and small, and the awards the probes got answered 2xx
    (NUL characters and all) in SQL exactly once."""
    assert_verdict(malformed, "")
