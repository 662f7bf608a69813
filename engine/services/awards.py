"""Awards: one atomic script call per award (``lua/award.lua``), singly, batched or awaited.

An award is validated and prepared in Python (ids, the idempotency fingerprint, the window
boards it counts in, the zone the user is assumed to be in), then applied by the script, which
decides everything that depends on the user's state in Redis; its reply becomes an
:class:`~engine.domain.results.AwardResult`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from redis.exceptions import NoScriptError

from engine.commands.scripts import scripts, stream_calls
from engine.domain import validation
from engine.domain.errors import (
    IdempotencyConflict,
    ScoringError,
    ScriptCode,
    ScriptError,
    ValidationError,
    check_code,
)
from engine.domain.periods import WindowBoard, lifetimes, local_day, parse_timestamp, window_boards
from engine.domain.results import Activity, AwardResult, Reward, UserState
from engine.domain.rules import reward_id
from engine.services.context import Context
from engine.storage.outbox import FLAG_TTL

#: Namespace of activity ids derived from (user id, idempotency key).
ACTIVITY_NAMESPACE = uuid.UUID("6f1c3b0e-8a57-4d0b-9a1e-5c2f7d9e4b21")


@dataclass(frozen=True, slots=True)
class AwardRequest:
    """One item of :meth:`ScoringEngine.award_many`; the fields are ``award()``'s arguments."""

    user_id: str
    activity_type: str
    amount: int | None = None
    description: str = ""
    idempotency_key: str | None = None
    occurred_at: datetime | str | None = None


@dataclass(slots=True)
class _Prepared:
    """A validated award, ready to become one script call."""

    user_id: str
    shard: int
    activity_id: str
    activity_type: str
    amount: int
    description: str
    at: datetime
    fingerprint: str
    keys: list[str]
    args: list[Any]
    tz: str = "UTC"


class Awards:
    """Awards points (the facade's ``award``, ``award_async`` and ``award_many``).

    Args:
        ctx: the engine's context.
        async_client: makes an asyncio client of the same Redis for :meth:`award_async`; called
            once per event loop. Without it :meth:`award_async` runs :meth:`award` in a thread.
    """

    def __init__(self, ctx: Context, async_client: Callable[[], Any] | None = None) -> None:
        self.ctx = ctx
        self._award = scripts.get("award", RULES=ctx.rules.script_tables)
        self._window_cache: dict[date, list[WindowBoard]] = {}
        self._async_factory = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    async def aclose(self) -> None:
        """Close the running event loop's asyncio client, if one was made."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def award(
        self,
        user_id: str,
        activity_type: str,
        *,
        amount: int | None = None,
        description: str = "",
        idempotency_key: str | None = None,
        occurred_at: datetime | str | None = None,
    ) -> AwardResult:
        """Award points to a user in one atomic script call.

        Args:
            user_id: the user (1 to 128 bytes, no control characters).
            activity_type: one of the rules' activity types.
            amount: points (a positive integer up to the type's cap); default: the type's points.
            description: up to 255 characters.
            idempotency_key: a retry with the same key (for this user) returns the first
                result and changes nothing. Without one, the engine still gives the award a
                unique id, so a client-level resend of the same call cannot award twice.
            occurred_at: when it happened (aware datetime, naive = UTC, or ISO 8601 string);
                default now. Decides the streak day (in the user's zone) and window boards (UTC).

        Returns:
            The new state and what was upgraded.

        Raises:
            ValidationError: bad input (a subclass names the field); nothing was written.
            IdempotencyConflict: the key was used before for a different award.
        """
        p = self._prepare(user_id, activity_type, amount, description, idempotency_key, occurred_at)
        for _ in range(3):
            reply = self._award(self.ctx.redis, p.keys, p.args)
            result = self._finish(p, reply)
            if result is not None:
                if _raised_flag(reply):
                    self.ctx.queue_drain(p.shard)
                return result
        raise ScriptError("the user's time zone kept changing during the award")

    async def award_async(
        self,
        user_id: str,
        activity_type: str,
        *,
        amount: int | None = None,
        description: str = "",
        idempotency_key: str | None = None,
        occurred_at: datetime | str | None = None,
    ) -> AwardResult:
        """:meth:`award` for asyncio code (the HTTP API): the same script call, awaited on an
        asyncio Redis client, so no thread is held while Redis works. Same arguments, result
        and errors. Without an ``async_client`` factory, runs :meth:`award` in a worker thread.
        """
        client = self._async_redis()
        if client is None:
            return await asyncio.to_thread(
                self.award, user_id, activity_type, amount=amount, description=description,
                idempotency_key=idempotency_key, occurred_at=occurred_at,
            )  # fmt: skip
        p = self._prepare(user_id, activity_type, amount, description, idempotency_key, occurred_at)
        for _ in range(3):
            reply = await self._award.acall(client, p.keys, p.args)
            result = self._finish(p, reply)
            if result is not None:
                if _raised_flag(reply) and self.ctx.drain_queue is not None:
                    # rare (once per drain cycle and shard): RQ's enqueue is blocking I/O
                    await asyncio.to_thread(self.ctx.queue_drain, p.shard)
                return result
        raise ScriptError("the user's time zone kept changing during the award")

    def _async_redis(self) -> Any:
        """This event loop's asyncio client (made on first use), or None without a factory."""
        if self._async_factory is None:
            return None
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = self._async_factory()
        return client

    def award_many(
        self, items: Iterable[AwardRequest | Mapping[str, Any]], *, key_ttl: int | None = None
    ) -> list[AwardResult | ScoringError]:
        """Award a batch in one round trip. Each item succeeds or fails on its own.
        ``key_ttl``: how long the items' idempotency keys are remembered (default: the rules').

        Returns:
            One entry per item, in order: its :class:`AwardResult`, or the
            :class:`ScoringError` that refused it (nothing was written for that item).
        """
        items = list(items)
        results: list[Any] = [None] * len(items)
        reload = False

        def prepared() -> Iterator[tuple[int, _Prepared]]:
            # lazily, so that preparing overlaps with Redis running the previous chunk
            for i, item in enumerate(items):
                try:
                    yield i, self._prepare(*_fields_of(i, item), key_ttl=key_ttl)
                except ScoringError as exc:
                    results[i] = exc

        pending: Iterable[tuple[int, _Prepared]] = prepared()
        for attempt in range(3):
            retry: list[tuple[int, _Prepared]] = []
            calls = stream_calls(self.ctx.redis, pending, self._call, inline=attempt == 2)
            for (i, p), reply in calls:
                if isinstance(reply, NoScriptError):
                    retry.append((i, p))
                    reload = True
                    continue
                if isinstance(reply, Exception):
                    results[i] = ScriptError(f"award failed in Redis: {reply}")
                    continue
                result: AwardResult | ScoringError | None
                try:
                    result = self._finish(p, reply)
                except ScoringError as exc:
                    result = exc
                if result is None:
                    retry.append((i, p))  # the user's time zone was not the one assumed
                    continue
                results[i] = result
                if _raised_flag(reply):
                    self.ctx.queue_drain(p.shard)
            if reload:
                self._award.load(self.ctx.redis)
                reload = False
            pending = retry
            if not pending:
                break
        for i, _ in pending:
            results[i] = ScriptError("the award could not be applied after three attempts")
        return results

    def _call(self, ip: tuple[int, _Prepared]) -> tuple[Any, list[str], list[Any]]:
        return self._award, ip[1].keys, ip[1].args

    def _prepare(
        self,
        user_id: Any,
        activity_type: Any,
        amount: Any,
        description: Any,
        idempotency_key: Any,
        occurred_at: Any,
        key_ttl: int | None = None,
    ) -> _Prepared:
        rules, idem = self.ctx.rules, self.ctx.rules.idempotency
        uid = validation.user_id(user_id)
        spec = validation.activity_type(rules, activity_type)
        points = validation.amount(spec, amount)
        desc = validation.description(description)
        key = validation.idempotency_key(idempotency_key)
        now = self.ctx.clock()
        at = parse_timestamp(occurred_at, now=now)
        if key is None:
            activity_id = str(_uuid7(now))
        else:
            activity_id = str(uuid.uuid5(ACTIVITY_NAMESPACE, f"{uid}\x00{key}"))
        # a caller's key may come back with another request; an engine id only with this one
        fingerprint = (
            "" if key is None else _fingerprint(activity_type, points, desc, at, occurred_at)
        )
        shard = self.ctx.keys.shard_of(uid)
        tz = self.ctx.zones.get(uid)
        windows = self._windows(at.date())
        keys = self.ctx.keys.award(
            uid, shard, activity_id, activity_type, [w.board_id for w in windows]
        )
        args = [
            activity_id, uid, points, activity_type, desc, int(at.timestamp() * 1000),
            local_day(at, tz), tz,
            key_ttl or (idem.key_ttl if key is not None else idem.auto_ttl),
            fingerprint,
            *lifetimes(windows, now), FLAG_TTL, "1" if spec.streak else "0",
        ]  # fmt: skip
        return _Prepared(
            uid, shard, activity_id, activity_type, points, desc, at, fingerprint, keys, args, tz
        )

    def _finish(self, p: _Prepared, reply: list[Any]) -> AwardResult | None:
        """Turn a script reply into a result; None when the call must be repeated."""
        code = check_code(reply[0])
        if code is ScriptCode.TZ_MISMATCH:
            self.ctx.zones.remember(p.user_id, reply[1])
            p.tz = reply[1]
            p.args[6] = local_day(p.at, p.tz)
            p.args[7] = p.tz
            return None
        replayed = code is ScriptCode.DUPLICATE
        fingerprint, created_ms, total_after, packed, state = _record(reply)
        if replayed and fingerprint != p.fingerprint:
            raise IdempotencyConflict(
                "this idempotency key was already used for a different award",
                field="idempotency_key",
            )
        (total, streak, longest, last_day, version, count, points, quizzes, projects, comments,
         username, display_name) = state  # fmt: skip
        rules, kind = self.ctx.rules, p.activity_type
        counts = {"quiz_complete": int(quizzes), "project_create": int(projects),
                  "comment": int(comments), kind: int(count)}  # fmt: skip
        counts = {k: v for k, v in counts.items() if v or k == kind}
        user = UserState.build(
            p.user_id, rules, local_day(self.ctx.clock(), p.tz),
            username=username or None, display_name=display_name or None, time_zone=p.tz,
            total=int(total), streak=int(streak), longest=int(longest),
            last_day=int(last_day) if last_day else None,
            counts=counts, points={kind: int(points)}, version=int(version),
        )  # fmt: skip
        rewards = _rewards(packed)
        # the upgrades this award made (a replay: the first call's, whatever came since)
        new_total = int(total_after)
        old_total = new_total - p.amount - sum(r.points for r in rewards)
        old_tier, old_level = rules.tier_for(old_total), rules.level_for(old_total)
        new_tier, new_level = rules.tier_for(new_total), rules.level_for(new_total)
        tier_up = old_tier != new_tier
        level_up = old_level != new_level
        activity = Activity(
            id=p.activity_id,
            user_id=p.user_id,
            amount=p.amount,
            activity_type=kind,
            description=p.description,
            tier_at_time=rules.tier_for(old_total + p.amount),  # as the outbox has it
            created_at=Activity.time_from_ms(int(created_ms)),
        )
        return AwardResult(
            user=user,
            activity=activity,
            tier_upgraded=tier_up,
            old_tier=old_tier if tier_up else None,
            new_tier=new_tier if tier_up else None,
            level_upgraded=level_up,
            old_level=old_level if level_up else None,
            new_level=new_level if level_up else None,
            replayed=replayed,
            rewards=rewards,
        )

    def _windows(self, day: date) -> list[WindowBoard]:
        windows = self._window_cache.get(day)
        if windows is None:
            if len(self._window_cache) > 64:
                self._window_cache.clear()
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            windows = self._window_cache[day] = window_boards(start, self.ctx.rules)
        return windows


def _rewards(packed: str) -> tuple[Reward, ...]:
    """The rewards in an award script's record ("kind\x1eref\x1epoints\x1ekey", "\x1d"-joined)."""
    if not packed:
        return ()
    out = []
    for item in packed.split("\x1d"):
        kind, ref, points, key = item.split("\x1e")
        out.append(Reward(kind, ref, int(points), reward_id(key)))
    return tuple(out)


def _record(reply: list[Any]) -> tuple[str, str, str, str, list[str]]:
    """(fingerprint, created_at ms, total after, packed rewards, user state fields) of an award
    script's reply (see ``lua/award.lua``). A record written before 0.2 holds all 15 fields of
    the state after the first call; its replay answers with that state."""
    record = reply[1].split("\x1f")
    if len(record) == 15:
        fingerprint, created_ms, *state, packed = record
        return fingerprint, created_ms, state[0], packed, state
    fingerprint, created_ms, total_after, packed = record
    return fingerprint, created_ms, total_after, packed, reply[3].split("\x1f")


def _raised_flag(reply: list[Any]) -> bool:
    """Whether an applied award raised its shard's drain flag (its caller then queues the
    shard's drain job; see :mod:`engine.storage.outbox`)."""
    return len(reply) > 2 and reply[2] == 1


def _fields_of(index: int, item: object) -> tuple[Any, Any, Any, Any, Any, Any]:
    """The award() arguments of one award_many item."""
    if isinstance(item, AwardRequest):
        return (item.user_id, item.activity_type, item.amount, item.description,
                item.idempotency_key, item.occurred_at)  # fmt: skip
    if not isinstance(item, Mapping):
        raise ValidationError(
            f"item {index} must be an AwardRequest or a mapping", field=f"items[{index}]"
        )
    unknown = set(item) - set(AwardRequest.__dataclass_fields__)
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    return (
        item.get("user_id"),
        item.get("activity_type"),
        item.get("amount"),
        item.get("description", ""),
        item.get("idempotency_key"),
        item.get("occurred_at"),
    )


def _uuid7(now: datetime) -> uuid.UUID:
    """A version 7 UUID (RFC 9562): unix milliseconds first, then random bits. Ids that grow with
    time keep inserts into ``point_activity``'s primary key on the index's right edge."""
    ms = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms << 80)
        | (0x7 << 76)
        | ((rand >> 62) & 0xFFF) << 64
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)


def _fingerprint(
    activity_type: str, amount: int, description: str, at: datetime, occurred_at: object
) -> str:
    """What must match when an idempotency key comes back (``at`` only if the caller gave it)."""
    when = at.isoformat() if occurred_at is not None else ""
    text = f"{activity_type}\x00{amount}\x00{description}\x00{when}"
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
