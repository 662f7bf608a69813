"""Friend lists (``lua/set_friends.lua``): the users a friends board ranks a user among.

A user's friends are a set under the user's own hash tag (``Keys.friends``), at most
:data:`MAX_FRIENDS` ids, replaced whole by :meth:`Friends.set_friends`. Friends may live on any
shard: a friends board (:meth:`~engine.services.leaderboard.Leaderboard.friends_of`) reads
their scores on each shard. A list is one-sided (Alice listing Bob says nothing of Bob's list)
and is not in SQL: ``scoring rebuild`` leaves it as it is, ``scoring reshard`` moves it.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.commands import friends as friends_command
from engine.commands.reads import execute
from engine.domain import validation
from engine.domain.errors import InvalidFriends, InvalidUserId
from engine.services.context import Context

#: The most friends one user may list.
MAX_FRIENDS = 1000


def check_friends(user_id: str, friends: Iterable[object]) -> list[str]:
    """The friend ids, each checked as every user id is, in the order given, without duplicates
    or the user; :class:`InvalidFriends` naming the first bad one (``friends.<index>``) or
    a list of more than :data:`MAX_FRIENDS`."""
    if isinstance(friends, str | bytes):
        raise InvalidFriends("friends must be a list of user ids", field="friends")
    given = list(friends)
    if len(given) > MAX_FRIENDS:
        raise InvalidFriends(
            f"a user may list at most {MAX_FRIENDS} friends, not {len(given)}", field="friends"
        )
    out: dict[str, None] = {}
    for i, friend in enumerate(given):
        try:
            out[validation.user_id(friend)] = None
        except InvalidUserId as exc:
            raise InvalidFriends(f"friends[{i}]: {exc.message}", field=f"friends.{i}") from None
    out.pop(user_id, None)
    return list(out)


class Friends:
    """Sets and reads users' friend lists."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def set_friends(self, user_id: str, friends: Iterable[str]) -> list[str]:
        """Replace the user's friend list (up to :data:`MAX_FRIENDS` user ids; duplicates and
        the user's own id are dropped); returns the list held, in byte order of the ids."""
        uid = validation.user_id(user_id)
        ids = check_friends(uid, friends)
        k = self.ctx.keys
        script = friends_command.script()
        friends_command.parse(
            script(self.ctx.redis, friends_command.keys(k, uid), friends_command.args(ids))
        )
        return sorted(ids, key=str.encode)

    def friends(self, user_id: str) -> list[str]:
        """The user's friends, in byte order of their ids (none listed: an empty list)."""
        uid = validation.user_id(user_id)
        (reply,) = execute(self.ctx.redis, [friends_command.read(self.ctx.keys, uid)])
        return friends_command.parse_read(reply)
