"""Leaderboard windows and time handling.

Window boards (day, ISO week, month) follow UTC, so every user competes on the same board.
Streak days follow each user's own IANA time zone (see :func:`local_day`).

Two clocks are involved, and each governs its own questions (the README's "Clocks"):
the engine's clock (``ScoringEngine.clock``, the host's UTC time unless a caller injects one)
answers every calendar question: an activity's time, its periods and streak day, whether a
period has ended, when a board's retention ends. The Redis server's clock only measures
durations: a key's TTL runs on it. So the engine never hands Redis an absolute time: a board
that must live until ``expire_at`` by the engine's clock is given the seconds left until then
(:func:`lifetimes`), and a skew between the two clocks cannot make a board vanish on write.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.domain.errors import InvalidTimestamp, UnknownBoard, UnknownTimeZone
from engine.domain.rules import Rules

WINDOWS = ("day", "week", "month")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or :class:`UnknownTimeZone`."""
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith("/"):
        raise UnknownTimeZone(f"unknown time zone {name!r}", field="time_zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimeZone(f"unknown time zone {name!r}", field="time_zone") from None


def local_day(ts: datetime, tz: str) -> int:
    """Days since 1970-01-01 of the calendar date ``ts`` falls on in zone ``tz`` (DST-correct)."""
    if tz == "UTC":
        return int(ts.timestamp() // 86400)
    return ts.astimezone(zone(tz)).date().toordinal() - EPOCH_ORDINAL


def day_to_date(day: int) -> date:
    return date.fromordinal(day + EPOCH_ORDINAL)


def parse_timestamp(value: object, *, now: datetime) -> datetime:
    """An aware UTC datetime from ``occurred_at``.

    Accepts an aware datetime, a naive one (taken as UTC), or an ISO 8601 string. Times more than
    five minutes in the future are refused, as are times before 2000.
    """
    if value is None:
        return now
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            raise InvalidTimestamp("occurred_at is not an ISO 8601 timestamp", field="occurred_at")
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidTimestamp(
                f"occurred_at {text!r} is not an ISO 8601 timestamp", field="occurred_at"
            ) from None
    if not isinstance(value, datetime):
        raise InvalidTimestamp(
            "occurred_at must be a datetime or an ISO 8601 string", field="occurred_at"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value > now + timedelta(minutes=5):
        raise InvalidTimestamp("occurred_at is in the future", field="occurred_at")
    if value.year < 2000:
        raise InvalidTimestamp("occurred_at is before the year 2000", field="occurred_at")
    return value


def period_of(window: str, ts: datetime) -> str:
    """The period of ``window`` at UTC time ``ts``: ``2026-11-24``, ``2026-W48`` or ``2026-11``."""
    d = ts.astimezone(UTC).date()
    if window == "day":
        return d.isoformat()
    if window == "week":
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{d.year}-{d.month:02d}"


def period_end(window: str, period: str) -> datetime:
    """The UTC instant ``period`` of ``window`` ends at; :class:`UnknownBoard` if malformed."""
    try:
        if window == "day" and (m := _DAY.match(period)):
            start = date(int(m[1]), int(m[2]), int(m[3]))
            end = start + timedelta(days=1)
        elif window == "week" and (m := _WEEK.match(period)):
            start = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            end = start + timedelta(days=7)
        elif window == "month" and (m := _MONTH.match(period)):
            year, month = int(m[1]), int(m[2])
            start = date(year, month, 1)
            end = date(year + month // 12, month % 12 + 1, 1)
        else:
            raise ValueError
    except ValueError:
        raise UnknownBoard(f"{period!r} is not a {window} period", field="period") from None
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WindowBoard:
    board_id: str  # as passed to Keys.board, e.g. "day:2026-11-24"
    expire_at: int  # unix seconds, by the engine's clock: when its retention ends


def lifetimes(windows: list[WindowBoard], now: datetime) -> list[int]:
    """Seconds each of ``windows`` still lives after ``now`` (the engine's clock), rounded up:
    the relative TTL Redis is given. 0 when the board's retention has passed (leave it alone)."""
    now_s = now.timestamp()
    return [max(0, math.ceil(w.expire_at - now_s)) for w in windows]


def live_window_boards(now: datetime, rules: Rules) -> list[str]:
    """The ids of every day, week and month board whose retention has not passed at ``now``
    (older periods' boards have expired), and of the next day's, week's and month's (an
    award may be dated a few minutes ahead): every window board a user can be on."""
    keep = {
        "day": rules.retention.day_days,
        "week": rules.retention.week_days,
        "month": rules.retention.month_days,
    }
    length = {"day": 1, "week": 7, "month": 31}  # days a period spans at most
    found: dict[str, None] = {}
    for window in WINDOWS:
        retention = timedelta(days=keep[window])
        day = now.astimezone(UTC) + timedelta(days=1)
        oldest = now - retention - timedelta(days=length[window])
        while day >= oldest:
            period = period_of(window, day)
            if period_end(window, period) + retention > now:
                found[f"{window}:{period}"] = None
            day -= timedelta(days=1)
    return list(found)


def window_boards(ts: datetime, rules: Rules) -> list[WindowBoard]:
    """The day, week and month boards an activity at ``ts`` counts in, with their expiry."""
    keep = {
        "day": rules.retention.day_days,
        "week": rules.retention.week_days,
        "month": rules.retention.month_days,
    }
    out = []
    for window in WINDOWS:
        period = period_of(window, ts)
        end = period_end(window, period) + timedelta(days=keep[window])
        out.append(WindowBoard(f"{window}:{period}", int(end.timestamp())))
    return out


def board_id(board: str, *, period: str | None, now: datetime, rules: Rules) -> str:
    """Resolve a public board name (``all_time``, ``month``, ``week``, ``day``, ``type:<t>``)."""
    if not isinstance(board, str):
        raise UnknownBoard("board must be a string", field="board")
    if board == "all_time":
        if period is not None:
            raise UnknownBoard("the all_time board has no periods", field="period")
        return "all"
    if board in WINDOWS:
        if period is None:
            period = period_of(board, now)
        period_end(board, period)  # validates
        return f"{board}:{period}"
    if board.startswith("type:"):
        activity_type = board[5:]
        if activity_type not in rules.activity_types:
            raise UnknownBoard(f"unknown activity type in board {board!r}", field="board")
        if period is not None:
            raise UnknownBoard("activity-type boards have no periods", field="period")
        return board
    raise UnknownBoard(
        f"unknown board {board!r}; use all_time, month, week, day or type:<activity_type>",
        field="board",
    )


def week_of(day: int) -> int:
    """The week number (Monday first) of day number ``day``; week n starts on day 7n - 3."""
    return (day + 3) // 7


def local_week(day: date) -> str:
    """The ISO week of a local day, as ``2026-W49``."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"
