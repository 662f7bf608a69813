"""The audit trail at volume: point_activity partitioned by month on PostgreSQL (migration 0008),
partitions made ahead by the scheduler's job, rows of DEFAULT moved into their month, retention
dropping months whose periods are archived (their sums kept in point_activity_rollup, so that
reconcile and rebuild still add up), and the drain writing into partitions exactly once. SQLite
keeps one table. Dates are relative to the run's clock (``SCORING_TEST_NOW`` moves them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis
from helpers import BASE, PG_TEST_DB, PLAIN_RULES, Clock, drain
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine import AwardRequest, ScoringEngine
from engine.domain.periods import WINDOWS, period_of
from engine.runtime.settings import Settings
from engine.services.recovery import rebuild, reconcile
from engine.services.retention import maintain_partitions, unarchived_periods
from engine.storage import partitions as parts
from engine.storage.store import SqlStore

DB = f"{PG_TEST_DB}_partitions"


def month_ago(n: int, day: int = 10) -> datetime:
    """Noon of ``day`` of the UTC month ``n`` months before the run's (negative: ahead)."""
    first = parts.add_months(parts.month_of(BASE), -n)
    return datetime(first.year, first.month, day, 12, tzinfo=UTC)


def name_of(at: datetime) -> str:
    return parts.month_name(parts.month_of(at))


@pytest.fixture(scope="module")
def pg_server(pg_url: str) -> Iterator[str]:
    """The URL of a database of this module's own (made anew per test that asks for one)."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    yield make_url(pg_url).set(database=DB).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
    admin.dispose()


def fresh_db(pg_server: str, revision: str = "head") -> SqlStore:
    admin = create_engine(
        make_url(pg_server).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {DB}"))
    admin.dispose()
    store = SqlStore(pg_server)
    store.upgrade(revision)
    return store


def downgrade(store: SqlStore, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from engine.storage.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
    store.engine.dispose()  # the pool's connections knew the other schema


@pytest.fixture
def pg(pg_server: str) -> Iterator[SqlStore]:
    store = fresh_db(pg_server)
    yield store
    store.close()


def row(at: datetime, user: str = "u1", amount: int = 10, kind: str = "comment") -> dict[str, Any]:
    """A point_activity row as the drain writes it."""
    return {
        "id": uuid.uuid4(), "user_id": user, "amount": amount, "activity_type": kind,
        "description": "", "tier_at_time": "ember", "created_at": at, "total_points": amount,
        "level": 1, "current_streak_days": 1, "longest_streak_days": 1,
        "last_activity_date": at.date(), "version": 1,
    }  # fmt: skip


def where(store: SqlStore) -> dict[str, str]:
    """activity id -> the partition holding its row."""
    with store.engine.connect() as c:
        q = text("SELECT id, tableoid::regclass::text FROM point_activity")
        return {str(i): t for i, t in c.execute(q)}


def primary_key(store: SqlStore) -> list[str]:
    with store.engine.connect() as c:
        q = text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'point_activity'::regclass "
            "AND i.indisprimary ORDER BY a.attname"
        )
        return [r[0] for r in c.execute(q)]


def indexes(store: SqlStore) -> dict[str, str]:
    """index name -> access method, of the indexes on point_activity itself."""
    with store.engine.connect() as c:
        q = text(
            "SELECT ic.relname, am.amname FROM pg_index i JOIN pg_class ic ON ic.oid = "
            "i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
            "WHERE i.indrelid = 'point_activity'::regclass"
        )
        return dict(c.execute(q).all())


# -- the migration ------------------------------------------------------------------------


def test_the_migration_converts_a_table_with_rows_and_back(pg_server: str) -> None:
    store = fresh_db(pg_server, "0007")  # the revision before 0008
    rows = [row(month_ago(n), user=f"u{n}") for n in (0, 1, 7)]
    rows.append(row(month_ago(1, day=1).replace(hour=0), user="edge"))  # the month's first instant
    store.write(rows, [], [])  # today's schema: PRIMARY KEY (id)
    store.write(rows, [], [])
    assert not store.partitioned() and primary_key(store) == ["id"]
    store.close()

    store = SqlStore(pg_server)
    store.upgrade()
    assert store.partitioned()
    assert primary_key(store) == ["created_at", "id"]
    found = where(store)
    assert found == {str(r["id"]): name_of(r["created_at"]) for r in rows}, "each in its month"
    months = [p.month for p in store.activity_partitions()]
    assert months[-1] is None, "a DEFAULT partition"
    real_now = parts.month_of(datetime.now(UTC))  # the migration makes months by the host's clock
    assert {parts.add_months(real_now, n) for n in range(4)} <= set(months)
    assert indexes(store) == {
        "point_activity_pkey": "btree",
        "ix_point_activity_user_created": "btree",
        "ix_point_activity_type_created": "btree",
        "ix_point_activity_user_type": "btree",
        "ix_point_activity_created": "brin",
        "ix_point_activity_reverses": "btree",
    }
    with store.engine.connect() as c:  # every column carried over, in order
        columns = [r[0] for r in c.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = "
            "'point_activity' ORDER BY ordinal_position"))]  # fmt: skip
    assert columns[:3] == ["id", "user_id", "amount"] and "event_id" in columns
    store.write(rows, [], [])  # the partitioned key: still one row per activity
    assert len(where(store)) == 4

    downgrade(store, "0007")
    assert not store.partitioned() and primary_key(store) == ["id"]
    assert set(where(store).values()) == {"point_activity"}
    assert len(where(store)) == 4
    store.upgrade()
    assert len(where(store)) == 4 and store.partitioned()
    store.close()


def test_sqlite_keeps_one_table(tmp_path: Any) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    rows = [row(month_ago(n)) for n in (0, 30)]
    store.write(rows, [], [])
    store.write(rows, [], [])
    assert store.count_activities() == 2 and not store.partitioned()
    assert store.activity_partitions() == []
    report = maintain_partitions(store, BASE, retention_months=1)
    assert (report.created, report.dropped, report.waiting) == ([], [], {})
    assert store.count_activities() == 2, "retention keeps every row on SQLite"
    assert store.rollups() == {}
    store.close()


# -- partitions ahead, DEFAULT ------------------------------------------------------------


def test_the_job_makes_partitions_ahead_once(pg: SqlStore) -> None:
    now = month_ago(-30)  # a year no migration made partitions for
    report = maintain_partitions(pg, now, retention_months=None)
    wanted = [parts.month_name(parts.add_months(parts.month_of(now), n)) for n in range(4)]
    assert report.created == wanted
    assert maintain_partitions(pg, now, retention_months=None).created == []
    names = [p.name for p in pg.activity_partitions()]
    assert set(wanted) <= set(names) and names[-1] == parts.DEFAULT


def test_a_row_without_its_month_lands_in_default_and_moves_with_the_month(
    pg: SqlStore,
) -> None:
    ahead, back = month_ago(-40), month_ago(50)
    rows = [row(ahead), row(ahead, user="u2"), row(back), row(month_ago(0))]
    pg.write(rows, [], [])
    found = where(pg)
    assert [found[str(r["id"])] for r in rows[:3]] == [parts.DEFAULT] * 3
    report = maintain_partitions(pg, BASE, retention_months=None)
    assert {name_of(ahead), name_of(back)} <= set(report.created)
    assert where(pg) == {str(r["id"]): name_of(r["created_at"]) for r in rows}
    # the rows moved are still written once
    pg.write(rows, [], [])
    assert len(where(pg)) == 4
    assert maintain_partitions(pg, BASE, retention_months=None).created == []


def test_the_drain_writes_into_partitions_exactly_once(
    real_redis: redis.Redis, clock: Clock, pg: SqlStore
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, store=pg, rules=PLAIN_RULES)
    pg.create_partitions(parts.month_of(month_ago(n)) for n in range(3))
    items = [
        AwardRequest(f"u{i % 5}", "comment", occurred_at=min(month_ago(i % 3), clock.now))
        for i in range(60)
    ]  # fmt: skip
    assert not any(isinstance(r, Exception) for r in engine.award_many(items))
    drain(engine)
    # the same batch written again (a worker that died before acknowledging)
    with pg.engine.connect() as c:
        batch = [dict(r._mapping) for r in c.execute(text("SELECT * FROM point_activity"))]
    pg.write(batch, [], [])
    found = where(pg)
    assert len(found) == 60
    assert set(found.values()) == {name_of(month_ago(n)) for n in range(3)}
    assert reconcile(engine, pg) == []


# -- retention ----------------------------------------------------------------------------


def archive_all(store: SqlStore, partition: str, *, but: str | None = None) -> None:
    """Mark archived every period with activity in ``partition`` (but ``but``)."""
    for missing in unarchived_periods(store, partition):
        if missing != but:
            window, period = missing.split("/")
            store.archive_period(window, period, iter([(1, "u0", 1)]))


def test_retention_drops_a_month_once_its_periods_are_archived(
    real_redis: redis.Redis, clock: Clock, pg: SqlStore
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, store=pg, rules=PLAIN_RULES)
    old, older, recent = month_ago(4), month_ago(5), month_ago(1)
    items = []
    for i in range(30):
        kind = ("comment", "quiz_complete", "reaction")[i % 3]
        for at in (older, old, recent):
            items.append(AwardRequest(f"u{i % 4}", kind, occurred_at=at + timedelta(days=i % 7)))
    items.append(AwardRequest("gone", "referral", occurred_at=older))  # only in a dropped month
    assert not any(isinstance(r, Exception) for r in engine.award_many(items))
    drain(engine)
    maintain_partitions(pg, clock.now, retention_months=None)
    users = [*(f"u{i}" for i in range(4)), "gone"]
    before = {u: engine.status(u) for u in users}
    by_type = {u: pg.points_by_type(u) for u in users}
    board_names = ("all_time", "type:comment", "type:referral")
    boards = {k: engine.leaderboard(k).top(10) for k in board_names}

    # the older month is archived; in the old one, one day (so one period) is not
    archive_all(pg, name_of(older))
    day = period_of("day", old + timedelta(days=2))
    archive_all(pg, name_of(old), but=f"day/{day}")
    report = maintain_partitions(pg, clock.now, retention_months=2)
    # (empty months go too: under SCORING_TEST_NOW the migration's months are years back)
    assert [d[:2] for d in report.dropped if d[1]] == [(name_of(older), 31)], "the rows it held"
    assert report.waiting == {name_of(old): [f"day/{day}"]}, "kept until archived"
    names = {p.name for p in pg.activity_partitions()}
    assert name_of(older) not in names and name_of(old) in names and name_of(recent) in names
    assert pg.count_activities() == 60
    rolled = pg.rollups()
    assert rolled["gone"] == {"referral": (before["gone"].total_points, 1)}

    # reconcile counts the dropped months; the rebuild gives the same totals, types and boards
    assert reconcile(engine, pg) == []
    assert {u: pg.points_by_type(u) for u in users} == by_type
    rebuild(engine, pg)
    for u in users:
        after = engine.status(u)
        assert (after.total_points, after.tier, after.level) == (
            before[u].total_points, before[u].tier, before[u].level,
        ), u  # fmt: skip
        assert after.points_by_type == before[u].points_by_type, u
        assert after.activity_counts == before[u].activity_counts, u
    assert {k: engine.leaderboard(k).top(10) for k in board_names} == boards
    assert reconcile(engine, pg) == []

    # once the last period is archived, the month goes too (not while a window board of it may
    # still be live in Redis: the longest window retention holds it); a later run changes nothing
    pg.archive_period("day", day, iter([]))
    held = maintain_partitions(pg, clock.now, retention_months=2, window_days=400)
    assert held.dropped == [] and name_of(old) in {p.name for p in pg.activity_partitions()}
    report = maintain_partitions(pg, clock.now, retention_months=2)
    assert [d[0] for d in report.dropped] == [name_of(old)]
    again = maintain_partitions(pg, clock.now, retention_months=2)
    assert (again.created, again.dropped, again.waiting) == ([], [], {})
    assert pg.count_activities() == 30 and reconcile(engine, pg) == []


def test_a_row_arriving_for_a_dropped_month_is_rolled_up_on_the_next_run(
    real_redis: redis.Redis, clock: Clock, pg: SqlStore
) -> None:
    engine = ScoringEngine(real_redis, clock=clock, store=pg, rules=PLAIN_RULES)
    old = month_ago(6)
    engine.award("u1", "comment", occurred_at=old)
    drain(engine)
    maintain_partitions(pg, clock.now, retention_months=None)
    archive_all(pg, name_of(old))
    dropped = maintain_partitions(pg, clock.now, retention_months=3).dropped
    assert [d[:2] for d in dropped if d[1]] == [(name_of(old), 1)]
    engine.award("u1", "comment", occurred_at=old + timedelta(hours=1))  # backdated, later
    drain(engine)
    assert set(where(pg).values()) == {parts.DEFAULT}
    report = maintain_partitions(pg, clock.now, retention_months=3)
    assert [d[0] for d in report.dropped] == [name_of(old)], "made again, then dropped"
    assert pg.count_activities() == 0
    assert pg.rollups()["u1"]["comment"][1] == 2
    assert reconcile(engine, pg) == []


def test_a_detached_month_left_by_a_stopped_run_is_finished(pg: SqlStore) -> None:
    at = month_ago(8)
    pg.write([row(at, amount=7), row(at, amount=5)], [], [])
    maintain_partitions(pg, BASE, retention_months=None)
    with pg.engine.begin() as c:  # the run stopped after detaching
        parts.detach_month(c, name_of(at))
    assert pg.count_activities() == 0 and pg.rollups() == {}
    report = maintain_partitions(pg, BASE, retention_months=None)
    assert report.dropped == [(name_of(at), 2, 12)]
    assert pg.rollups() == {"u1": {"comment": (12, 2)}}
    assert {u: t for u, t, _ in pg.user_totals()} == {"u1": 12}


def test_the_retention_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().activity_retention_months is None
    monkeypatch.setenv("SCORING_ACTIVITY_RETENTION_MONTHS", "13")
    assert Settings().activity_retention_months == 13
    for bad in ("0", "-1", "twelve", "1.5"):
        monkeypatch.setenv("SCORING_ACTIVITY_RETENTION_MONTHS", bad)
        with pytest.raises(ValidationError):
            Settings()


def test_periods_of_a_month_cover_its_days_weeks_and_month(pg: SqlStore) -> None:
    at = month_ago(3, day=1)
    pg.write([row(at), row(at + timedelta(days=9))], [], [])
    maintain_partitions(pg, BASE, retention_months=None)
    missing = unarchived_periods(pg, name_of(at))
    expected = []
    for t in (at, at + timedelta(days=9)):
        expected += [f"{w}/{period_of(w, t)}" for w in WINDOWS]
    assert missing == list(dict.fromkeys(expected))
    assert date.fromisoformat(missing[0].split("/")[1]) == at.date()


def test_the_command_and_the_scheduler_job(
    pg: SqlStore, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    fresh_settings: None, capsys: pytest.CaptureFixture[str], tmp_path: Any,
) -> None:  # fmt: skip
    import workers.jobs
    from scoring.cli import main as cli_main

    at = month_ago(-20)  # far ahead: in DEFAULT until its month is made
    pg.write([row(at)], [], [])
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", pg.url)
    monkeypatch.setenv("SCORING_ACTIVITY_RETENTION_MONTHS", "1200")
    assert cli_main(["db", "partitions", "--apply"]) == 0
    out = capsys.readouterr().out
    assert f"created {name_of(at)}" in out and "DEFAULT" in out
    assert where(pg) == {next(iter(where(pg))): name_of(at)}
    report = workers.jobs.maintain_partitions()  # the scheduler's job: nothing left to do
    assert (report["created"], report["dropped"], report["waiting"]) == ([], [], {})
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 's.db'}")
    SqlStore(f"sqlite:///{tmp_path / 's.db'}").upgrade()
    assert cli_main(["db", "partitions"]) == 0
    assert "one unpartitioned table" in capsys.readouterr().out


def test_partition_changes_while_the_drain_writes_lose_and_double_nothing(pg: SqlStore) -> None:
    """Rows of a month keep arriving (backdated) while its partition is made out of DEFAULT and
    then dropped by retention: each row ends up once, in a partition, or in the rollup."""
    import threading

    at = month_ago(9)
    written: list[int] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            batch = [row(at + timedelta(minutes=i), amount=1) for i in range(50)]
            try:
                pg.write(batch, [], [])
            except Exception as exc:  # noqa: BLE001 - the test asserts there is none
                errors.append(exc)
                return
            written.append(len(batch))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 3 and not errors:
            stop.wait(0.01)
        assert name_of(at) in pg.create_partitions([parts.month_of(at)])
        while len(written) < 6 and not errors:
            stop.wait(0.01)
        archive_all(pg, name_of(at))
        dropped = maintain_partitions(pg, BASE, retention_months=2).dropped
        assert name_of(at) in [d[0] for d in dropped]
        while len(written) < 9 and not errors:
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert errors == [], "a write refused while partitions changed"
    maintain_partitions(pg, BASE, retention_months=2)  # what came after the drop, to the rollup
    kept = {u: t for u, t, _ in pg.user_totals()}
    assert kept == {"u1": sum(written)}, "every row counted once"
    assert pg.count_activities() == 0
