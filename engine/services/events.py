"""Seasonal events: the rules file's and the admin API's (stored in SQL), and each process's
list of them, which the award path reads.

Every change made through :meth:`Events.create_event` or :meth:`Events.end_event` is written to
SQL and then bumps a counter in Redis (``Keys.events_version``). Each process keeps the events
in memory and, at most once every :data:`CHECK_SECONDS`, on the award path, reads that counter
(one GET); when it differs from the value its list was loaded at, the process reloads the list
from SQL. So a change reaches every API process and worker within about a second of the next
award, without a restart; the list is also reloaded every :data:`RELOAD_SECONDS` whatever the
counter says (a counter lost with a Redis that kept no data). A reload that fails (SQL away)
keeps the list as it was and is tried again at the next check: awards go on.

Which event applies to an award, and how its amount is rounded: :mod:`engine.domain.events`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from engine.domain.errors import EventConflict, InvalidEvent, UnknownEvent
from engine.domain.events import API_SOURCE, RULES_SOURCE, SeasonalEvent, event_in_force
from engine.domain.rules import EventId, FieldProblem, Rules, SeasonalEventRule, error_field
from engine.runtime.connect import REDIS_ERRORS
from engine.services.context import Context

log = logging.getLogger("engine.services")

#: How often (seconds, at most) a process reads the events' version counter.
CHECK_SECONDS = 1.0
#: How often (seconds) a process reloads the events from SQL whatever the counter says.
RELOAD_SECONDS = 60.0
#: The fields of a new event (:meth:`Events.create_event`).
EVENT_FIELDS = ("id", "title", "start", "end", "multiplier", "activity_types")

_UNSEEN = object()
_ID: TypeAdapter[str] = TypeAdapter(EventId)


def rules_events(rules: Rules) -> tuple[SeasonalEvent, ...]:
    """The rules file's events."""
    return tuple(
        SeasonalEvent(
            id=event_id,
            title=e.title,
            start=e.start,
            end=e.end,
            multiplier=e.multiplier,
            activity_types=e.types(rules.activity_types),
            source=RULES_SOURCE,
        )  # fmt: skip
        for event_id, e in rules.events.items()
    )


class Events:
    """The seasonal events: made, listed and ended (admin), and the one in force for an award.

    Thread-safe. Without a SQL store only the rules file's events exist.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._rules = rules_events(ctx.rules)
        self._rule_ids = {e.id for e in self._rules}
        #: what the award path reads: the rules file's events, then SQL's (replaced whole)
        self._events: tuple[SeasonalEvent, ...] = self._rules
        self._version: object = _UNSEEN
        self._next_check = 0.0
        self._next_reload = 0.0
        self._lock = threading.Lock()
        self._load_lock = threading.RLock()
        #: whether a first load was tried (until then an award waits for it)
        self._loaded = False
        #: whether the last reload failed (it was logged)
        self._failing = False
        #: whether a reload thread runs
        self._reloading = False

    # -- the award path -------------------------------------------------------------------

    def in_force(self, at: datetime, activity_type: str) -> SeasonalEvent | None:
        """The event that multiplies an award of ``activity_type`` made at ``at``, as this
        process knows the events (call :meth:`refresh` or :meth:`refresh_async` first)."""
        events = self._events
        return event_in_force(events, at, activity_type) if events else None

    def refresh(self) -> None:
        """Reload the events if the version counter changed (read at most once a second)."""
        if self.ctx.store is None:
            return
        if not self._loaded:
            self._first_load()
        elif self._due():
            version = self._read_version()
            if self._stale(version):
                self._reload_soon(version)

    async def refresh_async(self, client_of: Callable[[], Any]) -> None:
        """:meth:`refresh` on the asyncio Redis client ``client_of()`` gives (asked for only
        when the counter is to be read); the SQL reload runs in a thread."""
        if self.ctx.store is None:
            return
        if not self._loaded:
            await asyncio.to_thread(self._first_load)
        elif self._due():
            try:
                version = await client_of().get(self.ctx.keys.events_version())
            except REDIS_ERRORS:
                return  # the award will say what became of Redis
            if self._stale(version):
                self._reload_soon(version)

    def _reload_soon(self, version: object) -> None:
        """Reload from SQL in a thread of its own (one at a time): after the first load no
        award waits for SQL, which may be slow or away (the events loaded stay in force)."""
        with self._lock:
            if self._reloading:
                return
            self._reloading = True

        def reload() -> None:
            try:
                self._check(version)
            finally:
                self._reloading = False

        threading.Thread(target=reload, name="events-reload", daemon=True).start()

    def _due(self) -> bool:
        """Whether this caller is to check the counter now (one caller per interval)."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + CHECK_SECONDS
            return True

    def _stale(self, version: object) -> bool:
        return version != self._version or time.monotonic() >= self._next_reload

    def _read_version(self) -> object:
        try:
            return self.ctx.redis.get(self.ctx.keys.events_version())
        except REDIS_ERRORS:
            return self._version  # the award will say what became of Redis

    def _first_load(self) -> None:
        with self._load_lock:
            if self._loaded:
                return
            self._next_check = time.monotonic() + CHECK_SECONDS
            self._check(self._read_version())
            self._loaded = True

    def _check(self, version: object) -> None:
        """Reload from SQL if ``version`` is not the one the list was loaded at."""
        if not self._stale(version):
            return
        with self._load_lock:
            if not self._stale(version):
                return
            try:
                stored = self.ctx.sql().list_events()
            except Exception as exc:  # noqa: BLE001 - SQL away: keep the events as they are
                if not self._failing:  # once per outage, not once a second
                    log.warning("seasonal events could not be reloaded from SQL (%s); the "
                                "events loaded before stay in force meanwhile", exc)  # fmt: skip
                self._failing = True
                return
            if self._failing:
                log.warning("seasonal events reloaded from SQL again")
                self._failing = False
            self._events = self._rules + tuple(e for e in stored if e.id not in self._rule_ids)
            self._version = version
            self._next_reload = time.monotonic() + RELOAD_SECONDS

    def changed(self) -> None:
        """Tell every process the events changed (bump the counter), this one at once (it
        reloads from SQL now: the change was just written there)."""
        version = self.ctx.redis.incr(self.ctx.keys.events_version())
        self._check(str(version))
        self._next_check = time.monotonic() + CHECK_SECONDS

    # -- admin ----------------------------------------------------------------------------

    def events(self) -> list[SeasonalEvent]:
        """Every event, the rules file's and SQL's (read now), by start, then id."""
        stored = self.ctx.store.list_events() if self.ctx.store is not None else []
        every = [*self._rules, *(e for e in stored if e.id not in self._rule_ids)]
        return sorted(every, key=lambda e: (e.start, e.id))

    def event(self, event_id: str) -> SeasonalEvent:
        """One event, by id."""
        for e in self.events():
            if e.id == event_id:
                return e
        raise UnknownEvent(f"no seasonal event {event_id!r}", field="event_id")

    def create_event(self, **fields: Any) -> SeasonalEvent:
        """Add an event (stored in SQL; in force in every process within seconds).

        Fields: ``id`` (lowercase letters, digits, ``_`` or ``-``, up to 64), ``title``,
        ``start`` and ``end`` (aware datetimes or ISO 8601 strings with an offset; start
        before end), ``multiplier`` (more than 0, at most 10), ``activity_types`` (default:
        every type that is not a reward).

        Raises:
            InvalidEvent: a field is invalid (``field`` names it).
            EventConflict: an event with that id exists (in SQL or the rules file).
        """
        unknown = set(fields) - set(EVENT_FIELDS)
        if unknown:
            raise InvalidEvent(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
        event_id = fields.pop("id", None)
        try:
            _ID.validate_python(event_id)
        except PydanticValidationError:
            raise InvalidEvent(
                "id must be 1 to 64 lowercase letters, digits, _ or -, a letter first", field="id"
            ) from None
        try:
            spec = SeasonalEventRule.model_validate(fields)
            types = spec.types(self.ctx.rules.activity_types)
        except PydanticValidationError as exc:
            field, message = error_field(exc)
            raise InvalidEvent(f"{field}: {message}", field=field) from None
        except FieldProblem as exc:
            raise InvalidEvent(f"{exc.field}: {exc}", field=exc.field) from None
        if event_id in self._rule_ids:
            raise EventConflict(f"event {event_id!r} is the rules file's", field="id")
        event = SeasonalEvent(
            id=event_id, title=spec.title, start=spec.start, end=spec.end,
            multiplier=spec.multiplier, activity_types=types,
            source=API_SOURCE, created_at=self.ctx.clock(),
        )  # fmt: skip
        stored = self.ctx.sql().create_event(event)
        if stored is None:
            raise EventConflict(f"an event {event_id!r} exists", field="id")
        self.changed()
        return stored

    def end_event(self, event_id: str) -> SeasonalEvent:
        """End an event now (awards that occurred before now keep its multiplier). Ending an
        event that has ended changes nothing. The rules file's events end only in the file.

        Raises:
            UnknownEvent: there is no such event.
            EventConflict: it is the rules file's.
        """
        if event_id in self._rule_ids:
            raise EventConflict(
                f"event {event_id!r} is the rules file's: change the file", field="event_id"
            )
        ended = self.ctx.sql().end_event(event_id, self.ctx.clock())
        if ended is None:
            raise UnknownEvent(f"no seasonal event {event_id!r}", field="event_id")
        self.changed()
        return ended
