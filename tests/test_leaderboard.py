"""Leaderboards: competition ranks, stable tie order, around-me, paging, and K shards = 1 shard."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from engine import AwardRequest, ScoringEngine
from engine.domain.errors import InvalidPaging, InvalidTies, NotRanked, UnknownBoard
from engine.domain.periods import period_end, period_of
from engine.runtime.testing import fake_redis
from engine.services import leaderboard as leaderboard_module


def fill(engine: ScoringEngine, scores: dict[str, int]) -> None:
    results = engine.award_many(
        AwardRequest(user, "special_event", amount=points) for user, points in scores.items()
    )
    assert all(not isinstance(r, Exception) for r in results), results


def rows(entries) -> list[tuple[int, str, int]]:
    return [(e.rank, e.user_id, e.score) for e in entries]


def test_ties_share_a_rank_and_list_by_user_id(engine: ScoringEngine) -> None:
    fill(engine, {"cara": 50, "abe": 50, "bo": 30, "dee": 50, "eli": 10})
    board = engine.leaderboard()
    assert rows(board.top(10)) == [
        (1, "abe", 50), (1, "cara", 50), (1, "dee", 50), (4, "bo", 30), (5, "eli", 10),
    ]  # fmt: skip
    assert rows(board.top(2, offset=1)) == [(1, "cara", 50), (1, "dee", 50)]
    assert rows(board.top(2, offset=3)) == [(4, "bo", 30), (5, "eli", 10)]
    assert board.top(5, offset=5) == []
    info = board.rank("dee")
    assert (info.rank, info.score, info.total_users, info.percentile) == (1, 50, 5, 100.0)
    info = board.rank("eli")
    assert (info.rank, info.percentile) == (5, 20.0)
    assert board.rank("bo").rank == 4


TIES = {"competition": [1, 1, 3], "dense": [1, 1, 2], "ordinal": [1, 2, 3]}


@pytest.mark.parametrize("ties", sorted(TIES))
def test_each_tie_mode_on_50_50_30(engine: ScoringEngine, ties: str) -> None:
    """Every read ranks by the tie mode it is given; ordinal ranks follow the listed order:
    most points first, then user ids in ascending byte order."""
    fill(engine, {"bo": 50, "al": 50, "cy": 30})
    board = engine.leaderboard()
    want = list(zip(TIES[ties], ["al", "bo", "cy"], [50, 50, 30], strict=True))
    assert rows(board.top(10, ties=ties)) == want
    assert rows(board.top(2, offset=1, ties=ties)) == want[1:]
    assert rows(board.top(1, offset=2, ties=ties)) == want[2:]
    assert [board.rank(u, ties=ties).rank for u in ("al", "bo", "cy")] == TIES[ties]
    # the percentile and the points to the next rank do not depend on the tie mode
    assert board.rank("bo", ties=ties).percentile == 100.0
    assert board.rank("cy", ties=ties).points_to_next_rank == 20
    for user in ("al", "bo", "cy"):
        assert rows(board.around(user, 1, ties=ties)) == want
    assert rows(board.around("cy", 0, ties=ties)) == want[2:]
    assert rows(board.around("bo", 0, ties=ties)) == want[1:2]
    assert rows(board.page(2, page_size=2, ties=ties).entries) == want[2:]
    assert rows(board.page(1, page_size=2, ties=ties).entries) == want[:2]
    assert rows(board.page_of("cy", page_size=1, ties=ties).entries) == want[2:]
    assert rows(board.page_of("bo", page_size=1, ties=ties).entries) == want[1:2]
    assert ties == "competition" or board.top(3) != board.top(3, ties=ties)


def test_tie_modes_deeper_in_the_board(engine: ScoringEngine) -> None:
    # 100 90 90 80 80 80 70 ...: dense ranks count each score once, whatever the offset
    scores = {"a": 100, "b": 90, "c": 90, "d": 80, "e": 80, "f": 80, "g": 70, "h": 60, "i": 60}
    fill(engine, scores)
    board = engine.leaderboard()
    dense = {"a": 1, "b": 2, "c": 2, "d": 3, "e": 3, "f": 3, "g": 4, "h": 5, "i": 5}
    for offset in range(9):
        for limit in (1, 2, 4):
            got = board.top(limit, offset, ties="dense")
            assert [(e.user_id, e.rank) for e in got] == [
                (u, dense[u]) for u in sorted(scores)[offset : offset + limit]
            ]
            assert [e.rank for e in board.top(limit, offset, ties="ordinal")] == list(
                range(offset + 1, min(offset + limit, 9) + 1)
            )
    for user, rank in dense.items():
        assert board.rank(user, ties="dense").rank == rank
        assert board.rank(user, ties="ordinal").rank == sorted(scores).index(user) + 1
        window = board.around(user, 1, ties="dense")
        assert all(e.rank == dense[e.user_id] for e in window)


def test_bad_tie_modes_and_the_dense_depth(
    engine: ScoringEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(engine, {f"u{i}": 100 - i for i in range(6)})  # six distinct scores
    board = engine.leaderboard()
    for bad in ["Dense", "", "rank", None, 1]:
        for call in (
            lambda bad=bad: board.top(5, ties=bad),
            lambda bad=bad: board.rank("u1", ties=bad),
            lambda bad=bad: board.around("u1", ties=bad),
            lambda bad=bad: board.page(1, ties=bad),
            lambda bad=bad: board.page_of("u1", ties=bad),
        ):
            with pytest.raises(InvalidTies) as caught:
                call()
            assert caught.value.field == "ties" and "competition, dense, ordinal" in str(
                caught.value
            )
    # one score per call: the count goes on over several calls (round trips)
    monkeypatch.setattr(leaderboard_module, "DENSE_STEP", 1)
    assert [board.rank(f"u{i}", ties="dense").rank for i in range(6)] == [1, 2, 3, 4, 5, 6]
    assert [e.rank for e in board.top(2, offset=3, ties="dense")] == [4, 5]
    assert [e.rank for e in board.around("u4", 1, ties="dense")] == [4, 5, 6]
    monkeypatch.setattr(leaderboard_module, "DENSE_STEP", 2)
    monkeypatch.setattr(leaderboard_module, "MAX_DENSE", 2)
    assert board.rank("u2", ties="dense").rank == 3  # two distinct scores above: counted
    assert [e.rank for e in board.top(2, offset=4, ties="ordinal")] == [5, 6]
    with pytest.raises(InvalidTies) as caught:
        board.rank("u3", ties="dense")
    assert "best 2 distinct scores" in str(caught.value)
    with pytest.raises(InvalidTies):
        board.around("u5", 0, ties="dense")
    with pytest.raises(InvalidTies):
        board.page_of("u5", 1, ties="dense")
    # from the top no count is needed (with K > 1 the rows read from the top hold them)
    assert [e.rank for e in board.top(6, ties="dense")] == [1, 2, 3, 4, 5, 6]


def test_around_keeps_the_window_full(engine: ScoringEngine) -> None:
    fill(engine, {f"u{i:02d}": 100 - i for i in range(20)})  # u00 leads, u19 last
    board = engine.leaderboard()
    ids = lambda entries: [e.user_id for e in entries]  # noqa: E731
    assert ids(board.around("u10", 2)) == ["u08", "u09", "u10", "u11", "u12"]
    assert ids(board.around("u00", 2)) == ["u00", "u01", "u02", "u03", "u04"]
    assert ids(board.around("u01", 2)) == ["u00", "u01", "u02", "u03", "u04"]
    assert ids(board.around("u19", 2)) == ["u15", "u16", "u17", "u18", "u19"]
    assert ids(board.around("u18", 2)) == ["u15", "u16", "u17", "u18", "u19"]
    assert [e.rank for e in board.around("u18", 2)] == [16, 17, 18, 19, 20]
    assert len(board.around("u05", 50)) == 20  # smaller board than the window
    assert ids(board.around("u05", 0)) == ["u05"]


def test_paging(engine: ScoringEngine) -> None:
    fill(engine, {f"u{i:02d}": 100 - i // 2 for i in range(25)})  # pairs tie
    board = engine.leaderboard()
    page = board.page_of("u13", page_size=10)
    assert (page.page, page.page_size, page.total_users) == (2, 10, 25)
    assert [e.user_id for e in page.entries] == [f"u{i:02d}" for i in range(10, 20)]
    assert page.entries[0].rank == 11 and page.entries[1].rank == 11
    last = board.page(3, page_size=10)
    assert [e.user_id for e in last.entries] == ["u20", "u21", "u22", "u23", "u24"]
    assert last.entries[-1].rank == 25 and last.entries[0].rank == 21
    # a page that starts inside a tie carries the tie's rank
    assert board.page(2, page_size=3).entries[0].rank == 3
    assert board.page(9, page_size=10).entries == []


def test_not_ranked_and_bad_arguments(engine: ScoringEngine) -> None:
    fill(engine, {"amy": 5})
    board = engine.leaderboard()
    for call in (
        lambda: board.rank("zoe"),
        lambda: board.around("zoe"),
        lambda: board.page_of("zoe"),
    ):
        with pytest.raises(NotRanked):
            call()
    for bad in [0, -1, 1001, 2.5, "10", True]:
        with pytest.raises(InvalidPaging):
            board.top(bad)
    with pytest.raises(InvalidPaging):
        board.top(10, offset=-1)
    with pytest.raises(InvalidPaging):
        board.around("amy", 101)
    for name, period in [("monthly", None), ("type:nope", None), ("week", "2026-48"),
                         ("day", "2026-02-30"), ("all_time", "2026"), (None, None)]:  # fmt: skip
        with pytest.raises(UnknownBoard):
            engine.leaderboard(name, period=period)


def test_empty_board(engine: ScoringEngine) -> None:
    board = engine.leaderboard("type:referral")
    assert board.top(10) == [] and board.size() == 0


@pytest.mark.parametrize("shards", [2, 4, 7, 16])
def test_k_shards_answer_exactly_as_one(state_redis, clock, shards: int) -> None:
    """K shards on a Redis, and on the cluster (where they live on three nodes), read exactly
    as one shard does: global ranks, windows and pages across shards and nodes."""
    rng = random.Random(shards)
    scores = {f"user-{i}": rng.choice([5, 10, 10, 25, 50, 50, 50, 100, rng.randrange(1, 500)])
              for i in range(300)}  # fmt: skip
    one = ScoringEngine(fake_redis(), clock=clock)
    many = ScoringEngine(state_redis, clock=clock, shards=shards)
    fill(one, scores)
    fill(many, scores)
    assert len({many.keys.shard_of(u) for u in scores}) == shards  # users really are spread
    a, b = one.leaderboard(), many.leaderboard()
    assert a.size() == b.size() == 300
    assert a.top(1000) == b.top(1000)
    for offset, limit in [(0, 10), (7, 13), (99, 50), (290, 20)]:
        assert a.top(limit, offset) == b.top(limit, offset)
    for user in rng.sample(sorted(scores), 40) + ["user-0", "user-299"]:
        assert a.rank(user) == b.rank(user)
        assert a.around(user, 4) == b.around(user, 4)
        assert a.page_of(user, 25) == b.page_of(user, 25)
    for page in range(1, 8):
        assert a.page(page, 45) == b.page(page, 45)
    everyone = a.top(1000)
    distinct = sorted({e.score for e in everyone}, reverse=True)
    for ties in ("dense", "ordinal"):
        ranked = a.top(1000, ties=ties)
        assert [e.user_id for e in ranked] == [e.user_id for e in everyone]
        if ties == "ordinal":
            assert [e.rank for e in ranked] == list(range(1, 301))
        else:
            assert [e.rank for e in ranked] == [distinct.index(e.score) + 1 for e in everyone]
        assert b.top(1000, ties=ties) == ranked
        for offset, limit in [(7, 13), (99, 50), (290, 20)]:
            assert a.top(limit, offset, ties=ties) == b.top(limit, offset, ties=ties)
            assert b.top(limit, offset, ties=ties) == ranked[offset : offset + limit]
        for user in rng.sample(sorted(scores), 15) + ["user-0", "user-299"]:
            assert a.rank(user, ties=ties) == b.rank(user, ties=ties)
            assert a.around(user, 4, ties=ties) == b.around(user, 4, ties=ties)
            assert a.page_of(user, 25, ties=ties) == b.page_of(user, 25, ties=ties)
        assert a.page(3, 45, ties=ties) == b.page(3, 45, ties=ties)
    assert one.leaderboard("type:special_event").top(50) == many.leaderboard(
        "type:special_event"
    ).top(50)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_window_and_type_boards_equal_the_sums_of_their_awards(
    engine: ScoringEngine, clock, seed: int
) -> None:
    """Invariant 1: every board's score is the sum over its window, whatever the arrival order,
    batching or lateness of the awards."""
    rng = random.Random(seed)
    users = [f"w{i}" for i in range(12)]
    types = ["quiz_complete", "comment", "reaction", "project_update"]
    sent: list[tuple[str, str, int, datetime]] = []
    for _ in range(40):  # 40 batches of mixed sizes, some single awards
        batch = []
        for _ in range(rng.choice([1, 1, 5, 30])):
            at = clock.now - timedelta(days=rng.randrange(40), hours=rng.randrange(24))
            batch.append(AwardRequest(rng.choice(users), rng.choice(types),
                                      amount=rng.randrange(1, 20), occurred_at=at))  # fmt: skip
        if len(batch) == 1:
            b = batch[0]
            results = [engine.award(b.user_id, b.activity_type, amount=b.amount,
                                    occurred_at=b.occurred_at)]  # fmt: skip
        else:
            results = engine.award_many(batch)
            assert not any(isinstance(r, Exception) for r in results)
        sent += [(b.user_id, b.activity_type, b.amount, b.occurred_at) for b in batch]
        # a goal or quest reward is an activity of its own, at its award's time
        sent += [(b.user_id, reward.activity_type, reward.points, b.occurred_at)
                 for b, r in zip(batch, results, strict=True) for reward in r.rewards]  # fmt: skip

    expected: dict[tuple[str, str | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for user, activity_type, amount, at in sent:
        expected[("all_time", None)][user] += amount
        expected[(f"type:{activity_type}", None)][user] += amount
        for window in ("day", "week", "month"):
            expected[(window, period_of(window, at))][user] += amount
    retention = {"day": 8, "week": 35, "month": 400}
    checked = 0
    for (board, period), scores in expected.items():
        live = engine.leaderboard(board, period=period)
        if (
            period is not None
            and period_end(board, period) + timedelta(days=retention[board]) <= clock.now
        ):
            assert live.size() == 0  # its retention had passed before the award: never written
            continue
        assert {e.user_id: e.score for e in live.top(1000)} == dict(scores), (board, period)
        checked += 1
    assert checked > 15
    for user in users:
        state = engine.status(user)
        assert state.total_points == expected[("all_time", None)][user]
        by_type = {t: expected[(f"type:{t}", None)][user] for t in [*types, "weekly_goal"]}
        assert state.points_by_type == {t: v for t, v in by_type.items() if v}


def test_points_to_next_rank(engine: ScoringEngine) -> None:
    fill(engine, {"a": 50, "b": 50, "c": 30, "d": 5})
    board = engine.leaderboard()
    assert board.rank("a").points_to_next_rank is None
    assert board.rank("c").points_to_next_rank == 20
    assert board.rank("d").points_to_next_rank == 25
