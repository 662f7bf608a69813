"""Friend lists and friends boards: the user and their friends ranked among themselves, on one
Redis, fakeredis and the cluster (where friends live on other shards and nodes)."""

from __future__ import annotations

import pytest
from test_leaderboard import fill, rows

from engine import ScoringEngine
from engine.domain.errors import InvalidFriends, InvalidUserId
from engine.services.friends import MAX_FRIENDS


def test_set_and_read_a_friend_list(engine: ScoringEngine) -> None:
    assert engine.friends("al") == []
    # duplicates and the user's own id are dropped; the list comes back in byte order
    assert engine.set_friends("al", ["cy", "bo", "cy", "al", "é", "Z"]) == ["Z", "bo", "cy", "é"]
    assert engine.friends("al") == ["Z", "bo", "cy", "é"]
    assert engine.friends("bo") == []  # a list is one-sided
    assert engine.set_friends("al", ["dee"]) == ["dee"]  # replaced, not merged
    assert engine.friends("al") == ["dee"]
    assert engine.set_friends("al", []) == []
    assert engine.friends("al") == []
    many = [f"f{i}" for i in range(MAX_FRIENDS)]
    assert len(engine.set_friends("al", many)) == MAX_FRIENDS
    assert engine.friends("al") == sorted(many)
    # the list is one key under the user's hash tag
    assert engine.redis.scard(engine.keys.friends("al")) == MAX_FRIENDS
    assert engine.keys.tag(engine.keys.shard_of("al")) in engine.keys.friends("al")


def test_bad_friend_lists_write_nothing(engine: ScoringEngine) -> None:
    engine.set_friends("al", ["bo"])
    for bad, field in [
        ([f"f{i}" for i in range(MAX_FRIENDS + 1)], "friends"),
        (["ok", ""], "friends.1"),
        (["x" * 129], "friends.0"),
        (["é" * 65], "friends.0"),  # 130 bytes
        (["a\x00b"], "friends.0"),
        (["ok", 7], "friends.1"),
        ("bo", "friends"),
    ]:
        with pytest.raises(InvalidFriends) as caught:
            engine.set_friends("al", bad)
        assert caught.value.field == field
    with pytest.raises(InvalidUserId):
        engine.set_friends("", ["bo"])
    assert engine.friends("al") == ["bo"]


@pytest.mark.parametrize(
    ("ties", "ranks"),
    [("competition", [1, 1, 3, 4]), ("dense", [1, 1, 2, 3]), ("ordinal", [1, 2, 3, 4])],
)
def test_a_friends_board_ranks_the_user_and_friends_among_themselves(
    engine: ScoringEngine, ties: str, ranks: list[int]
) -> None:
    # others (and more points) around them on the board, on every shard
    fill(engine, {f"x{i}": 100 + i for i in range(40)})
    fill(engine, {"bo": 50, "al": 50, "cy": 30, "dee": 5})
    engine.set_friends("al", ["bo", "cy", "dee", "nobody", "x3x"])  # two never awarded
    board = engine.leaderboard()
    want = list(zip(ranks, ["al", "bo", "cy", "dee"], [50, 50, 30, 5], strict=True))
    assert rows(board.friends_of("al", ties=ties)) == want
    # the friends' own boards hold only what they listed
    assert rows(board.friends_of("bo", ties=ties)) == [(1, "bo", 50)]
    engine.set_friends("dee", ["x39", "cy"])
    assert [e.user_id for e in board.friends_of("dee", ties=ties)] == ["x39", "cy", "dee"]
    # a board the user is not on: the friends who are
    fill(engine, {"bo": 1})
    assert [e.user_id for e in board.friends_of("al", ties=ties)] == ["bo", "al", "cy", "dee"]
    assert engine.leaderboard("type:comment").friends_of("al", ties=ties) == []
    assert board.friends_of("zed", ties=ties) == []  # no list, not on the board


def test_friends_on_every_shard(engine: ScoringEngine) -> None:
    users = {f"p{i:03d}": 1 + (i * 7) % 50 for i in range(300)}
    fill(engine, users)
    engine.set_friends("p000", [u for u in users if u != "p000"])
    ranked = engine.leaderboard().friends_of("p000", ties="dense")
    assert [e.user_id for e in ranked] == [e.user_id for e in engine.leaderboard().top(300)]
    assert [e.rank for e in ranked] == [e.rank for e in engine.leaderboard().top(300, ties="dense")]
