"""Read-your-writes: a user's recent activities list the awards still in the outbox (not yet
drained into SQL), merged with SQL's rows and each listed once, in SQL's order; the outbox is
read from the drain's floor, a bounded number of entries."""

from __future__ import annotations

from datetime import timedelta

from conftest import shards_for
from helpers import Clock, drain, drainer

from engine import ScoringEngine
from engine.commands import outbox_recent
from engine.storage.store import SqlStore


def _sharded(sql_engine: ScoringEngine, store: SqlStore, clock: Clock) -> ScoringEngine:
    """The test's engine: K = 8 on the cluster, as the core tests."""
    return ScoringEngine(sql_engine.redis, clock=clock, store=store, rules=sql_engine.rules,
                         shards=shards_for(sql_engine.redis))  # fmt: skip


def _view(activities) -> list[tuple]:
    return [(a.id, a.user_id, a.amount, a.activity_type, a.description, a.tier_at_time,
             a.created_at) for a in activities]  # fmt: skip


def test_an_award_is_listed_before_any_drain(sql_engine, store: SqlStore, clock: Clock) -> None:
    engine = _sharded(sql_engine, store, clock)
    result = engine.award("ann", "quiz_complete", amount=40, description="first")
    listed = engine.recent_activities("ann")
    assert _view(listed) == _view([result.activity])
    assert store.recent_activities("ann") == []  # not in SQL yet
    assert engine.recent_activities("bob") == []  # someone else's awards are not listed
    drain(engine)
    assert _view(engine.recent_activities("ann")) == _view([result.activity])  # listed once


def test_pending_and_drained_activities_merge_in_sqls_order(
    sql_engine, store: SqlStore, clock: Clock
) -> None:
    engine = _sharded(sql_engine, store, clock)
    clock.noon()

    def award_all() -> None:
        engine.award("ann", "quiz_complete", amount=40, occurred_at=clock.now - timedelta(days=9))
        engine.award("ann", "quiz_complete", amount=30, occurred_at=clock.now - timedelta(hours=3))
        for i in range(5):
            clock.advance(seconds=1)
            engine.award("ann", "comment", amount=2, description=f"c{i}")
            engine.award("bob", "comment", amount=2, description=f"b{i}")

    def pages() -> list:
        page1 = engine.recent_activities("ann", limit=3)
        page2 = engine.recent_activities(
            "ann", limit=3, before=(page1[-1].created_at, page1[-1].id)
        )
        quizzes = engine.recent_activities("ann", activity_type="quiz_complete")
        return [_view(page1), _view(page2), _view(quizzes), _view(engine.recent_activities("ann"))]

    award_all()
    before = pages()
    assert [row[4] for row in before[0]] == ["c4", "c3", "c2"]
    assert [row[4] for row in before[1]] == ["c1", "c0", ""]
    assert [row[2] for row in before[2]] == [30, 40]
    assert len(before[3]) == 7
    drain(engine)
    assert pages() == before
    # some in SQL, the newest still in the outbox
    clock.advance(seconds=1)
    newest = engine.award("ann", "reaction", amount=1, description="newest")
    listed = engine.recent_activities("ann", limit=3)
    assert [a.description for a in listed] == ["newest", "c4", "c3"]
    assert listed[0].id == newest.activity.id


def test_entries_a_worker_read_or_wrote_without_acknowledging(
    sql_engine, store: SqlStore, clock: Clock
) -> None:
    """Entries delivered to a worker that died (pending in the group), and entries it wrote
    to SQL but did not acknowledge, are each listed once."""
    engine = sql_engine  # one shard: the drainer's helpers read shard 0
    for i in range(6):
        clock.advance(seconds=1)
        engine.award("ann", "comment", amount=1 + i, description=f"c{i}")
    drainer(engine, store).drain(0)
    for i in range(6, 12):
        clock.advance(seconds=1)
        engine.award("ann", "comment", amount=1 + i, description=f"c{i}")
    d = drainer(engine, store, batch=3)
    outbox = engine.keys.outbox(0)
    written = d._read(outbox)  # delivered, written, never acknowledged
    d._write_batch(d._parse(written))
    d._read(outbox)  # delivered, neither written nor acknowledged
    assert len(store.recent_activities("ann", limit=100)) == 9
    listed = engine.recent_activities("ann", limit=100)
    assert [a.description for a in listed] == [f"c{i}" for i in range(11, -1, -1)]
    assert [a.description for a in engine.recent_activities("ann", limit=4)] == [
        "c11", "c10", "c9", "c8",
    ]  # fmt: skip


def test_rewards_in_the_outbox_carry_their_sql_id(eng: ScoringEngine) -> None:
    """A weekly goal's reward entry carries its key; its id is derived as the drain derives it."""
    results = [eng.award("gus", "comment") for _ in range(10)]  # post_comments: 10 comments
    rewards = [r for result in results for r in result.rewards]
    assert rewards and rewards[0].activity_type == "weekly_goal"
    pending = {a.id: a for a in eng.recent_activities("gus", limit=50)}
    assert rewards[0].activity_id in pending
    drain(eng)
    drained = {a.id: a for a in eng.recent_activities("gus", limit=50)}
    assert _view(drained.values()) == _view(pending.values())


def test_the_outbox_read_is_bounded(sql_engine, store: SqlStore, clock: Clock, monkeypatch) -> None:
    """The outbox is read newest first, down to the drain's floor, at most SCAN_LIMIT entries:
    an award behind more of others' entries than that shows once it is drained."""
    engine = sql_engine
    engine.award("ann", "comment", description="early")
    drain(engine)
    clock.advance(seconds=1)
    engine.award("ann", "comment", description="pending")
    for i in range(30):
        engine.award(f"other-{i}", "comment")
    original = outbox_recent.args
    monkeypatch.setattr(outbox_recent, "args", lambda **kw: original(**kw, scan=20))
    assert [a.description for a in engine.recent_activities("ann")] == ["early"]
    monkeypatch.setattr(outbox_recent, "args", lambda **kw: original(**kw, scan=40))
    assert [a.description for a in engine.recent_activities("ann")] == ["pending", "early"]
    assert [a.description for a in engine.pending_activities("ann")] == ["pending"]


def test_status_and_recent_in_one_round_trip(sql_engine, store: SqlStore, clock: Clock) -> None:
    """The seed's my-status read: the state and the outbox's activities together, then SQL's;
    without SQL, the outbox's alone, in the same order."""
    import asyncio

    engine = _sharded(sql_engine, store, clock)
    for i in range(3):
        clock.advance(seconds=1)
        engine.award("ann", "comment", amount=1 + i, description=f"c{i}")
    drain(engine)
    late = engine.award(
        "ann", "comment", description="late", occurred_at=clock.now - timedelta(hours=1)
    )
    clock.advance(seconds=1)
    engine.award("ann", "comment", description="c3")
    state, recent = asyncio.run(engine.status_and_recent_async("ann", limit=3))
    assert state.total_points == engine.status("ann").total_points
    assert [a.description for a in recent] == ["c3", "c2", "c1"]
    assert _view(recent) == _view(engine.recent_activities("ann", limit=3))
    everything = asyncio.run(engine.status_and_recent_async("ann", limit=10))[1]
    assert [a.description for a in everything] == ["c3", "c2", "c1", "c0", "late"]
    bare = ScoringEngine(engine.redis, clock=clock, rules=engine.rules, shards=engine.keys.shards)
    assert [a.description for a in asyncio.run(bare.status_and_recent_async("ann"))[1]] == [
        "c3", "late",
    ]  # fmt: skip
    assert late.activity.id in {a.id for a in everything}
