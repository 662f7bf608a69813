"""Seasonal events: list them, add one, end one now (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from engine.domain.events import SeasonalEvent

from ..auth import Scope
from ..deps import Caller, Engine
from ..schemas import EventIn, EventOut, error_responses

router = APIRouter(prefix="/v1", tags=["seasonal events"])
ERRORS = error_responses(401, 403, 404, 409, 422)
EventIdPath = Annotated[str, Path(max_length=64)]


@router.get(
    "/events", response_model=list[EventOut], responses=ERRORS,
    summary="Seasonal events: the rules file's and those added here, by start",
)  # fmt: skip
def list_events(engine: Engine, caller: Caller) -> list[SeasonalEvent]:
    caller.require(Scope.READ)
    return engine.seasonal_events()


@router.post(
    "/events", status_code=201, response_model=EventOut, responses=ERRORS,
    summary="Add a seasonal event (admin); every process applies it within seconds",
)  # fmt: skip
def create_event(body: EventIn, engine: Engine, caller: Caller) -> SeasonalEvent:
    caller.require(Scope.ADMIN)
    return engine.create_event(**body.model_dump())


@router.get(
    "/events/{event_id}", response_model=EventOut, responses=ERRORS, summary="A seasonal event"
)
def get_event(event_id: EventIdPath, engine: Engine, caller: Caller) -> SeasonalEvent:
    caller.require(Scope.READ)
    return engine.event(event_id)


@router.post(
    "/events/{event_id}/end", response_model=EventOut, responses=ERRORS,
    summary="End a seasonal event now (admin); awards that occurred before keep its multiplier",
)  # fmt: skip
def end_event(event_id: EventIdPath, engine: Engine, caller: Caller) -> SeasonalEvent:
    """Ending an event that has ended changes nothing; the rules file's events are ended in
    the file (409)."""
    caller.require(Scope.ADMIN)
    return engine.end_event(event_id)
