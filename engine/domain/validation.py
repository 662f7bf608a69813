"""Input checks shared by every entry point; each raises a ValidationError naming the field.

Every text accepted here can be stored by every supported SQL backend: PostgreSQL refuses NUL
characters in text and lone surrogates cannot be encoded as UTF-8, so both are refused before
anything is written (identifiers, keys and profile texts refuse every control character;
descriptions keep tabs and newlines).
"""

from __future__ import annotations

import unicodedata
import uuid

from engine.domain.errors import (
    InvalidAmount,
    InvalidDescription,
    InvalidIdempotencyKey,
    InvalidProfile,
    InvalidUserId,
    UnknownActivityType,
    ValidationError,
)
from engine.domain.events import MAX_STORED_AMOUNT
from engine.domain.rules import ActivityType, Rules

MAX_USER_ID_BYTES = 128
MAX_DESCRIPTION = 255
MAX_IDEMPOTENCY_KEY = 255
MAX_USERNAME = 150
MAX_DISPLAY_NAME = 255


def _has_control(text: str) -> bool:
    """Whether ``text`` holds a control character or a lone surrogate (fast path: printable)."""
    return not text.isprintable() and any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def user_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidUserId("user id must be a string", field="user_id")
    if not value:
        raise InvalidUserId("user id must not be empty", field="user_id")
    if _has_control(value[: MAX_USER_ID_BYTES + 1]):
        raise InvalidUserId("user id must not contain control characters", field="user_id")
    if len(value) > MAX_USER_ID_BYTES or len(value.encode("utf-8")) > MAX_USER_ID_BYTES:
        raise InvalidUserId(f"user id is longer than {MAX_USER_ID_BYTES} bytes", field="user_id")
    return value


def activity_type(rules: Rules, value: object) -> ActivityType:
    spec = rules.activity_types.get(value) if isinstance(value, str) else None
    if spec is None:
        raise UnknownActivityType(
            f"unknown activity type {value!r}; known: {', '.join(rules.activity_types)}",
            field="activity_type",
        )
    return spec


def amount(spec: ActivityType, value: object) -> int:
    """The award's points: the type's default when ``value`` is None, else a checked integer."""
    if value is None:
        return spec.points
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"amount must be a whole number, not {type(value).__name__}", field="amount"
        )
    if value <= 0:
        raise InvalidAmount("amount must be greater than zero", field="amount")
    if value > spec.max_points:
        raise InvalidAmount(
            f"amount {value} exceeds the cap of {spec.max_points} for this activity type",
            field="amount",
        )
    return value


def adjustment_amount(value: object) -> int:
    """An adjustment's points: a signed whole number, not 0, that SQL's column holds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"amount must be a whole number, not {type(value).__name__}", field="amount"
        )
    if value == 0:
        raise InvalidAmount("amount must not be 0", field="amount")
    if abs(value) > MAX_STORED_AMOUNT:
        raise InvalidAmount(f"amount must be between -{MAX_STORED_AMOUNT} and "
                            f"{MAX_STORED_AMOUNT}", field="amount")  # fmt: skip
    return value


def reason(value: object) -> str:
    """An adjustment's reason (its description): required, checked as a description."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidDescription("a reason is required", field="reason")
    try:
        return description(value)
    except InvalidDescription as exc:
        raise InvalidDescription(
            exc.message.replace("description", "reason"), field="reason"
        ) from None


def activity_ref(value: object, *, field: str = "reverses") -> str:
    """An activity id (a UUID), in its canonical form."""
    try:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError("must be an activity id (a UUID)", field=field) from None


def description(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidDescription("description must be a string", field="description")
    if len(value) > MAX_DESCRIPTION:
        raise InvalidDescription(
            f"description is longer than {MAX_DESCRIPTION} characters", field="description"
        )
    if "\x00" in value:  # PostgreSQL cannot store it in text: refused before any write
        raise InvalidDescription("description must not contain NUL characters", field="description")
    if not value.isprintable() and any(unicodedata.category(c) == "Cs" for c in value):
        raise InvalidDescription("description is not valid Unicode", field="description")
    return value


def idempotency_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_IDEMPOTENCY_KEY:
        raise InvalidIdempotencyKey(
            f"idempotency key must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters",
            field="idempotency_key",
        )
    if _has_control(value):
        raise InvalidIdempotencyKey(
            "idempotency key must not contain control characters", field="idempotency_key"
        )
    return value


def profile_text(value: object, *, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidProfile(f"{field} must be a string", field=field)
    if len(value) > limit:
        raise InvalidProfile(f"{field} is longer than {limit} characters", field=field)
    if _has_control(value):
        raise InvalidProfile(f"{field} must not contain control characters", field=field)
    return value


#: The most streak freezes one grant may give (the rules' ``freezes_max`` caps what is held).
MAX_FREEZE_GRANT = 365


def freeze_count(value: object) -> int:
    """The number of streak freezes a grant gives: a whole number from 1 to 365."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"count must be a whole number, not {type(value).__name__}", field="count"
        )
    if not 1 <= value <= MAX_FREEZE_GRANT:
        raise ValidationError(f"count must be from 1 to {MAX_FREEZE_GRANT}", field="count")
    return value
