"""Awards: one user's award (idempotent with Idempotency-Key), and batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from engine.errors import ScoringError
from engine.service import AwardRequest

from ..deps import Caller, Engine, may_award
from ..schemas import AwardIn, AwardOut, BatchIn, BatchOut, BatchResultOut, ErrorBody, ErrorOut

router = APIRouter(prefix="/v1", tags=["awards"])
ERRORS = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 409: {"model": ErrorOut},
          422: {"model": ErrorOut}}  # fmt: skip


@router.post(
    "/users/{user_id}/awards",
    status_code=201,
    response_model=AwardOut,
    responses=ERRORS,
    summary="Award points to a user",
)
def award(
    user_id: str,
    body: AwardIn,
    request: Request,
    response: Response,
    engine: Engine,
    caller: Caller,
    idempotency_key: Annotated[
        str | None, Header(description="a replay returns the first response, changes nothing")
    ] = None,
) -> AwardOut:
    may_award(request, caller, user_id, body.activity_type)
    result = engine.award(
        user_id, body.activity_type, amount=body.amount, description=body.description,
        idempotency_key=idempotency_key, occurred_at=body.occurred_at,
    )  # fmt: skip
    request.app.state.metrics.awards.labels("replayed" if result.replayed else "applied").inc()
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return AwardOut.of(result)


@router.post(
    "/awards/batch",
    response_model=BatchOut,
    responses=ERRORS,
    summary="Award up to 1,000 awards; each succeeds or fails on its own",
)
def batch(body: BatchIn, request: Request, engine: Engine, caller: Caller) -> BatchOut:
    items: list[AwardRequest] = []
    denied: dict[int, ScoringError] = {}
    for i, a in enumerate(body.awards):
        try:
            may_award(request, caller, a.user_id, a.activity_type)
        except ScoringError as exc:
            if caller.key is not None:
                raise  # a key without the award scope: the whole call is refused
            denied[i] = exc
        items.append(AwardRequest(a.user_id, a.activity_type, a.amount, a.description,
                                  a.idempotency_key, a.occurred_at))  # fmt: skip
    allowed = [i for i in range(len(items)) if i not in denied]
    outcomes = dict(zip(allowed, engine.award_many([items[i] for i in allowed]), strict=True))
    outcomes.update(denied)
    results = []
    counter = request.app.state.metrics.awards
    for i in range(len(items)):
        out = outcomes[i]
        if isinstance(out, ScoringError):
            counter.labels("refused").inc()
            body_ = ErrorBody(code=out.code, message=out.message, field=out.field)
            results.append(BatchResultOut(index=i, error=body_))
        else:
            counter.labels("replayed" if out.replayed else "applied").inc()
            results.append(BatchResultOut(index=i, result=AwardOut.of(out)))
    refused = sum(1 for r in results if r.error is not None)
    return BatchOut(applied=len(results) - refused, refused=refused, results=results)
