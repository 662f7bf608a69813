"""Awards: one atomic script call per award (``lua/award.lua``), singly, batched or awaited.

An award is validated and prepared in Python (ids, the idempotency fingerprint, the window
boards it counts in, the zone the user is assumed to be in, the seasonal event in force at its
time and the amount that event's multiplier makes of it), then applied by the script, which
decides everything that depends on the user's state in Redis; its reply becomes an
:class:`~engine.domain.results.AwardResult`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from engine.commands import award as award_cmd
from engine.commands.scripts import stream_calls
from engine.domain import validation
from engine.domain.errors import (
    IdempotencyConflict,
    InvalidAmount,
    ScoringError,
    ScriptCode,
    ScriptError,
    StoreUnavailable,
    UserDeleted,
    ValidationError,
)
from engine.domain.events import MAX_STORED_AMOUNT, multiplied
from engine.domain.periods import (
    WindowBoard,
    lifetimes,
    local_day,
    parse_timestamp,
    week_of,
    window_boards,
)
from engine.domain.results import Activity, AwardResult, EarnedAchievement, UserState
from engine.domain.rules import ACHIEVEMENT_REWARD_TYPE, ADJUSTMENT_TYPE
from engine.runtime.autopipe import AutoPipeline
from engine.runtime.connect import CLUSTER_UNSETTLED, is_cluster_client
from engine.services.context import Context
from engine.services.events import Events
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
    #: the amount before a seasonal event's multiplier (the one the cap applies to)
    amount: int
    description: str
    at: datetime
    fingerprint: str
    keys: list[str]
    args: list[Any]
    tz: str = "UTC"
    #: the seasonal event in force (its multiplier and id), None when there was none
    multiplier: float | None = None
    event_id: str | None = None


#: How many times an award call is sent at most (see :class:`_Attempts`).
ATTEMPTS = 3
_TZ_KEPT = "the user's time zone kept changing during the award"
_UNAPPLIED = "the award could not be applied after three attempts"
_SHARD_AWAY = "the user's shard is failing over or moving between Redis nodes; retry"
_NODE_LOST = (
    "the Redis node of the user's shard did not answer; the award may have been applied: "
    "retry with the same idempotency key"
)

_Item = tuple[int, _Prepared]


class _Attempts:
    """Sends award calls again until each is settled, in up to :data:`ATTEMPTS` rounds, for one
    award (``award``, ``award_async``) or a batch (``award_many``); the caller sends each
    round's calls and hands every reply to :meth:`settle`.

    A call is sent again when its reply says the user's zone is not the one it assumed (it then
    assumes the right one), or when a flushed script cache refused it (NOSCRIPT: a pipelined
    batch, which the script's own EVALSHA fallback does not cover): the script is loaded again
    before the next round, and the last round sends EVAL with the full source (:attr:`inline`),
    which cannot be refused. A reply that is an error, or whose result is a
    :class:`ScoringError`, settles its item with that error.

    Args:
        awards: the service whose script, rules and context the calls use.
        items: (index into ``results``, prepared award) pairs; consumed in the first round.
        results: where each item's result or error goes.
        on_flag: called with the shard of every award that raised its shard's drain flag.
        gave_up: the message of the error an item still unsettled after the last round gets.
    """

    def __init__(
        self,
        awards: Awards,
        items: Iterable[_Item],
        results: list[Any],
        *,
        on_flag: Callable[[int], object],
        gave_up: str,
    ) -> None:
        self._awards = awards
        self._items = items
        self._results = results
        self._on_flag = on_flag
        self._gave_up = gave_up
        self._retry: list[_Item] = []
        self._reload = False
        #: whether this round's calls are to be sent as EVAL with the script's source
        self.inline = False

    def rounds(self) -> Iterator[Iterable[_Item]]:
        """The items to send in each round, until none is left or the attempts run out."""
        pending: Iterable[_Item] = self._items
        for attempt in range(ATTEMPTS):
            self.inline = attempt == ATTEMPTS - 1
            self._retry, self._reload = [], False
            yield pending
            if self._reload:
                self._awards._award.load(self._awards.ctx.redis)
            pending = self._retry
            if not pending:
                return
        for i, _ in pending:
            self._results[i] = ScriptError(self._gave_up)

    def settle(self, item: _Item, reply: Any) -> None:
        """Take the reply to ``item``'s call (an exception instance if Redis refused it)."""
        i, p = item
        if isinstance(reply, NoScriptError):
            self._retry.append(item)
            self._reload = True
            return
        if isinstance(reply, CLUSTER_UNSETTLED):
            # the slot kept moving (a failover, a migration) through every retry: nothing
            # was applied, and a retry later with the same key is safe
            self._results[i] = StoreUnavailable(_SHARD_AWAY)
            return
        if isinstance(reply, ConnectionError | TimeoutError):
            # a cluster node that stopped answering through every retry, this call perhaps
            # applied before it did: a retry with the same key answers either way
            self._results[i] = StoreUnavailable(_NODE_LOST)
            return
        if isinstance(reply, Exception):
            self._results[i] = ScriptError(f"award failed in Redis: {reply}")
            return
        try:
            parsed = award_cmd.parse(reply, self._awards._lifetime)
            result = self._awards._result(p, parsed)
        except ScoringError as exc:
            self._results[i] = exc
            return
        if result is None:
            self._retry.append(item)  # the user's time zone was not the one assumed
            return
        self._results[i] = result
        if parsed.raised_flag:
            self._on_flag(p.shard)

    def one(self) -> AwardResult:
        """The result of a run of one award (index 0), or raise its error."""
        result = self._results[0]
        if isinstance(result, ScoringError):
            raise result
        assert isinstance(result, AwardResult)
        return result


class Awards:
    """Awards points (the facade's ``award``, ``award_async`` and ``award_many``).

    Args:
        ctx: the engine's context.
        async_client: makes an asyncio client of the same Redis for :meth:`award_async`; called
            once per event loop. Without it :meth:`award_async` runs :meth:`award` in a thread.
        wait_replicas: when > 0, every award call is followed, on the same connection, by
            ``WAIT wait_replicas wait_timeout_ms``: the award is answered once that many
            replicas hold it, or when the timeout passes (it is applied either way).
        events: the seasonal events (default: the rules file's and, with a SQL store,
            SQL's).
    """

    def __init__(
        self,
        ctx: Context,
        async_client: Callable[[], Any] | None = None,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
        events: Events | None = None,
    ) -> None:
        self.ctx = ctx
        self.events = events or Events(ctx)
        #: (replicas, timeout ms) of the WAIT that follows each award's call, or None
        self._wait = (wait_replicas, wait_timeout_ms) if wait_replicas > 0 else None
        self._award = award_cmd.script(ctx.rules)
        self._lifetime = ctx.rules.lifetime_types
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
        self.events.refresh()
        p = self._prepare(user_id, activity_type, amount, description, idempotency_key, occurred_at)
        run = _Attempts(self, [(0, p)], [None], on_flag=self.ctx.queue_drain, gave_up=_TZ_KEPT)
        for pending in run.rounds():
            for item in pending:
                run.settle(item, self._send(item, run.inline))
        return run.one()

    def _send(self, item: _Item, inline: bool) -> Any:
        """One award's call: its reply or error. With a WAIT to follow it, or on a cluster
        (whose client retries a call to a failed node without pausing), it takes the
        batches' path: the WAIT on the call's connection, pauses between tries and a fresh
        slot map after each."""
        client = self.ctx.redis
        if self._wait is None and not is_cluster_client(client):
            return self._award(client, item[1].keys, item[1].args)
        # read the stream to its end: the WAIT is sent once the call's reply is in
        replies = list(stream_calls(client, [item], self._call, inline=inline, wait=self._wait))
        return replies[0][1]

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
        and errors. Without an ``async_client`` factory (or with ``wait_replicas``, whose WAIT
        must follow the call on its connection), runs :meth:`award` in a worker thread.
        """
        client = self._async_redis()
        if client is None or self._wait is not None:
            return await asyncio.to_thread(
                self.award, user_id, activity_type, amount=amount, description=description,
                idempotency_key=idempotency_key, occurred_at=occurred_at,
            )  # fmt: skip
        await self.events.refresh_async(self.async_client)
        p = self._prepare(user_id, activity_type, amount, description, idempotency_key, occurred_at)
        raised: list[int] = []
        run = _Attempts(self, [(0, p)], [None], on_flag=raised.append, gave_up=_TZ_KEPT)
        for pending in run.rounds():
            for item in pending:
                run.settle(item, await self._award.acall(client, p.keys, p.args))
        if raised and self.ctx.drain_queue is not None:
            # rare (once per drain cycle and shard): RQ's enqueue is blocking I/O
            await asyncio.to_thread(self.ctx.queue_drain, p.shard)
        return run.one()

    def async_client(self) -> Any:
        """This event loop's redis-py asyncio client (made on first use; None without a
        factory), for the reads; awards on one server go through its :class:`AutoPipeline`."""
        client = self._async_redis()
        return client.client if isinstance(client, AutoPipeline) else client

    def _async_redis(self) -> Any:
        """This event loop's asyncio client (made on first use), or None without a factory."""
        if self._async_factory is None:
            return None
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_factory()
            if not is_cluster_client(client):
                client = AutoPipeline(client)  # concurrent awards share writes to Redis
            self._async_clients[loop] = client
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
        self.events.refresh()

        def prepared() -> Iterator[tuple[int, _Prepared]]:
            # lazily, so that preparing overlaps with Redis running the previous chunk
            for i, item in enumerate(items):
                try:
                    yield i, self._prepare(*_fields_of(i, item), key_ttl=key_ttl)
                except ScoringError as exc:
                    results[i] = exc

        run = _Attempts(self, prepared(), results, on_flag=self.ctx.queue_drain, gave_up=_UNAPPLIED)
        for pending in run.rounds():
            replies = stream_calls(
                self.ctx.redis, pending, self._call, inline=run.inline, wait=self._wait
            )
            for item, reply in replies:
                run.settle(item, reply)
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
        if activity_type == ADJUSTMENT_TYPE:
            raise ValidationError(
                f"activity type {ADJUSTMENT_TYPE!r} is for corrections: use engine.adjust "
                "(POST /v1/users/{id}/adjustments)",
                field="activity_type",
            )
        spec = validation.activity_type(rules, activity_type)
        if activity_type == ACHIEVEMENT_REWARD_TYPE:
            raise ValidationError(
                f"activity type {ACHIEVEMENT_REWARD_TYPE!r} is the achievements' rewards, which "
                "the engine pays itself",
                field="activity_type",
            )
        points = validation.amount(spec, amount)
        desc = validation.description(description)
        key = validation.idempotency_key(idempotency_key)
        now = self.ctx.clock()
        at = parse_timestamp(occurred_at, now=now)
        activity_id = new_activity_id(uid, key, now)
        # a caller's key may come back with another request; an engine id only with this one.
        # The fingerprint is the request's (its amount before any multiplier): a retry made
        # after an event changed is the same request, and answers with the first call's
        # multiplier, which the record keeps (see award_cmd.args)
        fingerprint = (
            "" if key is None else _fingerprint(activity_type, points, desc, at, occurred_at)
        )
        event = self.events.in_force(at, activity_type)
        final, multiplier, event_id = points, None, None
        if event is not None:
            multiplier, event_id = event.multiplier, event.id
            final = multiplied(points, multiplier)
            # events are checked against the caps of the rules that made them; this process's
            # rules may have larger ones
            if final > MAX_STORED_AMOUNT:
                raise InvalidAmount(
                    f"amount {points} times the multiplier {multiplier} of event {event_id!r} "
                    f"exceeds {MAX_STORED_AMOUNT}",
                    field="amount",
                )
        shard = self.ctx.keys.shard_of(uid)
        tz = self.ctx.zones.get(uid)
        windows = self._windows(at.date())
        day = local_day(at, tz)
        keys = award_cmd.keys(
            self.ctx.keys, uid, shard, activity_id, activity_type, [w.board_id for w in windows]
        )
        args = award_cmd.args(
            activity_id=activity_id, user_id=uid, amount=final, activity_type=activity_type,
            description=desc, created_ms=int(at.timestamp() * 1000), day=day, week=week_of(day),
            tz=tz, record_ttl=key_ttl or (idem.key_ttl if key is not None else idem.auto_ttl),
            fingerprint=fingerprint, lifetimes=lifetimes(windows, now), flag_ttl=FLAG_TTL,
            streak=spec.streak, base_amount=points, multiplier=multiplier, event_id=event_id,
        )  # fmt: skip
        return _Prepared(
            uid, shard, activity_id, activity_type, points, desc, at, fingerprint, keys, args, tz,
            multiplier, event_id,
        )  # fmt: skip

    def _finish(self, p: _Prepared, reply: list[Any]) -> AwardResult | None:
        """Turn a script reply into a result; None when the call must be repeated."""
        return self._result(p, award_cmd.parse(reply, self._lifetime))

    def _result(self, p: _Prepared, reply: award_cmd.AwardReply) -> AwardResult | None:
        """The result of a parsed reply; None when the call must be repeated (the user's zone
        was not the one assumed: ``p`` now assumes the right one)."""
        if reply.code is ScriptCode.TZ_MISMATCH:
            self.ctx.zones.remember(p.user_id, reply.zone)
            p.tz = reply.zone
            day = local_day(p.at, p.tz)
            award_cmd.rezone(p.args, day=day, week=week_of(day), tz=p.tz)
            return None
        if reply.code is ScriptCode.USER_DELETED:
            raise UserDeleted(f"user {p.user_id!r} was deleted", field="user_id")
        replayed = reply.code is ScriptCode.DUPLICATE
        if replayed and reply.fingerprint != p.fingerprint:
            raise IdempotencyConflict(
                "this idempotency key was already used for a different award",
                field="idempotency_key",
            )
        state = reply.state
        assert state is not None  # set for every code but TZ_MISMATCH
        rules, kind = self.ctx.rules, p.activity_type
        counts = {**state.lifetime, kind: state.count}
        counts = {k: v for k, v in counts.items() if v or k == kind}
        user = UserState.build(
            p.user_id, rules, local_day(self.ctx.clock(), p.tz),
            username=state.username, display_name=state.display_name, time_zone=p.tz,
            total=state.total, streak=state.streak, longest=state.longest,
            last_day=state.last_day, counts=counts, points={kind: state.points},
            version=state.version, freezes=state.freezes, freezes_used=state.freezes_used,
            peak=state.peak,
        )  # fmt: skip
        rewards = reply.rewards
        # the seasonal event that applied: the first call's, which its record keeps (the same
        # as this call's unless the events changed in between)
        multiplier, event_id = (
            (reply.multiplier, reply.event_id) if replayed else (p.multiplier, p.event_id)
        )
        amount = p.amount if multiplier is None else multiplied(p.amount, multiplier)
        # the upgrades this award made (a replay: the first call's, whatever came since)
        new_total = reply.total_after
        old_total = new_total - amount - sum(r.points for r in rewards)
        # (with keep_peak: of the peak total when higher; the peak as it is now)
        old_held = rules.held_points(old_total, state.peak)
        new_held = rules.held_points(new_total, state.peak)
        old_tier, old_level = rules.tier_for(old_held), rules.level_for(old_held)
        new_tier, new_level = rules.tier_for(new_held), rules.level_for(new_held)
        tier_up = old_tier != new_tier
        level_up = old_level != new_level
        activity = Activity(
            id=p.activity_id,
            user_id=p.user_id,
            amount=amount,
            activity_type=kind,
            description=p.description,
            # as the outbox has it
            tier_at_time=rules.tier_for(rules.held_points(old_total + amount, state.peak)),
            created_at=Activity.time_from_ms(reply.created_ms),
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
            achievements=tuple(EarnedAchievement.of(rules, *a) for a in reply.achievements)
            if reply.achievements
            else (),
            base_amount=None if event_id is None else p.amount,
            multiplier=multiplier,
            event_id=event_id,
        )

    def _windows(self, day: date) -> list[WindowBoard]:
        windows = self._window_cache.get(day)
        if windows is None:
            if len(self._window_cache) > 64:
                self._window_cache.clear()
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            windows = self._window_cache[day] = window_boards(start, self.ctx.rules)
        return windows


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


def new_activity_id(user_id: str, key: str | None, now: datetime) -> str:
    """The id of a user's new activity: uuid5 of (user, idempotency key) with a key, so a
    retry gets the same id; else a fresh :func:`_uuid7`."""
    if key is None:
        return str(_uuid7(now))
    return str(uuid.uuid5(ACTIVITY_NAMESPACE, f"{user_id}\x00{key}"))


def _uuid7(now: datetime) -> uuid.UUID:
    """A version 7 UUID (RFC 9562): unix milliseconds first, then random bits. Ids that grow with
    time keep inserts into ``point_activity``'s primary key on the index's right edge."""
    ms = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    # the random module's generator rather than os.urandom (a system call per id, where the
    # thread of a batch gives up the GIL): the bits need to be unique, not secret, and the
    # module's generator is reseeded in a forked child
    rand = random.getrandbits(80)
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
