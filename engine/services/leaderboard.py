"""Leaderboard reads, merged over the K shards.

Boards are sorted sets whose scores are *negated* points, so that ascending order (ZRANGE) lists
the highest points first and, among equal points, user ids in ascending byte order: the order
every read returns, on any number of shards. Ranks are competition ranks by default: the
number of users with strictly more points, plus one (scores 50, 50, 30 rank 1, 1, 3); every read
takes ``ties=`` (:class:`~engine.domain.ties.Ties`): ``dense`` (1, 1, 2) or ``ordinal`` (1, 2,
3, in that order). Ordinal ranks are positions, which the reads know already; a dense rank
counts the distinct scores above (``lua/board_dense.lua``, :data:`DENSE_STEP` per call and
shard, up to :data:`MAX_DENSE`: a dense read that starts deeper is refused).

With K shards: top N merges the K top-N lists; a rank sums K counts; a user's position sums, per
shard, the entries that sort before it (``lua/board_position.lua``). K = 1 takes the same path
with one shard, so every read returns exactly the same for any K.
"""

from __future__ import annotations

import asyncio
import heapq
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.commands import board_dense, board_position, board_rank
from engine.commands import friends as friends_command
from engine.commands.reads import Cmd, Plan, arun, cmd, run
from engine.domain.errors import InvalidPaging, InvalidTies, NotRanked
from engine.domain.keys import Keys
from engine.domain.results import LeaderboardEntry, Page, RankInfo
from engine.domain.ties import Ties, tie_mode
from engine.domain.validation import user_id as check_user_id

T = TypeVar("T")

MAX_LIMIT = 1000
MAX_AROUND = 100
#: The most distinct better scores a dense rank counts (a read whose first row has more above it
#: is refused with :class:`InvalidTies`), and how many one script call counts on one shard
#: (each distinct score costs Redis about 8 µs: a call of 250 holds it about 2 ms).
MAX_DENSE = 20_000
DENSE_STEP = 250
#: A tie mode, or its name.
TieMode = Ties | str
COMPETITION = Ties.COMPETITION


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidPaging(f"{name} must be a whole number from {low} to {high}", field=name)
    return value


class Leaderboard:
    """Reads of one board (all shards). Obtain from :meth:`ScoringEngine.leaderboard`.

    Each read is written once, as a plan of round trips (:mod:`engine.commands.reads`), and
    runs on the sync client or, in its ``_async`` form, on the asyncio client that
    ``async_client`` returns (this event loop's; without one, the sync read runs in a thread).
    """

    def __init__(
        self,
        client: Any,
        keys: Keys,
        board_id: str,
        async_client: Callable[[], Any] | None = None,
    ) -> None:
        self.redis = client
        self.board_id = board_id
        self.keys = keys
        self.shard_keys = keys.boards(board_id)
        self._async_client = async_client

    # -- public reads ---------------------------------------------------------------------

    def size(self) -> int:
        """Number of users on the board."""
        return run(self.redis, self._size())

    def top(
        self, limit: int = 10, offset: int = 0, *, ties: TieMode = COMPETITION
    ) -> list[LeaderboardEntry]:
        """The board from position ``offset`` (0 = the leader), at most ``limit`` entries,
        ranked by ``ties`` (every read takes it: see :mod:`engine.domain.ties`)."""
        return run(self.redis, self._top(limit, offset, sized=False, ties=ties))[0]

    def top_with_size(
        self, limit: int = 10, offset: int = 0, *, ties: TieMode = COMPETITION
    ) -> tuple[list[LeaderboardEntry], int]:
        """:meth:`top` and :meth:`size`, read together (one round trip)."""
        return run(self.redis, self._top(limit, offset, sized=True, ties=ties))

    def rank(self, user_id: str, *, ties: TieMode = COMPETITION) -> RankInfo:
        """The user's score, rank, percentile and the points needed to tie the next better
        score; :class:`NotRanked` if absent. The percentile is the share of users with at most
        the user's points, whatever ``ties`` is."""
        return run(self.redis, self._rank(user_id, tie_mode(ties)))

    def around(
        self, user_id: str, n: int = 5, *, ties: TieMode = COMPETITION
    ) -> list[LeaderboardEntry]:
        """The user with ``n`` entries on each side; near the top or bottom the window slides so
        it still holds ``2n + 1`` entries when the board has that many."""
        return run(self.redis, self._around(user_id, n, tie_mode(ties)))[0]

    def around_with_size(
        self, user_id: str, n: int = 5, *, ties: TieMode = COMPETITION
    ) -> tuple[list[LeaderboardEntry], int]:
        """:meth:`around` and the board's size, read together."""
        return run(self.redis, self._around(user_id, n, tie_mode(ties)))

    def page_of(self, user_id: str, page_size: int = 10, *, ties: TieMode = COMPETITION) -> Page:
        """The page (of ``page_size`` entries, counted from 1) on which the user appears."""
        return run(self.redis, self._page_of(user_id, page_size, tie_mode(ties)))

    def page(self, number: int, page_size: int = 10, *, ties: TieMode = COMPETITION) -> Page:
        """Page ``number`` (from 1) of ``page_size`` entries."""
        _check_int("page", number, 1, 10**6)
        _check_int("page_size", page_size, 1, MAX_LIMIT)
        entries, size = self.top_with_size(page_size, (number - 1) * page_size, ties=ties)
        return Page(number, page_size, size, entries)

    def friends_of(self, user_id: str, *, ties: TieMode = COMPETITION) -> list[LeaderboardEntry]:
        """The user and the user's friends (:meth:`ScoringEngine.set_friends`) who are on this
        board, ranked among themselves by ``ties``, in the board's order: two round trips (the
        friend list, then each shard's scores of its members, ``ZMSCORE``)."""
        return run(self.redis, self._friends_of(user_id, tie_mode(ties)))

    # -- the same reads, awaited ----------------------------------------------------------

    async def size_async(self) -> int:
        """:meth:`size` on the asyncio client."""
        return await self._arun(self._size(), self.size)

    async def top_async(
        self, limit: int = 10, offset: int = 0, *, ties: TieMode = COMPETITION
    ) -> list[LeaderboardEntry]:
        """:meth:`top` on the asyncio client."""
        return (await self.top_with_size_async(limit, offset, ties=ties))[0]

    async def top_with_size_async(
        self, limit: int = 10, offset: int = 0, *, ties: TieMode = COMPETITION
    ) -> tuple[list[LeaderboardEntry], int]:
        """:meth:`top_with_size` on the asyncio client (one round trip)."""
        return await self._arun(
            self._top(limit, offset, sized=True, ties=ties),
            lambda: self.top_with_size(limit, offset, ties=ties),
        )

    async def rank_async(self, user_id: str, *, ties: TieMode = COMPETITION) -> RankInfo:
        """:meth:`rank` on the asyncio client."""
        mode = tie_mode(ties)
        return await self._arun(self._rank(user_id, mode), lambda: self.rank(user_id, ties=mode))

    async def around_async(
        self, user_id: str, n: int = 5, *, ties: TieMode = COMPETITION
    ) -> list[LeaderboardEntry]:
        """:meth:`around` on the asyncio client."""
        return (await self.around_with_size_async(user_id, n, ties=ties))[0]

    async def around_with_size_async(
        self, user_id: str, n: int = 5, *, ties: TieMode = COMPETITION
    ) -> tuple[list[LeaderboardEntry], int]:
        """:meth:`around_with_size` on the asyncio client."""
        mode = tie_mode(ties)
        return await self._arun(
            self._around(user_id, n, mode), lambda: self.around_with_size(user_id, n, ties=mode)
        )

    async def friends_of_async(
        self, user_id: str, *, ties: TieMode = COMPETITION
    ) -> list[LeaderboardEntry]:
        """:meth:`friends_of` on the asyncio client."""
        mode = tie_mode(ties)
        return await self._arun(
            self._friends_of(user_id, mode), lambda: self.friends_of(user_id, ties=mode)
        )

    async def _arun(self, plan: Plan[T], sync: Callable[[], T]) -> T:
        client = self._async_client() if self._async_client is not None else None
        if client is None:
            plan.close()
            return await asyncio.to_thread(sync)
        return await arun(client, plan)

    # -- the plans ------------------------------------------------------------------------

    def _size(self) -> Plan[int]:
        sizes = yield [cmd("zcard", key) for key in self.shard_keys]
        return sum(sizes)

    def _top(
        self, limit: int, offset: int, *, sized: bool, ties: TieMode = COMPETITION
    ) -> Plan[tuple[list[LeaderboardEntry], int]]:
        _check_int("limit", limit, 1, MAX_LIMIT)
        _check_int("offset", offset, 0, 10**9)
        return (yield from self._slice(offset, limit, sized=sized, ties=tie_mode(ties)))

    def _rank(self, user_id: str, ties: Ties = COMPETITION) -> Plan[RankInfo]:
        """Competition: one round trip on one shard, two with K > 1. Ordinal adds the user's
        position to the last round trip (so one more on one shard); dense counts the distinct
        better scores after it (:meth:`_dense_count`)."""
        uid = check_user_id(user_id)
        own = self.keys.shard_of(uid)
        if len(self.shard_keys) == 1:
            (reply,) = yield [board_rank.command(self.keys, own, self.board_id, uid)]
            found = board_rank.parse(reply)
            if found is None:
                raise _not_ranked(uid)
            score, better, total, near = found
            rank = 1 + better
            if ties is Ties.ORDINAL:
                rank = self._ordinal(own, (yield self._ordinal_reads(uid, score, own)))
            elif ties is Ties.DENSE:
                rank = 1 + (yield from self._dense_count(score))
            return _rank_info(uid, score, rank, 1 + better, total, [] if near is None else [near])
        (score,) = yield [cmd("zscore", self.shard_keys[own], uid)]
        if score is None:
            raise _not_ranked(uid)
        commands = []
        for key in self.shard_keys:
            commands.append(cmd("zcount", key, "-inf", f"({_fmt(score)}"))
            commands.append(cmd("zcard", key))
            # the nearest better score: the greatest (negated) score below the user's
            commands.append(cmd("zrevrangebyscore", key, f"({_fmt(score)}", "-inf",
                                start=0, num=1, withscores=True))  # fmt: skip
        extra = self._ordinal_reads(uid, score, own) if ties is Ties.ORDINAL else []
        replies = yield commands + extra
        replies, positions = replies[: len(commands)], replies[len(commands) :]
        nearest = [rows[0][1] for rows in replies[2::3] if rows]
        better = 1 + sum(replies[0::3])
        rank = better
        if ties is Ties.ORDINAL:
            rank = self._ordinal(own, positions)
        elif ties is Ties.DENSE:
            rank = 1 + (yield from self._dense_count(score))
        return _rank_info(uid, score, rank, better, sum(replies[1::3]), nearest)

    def _ordinal_reads(self, uid: str, score: float, own: int) -> list[Cmd]:
        """Each shard's count of the entries that sort before the ranked user."""
        return [
            cmd("zrank", key, uid) if s == own
            else board_position.command(self.keys, s, self.board_id, _fmt(score), uid)
            for s, key in enumerate(self.shard_keys)
        ]  # fmt: skip

    def _ordinal(self, own: int, replies: list[Any]) -> int:
        """The ordinal rank from the replies to :meth:`_ordinal_reads`. :class:`NotRanked`
        when the user left the board between the reads (its window expired, say)."""
        if replies[own] is None:
            raise NotRanked(f"{self.board_id}: the user is not on this board", field="user_id")
        return 1 + sum(
            int(r) if s == own else board_position.parse(r) for s, r in enumerate(replies)
        )

    def _dense_count(self, score: float) -> Plan[int]:
        """The distinct scores better than ``score`` over all shards: each shard's are read
        :data:`DENSE_STEP` at a time (``lua/board_dense.lua``, a few ms of Redis each), every
        shard that has more in the same round trip, so no call holds Redis long;
        :class:`InvalidTies` past :data:`MAX_DENSE` of them."""
        bound = _fmt(score)
        found: set[float] = set()
        after = dict.fromkeys(range(len(self.shard_keys)), "-inf")  # shard -> last score seen
        while after:
            replies = yield [
                board_dense.command(self.keys, s, self.board_id, bound, low, DENSE_STEP)
                for s, low in after.items()
            ]
            more = {}
            for s, reply in zip(after, replies, strict=True):
                scores = board_dense.parse(reply)
                found.update(scores)
                if len(scores) == DENSE_STEP:
                    more[s] = f"({_fmt(scores[-1])}"
            if len(found) > MAX_DENSE:
                raise InvalidTies(
                    f"dense ranks are counted within the best {MAX_DENSE} distinct scores; "
                    "this read starts below them (use competition or ordinal ranks)",
                    field="ties",
                )
            after = more
        return len(found)

    def _friends_of(self, user_id: str, ties: Ties) -> Plan[list[LeaderboardEntry]]:
        uid = check_user_id(user_id)
        (listed,) = yield [friends_command.read(self.keys, uid)]
        by_shard: dict[int, list[str]] = {}
        shard_of = self.keys.shard_of
        for member in {uid, *listed}:  # the rows are sorted below
            by_shard.setdefault(shard_of(member), []).append(member)
        shards = sorted(by_shard)
        replies = yield [cmd("zmscore", self.shard_keys[s], by_shard[s]) for s in shards]
        rows = [(member, score)
                for s, scores in zip(shards, replies, strict=True)
                for member, score in zip(by_shard[s], scores, strict=True)
                if score is not None]  # fmt: skip
        rows.sort(key=_order)
        out = []
        for i, (member, score) in enumerate(rows):
            if ties is Ties.ORDINAL or i == 0:
                rank = i + 1
            elif score != rows[i - 1][1]:
                rank = rank + 1 if ties is Ties.DENSE else i + 1
            out.append(LeaderboardEntry(rank, member, _points(score)))
        return out

    def _around(
        self, user_id: str, n: int, ties: Ties = COMPETITION
    ) -> Plan[tuple[list[LeaderboardEntry], int]]:
        uid = check_user_id(user_id)
        _check_int("n", n, 0, MAX_AROUND)
        size = 2 * n + 1
        pivot = yield from self._pivot(uid)
        start = max(0, min(pivot.position - n, pivot.total - size))
        entries, _ = yield from self._slice(start, size, pivot, ties=ties)
        return entries, pivot.total

    def _page_of(self, user_id: str, page_size: int, ties: Ties = COMPETITION) -> Plan[Page]:
        uid = check_user_id(user_id)
        _check_int("page_size", page_size, 1, MAX_LIMIT)
        pivot = yield from self._pivot(uid)
        page = pivot.position // page_size
        entries, _ = yield from self._slice(page * page_size, page_size, pivot, ties=ties)
        return Page(page + 1, page_size, pivot.total, entries)

    # -- internals ------------------------------------------------------------------------

    def _position(self, uid: str) -> _Pivot:
        """Where a ranked user stands, over all shards, read now (the benchmarks time it)."""
        return run(self.redis, self._pivot(uid))

    def _pivot(self, uid: str) -> Plan[_Pivot]:
        """Where a ranked user stands, over all shards: one round trip, and with K > 1 a
        second (each other shard's count of the entries that sort before the user)."""
        own = self.keys.shard_of(uid)
        key = self.shard_keys[own]
        commands = [cmd("zscore", key, uid), cmd("zrank", key, uid)]
        commands += [cmd("zcard", k) for k in self.shard_keys]
        score, rank, *sizes = yield commands
        if score is None:
            raise _not_ranked(uid)
        positions = [0] * len(self.shard_keys)
        positions[own] = rank
        if len(self.shard_keys) > 1:
            others = [s for s in range(len(self.shard_keys)) if s != own]
            counts = yield [
                board_position.command(self.keys, s, self.board_id, _fmt(score), uid)
                for s in others
            ]
            for s, count in zip(others, counts):
                positions[s] = board_position.parse(count)
        return _Pivot(uid, score, sum(positions), positions, sum(sizes))

    def _slice(
        self,
        start: int,
        count: int,
        pivot: _Pivot | None = None,
        *,
        sized: bool = False,
        ties: Ties = COMPETITION,
    ) -> Plan[tuple[list[LeaderboardEntry], int]]:
        """Entries at positions [start, start + count) of the merged board, ranked by ``ties``,
        and (when ``sized``) the board's size, else 0: one round trip, rarely two.

        With one shard, the slice is read with the row before it: the first row's rank is its
        position unless the two tie (then a second round trip counts the better scores). With
        several shards and no ``pivot``, each shard is read from its top, which holds every
        entry before the slice; with a pivot (a user within ``count`` of the slice), each shard
        is read only around the pivot, and the better scores are counted in a second round trip
        only when a shard's window may not reach back to the first row's score.

        Ordinal ranks are the positions: never a second round trip. Dense ranks count the
        distinct scores above the first row: from the rows read when they hold every entry
        before the slice (the top of the board), else in a second round trip
        (``lua/board_dense.lua`` on each shard).
        """
        keys = self.shard_keys
        first = max(0, start - 1)  # with one shard: the row before the slice too
        if len(keys) == 1:
            commands = [cmd("zrange", keys[0], first, start + count - 1, withscores=True)]
        elif pivot is None:
            commands = [cmd("zrange", key, 0, start + count - 1, withscores=True) for key in keys]
        else:
            windows = [max(0, q - count) for q in pivot.positions]
            commands = [cmd("zrange", key, w, q + count, withscores=True)
                        for key, w, q in zip(keys, windows, pivot.positions)]  # fmt: skip
        if sized:
            commands += [cmd("zcard", key) for key in keys]
        replies = yield commands
        lists, size = replies[: len(keys)], sum(replies[len(keys) :])
        better: int | None  # entries with a better score than the first row's, when known
        distinct: int | None = None  # distinct scores better than the first row's, when known
        if len(keys) == 1:
            rows = lists[0]
            before = rows[:1] if start > 0 else []
            rows = rows[len(before) :][:count]
            if not rows:
                return [], size
            better = start if not before or before[0][1] < rows[0][1] else None
            if start == 0:
                distinct = 0
        else:
            merged = list(heapq.merge(*lists, key=_order))
            if pivot is None:
                rows = merged[start : start + count]
                if not rows:
                    return [], size
                # merged holds every entry up to the slice's end
                better = bisect_left(merged, rows[0][1], key=_score)
                if ties is Ties.DENSE:
                    distinct = len({score for _, score in merged[:better]})
            else:
                # merged[u] is the pivot; merged[u + j] sits at position pivot.position + j
                u = bisect_left(merged, (pivot.score, pivot.user_id.encode()), key=_order)
                lo = u + start - pivot.position
                rows = merged[lo : lo + count]
                if not rows:
                    return [], size
                s = rows[0][1]
                # every shard's window starts below the first row's score (or at its top):
                # the entries between that score and the pivot are all in merged
                if all(w == 0 or (win and win[0][1] < s) for w, win in zip(windows, lists)):
                    better = pivot.position - u + bisect_left(merged, s, key=_score)
                else:
                    better = None
        if ties is Ties.ORDINAL:
            return [LeaderboardEntry(start + i + 1, member, _points(score))
                    for i, (member, score) in enumerate(rows)], size  # fmt: skip
        if ties is Ties.DENSE:
            if distinct is None:
                distinct = yield from self._dense_count(rows[0][1])
            out = []
            rank, prev = distinct + 1, rows[0][1]
            for member, score in rows:
                if score != prev:
                    rank, prev = rank + 1, score
                out.append(LeaderboardEntry(rank, member, _points(score)))
            return out, size
        if better is None:
            counts = yield [cmd("zcount", key, "-inf", f"({_fmt(rows[0][1])}") for key in keys]
            better = sum(counts)
        # the first row's rank counts the users with strictly better scores; later rows
        # take their position unless tied with the row above
        out = []
        rank, prev = better + 1, rows[0][1]
        for i, (member, score) in enumerate(rows):
            if score != prev:
                rank, prev = start + i + 1, score
            out.append(LeaderboardEntry(rank, member, _points(score)))
        return out, size


@dataclass(frozen=True, slots=True)
class _Pivot:
    user_id: str
    score: float
    position: int  # 0-based, over all shards
    positions: list[int]  # per shard: entries that sort before the user
    total: int  # board size


def _rank_info(
    uid: str, score: float, rank: int, competition: int, total: int, nearest: list[float]
) -> RankInfo:
    """``rank`` in the read's tie mode, ``competition`` its competition rank (the percentile's);
    ``nearest``: the nearest better score of each shard that has one."""
    to_next = int(score - max(nearest)) if nearest else None
    percentile = round(100.0 * (total - competition + 1) / total, 2)
    return RankInfo(uid, _points(score), rank, percentile, total, to_next)


def _not_ranked(uid: str) -> NotRanked:
    return NotRanked(f"user {uid!r} is not on this board", field="user_id")


def _order(row: tuple[str, float]) -> tuple[float, bytes]:
    return row[1], row[0].encode()


def _score(row: tuple[str, float]) -> float:
    return row[1]


def _points(score: float) -> int:
    return int(-score)


def _fmt(score: float) -> str:
    return str(int(score)) if score == int(score) else repr(score)
