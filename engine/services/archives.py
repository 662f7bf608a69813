"""Archived leaderboard periods: the final standings of ended days, weeks and months, in SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.domain import validation
from engine.domain.errors import InvalidPaging, UnknownBoard, ValidationError
from engine.domain.periods import WINDOWS, period_end, period_of
from engine.domain.results import LeaderboardEntry
from engine.services.boards import Boards
from engine.services.context import Context


class Archives:
    """Archives ended periods' boards to SQL and reads them back."""

    def __init__(self, ctx: Context, boards: Boards) -> None:
        self.ctx = ctx
        self.boards = boards

    def archive_ended_periods(self, *, now: datetime | None = None) -> list[tuple[str, str, int]]:
        """Archive to SQL the final standings of the day, week and month that ended last
        (if not archived yet); returns (window, period, users) of each one archived. Safe to
        run twice or concurrently: rows are inserted once, the period marked last."""
        now = now or self.ctx.clock()
        done = []
        for window in WINDOWS:
            # the period that contains the instant just before the current one began
            current = period_of(window, now)
            start = _period_start(window, current)
            previous = period_of(window, start - timedelta(seconds=1))
            users = self.archive_period(window, previous)
            if users is not None:
                done.append((window, previous, users))
        return done

    def archive_period(self, window: str, period: str) -> int | None:
        """Archive one ended period's standings; None if it was archived already or has not
        ended. The standings are read from Redis in rank order, a chunk at a time."""
        if window not in WINDOWS:
            raise ValidationError(f"unknown window {window!r}", field="window")
        if period_end(window, period) > self.ctx.clock():
            return None
        store = self.ctx.sql()
        if store.period_archived(window, period):
            return None
        board = self.boards.leaderboard(window, period=period)
        return store.archive_period(window, period, _standings(board))

    def archived_top(
        self, board: str, period: str, *, limit: int = 10, offset: int = 0
    ) -> tuple[int, list[LeaderboardEntry]] | None:
        """(users, entries) of an archived period's board; None if it was not archived."""
        _check_window(board)
        period_end(board, period)  # validates the period
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidPaging("limit must be a whole number from 1 to 1000", field="limit")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidPaging("offset must be a whole number >= 0", field="offset")
        return self.ctx.sql().archived_top(board, period, limit=limit, offset=offset)

    def archived_rank(self, board: str, period: str, user_id: str) -> tuple[int, int, int] | None:
        """(rank, points, users) of a user on an archived period; None if not there."""
        _check_window(board)
        period_end(board, period)
        return self.ctx.sql().archived_rank(board, period, validation.user_id(user_id))


def _standings(board: Any, chunk: int = 1000) -> Iterator[tuple[int, str, int]]:
    """(rank, user id, points) of every user on ``board``, best first, a page at a time."""
    offset = 0
    while True:
        entries = board.top(chunk, offset)
        for e in entries:
            yield e.rank, e.user_id, e.score
        if len(entries) < chunk:
            return
        offset += chunk


def _period_start(window: str, period: str) -> datetime:
    end = period_end(window, period)
    if window == "day":
        return end - timedelta(days=1)
    if window == "week":
        return end - timedelta(days=7)
    first = end - timedelta(days=1)
    return datetime(first.year, first.month, 1, tzinfo=UTC)


def _check_window(board: str) -> None:
    if board not in WINDOWS:
        raise UnknownBoard("only day, week and month boards have archived periods", field="board")
