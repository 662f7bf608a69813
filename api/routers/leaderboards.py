"""Leaderboards: top, around a user, a user's standing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from engine.periods import WINDOWS
from engine.results import RankInfo

from ..auth import Scope
from ..deps import Caller, Engine
from ..schemas import EntryOut, ErrorOut, LeaderboardOut, RankOut

router = APIRouter(prefix="/v1/leaderboards", tags=["leaderboards"])
ERRORS = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
          422: {"model": ErrorOut}}  # fmt: skip
Period = Annotated[
    str | None,
    Query(max_length=16, description="a past window: 2026-11-24, 2026-W48 or 2026-11"),
]


@router.get("/{board}", response_model=LeaderboardOut, responses=ERRORS, summary="A leaderboard")
def leaderboard(
    board: str,
    engine: Engine,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    around: Annotated[str | None, Query(max_length=128, description="a user id")] = None,
    period: Period = None,
) -> LeaderboardOut:
    """Boards: ``all_time``, ``month``, ``week``, ``day`` (UTC; the current one unless
    ``period`` is given) and ``type:<activity_type>``. ``around`` lists that user with
    ``limit // 2`` users on each side instead of the page at ``offset``. A past period whose
    final standings were archived (after it ended) is read from the archive in SQL."""
    caller.require(Scope.READ)
    lb = engine.leaderboard(board, period=period)  # validates board and period
    if period is not None and around is None and board in WINDOWS and engine.store is not None:
        archived = engine.archived_top(board, period, limit=limit, offset=offset)
        if archived is not None:
            users, entries = archived
            return LeaderboardOut(board=board, period=period, total_users=users,
                                  entries=[EntryOut.of(e) for e in entries])  # fmt: skip
    if around is not None:
        entries = lb.around(around, max(0, (limit - 1) // 2))
    else:
        entries = lb.top(limit, offset)
    return LeaderboardOut(
        board=board, period=period, total_users=lb.size(),
        entries=[EntryOut.of(e) for e in entries],
    )  # fmt: skip


@router.get(
    "/{board}/users/{user_id}",
    response_model=RankOut,
    responses=ERRORS,
    summary="A user's rank, score, percentile and points to the next rank",
)
def standing(
    board: str, user_id: str, engine: Engine, caller: Caller, period: Period = None
) -> RankOut:
    caller.require(Scope.READ)
    lb = engine.leaderboard(board, period=period)
    if period is not None and board in WINDOWS and engine.store is not None:
        archived = engine.archived_rank(board, period, user_id)
        if archived is not None:
            rank, points, users = archived
            return RankOut.of(board, RankInfo(
                user_id=user_id, score=points, rank=rank, total_users=users,
                percentile=round(100.0 * (users - rank + 1) / users, 2),
            ))  # fmt: skip
    return RankOut.of(board, lb.rank(user_id))
