"""Leaderboards: the list of boards, top, around a user, a user's standing, and a board's live
stream (Server-Sent Events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from engine.domain.errors import InvalidTies, ScoringError, ValidationError
from engine.domain.periods import WINDOWS
from engine.domain.results import RankInfo
from engine.domain.ties import Ties

from ..auth import AuthError, Scope
from ..deps import Engine, Reader, TiesQuery, reader
from ..hot import answer, header, query
from ..schemas import BoardInfo, BoardsOut, LeaderboardOut, RankOut, error_responses, render

router = APIRouter(prefix="/v1/leaderboards", tags=["leaderboards"])
ERRORS = error_responses(401, 403, 404, 422)
Period = Annotated[
    str | None,
    Query(max_length=16, description="a past window: 2026-11-24, 2026-W48 or 2026-11"),
]


def _archived(ties: Ties) -> bool:
    """Whether a past period's archive may answer (it holds competition ranks only)."""
    if ties is not Ties.COMPETITION:
        raise InvalidTies(
            "an archived period keeps its competition ranks: ties must be competition",
            field="ties",
        )
    return True


WINDOW_TITLES = {"all_time": "All time", "month": "This month", "week": "This week",
                 "day": "Today"}  # fmt: skip


@router.get("", response_model=BoardsOut, responses=ERRORS, summary="The boards there are")
def boards(engine: Engine, _: Reader) -> BoardsOut:
    """The current periods' boards (UTC) and one all-time board per activity type."""
    types = engine.rules.activity_types
    return BoardsOut(boards=[
        *(BoardInfo(id=b, title=t) for b, t in WINDOW_TITLES.items()),
        *(BoardInfo(id=f"type:{name}", title=spec.display) for name, spec in types.items()),
    ])  # fmt: skip


@router.get(
    "/{board}/stream",
    response_class=StreamingResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                               "description": "a stream of board, tiers and upgrades events"}},
    summary="A board's live changes (Server-Sent Events)",
)  # fmt: skip
async def stream(
    request: Request,
    board: str,
    engine: Engine,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="rows of the board")] = 10,
    upgrades: Annotated[int, Query(ge=0, le=100, description="latest upgrades")] = 20,
) -> StreamingResponse:
    """The board of the current period (``all_time``, ``month``, ``week``, ``day`` or
    ``type:<activity_type>``) as ``text/event-stream``. Three events, each sent when the stream
    opens and then only when it changed (checked every ``SCORING_STREAM_INTERVAL_MS``):

    - ``board``: ``{board, total_users, rows: [{rank, user_id, name, points, tier,
      tier_display, level, streak}]}`` (points on this board; tier, level and streak the user's)
    - ``tiers``: ``{tiers: [{tier, display, users}]}``, users with points per tier, lowest first
    - ``upgrades``: ``{upgrades: [{user_id, name, at, from_tier, tier, tier_display,
      from_level, level}]}``, the latest tier and level changes, newest first

    ``error`` (``{code, message}``) says the store is unavailable; the stream goes on and sends
    everything again when it is back. A comment line is sent every 15 s of silence."""
    first = await run_in_threadpool(engine.live_board, board, limit, upgrades)  # 404 here
    hub = request.app.state.live
    sub = hub.subscribe(board, limit, upgrades, first)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in sub.messages():
                yield chunk
        finally:
            hub.unsubscribe(board, limit, upgrades, sub)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


#: The bounds of the leaderboard route's limit and offset (its hot handler checks the same).
LIMIT, OFFSET = (1, 1000), (0, 1_000_000)


@router.get("/{board}", response_model=LeaderboardOut, responses=ERRORS, summary="A leaderboard")
async def leaderboard(
    board: str,
    engine: Engine,
    who: Reader,
    limit: Annotated[int, Query(ge=LIMIT[0], le=LIMIT[1])] = 10,
    offset: Annotated[int, Query(ge=OFFSET[0], le=OFFSET[1])] = 0,
    around: Annotated[str | None, Query(max_length=128, description="a user id")] = None,
    period: Period = None,
    ties: TiesQuery = Ties.COMPETITION,
    friends_of: Annotated[
        str | None,
        Query(max_length=128, description="a user id: that user and their friends only"),
    ] = None,
) -> dict[str, object]:
    """Boards: ``all_time``, ``month``, ``week``, ``day`` (UTC; the current one unless
    ``period`` is given) and ``type:<activity_type>``. ``around`` lists that user with
    ``limit // 2`` users on each side instead of the page at ``offset``. A past period whose
    final standings were archived (after it ended) is read from the archive in SQL, in
    competition ranks only. ``friends_of`` ranks that user and their friends
    (``PUT /v1/users/{id}/friends``) among themselves, ``total_users`` of them on the board,
    paged by ``limit`` and ``offset`` (from the live board, of a past period too while it is
    kept); it needs a key with the read scope or that user's own token."""
    lb = engine.leaderboard(board, period=period)  # validates board and period
    if friends_of is not None:
        if around is not None:
            raise ValidationError("use around or friends_of, not both", field="friends_of")
        if who is None:
            raise AuthError("a friends board needs credentials: a key with the read scope or "
                            "the user's own token")  # fmt: skip
        who.require_user(friends_of, Scope.READ)
        ranked = await lb.friends_of_async(friends_of, ties=ties)
        return {"board": board, "period": period, "total_users": len(ranked),
                "entries": ranked[offset : offset + limit]}  # fmt: skip
    if period is not None and around is None and board in WINDOWS and engine.store is not None:
        archived = await run_in_threadpool(
            engine.archived_top, board, period, limit=limit, offset=offset
        )
        if archived is not None and _archived(ties):
            users, entries = archived
            return {"board": board, "period": period, "total_users": users, "entries": entries}
    if around is not None:
        entries, total = await lb.around_with_size_async(
            around, max(0, (limit - 1) // 2), ties=ties
        )
    else:
        entries, total = await lb.top_with_size_async(limit, offset, ties=ties)
    return {"board": board, "period": period, "total_users": total, "entries": entries}


async def hot_leaderboard(
    scope: dict[str, Any], receive: Any, params: dict[str, Any]
) -> tuple[Response | None, Any]:
    """The leaderboard route's hot handler (:mod:`api.hot`): a current board's page (``limit``
    and ``offset`` only; ``around``, ``period``, ``ties`` and ``friends_of`` go to the FastAPI
    route, as does a reader without the right credentials or an unknown board)."""
    paging = query(scope, {"limit": LIMIT, "offset": OFFSET})
    if paging is None:
        return None, receive
    state = scope["app"].state
    client = scope.get("client")
    try:
        reader(state, client[0] if client else "", header(scope, b"x-api-key"),
               header(scope, b"authorization"))  # fmt: skip
        lb = state.engine.leaderboard(params["board"])
    except ScoringError:
        return None, receive

    async def page() -> Response:
        entries, total = await lb.top_with_size_async(paging.get("limit", 10),
                                                      paging.get("offset", 0))  # fmt: skip
        board = {"board": params["board"], "period": None, "total_users": total,
                 "entries": entries}  # fmt: skip
        return render(LeaderboardOut, board)

    return await answer(state, page()), receive


@router.get(
    "/{board}/users/{user_id}",
    response_model=RankOut,
    responses=ERRORS,
    summary="A user's rank, score, percentile and points to the next rank",
)
async def standing(
    board: str,
    user_id: str,
    engine: Engine,
    _: Reader,
    period: Period = None,
    ties: TiesQuery = Ties.COMPETITION,
) -> dict[str, object]:
    """``rank`` by ``ties``; ``percentile``: the share of the board's users with at most the
    user's points, whatever the tie mode."""
    lb = engine.leaderboard(board, period=period)
    if period is not None and board in WINDOWS and engine.store is not None:
        archived = await run_in_threadpool(engine.archived_rank, board, period, user_id)
        if archived is not None and _archived(ties):
            rank, points, users = archived
            info = RankInfo(
                user_id=user_id, score=points, rank=rank, total_users=users,
                percentile=round(100.0 * (users - rank + 1) / users, 2),
            )  # fmt: skip
            return {"board": board, **asdict(info)}
    return {"board": board, **asdict(await lb.rank_async(user_id, ties=ties))}
