"""How a board ranks users with equal points: the ``ties`` option of every board read.

- ``competition`` (the default): the users with strictly more points, plus one (50, 50, 30
  rank 1, 1, 3).
- ``dense``: the distinct scores strictly above, plus one (50, 50, 30 rank 1, 1, 2).
- ``ordinal``: the position in the board's order, from 1 (50, 50, 30 rank 1, 2, 3). The order
  is the one every read lists: most points first and, among equal points, user ids in
  ascending byte order (UTF-8), which is how a Redis sorted set orders members of one score;
  so the order of a tie is stable, and the same on any number of shards.
"""

from __future__ import annotations

from enum import StrEnum

from engine.domain.errors import InvalidTies


class Ties(StrEnum):
    """A tie mode (see the module's docstring)."""

    COMPETITION = "competition"
    DENSE = "dense"
    ORDINAL = "ordinal"


def tie_mode(value: object) -> Ties:
    """``value`` as a :class:`Ties`; :class:`~engine.domain.errors.InvalidTies` otherwise."""
    if isinstance(value, Ties):
        return value
    if isinstance(value, str):
        try:
            return Ties(value)
        except ValueError:
            pass
    choices = ", ".join(t.value for t in Ties)
    raise InvalidTies(f"ties must be one of {choices}", field="ties")
