"""Awards: one user's award (idempotent with Idempotency-Key), and batches."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from engine.domain.errors import ScoringError
from engine.domain.results import AwardResult
from engine.services.facade import AwardRequest

from ..deps import Caller, Engine, header_text, may_award
from ..schemas import AwardIn, BatchIn, UserSchemas, error_responses, render

ERRORS = error_responses(401, 403, 409, 422)


def router(schemas: UserSchemas) -> APIRouter:
    """The award routes, answering with ``schemas`` (the app's rules' user schema)."""
    router = APIRouter(prefix="/v1", tags=["awards"])

    @router.post(
        "/users/{user_id}/awards", status_code=201, response_model=schemas.award,
        responses=ERRORS, summary="Award points to a user",
    )  # fmt: skip
    async def award(
        user_id: str,
        body: AwardIn,
        request: Request,
        engine: Engine,
        caller: Caller,
        idempotency_key: Annotated[
            str | None,
            Header(description="a replay changes nothing and answers as the first call"),
        ] = None,
    ) -> Response:
        may_award(request, caller, user_id, body.activity_type)
        # async, on the engine's asyncio Redis client: no thread-pool hop per award
        result = await engine.award_async(
            user_id, body.activity_type, amount=body.amount, description=body.description,
            idempotency_key=header_text(idempotency_key, "Idempotency-Key"),
            occurred_at=body.occurred_at,
        )  # fmt: skip
        request.app.state.metrics.awards.labels("replayed" if result.replayed else "applied").inc()
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return render(schemas.award, result, status_code=201, headers=headers)

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
                may_award(request, caller, a.user_id, a.activity_type)
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
