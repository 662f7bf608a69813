"""A user's state and profile (the user hash, ``lua/set_profile.lua``)."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from engine.commands import outbox_recent, profile
from engine.commands.reads import Plan, arun, cmd, run
from engine.domain import validation
from engine.domain.activities import merge_activities
from engine.domain.periods import zone
from engine.domain.results import Activity, UserState
from engine.services.context import Context
from engine.storage.outbox import FLAG_TTL, GROUP

T = TypeVar("T")

#: "leave as is", for a profile field not given.
UNSET: Any = object()


class Users:
    """Reads a user's state and sets a user's profile."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def status(self, user_id: str) -> UserState:
        """The user's current state (a user never awarded has zero points, tier one, level 1)."""
        return run(self.ctx.redis, self._status(user_id))

    async def status_async(self, user_id: str) -> UserState:
        """:meth:`status` on the engine's asyncio client (one round trip, no thread held);
        without one, :meth:`status` in a worker thread."""
        client = self.ctx.async_redis()
        if client is None:
            return await asyncio.to_thread(self.status, user_id)
        return await arun(client, self._status(user_id))

    async def status_and_recent_async(
        self, user_id: str, *, limit: int = 20
    ) -> tuple[UserState, list[Activity]]:
        """The user's state and newest ``limit`` activities (the seed's my-status): the state and
        the outbox's activities in one round trip on the asyncio client (one node: they share
        the user's hash tag), then SQL's in a thread, merged as
        ``recent_activities`` merges them (without SQL, the
        outbox's alone)."""
        uid = validation.user_id(user_id)

        def both() -> Plan[tuple[UserState, list[Activity]]]:
            status, pending = self._status(uid), outbox_recent.plan(self.ctx.keys, uid, group=GROUP)
            state_reads, pending_reads = next(status), next(pending)
            replies = yield state_reads + pending_reads
            return _finish(status, replies[:1]), _finish(pending, replies[1:])

        client = self.ctx.async_redis()
        if client is None:
            state, pending = await asyncio.to_thread(run, self.ctx.redis, both())
        else:
            state, pending = await arun(client, both())
        stored = []
        if self.ctx.store is not None:
            stored = await asyncio.to_thread(self.ctx.store.recent_activities, uid, limit=limit)
        return state, merge_activities(pending, stored, limit=limit)

    def _status(self, user_id: str) -> Plan[UserState]:
        uid = validation.user_id(user_id)
        (h,) = yield [cmd("hgetall", self.ctx.keys.user(uid))]
        self.ctx.zones.remember(uid, h.get("tz", "UTC"))
        return self.ctx.state(uid, h)

    def set_profile(
        self,
        user_id: str,
        *,
        username: str | None = UNSET,
        display_name: str | None = UNSET,
        time_zone: str | None = UNSET,
    ) -> UserState:
        """Set a user's username, display name and IANA time zone (omitted: left as is;
        None: cleared). The zone decides which calendar day an activity counts for."""
        ctx = self.ctx
        uid = validation.user_id(user_id)
        fields: dict[str, str] = {}
        clear: list[str] = []
        for name, value, limit in (
            ("username", username, validation.MAX_USERNAME),
            ("display_name", display_name, validation.MAX_DISPLAY_NAME),
        ):
            if value is None:
                clear.append(name)
            elif value is not UNSET:
                fields[name] = validation.profile_text(value, field=name, limit=limit)
        if time_zone is None:
            clear.append("tz")
        elif time_zone is not UNSET:
            zone(time_zone)
            fields["tz"] = time_zone
        shard = ctx.keys.shard_of(uid)
        reply = profile.parse(
            profile.script()(
                ctx.redis,
                profile.keys(ctx.keys, uid, shard),
                profile.args(
                    user_id=uid, at_ms=int(ctx.clock().timestamp() * 1000), flag_ttl=FLAG_TTL,
                    fields=fields, clear=clear,
                ),
            )
        )  # fmt: skip
        if reply.raised_flag:
            ctx.queue_drain(shard)
        h = reply.user
        ctx.zones.remember(uid, h.get("tz", "UTC"))
        return ctx.state(uid, h)


def _finish(plan: Plan[T], replies: list[Any]) -> T:
    """The result of a one-round-trip ``plan`` already started, given its replies."""
    try:
        plan.send(replies)
    except StopIteration as done:
        result: T = done.value
        return result
    raise RuntimeError("the plan wanted a second round trip")
