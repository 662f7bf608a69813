"""Awards: one user's award (idempotent with Idempotency-Key), and batches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field, create_model
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import Response

from engine.domain.errors import NotRanked, ScoringError
from engine.domain.results import AwardResult
from engine.services.facade import AwardRequest

from ..auth import PRINCIPAL, Principal, Scope
from ..deps import Caller, Engine, boards_public, header_text, may_award
from ..hot import Handler, answer, header, read_body, replay
from ..schemas import AwardIn, BatchIn, UserSchemas, error_responses, render

ERRORS = error_responses(401, 403, 409, 422)
#: The award route's path (it has a hot handler: :func:`hot_award`).
AWARD_PATH = "/v1/users/{user_id}/awards"


def router(schemas: UserSchemas) -> APIRouter:
    """The award routes, answering with ``schemas`` (the app's rules' user schema)."""
    router = APIRouter(prefix="/v1", tags=["awards"])

    @router.post(
        AWARD_PATH.removeprefix("/v1"), status_code=201, response_model=schemas.award,
        responses=ERRORS, summary="Award points to a user",
    )  # fmt: skip
    async def award(
        user_id: str,
        body: AwardIn,
        request: Request,
        caller: Caller,
        idempotency_key: Annotated[
            str | None,
            Header(description="a replay changes nothing and answers as the first call"),
        ] = None,
        include: Annotated[
            Literal["rank"] | None,
            Query(
                description="rank: the answer's `rank` holds the user's all-time rank "
                "before and after the award, `{before: N or null, after: M}`"
            ),
        ] = None,  # fmt: skip
    ) -> Response:
        """With ``?include=rank`` the answer has a ``rank`` object: the user's competition rank
        on the all-time board read just before the award (``null``: not on the board) and
        just after it (awards of others in between move both; a replay changes nothing). It
        costs two board reads (``bench.leaderboard_bench``). A rank is a leaderboard read:
        unless leaderboards are public to this client, it also needs the read scope (or the
        user's own token)."""
        # the reference implementation: the hot handler (hot_award) answers most requests
        may_award(request.app.state, caller, user_id, body.activity_type)
        host = request.client.host if request.client else ""
        if include == "rank" and not boards_public(request.app.state, host):
            caller.require_user(user_id, Scope.READ)
        return await _award(
            request.app.state, schemas, user_id, body, idempotency_key, rank=include == "rank"
        )

    @router.post(
        "/awards/batch",
        response_model=schemas.batch,
        responses=ERRORS,
        summary="Award up to 1,000 awards; each succeeds or fails on its own",
    )
    def batch(body: BatchIn, request: Request, engine: Engine, caller: Caller) -> Response:
        items: list[AwardRequest] = []
        denied: dict[int, ScoringError] = {}
        for i, a in enumerate(body.awards):
            try:
                may_award(request.app.state, caller, a.user_id, a.activity_type)
            except ScoringError as exc:
                if caller.key is not None:
                    raise  # a key without the award scope: the whole call is refused
                denied[i] = exc
            items.append(AwardRequest(a.user_id, a.activity_type, a.amount, a.description,
                                      a.idempotency_key, a.occurred_at))  # fmt: skip
        allowed = [i for i in range(len(items)) if i not in denied]
        outcomes: dict[int, AwardResult | ScoringError] = dict(
            zip(allowed, engine.award_many([items[i] for i in allowed]), strict=True)
        )
        outcomes.update(denied)
        results: list[dict[str, Any]] = []
        tally = {"applied": 0, "replayed": 0, "refused": 0}
        for i in range(len(items)):
            out = outcomes[i]
            if isinstance(out, ScoringError):
                tally["refused"] += 1
                results.append({"index": i, "result": None, "error": out})
            else:
                tally["replayed" if out.replayed else "applied"] += 1
                results.append({"index": i, "result": out, "error": None})
        counter = request.app.state.metrics.awards
        for outcome, n in tally.items():
            if n:
                counter.labels(outcome).inc(n)
        refused = tally["refused"]
        envelope = {"applied": len(results) - refused, "refused": refused, "results": results}
        return render(schemas.batch, envelope)

    return router


async def _award(
    state: Any,
    schemas: UserSchemas,
    user_id: str,
    body: AwardIn,
    idempotency_key: str | None,
    *,
    rank: bool = False,
) -> Response:
    """The award itself, once the caller may make it: on the engine's asyncio Redis client (no
    thread-pool hop per award); with ``rank``, between two reads of the user's all-time rank."""
    key = header_text(idempotency_key, "Idempotency-Key")
    board = state.engine.leaderboard() if rank else None
    before = await _rank(board, user_id) if board is not None else None
    result = await state.engine.award_async(
        user_id, body.activity_type, amount=body.amount, description=body.description,
        idempotency_key=key, occurred_at=body.occurred_at,
    )  # fmt: skip
    state.metrics.awards.labels("replayed" if result.replayed else "applied").inc()
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    if board is not None:
        moved = _Ranked(result, RankMove(before=before, after=await _rank(board, user_id)))
        return render(_with_rank(schemas.award), moved, status_code=201, headers=headers)
    return render(schemas.award, result, status_code=201, headers=headers)


class RankMove(BaseModel):
    """A user's competition rank on the all-time board just before and just after an award."""

    before: int | None = Field(description="null: the user was not on the board")
    after: int | None = Field(description="null only if the board lost the user meanwhile")


@dataclass(frozen=True)
class _Ranked:
    """An award's result with the rank movement, read as the result's attributes plus ``rank``."""

    result: AwardResult
    rank: RankMove

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


@cache
def _with_rank(model: type[BaseModel]) -> type[BaseModel]:
    """The award's response model with the ``rank`` of ``?include=rank``."""
    ranked: type[BaseModel] = create_model(
        f"{model.__name__}WithRank", __base__=model, rank=(RankMove, ...)
    )
    return ranked


async def _rank(board: Any, user_id: str) -> int | None:
    try:
        info = await board.rank_async(user_id)
    except NotRanked:
        return None
    rank: int = info.rank
    return rank


def hot_award(schemas: UserSchemas) -> Handler:
    """The award route's hot handler (:mod:`api.hot`): the body parsed once, by pydantic from
    the bytes (``model_validate_json``); a body that is empty, not JSON, or fails validation, a
    content type other than JSON, or a query string (``?include=rank``), goes to the FastAPI
    route."""

    async def handle(
        scope: dict[str, Any], receive: Any, params: dict[str, Any]
    ) -> tuple[Response | None, Any]:
        if scope.get("query_string"):  # ?include=rank and the rest: the FastAPI route's
            return None, receive
        body, disconnected = await read_body(receive)
        parsed = None if disconnected else _parse(scope, body)
        if parsed is None:
            return None, replay(body, disconnected, receive)
        state = scope["app"].state
        user_id = params["user_id"]
        caller: Principal = scope["state"][PRINCIPAL]  # the guard authenticated the request

        async def award() -> Response:
            may_award(state, caller, user_id, parsed.activity_type)
            return await _award(state, schemas, user_id, parsed, header(scope, b"idempotency-key"))

        return await answer(state, award()), receive

    return handle


def _parse(scope: dict[str, Any], body: bytes) -> AwardIn | None:
    """The body as an award, or None when FastAPI is to answer it."""
    content_type = header(scope, b"content-type")
    if not body or (content_type is not None and not _JSON.match(content_type)):
        return None
    try:
        return AwardIn.model_validate_json(body)
    except PydanticValidationError:
        return None


#: The content types FastAPI parses a body of as JSON: application/json and application/*+json.
_JSON = re.compile(r"\s*application/([\w.+-]*\+)?json\s*(;|$)", re.I)
