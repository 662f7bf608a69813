"""Adjustments: corrections, reversals and decay, one atomic script call each
(``lua/adjust.lua``).

An adjustment is an activity of type ``adjustment`` with a signed amount and a reason. It
changes the total, tier and level (which follow the total down unless ``[adjustments]
keep_peak``), the all-time board and the window and type boards it counts in, and goes to the
audit trail through the outbox like an award. It is not activity: the streak, the last active
day, weekly goals, side quests and achievements are left as they are (what was earned is not
taken back).

A reversal (``reverses=<activity id>``) takes back exactly the amount of one of the user's
activities, from the boards that activity counted in: the all-time board, its type's board and
the day, week and month boards of its own time (those whose retention has not passed; an
archived period's standings in SQL stay as archived). An activity is reversed once: a
permanent per-user set of reversed ids refuses a second reversal atomically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.commands import adjust as adjust_cmd
from engine.commands import outbox_recent
from engine.commands.reads import Plan, run
from engine.domain import validation
from engine.domain.errors import (
    AlreadyReversed,
    BelowZero,
    IdempotencyConflict,
    InvalidAmount,
    NotDrainedYet,
    NotReversible,
    ScriptCode,
    UnknownActivity,
    UserDeleted,
)
from engine.domain.periods import lifetimes, local_day, window_boards
from engine.domain.results import Activity, AdjustmentResult
from engine.domain.rules import ADJUSTMENT_TYPE, DECAY_REASON, reward_id
from engine.services.awards import new_activity_id
from engine.services.context import Context
from engine.storage.outbox import FLAG_TTL, GROUP


@dataclass(frozen=True, slots=True)
class _Original:
    """The activity a reversal takes back."""

    id: str
    amount: int
    activity_type: str
    created_at: datetime
    reverses: str | None


class Adjustments:
    """Adjusts users' points (the facade's ``adjust``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._script = adjust_cmd.script(ctx.rules)

    def adjust(
        self,
        user_id: str,
        amount: int | None,
        reason: str,
        *,
        reverses: str | None = None,
        idempotency_key: str | None = None,
    ) -> AdjustmentResult:
        """Add ``amount`` points (negative: take them away) to a user, for ``reason``.

        Args:
            user_id: the user.
            amount: a signed whole number, not 0. With ``reverses`` it may be None (it is then
                minus the reversed activity's amount, and must be that when given).
            reason: why (1 to 255 characters, no NUL): the activity's description.
            reverses: the id of one of the user's activities to take back (in SQL, or still in
                the outbox); it is taken back from every board it counted in, once.
            idempotency_key: a retry with the same key (for this user) returns the first
                result and changes nothing.

        Raises:
            ValidationError: bad input (the subclass names the field); nothing was written.
            UnknownActivity: ``reverses`` is not one of the user's activities (HTTP 404).
            NotReversible: ``reverses`` is itself a reversal.
            AlreadyReversed: that activity was reversed before (HTTP 409).
            BelowZero: the total would go below 0 (HTTP 409); nothing was written.
            IdempotencyConflict: the key was used before for another request.
        """
        uid = validation.user_id(user_id)
        if amount is not None or reverses is None:
            amount = validation.adjustment_amount(amount)
        why = validation.reason(reason)
        key = validation.idempotency_key(idempotency_key)
        ref = None if reverses is None else validation.activity_ref(reverses)
        now = self.ctx.clock()
        at, board_type = now, ADJUSTMENT_TYPE
        if ref is not None:
            original = self._original(uid, ref)
            if amount is not None and amount != -original.amount:
                raise InvalidAmount(
                    f"a reversal of activity {ref} takes back {original.amount}: its amount is "
                    f"{-original.amount}",
                    field="amount",
                )
            amount, at, board_type = -original.amount, original.created_at, original.activity_type
        assert amount is not None
        result = self._apply(uid, amount, why, ref, key, board_type, at, now)
        assert result is not None  # (only a cut adjustment may apply nothing)
        return result

    def decay_step(
        self,
        user_id: str,
        loss: int,
        *,
        floor: int,
        week: str,
        record_ttl: int,
        seen_last_day: str = "",
        tier_floor: bool = False,
    ) -> AdjustmentResult | None:
        """Take ``loss`` points from a user for the user's local ``week`` (reason ``decay``),
        never below ``floor`` (cut to reach it; None when the user is at or under it: nothing
        written). Once per user and week: its idempotency key is ``decay:<week>``, remembered
        ``record_ttl`` seconds (a replay changes nothing). Used by the decay job: with
        ``seen_last_day`` (the last active day it read) nothing is taken if an award moved it
        since; ``tier_floor``: the floor is the threshold of the tier the user holds then."""
        now = self.ctx.clock()
        return self._apply(
            user_id, -loss, DECAY_REASON, None, f"decay:{week}", ADJUSTMENT_TYPE, now, now,
            floor=floor, cut=True, decay_week=week, record_ttl=record_ttl,
            seen_last_day=seen_last_day, tier_floor=tier_floor,
        )  # fmt: skip

    def _apply(
        self,
        uid: str,
        amount: int,
        why: str,
        ref: str | None,
        key: str | None,
        board_type: str,
        at: datetime,
        now: datetime,
        *,
        floor: int = 0,
        cut: bool = False,
        decay_week: str = "",
        record_ttl: int | None = None,
        seen_last_day: str = "",
        tier_floor: bool = False,
    ) -> AdjustmentResult | None:
        ctx, idem = self.ctx, self.ctx.rules.idempotency
        # (``now``: one clock read for the row's time and the windows it counts in.) Keys of
        # adjustments are their own: an award's key is not an adjustment's, nor the reverse
        activity_id = new_activity_id(
            uid, None if key is None else f"{ADJUSTMENT_TYPE}\x00{key}", now
        )
        fingerprint = ""
        if key is not None:
            text = f"{ADJUSTMENT_TYPE}\x00{'' if cut else amount}\x00{why}\x00{ref or ''}"
            fingerprint = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
        shard = ctx.keys.shard_of(uid)
        windows = window_boards(at, ctx.rules)
        reply = adjust_cmd.parse(
            self._script(
                ctx.redis,
                adjust_cmd.keys(
                    ctx.keys, uid, shard, activity_id, board_type, [w.board_id for w in windows]
                ),
                adjust_cmd.args(
                    activity_id=activity_id, user_id=uid, amount=amount, board_type=board_type,
                    reason=why, created_ms=int(now.timestamp() * 1000),
                    today=local_day(now, "UTC"),
                    record_ttl=record_ttl
                    or (idem.key_ttl if key is not None else idem.auto_ttl),
                    fingerprint=fingerprint,
                    # a decay leaves the window boards alone: an inactive user is not put on
                    # this week's board (with a negative score)
                    lifetimes=[0, 0, 0] if decay_week else lifetimes(windows, now),
                    flag_ttl=FLAG_TTL, reverses=ref, floor=floor, cut=cut,
                    decay_week=decay_week, seen_last_day=seen_last_day, tier_floor=tier_floor,
                ),
            )
        )  # fmt: skip
        if reply.code is ScriptCode.USER_DELETED:
            raise UserDeleted(f"user {uid!r} was deleted", field="user_id")
        if reply.code is ScriptCode.ALREADY_REVERSED:
            raise AlreadyReversed(f"activity {ref} was reversed before", field="reverses")
        if reply.code is ScriptCode.BELOW_ZERO:
            if cut:
                return None
            raise BelowZero(
                f"the user's total is {reply.total}: an adjustment of {amount} would take it "
                "below 0",
                field="amount",
            )
        replayed = reply.code is ScriptCode.DUPLICATE
        if replayed and reply.fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this idempotency key was already used for a different request",
                field="idempotency_key",
            )
        if reply.raised_flag:
            ctx.queue_drain(shard)
        h = reply.user
        ctx.zones.remember(uid, h.get("tz", "UTC"))
        user = ctx.state(uid, h)
        rules, peak = ctx.rules, int(h.get("pk", 0))
        # the peak after the call stands for the one before: an adjustment that raised it
        # left tier and level as they were, and one that did not left it as it was
        old = rules.held_points(reply.total_after - reply.amount, peak)
        new = rules.held_points(reply.total_after, peak)
        old_tier, new_tier = rules.tier_for(old), rules.tier_for(new)
        old_level, new_level = rules.level_for(old), rules.level_for(new)
        activity = Activity(
            id=activity_id, user_id=uid, amount=reply.amount, activity_type=ADJUSTMENT_TYPE,
            description=why, tier_at_time=new_tier,
            created_at=Activity.time_from_ms(reply.created_ms),
        )  # fmt: skip
        tier_changed, level_changed = old_tier != new_tier, old_level != new_level
        return AdjustmentResult(
            user=user, activity=activity, reverses=ref, tier_changed=tier_changed,
            old_tier=old_tier if tier_changed else None,
            new_tier=new_tier if tier_changed else None, level_changed=level_changed,
            old_level=old_level if level_changed else None,
            new_level=new_level if level_changed else None, replayed=replayed,
        )  # fmt: skip

    def _original(self, uid: str, activity_id: str) -> _Original:
        """The user's activity ``activity_id``: in the outbox while it waits for the drain
        (looked at first: an entry drained meanwhile is in SQL by then), else in SQL."""
        ctx = self.ctx
        original = None
        for f in outbox_recent.entries(run(ctx.redis, _pending(ctx, uid))):
            if (f["id"] if "id" in f else reward_id(f["key"])) == activity_id:
                original = _Original(
                    activity_id, int(f["amount"]), f["type"],
                    Activity.time_from_ms(int(f["at"])), f.get("rev"),
                )  # fmt: skip
                break
        if original is None:
            found = ctx.store.activity(activity_id) if ctx.store is not None else None
            backlog = ctx.redis.xlen(ctx.keys.outbox(ctx.keys.shard_of(uid)))
            if found is None and backlog > outbox_recent.SCAN_LIMIT:
                raise NotDrainedYet(
                    f"activity {activity_id} is not in SQL, and the outbox's {backlog} undrained "
                    "entries are more than were read: retry once the drain has caught up",
                    field="reverses",
                )
            if found is None or found.user_id != uid:
                raise UnknownActivity(
                    f"user {uid!r} has no activity {activity_id}", field="reverses"
                )
            original = _Original(
                found.id, found.amount, found.activity_type, found.created_at.astimezone(UTC),
                found.reverses,
            )  # fmt: skip
        if original.reverses is not None:
            raise NotReversible(
                f"activity {activity_id} is a reversal; to undo it, make an adjustment",
                field="reverses",
            )
        return original


def _pending(ctx: Context, uid: str) -> Plan[Any]:
    """The read of the user's entries still in the outbox (bounded: see outbox_recent)."""
    (reply,) = yield [
        outbox_recent.command(ctx.keys, uid, group=GROUP, limit=outbox_recent.SCAN_LIMIT)
    ]
    return reply
