"""Stats from the audit trail (the seed's monitoring queries)."""

from __future__ import annotations

from fastapi import APIRouter

from ..auth import Scope
from ..deps import Caller, Engine
from ..schemas import ErrorOut, StatsOut

router = APIRouter(prefix="/v1", tags=["stats"])


@router.get(
    "/stats",
    response_model=StatsOut,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    summary="Points today, tier distribution, most active users over 7 days",
)
def stats(engine: Engine, caller: Caller) -> StatsOut:
    caller.require(Scope.READ)
    return StatsOut(
        points_awarded_today=engine.points_awarded_today(),
        tier_distribution=engine.tier_distribution(),
        most_active_users=[
            {"user_id": u, "points": p} for u, p in engine.most_active_users(days=7, limit=10)
        ],
    )
