"""Reads written once, run on a sync or an asyncio client: a read is a *plan* of round trips.

A plan is a generator. Each ``yield`` hands over the commands of one round trip (a list of
:data:`Cmd`: a redis-py command method's name and arguments, or a script call) and receives
their replies, in order; what the generator returns is the read's result. :func:`run` executes
a plan on a sync client (``redis.Redis`` or ``RedisCluster``), :func:`arun` on an asyncio one
(``redis.asyncio``), so the keys, the commands and the parsing of the replies exist once, and a
read costs as many round trips as its plan yields (most yield once).

A round trip of several commands is one pipeline (not a transaction; on a cluster, one pipeline
per node, sent together); a single command is sent as it is. A reply that is an error is
raised, the first one first, as ``pipeline.execute()`` would; a script call that a flushed
script cache refused (NOSCRIPT) is sent again as EVAL with the script's source (reads are safe
to repeat).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, TypeVar

from redis.exceptions import NoScriptError

from engine.commands.scripts import LuaScript

T = TypeVar("T")

#: One command: the name of a redis-py client method, its positional and keyword arguments;
#: or ``("script", (LuaScript, keys, args), {})``, a script call (:func:`script`).
Cmd = tuple[str, tuple[Any, ...], dict[str, Any]]
#: A read: yields each round trip's commands, is sent their replies, returns the result.
Plan = Generator[list[Cmd], list[Any], T]

_NO_KWARGS: dict[str, Any] = {}


def cmd(name: str, *args: Any, **kwargs: Any) -> Cmd:
    """The command ``client.<name>(*args, **kwargs)``, e.g. ``cmd("zcard", key)``."""
    return name, args, kwargs or _NO_KWARGS


def script(lua: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Cmd:
    """A call of ``lua`` (EVALSHA; EVAL when the server's script cache lacks it)."""
    lua._check(keys)
    return "script", (lua, keys, args), _NO_KWARGS


def _queue(target: Any, c: Cmd, inline: bool) -> Any:
    """Call the command on ``target`` (a client or a pipeline)."""
    name, args, kwargs = c
    if name == "script":
        lua, keys, values = args
        # execute_command: a sync cluster pipeline blocks its evalsha() method, not the command
        if inline:
            return target.execute_command("EVAL", lua.source, lua.numkeys, *keys, *values)
        return target.execute_command("EVALSHA", lua.sha, lua.numkeys, *keys, *values)
    return getattr(target, name)(*args, **kwargs)


def _checked(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _missing(replies: list[Any]) -> list[int]:
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


def execute(client: Any, commands: list[Cmd]) -> list[Any]:
    """One round trip on a sync client: the replies to ``commands``."""
    if len(commands) == 1:
        try:
            return [_queue(client, commands[0], False)]
        except NoScriptError:
            return [_queue(client, commands[0], True)]
    replies = _pipelined(client, commands, False)
    missing = _missing(replies)
    if missing:
        for i, reply in zip(missing, _pipelined(client, [commands[i] for i in missing], True)):
            replies[i] = reply
    return _checked(replies)


def _pipelined(client: Any, commands: list[Cmd], inline: bool) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for c in commands:
        _queue(pipe, c, inline)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return replies


async def aexecute(client: Any, commands: list[Cmd]) -> list[Any]:
    """One round trip on an asyncio client: the replies to ``commands``."""
    if len(commands) == 1:
        try:
            return [await _queue(client, commands[0], False)]
        except NoScriptError:
            return [await _queue(client, commands[0], True)]
    replies = await _apipelined(client, commands, False)
    missing = _missing(replies)
    if missing:
        again = await _apipelined(client, [commands[i] for i in missing], True)
        for i, reply in zip(missing, again):
            replies[i] = reply
    return _checked(replies)


async def _apipelined(client: Any, commands: list[Cmd], inline: bool) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for c in commands:
        _queue(pipe, c, inline)  # an asyncio pipeline buffers: nothing to await yet
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies


def run(client: Any, plan: Plan[T]) -> T:
    """Execute ``plan`` on a sync client; its result."""
    try:
        commands = next(plan)
        while True:
            commands = plan.send(execute(client, commands))
    except StopIteration as done:
        result: T = done.value
        return result


async def arun(client: Any, plan: Plan[T]) -> T:
    """Execute ``plan`` on an asyncio client; its result."""
    try:
        commands = next(plan)
        while True:
            commands = plan.send(await aexecute(client, commands))
    except StopIteration as done:
        result: T = done.value
        return result
