"""What deleting a user means, apart from where it is stored: the modes, the pseudonyms of
anonymised rows and the tombstone's default lifetime.

A pseudonym starts with DEL (U+007F), a control character that no valid user id holds
(:func:`engine.domain.validation.user_id` refuses every one), so it can never collide with a
user, ``scoring rebuild`` and ``reconcile`` skip it, and every SQL backend stores it.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

#: What every pseudonym starts with (then "deleted:" and 32 hex digits).
PSEUDONYM_PREFIX = "\x7fdeleted:"
#: Days a deleted user's tombstone refuses writes to the id by default.
TOMBSTONE_DAYS = 30


class DeleteMode(StrEnum):
    """What deleting a user does to the user's SQL rows."""

    #: the rows are deleted
    ERASE = "erase"
    #: the rows stay under a pseudonym, the profile fields and descriptions cleared
    ANONYMISE = "anonymise"


def new_pseudonym() -> str:
    """A pseudonym for one deleted user's rows (random: it says nothing of the user id)."""
    return f"{PSEUDONYM_PREFIX}{uuid.uuid4().hex}"


def is_pseudonym(user_id: str) -> bool:
    return user_id.startswith(PSEUDONYM_PREFIX)
