"""Awards: one user's award (idempotent with Idempotency-Key), and batches."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.routing import APIRoute
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import Response
from starlette.routing import Match

from engine.domain.errors import ScoringError
from engine.domain.results import AwardResult
from engine.runtime.connect import REDIS_ERRORS
from engine.services.facade import AwardRequest

from .. import errors
from ..auth import PRINCIPAL, Principal
from ..deps import Caller, Engine, header_text, may_award
from ..schemas import AwardIn, BatchIn, UserSchemas, error_responses, render

ERRORS = error_responses(401, 403, 409, 422)
#: The award route's path, which :class:`FastHandler` answers.
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
    ) -> Response:
        # the reference implementation of the route: FastHandler answers most requests
        may_award(request.app.state, caller, user_id, body.activity_type)
        return await _award(request.app.state, schemas, user_id, body, idempotency_key)

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
    state: Any, schemas: UserSchemas, user_id: str, body: AwardIn, idempotency_key: str | None
) -> Response:
    """The award itself, once the caller may make it: on the engine's asyncio Redis client (no
    thread-pool hop per award)."""
    result = await state.engine.award_async(
        user_id, body.activity_type, amount=body.amount, description=body.description,
        idempotency_key=header_text(idempotency_key, "Idempotency-Key"),
        occurred_at=body.occurred_at,
    )  # fmt: skip
    state.metrics.awards.labels("replayed" if result.replayed else "applied").inc()
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return render(schemas.award, result, status_code=201, headers=headers)


class FastHandler:
    """Pure ASGI middleware that answers ``POST /v1/users/{user_id}/awards`` itself, the
    engine's hottest route, without FastAPI's per-request machinery (a ``Request`` object,
    dependency resolution, a second body parse, exception middleware layers): about half of an
    award request's CPU went there (``bench.api_bench``).

    It sits inside :class:`api.app._Guard`, so the body limits, the authentication before the
    body and the latency histogram apply as to every route. The body is read once and parsed by
    pydantic from the bytes (``model_validate_json``). A request it does not take as is (any
    other route; a body that is empty, not JSON, or fails validation; a content type other than
    JSON) goes on to the FastAPI route with the body replayed, so every refusal is FastAPI's
    own, word for word. Errors of the award itself are answered by the app's error handlers'
    functions (:func:`api.errors.refusal`, :func:`api.errors.store_down`).
    """

    def __init__(self, app: Any, schemas: UserSchemas, route: APIRoute) -> None:
        self.app = app
        self.schemas = schemas
        self.route = route

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _maybe_award(scope):
            await self.app(scope, receive, send)
            return
        match, child = self.route.matches(scope)
        if match is not Match.FULL:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        parsed = _parse(scope, body) if not more else None
        if parsed is None:
            await self.app(scope, _replay(body, more, receive), send)
            return
        scope["route"] = self.route  # the latency histogram's label, as FastAPI sets it
        state = scope["app"].state
        user_id = child["path_params"]["user_id"]
        caller: Principal = scope["state"][PRINCIPAL]  # the guard authenticated the request
        try:
            may_award(state, caller, user_id, parsed.activity_type)
            response = await _award(
                state, self.schemas, user_id, parsed, _header(scope, b"idempotency-key")
            )
        except ScoringError as exc:
            response = errors.refusal(state, exc)
        except REDIS_ERRORS as exc:
            response = errors.store_down(state, exc)
        await response(scope, receive, send)


def _maybe_award(scope: dict[str, Any]) -> bool:
    path: str = scope["path"]
    return path.endswith("/awards") and path.startswith("/v1/users/")


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    """The request's body, and whether the client disconnected before its end."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), False


def _parse(scope: dict[str, Any], body: bytes) -> AwardIn | None:
    """The body as an award, or None when FastAPI is to answer it (see :class:`FastHandler`)."""
    content_type = _header(scope, b"content-type")
    if not body or (content_type is not None and not _JSON.match(content_type)):
        return None
    try:
        return AwardIn.model_validate_json(body)
    except PydanticValidationError:
        return None


#: The content types FastAPI parses a body of as JSON: application/json and application/*+json.
_JSON = re.compile(r"\s*application/([\w.+-]*\+)?json\s*(;|$)", re.I)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _replay(body: bytes, more: bool, receive: Any) -> Any:
    """``receive`` that hands over ``body`` (already read) first, then what ``receive`` gives."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent or more:
            message: dict[str, Any] = await receive()
            return message
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
