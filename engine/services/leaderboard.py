"""Leaderboard reads, merged over the K shards.

Boards are sorted sets whose scores are *negated* points, so that ascending order (ZRANGE) lists
the highest points first and, among equal points, user ids in ascending byte order: the order
every read returns, on any number of shards. Ranks are competition ranks: the number of users
with strictly more points, plus one (scores 50, 50, 30 rank 1, 1, 3).

With K shards: top N merges the K top-N lists; a rank sums K counts; a user's position sums, per
shard, the entries that sort before it (``lua/board_position.lua``). K = 1 takes the same path
with one shard, so every read returns exactly the same for any K.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from engine.commands import board_position
from engine.commands.scripts import run_calls
from engine.domain.errors import InvalidPaging, NotRanked
from engine.domain.keys import Keys
from engine.domain.results import LeaderboardEntry, Page, RankInfo
from engine.domain.validation import user_id as check_user_id

MAX_LIMIT = 1000
MAX_AROUND = 100


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidPaging(f"{name} must be a whole number from {low} to {high}", field=name)
    return value


class Leaderboard:
    """Reads of one board (all shards). Obtain from :meth:`ScoringEngine.leaderboard`."""

    def __init__(self, client: Any, keys: Keys, board_id: str) -> None:
        self.redis = client
        self.board_id = board_id
        self.keys = keys
        self.shard_keys = keys.boards(board_id)

    # -- public reads ---------------------------------------------------------------------

    def size(self) -> int:
        """Number of users on the board."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.shard_keys:
            pipe.zcard(key)
        return sum(pipe.execute())

    def top(self, limit: int = 10, offset: int = 0) -> list[LeaderboardEntry]:
        """The board from position ``offset`` (0 = the leader), at most ``limit`` entries."""
        _check_int("limit", limit, 1, MAX_LIMIT)
        _check_int("offset", offset, 0, 10**9)
        return self._slice(offset, limit)

    def rank(self, user_id: str) -> RankInfo:
        """The user's score, competition rank, percentile and the points needed to tie the next
        better score; :class:`NotRanked` if absent."""
        uid = check_user_id(user_id)
        score = self._score(uid)
        pipe = self.redis.pipeline(transaction=False)
        for key in self.shard_keys:
            pipe.zcount(key, "-inf", f"({_fmt(score)}")
            pipe.zcard(key)
            # the nearest better score: the greatest (negated) score below the user's
            pipe.zrevrangebyscore(key, f"({_fmt(score)}", "-inf", start=0, num=1, withscores=True)
        replies = pipe.execute()
        rank = 1 + sum(replies[0::3])
        total = sum(replies[1::3])
        better = [rows[0][1] for rows in replies[2::3] if rows]
        to_next = int(score - max(better)) if better else None
        percentile = round(100.0 * (total - rank + 1) / total, 2)
        return RankInfo(uid, _points(score), rank, percentile, total, to_next)

    def around(self, user_id: str, n: int = 5) -> list[LeaderboardEntry]:
        """The user with ``n`` entries on each side; near the top or bottom the window slides so
        it still holds ``2n + 1`` entries when the board has that many."""
        uid = check_user_id(user_id)
        _check_int("n", n, 0, MAX_AROUND)
        size = 2 * n + 1
        pivot = self._position(uid)
        start = max(0, min(pivot.position - n, pivot.total - size))
        return self._slice(start, size, pivot)

    def page_of(self, user_id: str, page_size: int = 10) -> Page:
        """The page (of ``page_size`` entries, counted from 1) on which the user appears."""
        uid = check_user_id(user_id)
        _check_int("page_size", page_size, 1, MAX_LIMIT)
        pivot = self._position(uid)
        page = pivot.position // page_size
        entries = self._slice(page * page_size, page_size, pivot)
        return Page(page + 1, page_size, pivot.total, entries)

    def page(self, number: int, page_size: int = 10) -> Page:
        """Page ``number`` (from 1) of ``page_size`` entries."""
        _check_int("page", number, 1, 10**6)
        _check_int("page_size", page_size, 1, MAX_LIMIT)
        start = (number - 1) * page_size
        entries = self._slice(start, page_size)
        return Page(number, page_size, self.size(), entries)

    # -- internals ------------------------------------------------------------------------

    def _score(self, uid: str) -> float:
        key = self.keys.board(self.keys.shard_of(uid), self.board_id)
        score: float | None = self.redis.zscore(key, uid)
        if score is None:
            raise NotRanked(f"user {uid!r} is not on this board", field="user_id")
        return score

    def _position(self, uid: str) -> _Pivot:
        """Where a ranked user stands, over all shards."""
        own = self.keys.shard_of(uid)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(self.shard_keys[own], uid)
        pipe.zrank(self.shard_keys[own], uid)
        for key in self.shard_keys:
            pipe.zcard(key)
        score, rank, *sizes = pipe.execute()
        if score is None:
            raise NotRanked(f"user {uid!r} is not on this board", field="user_id")
        positions = [0] * len(self.shard_keys)
        positions[own] = rank
        if len(self.shard_keys) > 1:
            others = [s for s in range(len(self.shard_keys)) if s != own]
            calls = [
                board_position.call(self.keys, s, self.board_id, _fmt(score), uid) for s in others
            ]
            for s, n in zip(others, run_calls(self.redis, calls)):
                if isinstance(n, Exception):
                    raise n
                positions[s] = board_position.parse(n)
        return _Pivot(uid, score, sum(positions), positions, sum(sizes))

    def _slice(self, start: int, count: int, pivot: _Pivot | None = None) -> list[LeaderboardEntry]:
        """Entries at positions [start, start + count) of the merged board, ranked.

        With several shards and no ``pivot``, each shard is read from its top; with a pivot (a
        user within ``count`` of the slice), each shard is read only around the pivot.
        """
        keys = self.shard_keys
        pipe = self.redis.pipeline(transaction=False)
        if len(keys) == 1:
            pipe.zrange(keys[0], start, start + count - 1, withscores=True)
        elif pivot is None:
            for key in keys:
                pipe.zrange(key, 0, start + count - 1, withscores=True)
        else:
            for key, q in zip(keys, pivot.positions):
                pipe.zrange(key, max(0, q - count), q + count, withscores=True)
        lists = pipe.execute()
        if len(lists) == 1:
            rows = lists[0]
        else:
            merged = list(heapq.merge(*lists, key=_order))
            if pivot is None:
                rows = merged[start:]
            else:
                # merged[u] is the pivot; merged[u + j] sits at position pivot.position + j
                u = bisect_left(merged, (pivot.score, pivot.user_id.encode()), key=_order)
                first = u + start - pivot.position
                rows = merged[first : first + count]
        rows = rows[:count]
        if not rows:
            return []
        # the first row's rank counts the users with strictly better scores; later rows
        # take their position unless tied with the row above
        first_rank = 1
        if start > 0:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.zcount(key, "-inf", f"({_fmt(rows[0][1])}")
            first_rank = 1 + sum(pipe.execute())
        out = []
        rank, prev = first_rank, rows[0][1]
        for i, (member, score) in enumerate(rows):
            if score != prev:
                rank, prev = start + i + 1, score
            out.append(LeaderboardEntry(rank, member, _points(score)))
        return out


@dataclass(frozen=True, slots=True)
class _Pivot:
    user_id: str
    score: float
    position: int  # 0-based, over all shards
    positions: list[int]  # per shard: entries that sort before the user
    total: int  # board size


def _order(row: tuple[str, float]) -> tuple[float, bytes]:
    return row[1], row[0].encode()


def _points(score: float) -> int:
    return int(-score)


def _fmt(score: float) -> str:
    return str(int(score)) if score == int(score) else repr(score)
