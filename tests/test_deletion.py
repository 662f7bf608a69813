"""Deleting a user (``engine.delete_user``, ``DELETE /v1/users/{id}``) and exporting one.

What a user relies on: once deleted, nothing of them is left in Redis or SQL (or, anonymised,
only rows under a pseudonym), whatever was in flight when the deletion ran (awards, a drain,
undrained outbox entries), and nothing brings them back: a retried award, the drain, a rebuild.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from conftest import shards_for
from fastapi.testclient import TestClient
from helpers import ADMIN, AWARDER, READER, Clock, drain, drainer, in_threads, token
from sqlalchemy import func, select
from test_api import api_engine, api_settings, client, sqlite_store  # noqa: F401 - fixtures

from engine import ScoringEngine
from engine.domain.deletion import is_pseudonym
from engine.domain.errors import InvalidUserId, NotFound, StoreUnavailable, UserDeleted
from engine.domain.keys import user_digest
from engine.domain.rules import build_rules
from engine.services import deletion as deletion_service
from engine.services.recovery import rebuild, reconcile
from engine.services.reshard import reshard
from engine.storage.models import LeaderboardArchive, PointActivity, UserScore
from engine.storage.store import SqlStore

#: weekly goals and achievements as by default, streak freezes on
RULES = build_rules({"streak": {"freezes_max": 2, "freeze_every_days": 1}})
ALICE, BOB = "alice", "bob"


def make_engine(state_redis: Any, clock: Clock, store: SqlStore, **options: Any) -> ScoringEngine:
    options.setdefault("shards", shards_for(state_redis))
    return ScoringEngine(state_redis, clock=clock, store=store, rules=RULES, **options)


def traces(engine: ScoringEngine, *needles: str) -> list[str]:
    """Every key whose name or content holds one of ``needles``."""
    r = engine.redis
    found = []
    for key in r.scan_iter(match=f"{engine.keys.prefix}:*"):
        kind = r.type(key)
        if kind == "hash":
            content: Any = r.hgetall(key)
        elif kind == "zset":
            content = r.zrange(key, 0, -1)
        elif kind == "set":
            content = r.smembers(key)
        elif kind == "stream":
            content = r.xrange(key)
        else:
            content = r.get(key)
        if any(n in key or n in repr(content) for n in needles):
            found.append(key)
    return found


def sql_of(store: SqlStore, user_id: str) -> dict[str, int]:
    """Rows of ``user_id`` per table (tables with none left out)."""
    return {t: len(rows) for t, rows in store.user_rows(user_id).items() if rows}


def fill(engine: ScoringEngine, clock: Clock) -> None:
    """Alice with state of every kind (some of it drained, some still in the outbox), Bob
    beside her; an ended week archived with both on it."""
    clock.advance(days=-7)
    for user, points in ((ALICE, 70), (BOB, 50)):
        engine.award(user, "special_event", amount=points)
    clock.advance(days=7)
    engine.archive_ended_periods()
    engine.set_profile(ALICE, username="alice_l", display_name="Liddell", time_zone="UTC")
    quest = engine.create_quest(
        title="Quiz master", quest_type="learning", difficulty="easy", points_reward=100,
        activity_type="quiz_complete", target_count=5,
    )  # fmt: skip
    engine.start_quest(ALICE, quest.id)
    engine.set_friends(ALICE, [BOB])
    engine.set_friends(BOB, [ALICE])
    for i in range(3):
        engine.award(ALICE, "quiz_complete", idempotency_key=f"quiz-{i}")
        engine.award(BOB, "comment")
    engine.award(ALICE, "special_event", amount=300)  # a tier up: an upgrade feed entry
    mistake = engine.award(ALICE, "comment", amount=20)
    engine.adjust(ALICE, None, "spam", reverses=mistake.activity.id)  # a reversal marker
    drain(engine)
    engine.award(ALICE, "reaction", idempotency_key="undrained")  # still in the outbox
    engine.award(BOB, "reaction")


# -- what a deletion removes -----------------------------------------------------------------


def test_deletion_leaves_nothing_of_the_user_in_redis_or_sql(
    state_redis: Any, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(state_redis, clock, store)
    fill(engine, clock)
    bob_before = engine.status(BOB).total_points
    assert sql_of(store, ALICE)["leaderboard_archive"] >= 1
    bob_archived = sql_of(store, BOB)["leaderboard_archive"]
    assert engine.achievements(ALICE).earned

    report = engine.delete_user(ALICE)

    assert not report.already_deleted and report.mode == "erase"
    assert report.redis_keys >= 6 and report.boards >= 8 and report.feed_entries >= 1
    assert report.outbox_entries >= 1 and report.idempotency_records >= 4
    assert report.achievements >= 1
    assert report.sql_rows["point_activity"] >= 5 and report.sql_rows["user_score"] == 1
    # the only trace left: Bob's own friend list naming her (Bob's data; see the README)
    assert traces(engine, ALICE, "Liddell") == [engine.keys.friends(BOB)]
    drain(engine)
    assert traces(engine, ALICE, "Liddell") == [engine.keys.friends(BOB)]
    assert sql_of(store, ALICE) == {}
    # Bob keeps everything, and his friends board no longer shows her
    assert engine.status(BOB).total_points == bob_before
    assert [e.user_id for e in engine.leaderboard().friends_of(BOB)] == [BOB]
    holders = engine.redis.hgetall(engine.keys.achievement_holders(engine.keys.shard_of(ALICE)))
    assert holders.get("first_quiz:1", "0") == "0"
    with store.engine.connect() as c:
        archived = c.execute(select(func.count()).select_from(LeaderboardArchive)).scalar_one()
    assert archived == bob_archived
    assert reconcile(engine, store) == []


def test_anonymise_keeps_the_rows_under_a_pseudonym(
    state_redis: Any, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(state_redis, clock, store, delete_mode="anonymise")
    fill(engine, clock)
    drain(engine)
    before = sql_of(store, ALICE)
    total = engine.status(ALICE).total_points

    report = engine.delete_user(ALICE)

    assert (
        report.mode == "anonymise" and report.sql_rows["point_activity"] == before["point_activity"]
    )
    assert sql_of(store, ALICE) == {}
    assert traces(engine, ALICE, "Liddell") == [engine.keys.friends(BOB)]
    with store.engine.connect() as c:
        users = {r[0] for r in c.execute(select(PointActivity.user_id).distinct())}
        (pseudonym,) = users - {BOB}
        assert is_pseudonym(pseudonym)
        with pytest.raises(InvalidUserId):
            engine.status(pseudonym)  # never a valid user id
        score = c.execute(select(UserScore).where(UserScore.user_id == pseudonym)).one()
        assert (score.username, score.display_name, score.total_points) == (None, None, total)
        descriptions = c.execute(
            select(PointActivity.description).where(PointActivity.user_id == pseudonym)
        )
        assert {d for (d,) in descriptions} == {""}
    assert sql_of(store, pseudonym)["point_activity"] == before["point_activity"]
    # neither reconcile nor rebuild takes the pseudonym for a user
    assert reconcile(engine, store) == []
    rebuild(engine, store)
    assert traces(engine, pseudonym, ALICE, "Liddell") == [engine.keys.friends(BOB)]


def test_deleting_twice_or_an_unknown_user_succeeds(real_redis: redis.Redis, clock: Clock,
                                                   store: SqlStore) -> None:  # fmt: skip
    engine = make_engine(real_redis, clock, store)
    engine.award(ALICE, "comment")
    first = engine.delete_user(ALICE)
    again = engine.delete_user(ALICE)
    assert first.redis_keys > 0 and not first.already_deleted
    assert again.already_deleted and (again.redis_keys, again.boards, again.sql_rows) == (
        0, 0, {t: 0 for t in first.sql_rows},
    )  # fmt: skip
    never = engine.delete_user("nobody")
    assert not never.already_deleted and never.redis_keys == 0
    with pytest.raises(UserDeleted):
        engine.award("nobody", "comment")  # the id is refused until the tombstone expires
    with pytest.raises(InvalidUserId):
        engine.delete_user("bad\x00id")


def test_a_deletion_cut_short_is_finished_by_deleting_again(
    real_redis: redis.Redis, clock: Clock, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(real_redis, clock, store)
    engine.award(ALICE, "comment", idempotency_key="k1")
    drain(engine)
    engine.award(ALICE, "comment", idempotency_key="k2")  # undrained

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(store, "erase_user", crash)
    with pytest.raises(RuntimeError):
        engine.delete_user(ALICE)
    # gone from Redis and refused; SQL still holds her rows
    assert traces(engine, ALICE) == [] and sql_of(store, ALICE)["point_activity"] == 1
    records = real_redis.keys(engine.keys.idempotency(0, "*"))
    assert len(records) == 1  # the drained award's: its id is in SQL, for the next attempt
    with pytest.raises(UserDeleted):
        engine.award(ALICE, "comment", idempotency_key="k1")
    monkeypatch.undo()
    again = engine.delete_user(ALICE)
    assert again.already_deleted and again.sql_rows["point_activity"] == 1
    assert again.idempotency_records == 1 and not real_redis.keys(engine.keys.idempotency(0, "*"))
    drain(engine)
    assert traces(engine, ALICE) == [] and sql_of(store, ALICE) == {}


# -- nothing brings the user back ----------------------------------------------------------------


def test_a_retried_award_or_any_write_after_deletion_is_refused(
    state_redis: Any, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(state_redis, clock, store)
    engine.award(ALICE, "comment", idempotency_key="retry-me")
    quest = engine.create_quest(
        title="Q", quest_type="learning", difficulty="easy", points_reward=10,
        activity_type="comment",
    )  # fmt: skip
    engine.delete_user(ALICE)
    with pytest.raises(UserDeleted):
        engine.award(ALICE, "comment", idempotency_key="retry-me")  # its record is gone
    (result,) = engine.award_many([{"user_id": ALICE, "activity_type": "comment"}])
    assert isinstance(result, UserDeleted)
    with pytest.raises(UserDeleted):
        engine.start_quest(ALICE, quest.id)
    with pytest.raises(UserDeleted):
        engine.set_profile(ALICE, username="back")
    with pytest.raises(UserDeleted):
        engine.set_friends(ALICE, [BOB])
    with pytest.raises(UserDeleted):  # a correction, or the decay job, does not bring them back
        engine.adjust(ALICE, 50, "goodwill")
    drain(engine)
    assert traces(engine, ALICE) == [] and sql_of(store, ALICE) == {}


def test_a_deletion_cut_short_stays_a_deletion_after_redis_is_lost(
    real_redis: redis.Redis, clock: Clock, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion stopped before its SQL step (here: the drain lock stays busy) has written the
    SQL tombstone first: after Redis is lost, a rebuild does not bring the user back, and
    deleting again finishes the job."""
    engine = make_engine(real_redis, clock, store)
    engine.award(ALICE, "comment")
    engine.award(BOB, "comment")
    drain(engine)
    monkeypatch.setattr(deletion_service, "LOCK_WAIT_SECONDS", 0.3)
    real_redis.set(engine.keys.drain_lock(0), "a drain elsewhere", ex=60)
    with pytest.raises(StoreUnavailable):
        engine.delete_user(ALICE)
    assert sql_of(store, ALICE)["point_activity"] == 1  # not erased yet
    real_redis.flushdb()  # Redis lost
    rebuild(engine, store)
    assert [e.user_id for e in engine.leaderboard("all_time").top(10)] == [BOB]
    with pytest.raises(UserDeleted):
        engine.award(ALICE, "comment")
    assert engine.delete_user(ALICE).already_deleted
    assert sql_of(store, ALICE) == {} and traces(engine, ALICE) == []


def test_the_drain_drops_entries_of_a_deleted_user(
    real_redis: redis.Redis, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(real_redis, clock, store)
    engine.award(ALICE, "comment")
    engine.award(BOB, "comment")
    outbox = engine.keys.outbox(0)
    copies = [fields for _, fields in real_redis.xrange(outbox) if fields.get("user") == ALICE]
    dead = engine.keys.dead_letters(0)
    real_redis.xadd(dead, {**copies[0], "error": "refused"})
    real_redis.xadd(dead, {"user": BOB, "error": "refused"})
    assert engine.delete_user(ALICE).outbox_entries == len(copies) + 1
    assert [f["user"] for _, f in real_redis.xrange(dead)] == [BOB]
    for fields in copies:  # an entry the deletion could not see (e.g. replayed dead letters)
        real_redis.xadd(outbox, fields)
    report = drainer(engine, store).drain(0)
    assert report.dropped == len(copies) >= 1 and report.written >= 1
    assert sql_of(store, ALICE) == {} and sql_of(store, BOB)["point_activity"] == 1


def test_rebuild_after_deletion_does_not_resurrect(
    state_redis: Any, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(state_redis, clock, store)
    fill(engine, clock)
    drain(engine)
    engine.delete_user(ALICE)
    # Redis lost the tombstones (a restore from an old backup): rebuild writes them again
    for shard in range(engine.keys.shards):
        engine.redis.delete(engine.keys.tombstones(shard))
    engine.redis.delete(engine.keys.tombstone(ALICE))
    rebuild(engine, store)
    assert traces(engine, ALICE, "Liddell") == [engine.keys.friends(BOB)]
    assert engine.redis.exists(engine.keys.tombstone(ALICE))
    index = engine.keys.tombstones(engine.keys.shard_of(ALICE))
    assert engine.redis.zscore(index, user_digest(ALICE)) is not None
    with pytest.raises(UserDeleted):
        engine.award(ALICE, "comment")
    assert engine.status(BOB).total_points > 0


def test_deletion_while_awards_and_a_drain_are_in_flight(
    state_redis: Any, clock: Clock, store: SqlStore
) -> None:
    """16 threads award Alice and Bob, a drain runs beside them, and Alice is deleted in the
    middle: once everything is drained, nothing of Alice is anywhere, and Bob is whole."""
    engine = make_engine(state_redis, clock, store)
    users = ["alice", "bob", "carol", "dave"]
    engine.award(ALICE, "comment")
    start, stop = threading.Event(), threading.Event()
    bob_points: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def award(i: int) -> None:
        start.wait()
        n = 0
        while not stop.is_set() and n < 500:
            user = users[(i + n) % len(users)]
            try:
                engine.award(user, "comment", amount=1)
            except UserDeleted:
                assert user == ALICE
                refused.append(1)
            else:
                if user == BOB:
                    with lock:
                        bob_points.append(1)
            n += 1

    def drain_loop() -> None:
        start.wait()
        d = drainer(engine, store, batch=20)
        while not stop.is_set():
            for shard in range(engine.keys.shards):
                d.drain(shard, linger=0.05)

    drainers = threading.Thread(target=drain_loop)
    drainers.start()
    threads = [threading.Thread(target=award, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    start.set()
    time.sleep(0.2)
    report = engine.delete_user(ALICE)
    time.sleep(0.2)
    stop.set()
    assert not report.already_deleted
    for t in threads:
        t.join()
    drainers.join()
    assert refused and report.redis_keys >= 1  # awards to her before and after
    drain(engine)
    assert traces(engine, ALICE) == [] and sql_of(store, ALICE) == {}
    assert engine.status(BOB).points_by_type["comment"] == len(bob_points)
    assert store.points_by_type(BOB)["comment"] == len(bob_points)
    assert reconcile(engine, store) == []


def test_k2_shards_delete_each_shards_users(
    real_redis: redis.Redis, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(real_redis, clock, store, shards=2)
    users = [f"u{i}" for i in range(8)]
    assert {engine.keys.shard_of(u) for u in users} == {0, 1}
    for u in users:
        engine.award(u, "comment")
    drain(engine)
    other = next(u for u in users if engine.keys.shard_of(u) != engine.keys.shard_of(users[0]))
    gone = [users[0], other]  # one on each shard
    for u in gone:
        engine.delete_user(u)
    in_threads(lambda: engine.award(users[2], "reaction"), [()] * 4)
    drain(engine)
    assert {e.user_id for e in engine.leaderboard().top(10)} == set(users) - set(gone)
    for u in gone:
        assert traces(engine, f'{u}"', f"'{u}'", f":{u}") == [] and sql_of(store, u) == {}


# -- export ----------------------------------------------------------------------------------


def test_export_of_a_live_user_and_of_a_deleted_one(
    state_redis: Any, clock: Clock, store: SqlStore
) -> None:
    engine = make_engine(state_redis, clock, store)
    fill(engine, clock)
    out = engine.export_user(ALICE)
    assert (
        out["user_id"] == ALICE
        and out["state"]["total_points"] == engine.status(ALICE).total_points
    )
    assert out["profile"] == {"username": "alice_l", "display_name": "Liddell", "time_zone": "UTC"}
    assert out["friends"] == [BOB]
    assert [q["status"] for q in out["side_quests"]] == ["in_progress"]
    assert out["side_quests"][0]["current_progress"] == 3
    assert {a["activity_type"] for a in out["activities"]} >= {"quiz_complete", "special_event"}
    assert [e["type"] for e in out["pending"] if "e" not in e] == ["reaction"]
    assert out["ranks"]["all_time"]["rank"] == 1 and out["ranks"]["day"] is not None
    assert out["sql"]["leaderboard_archive"] and out["sql"]["user_score"]
    assert out["achievements"]["earned"] and out["weekly_goals"]
    assert "held" in out["streak_freezes"]
    engine.delete_user(ALICE)
    with pytest.raises(NotFound):
        engine.export_user(ALICE)
    with pytest.raises(NotFound):
        engine.export_user("never-seen")


# -- HTTP ------------------------------------------------------------------------------------


def test_http_delete_and_export(client: TestClient) -> None:  # noqa: F811
    r = client.post("/v1/users/alice/awards", headers=AWARDER, json={"activity_type": "comment"})
    assert r.status_code == 201, r.text
    assert client.delete("/v1/users/alice").status_code == 401
    assert client.delete("/v1/users/alice", headers=READER).status_code == 403
    assert client.delete("/v1/users/alice", headers=token(ALICE)).status_code == 403
    assert client.get("/v1/users/alice/export", headers=token(BOB)).status_code == 403
    own = client.get("/v1/users/alice/export", headers=token(ALICE))
    assert own.status_code == 200, own.text
    assert own.json()["state"]["total_points"] > 0
    assert client.get("/v1/users/alice/export", headers=ADMIN).status_code == 200

    first = client.delete("/v1/users/alice", headers=ADMIN)
    assert first.status_code == 200, first.text
    assert not first.json()["already_deleted"] and first.json()["redis_keys"] >= 1
    again = client.delete("/v1/users/alice", headers=ADMIN)
    assert again.status_code == 200 and again.json()["already_deleted"]

    gone = client.get("/v1/users/alice/export", headers=ADMIN)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    refused = client.post(
        "/v1/users/alice/awards", headers=AWARDER, json={"activity_type": "comment"}
    )
    assert refused.status_code == 410 and refused.json()["error"]["code"] == "user_deleted"
    assert client.get("/v1/users/nobody/export", headers=ADMIN).status_code == 404
    bad = client.delete("/v1/users/bad%01id", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_user_id"
    assert client.get("/v1/users/bad%01id/export", headers=ADMIN).status_code == 422


def test_reshard_keeps_deleted_users_refused(
    real_redis: redis.Redis, clock: Clock, store: SqlStore
) -> None:
    one = make_engine(real_redis, clock, store, shards=1)
    users = [f"u{i}" for i in range(6)]
    for u in users:
        one.award(u, "comment")
    drain(one)
    one.delete_user("u1")
    one.delete_user("u2")
    two = make_engine(real_redis, clock, store, shards=2)
    reshard(two, store, 1)
    for u in ("u1", "u2"):
        assert real_redis.exists(two.keys.tombstone(u))
        with pytest.raises(UserDeleted):
            two.award(u, "comment")
    assert not real_redis.exists(one.keys.tombstone("u1"), one.keys.tombstones(0)) or (
        two.keys.shard_of("u1") == 0 or two.keys.shard_of("u2") == 0
    )
    two.award("u3", "comment")
    drain(two)
    assert sql_of(store, "u1") == sql_of(store, "u2") == {} and reconcile(two, store) == []
