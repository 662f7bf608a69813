"""``scoring demo``: made-up users earning points at a chosen rate, so a dashboard moves.

The users (``demo-001`` ...) get display names and time zones; some are far more active than
others (weights fall off as 1/rank), and each award's type follows a realistic mix: many
quizzes, comments and reactions, fewer projects, a daily login now and then. Awards go through
the engine (the award script), exactly as the API's do; a worker, if one runs, drains them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.domain.errors import ScoringError, ValidationError
from engine.services.facade import AwardRequest, ScoringEngine

#: (activity type, weight): what people do most.
MIX = [("quiz_complete", 30), ("comment", 30), ("reaction", 15), ("project_update", 10),
       ("project_create", 8), ("daily_login", 5), ("special_event", 2)]  # fmt: skip
FIRST = ["Ada", "Ben", "Chloé", "Dev", "Esra", "Femi", "Gia", "Hugo", "Ines", "Jonas", "Kira",
         "Luca", "Maya", "Nils", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma",
         "Vik", "Wen", "Xavi", "Yara", "Zeno"]  # fmt: skip
LAST = "ABCDEFGHJKLMNOPRSTVWZ"
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney",
         "America/Sao_Paulo", "Asia/Kolkata", "Europe/London"]  # fmt: skip
#: Awards are made in ticks of this many seconds (one batch per tick).
TICK = 0.1
#: At ``rate=0`` (as fast as the engine goes), awards per batch.
FAST_BATCH = 500


@dataclass
class DemoReport:
    awards: int = 0
    refused: int = 0
    seconds: float = 0.0


def demo_users(n: int) -> list[tuple[str, str, str]]:
    """``n`` (user id, display name, time zone), the same for the same ``n``."""
    rng = random.Random(n)
    return [
        (f"demo-{i + 1:03d}", f"{FIRST[i % len(FIRST)]} {rng.choice(LAST)}.", rng.choice(ZONES))
        for i in range(n)
    ]


def check_demo(*, rate: float, users: int, awards: int | None) -> None:
    """ValidationError naming the first bad number."""
    if isinstance(rate, bool) or not 0 <= rate <= 100_000:
        raise ValidationError("rate must be from 0 to 100000 awards per second", field="rate")
    if not 1 <= users <= 100_000:
        raise ValidationError("users must be from 1 to 100000", field="users")
    if awards is not None and awards < 0:
        raise ValidationError("awards must not be negative", field="awards")


def run_demo(
    engine: ScoringEngine,
    *,
    rate: float,
    users: int,
    awards: int | None,
    on_result: Callable[[object], None] = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
    seed: int | None = None,
) -> DemoReport:
    """Award ``rate`` points activities per second (0: as fast as possible) to ``users`` demo
    users until ``awards`` were made (None: until ``should_stop()``). Users are created (their
    profile set) the first time. ``on_result`` sees each result or refusal."""
    check_demo(rate=rate, users=users, awards=awards)
    people = demo_users(users)
    for uid, name, zone in people:
        if engine.status(uid).display_name is None:
            engine.set_profile(uid, display_name=name, time_zone=zone)
    ids = [uid for uid, _, _ in people]
    weights = [1 / (i + 1) for i in range(users)]
    types = [t for t, _ in MIX if t in engine.rules.activity_types]
    mix = [w for t, w in MIX if t in engine.rules.activity_types]
    rng = random.Random(seed)
    report = DemoReport()
    started = time.monotonic()
    owed = 0.0
    while not should_stop() and (awards is None or report.awards < awards):
        if rate:
            owed += rate * TICK
            n = int(owed)
            owed -= n
        else:
            n = FAST_BATCH
        if awards is not None:
            n = min(n, awards - report.awards)
        tick_started = time.monotonic()
        if n:
            items = [AwardRequest(user, kind, description="demo") for user, kind in
                     zip(rng.choices(ids, weights, k=n), rng.choices(types, mix, k=n))]  # fmt: skip
            for result in engine.award_many(items):
                if isinstance(result, ScoringError):
                    report.refused += 1
                report.awards += 1
                on_result(result)
        if rate:
            time.sleep(max(0.0, TICK - (time.monotonic() - tick_started)))
    report.seconds = time.monotonic() - started
    return report
