"""Seasonal events: which one is in force for an award, and what its multiplier makes of the
amount. Pure functions; the events come from the rules file and from SQL (the admin API), and
:class:`engine.services.events.Events` keeps each process's list of them.

- An event is in force from its ``start`` (inclusive) to its end (exclusive): the earlier of
  its ``end`` and the time it was ended early (``ended_at``).
- Overlapping events do not stack: the one with the **highest multiplier** applies (on a tie,
  the one that started first, then the smallest id), so an award never carries more than
  10 times its amount.
- The multiplied amount is rounded **half up** to a whole number, and is at least 1:
  ``multiplied(5, 1.5) == 8``, ``multiplied(1, 0.1) == 1``. The multiplier is taken as the
  decimal the rules file or the API gave (``0.15``, not its binary approximation).
- The per-award cap (``max_points``) applies to the amount before the multiplier.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

#: Where an event was defined: the rules file, or the admin API (stored in SQL).
RULES_SOURCE = "rules"
API_SOURCE = "api"
#: The largest amount the audit trail's ``point_activity.amount`` holds (a 32-bit integer).
MAX_STORED_AMOUNT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class SeasonalEvent:
    """A seasonal event (``source``: ``rules`` or ``api``). ``ended_at``: when an admin ended
    it early (it is in force until the earlier of ``end`` and ``ended_at``)."""

    id: str
    title: str
    start: datetime
    end: datetime
    multiplier: float
    activity_types: tuple[str, ...]
    source: str
    created_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def ends(self) -> datetime:
        """When it stops being in force."""
        return self.end if self.ended_at is None else min(self.end, self.ended_at)

    def in_force(self, at: datetime) -> bool:
        return self.start <= at < self.ends


def event_in_force(
    events: Iterable[SeasonalEvent], at: datetime, activity_type: str
) -> SeasonalEvent | None:
    """The event that multiplies an award of ``activity_type`` made at ``at``: of those in
    force then for that type, the highest multiplier (then the earliest start, then the
    smallest id); None if there is none."""
    best: SeasonalEvent | None = None
    for e in events:
        if activity_type in e.activity_types and e.start <= at < e.ends:
            if best is None or (-e.multiplier, e.start, e.id) < (
                -best.multiplier,
                best.start,
                best.id,
            ):
                best = e
    return best


def multiplied(amount: int, multiplier: float) -> int:
    """``amount`` times ``multiplier``, rounded half up, at least 1."""
    with localcontext() as ctx:
        ctx.prec = 60
        exact = Decimal(amount) * Decimal(repr(float(multiplier)))
        return max(1, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def multiplier_text(multiplier: float) -> str:
    """How a multiplier travels in the outbox and the idempotency record (``2.0``, ``1.25``)."""
    return repr(float(multiplier))
