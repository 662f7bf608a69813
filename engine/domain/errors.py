"""The one exception hierarchy of the engine.

Every error the engine raises on purpose is a :class:`ScoringError`. Each class carries a stable
machine-readable ``code`` (used by the HTTP API) and, for input errors, the ``field`` at fault.
Input errors are raised before anything is written.
"""

from __future__ import annotations

from enum import IntEnum


class ScoringError(Exception):
    """Base class of every error the engine raises on purpose."""

    code = "scoring_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        """The error as the API's ``{"code", "message", "field"?}`` object."""
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class ConfigError(ScoringError):
    """Settings or the rules file are invalid; raised at start-up."""

    code = "config_error"


class ValidationError(ScoringError):
    """An argument is invalid; nothing was written."""

    code = "invalid_input"


class InvalidUserId(ValidationError):
    code = "invalid_user_id"


class InvalidAmount(ValidationError):
    code = "invalid_amount"


class UnknownActivityType(ValidationError):
    code = "unknown_activity_type"


class InvalidDescription(ValidationError):
    code = "invalid_description"


class UnknownTimeZone(ValidationError):
    code = "unknown_time_zone"


class InvalidTimestamp(ValidationError):
    code = "invalid_timestamp"


class InvalidIdempotencyKey(ValidationError):
    code = "invalid_idempotency_key"


class InvalidProfile(ValidationError):
    code = "invalid_profile"


class UnknownBoard(ValidationError):
    code = "unknown_board"


class InvalidPaging(ValidationError):
    code = "invalid_paging"


class InvalidTies(ValidationError):
    """An unknown tie mode, or dense ranks asked below the depth they are counted to."""

    code = "invalid_ties"


class InvalidFriends(ValidationError):
    """A friend list that is too long, or holds an invalid user id."""

    code = "invalid_friends"


class IdempotencyConflict(ScoringError):
    """An idempotency key was reused with a different request."""

    code = "idempotency_conflict"


class NotFound(ScoringError):
    """The thing asked about does not exist."""

    code = "not_found"


class UnknownQuest(NotFound):
    code = "unknown_quest"


class UnknownGoal(NotFound):
    code = "unknown_goal"


class UnknownEvent(NotFound):
    code = "unknown_event"


class InvalidEvent(ValidationError):
    """A seasonal event's definition is invalid (``field`` names the part at fault)."""

    code = "invalid_event"


class EventConflict(ScoringError):
    """The seasonal event cannot be created or changed so: its id is taken, or it is the
    rules file's (change the file instead)."""

    code = "event_conflict"


class InvalidWebhook(ValidationError):
    """A webhook subscription's field is invalid (``field`` names it)."""

    code = "invalid_webhook"


class WebhookUrlRefused(InvalidWebhook):
    """A webhook URL's host is (or resolves to) an address deliveries must not go to: private,
    loopback, link-local, multicast or reserved (server-side request forgery)."""

    code = "webhook_url_refused"


class UnknownWebhook(NotFound):
    code = "unknown_webhook"


class UnknownWebhookDelivery(NotFound):
    code = "unknown_webhook_delivery"


class QuestStateError(ScoringError):
    """The quest cannot do what was asked in its current state; nothing was written."""

    code = "quest_state"


class QuestInactive(QuestStateError):
    code = "quest_inactive"


class QuestNotOpen(QuestStateError):
    """The quest has not begun yet or has ended."""

    code = "quest_not_open"


class QuestAlreadyStarted(QuestStateError):
    code = "quest_already_started"


class QuestAlreadyCompleted(QuestStateError):
    code = "quest_already_completed"


class QuestNotStarted(QuestStateError):
    code = "quest_not_started"


class UnknownActivity(NotFound):
    """The activity a reversal names is not the user's (or does not exist)."""

    code = "unknown_activity"


class AdjustmentRefused(ScoringError):
    """An adjustment the user's state does not allow (HTTP 409); nothing was written."""

    code = "adjustment_refused"


class AlreadyReversed(AdjustmentRefused):
    """The activity was reversed before: an activity is taken back once."""

    code = "already_reversed"


class BelowZero(AdjustmentRefused):
    """The adjustment would take the user's total below 0."""

    code = "total_below_zero"


class NotReversible(ValidationError):
    """A reversal of a reversal (make a new adjustment instead)."""

    code = "not_reversible"


class UserDeleted(ScoringError):
    """The user was deleted: their tombstone refuses every write to them until it expires
    (HTTP 410); nothing was written."""

    code = "user_deleted"


class NotRanked(ScoringError):
    """The user has no score on the board asked about."""

    code = "not_ranked"


class ScriptError(ScoringError):
    """A script answered with a code the engine does not know (a programming error)."""

    code = "script_error"


class StoreUnavailable(ScoringError):
    """The Redis node that holds the user's shard could not take the call (on a cluster: a
    master failing over, a slot moving) through every retry; retry with the same idempotency
    key (HTTP 503)."""

    code = "redis_unavailable"


class NotDrainedYet(StoreUnavailable):
    """The activity a reversal names is in neither SQL nor the newest outbox entries read, and
    the outbox holds more than were read: it may still wait for the drain. Retry once the
    drain has caught up (HTTP 503)."""

    code = "not_drained_yet"


class SeedImportError(ScoringError):
    """``scoring import-seed`` cannot go on: the seed's database is unreachable, or a table or
    column it reads is missing (the message names it). Nothing more is written."""

    code = "seed_import_error"


class ScriptCode(IntEnum):
    """Expected outcomes returned by the Lua scripts as their first reply element."""

    OK = 0
    DUPLICATE = -1
    TZ_MISMATCH = -2
    QUEST_STARTED = -3
    QUEST_COMPLETED = -4
    QUEST_NOT_STARTED = -5
    ALREADY_REVERSED = -6
    BELOW_ZERO = -7
    USER_DELETED = -8


def check_code(code: int) -> ScriptCode:
    """Map a script's reply code to :class:`ScriptCode`, with an explicit unknown branch."""
    try:
        return ScriptCode(int(code))
    except (ValueError, TypeError):
        raise ScriptError(f"script returned unknown code {code!r}") from None
