"""The one script registry: loads ``lua/*.lua`` once per process.

Each script may pull in shared pieces with a line ``--- @include "name"`` (from
``lua/includes/name.lua``, each at most once), so one flattened source is what runs. A line
``--- @define NAME`` becomes ``local NAME = <value>`` with a value the engine supplies (the rule
tables), so rules reach the script without costing arguments on every call; each set of values
is a script of its own, with its own SHA1. The number of keys a script takes is read from its
header (the highest ``KEYS[n]`` it documents; ``KEYS[n...]``: keys n and after, as many as a
call passes) and checked on every call.

Where the server takes Redis Functions (Redis 7 and later), each script is also a library
(``FUNCTION LOAD``, on a client's first call) whose defines and includes run once, at load, and
whose one function runs the rest with the call's KEYS and ARGV: calls are ``FCALL``, and no
longer build the rule tables each time. Elsewhere (Redis 6.2, an ACL without ``FUNCTION``, a
cluster's top-level client) calls go through :class:`redis.commands.core.Script` (EVALSHA with a
NOSCRIPT fallback). :meth:`LuaScript.acall` runs a call on an asyncio client; :func:`stream_calls`
and :func:`run_calls` run batches pipelined and re-run the calls a flushed script cache (or a
lost function, handled as NOSCRIPT) refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from redis.commands.core import Script
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from engine.runtime.connect import (
    RETRIES,
    is_cluster_client,
    pack_commands,
    pause,
    refresh_topology,
)

T = TypeVar("T")
log = logging.getLogger("engine.commands")
_ENGINE = Path(__file__).resolve().parent.parent
#: ``lua/`` beside ``engine/`` in a checkout (and an editable install); ``engine/lua`` in a wheel.
LUA_DIR = _ENGINE / "lua" if (_ENGINE / "lua").is_dir() else _ENGINE.parent / "lua"
_INCLUDE = re.compile(r'^--- @include "([\w.-]+)"\s*$', re.M)
_DEFINE = re.compile(r"^--- @define (\w+)\s*$", re.M)
_HEADER = re.compile(r"\A--\[\[(.*?)\]\]", re.S)
_KEY_REF = re.compile(r"KEYS\[(\d+)\]")
#: ``KEYS[n...]`` in a header: the script takes keys n and after, as many as the call passes.
_KEYS_FROM = re.compile(r"KEYS\[(\d+)\.\.\.\]")
#: The lines of a script a library runs once, at load: its includes and its defines.
_HOISTED = re.compile(r'^--- @include "([\w.-]+)"[ \t]*$|^--- @define \w+[ \t]*$', re.M)
#: The prefix of the engine's Redis Functions libraries (one per script and source).
LIBRARY_PREFIX = "scoring_"
#: Libraries of one script kept in a server (one per rule set in use); past this, loading one
#: deletes the others (a process still using one loads it again on its next call).
MAX_LIBRARIES = 8


class LuaScript:
    """One loaded script: its flattened source, SHA1 and number of keys."""

    def __init__(self, name: str, source: str, parts: tuple[str, str] | None = None) -> None:
        """``parts``: the source as (what runs once: its defines and includes, the rest), for
        the Redis Functions library of the script; None: EVAL only."""
        header = _HEADER.search(source)
        if header is None:
            raise RuntimeError(f"lua/{name}.lua must open with a --[[ ... ]] header")
        self.name = name
        self.source = source
        self.numkeys = max((int(n) for n in _KEY_REF.findall(header.group(1))), default=0)
        #: whether the script takes any number of keys after its first ``numkeys`` (``KEYS[n...]``)
        rest = _KEYS_FROM.findall(header.group(1))
        self.variadic = bool(rest)
        if rest:
            self.numkeys = max(self.numkeys, int(rest[0]) - 1)
        # No registered client: every call passes its own, and a bytes script needs no
        # client's encoder. redis-py annotates the parameter as a required client, though its
        # Script handles client=None (it only reads registered_client when a call passes none).
        self._script = Script(None, source.encode("utf-8"))  # type: ignore[arg-type]
        #: the script's function (and library) name: one per source, like its SHA1
        self.function = f"{LIBRARY_PREFIX}{name}_{self.sha[:16]}"
        self.library = None if parts is None else _library(self.function, *parts)
        #: client -> whether calls on it go through the function (its server has it loaded)
        self._modes: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    @property
    def sha(self) -> str:
        return self._script.sha

    def _check(self, keys: Sequence[str]) -> None:
        if len(keys) < self.numkeys or (len(keys) > self.numkeys and not self.variadic):
            raise TypeError(f"{self.name}.lua takes {self.numkeys} keys, got {len(keys)}")

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run now: FCALL where the server has the script's function (loaded on first use),
        else EVALSHA, loading the script if the server lacks it."""
        self._check(keys)
        if self.uses_function(client):
            try:
                return client.execute_command("FCALL", self.function, len(keys), *keys, *args)
            except ResponseError as exc:
                if not function_missing(exc):
                    raise
            self.load(client)  # a server restarted, or FUNCTION FLUSH: load it again
            if self.uses_function(client):
                return client.execute_command("FCALL", self.function, len(keys), *keys, *args)
        return self._script(keys=keys, args=args, client=client)

    def uses_function(self, client: Any) -> bool:
        """Whether calls on ``client`` go through the script's Redis Function: on the first
        call, FUNCTION LOAD is tried (Redis 7 and later; a cluster's top-level client, whose
        FCALL would cost a round trip to find its keys, uses EVALSHA)."""
        mode = self._modes.get(client)
        if mode is None:
            mode = self._modes[client] = self._load_function(client)
        return mode

    def _load_function(self, client: Any) -> bool:
        if self.library is None or is_cluster_client(client):
            return False
        try:
            client.execute_command("FUNCTION", "LOAD", "REPLACE", self.library)
        except ResponseError as exc:
            self._refused(exc)
            return False
        listed = client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", self._pattern)
        _prune(client, self, listed)
        return True

    async def _aload_function(self, client: Any) -> bool:
        if self.library is None or is_cluster_client(client):
            return False
        try:
            await client.execute_command("FUNCTION", "LOAD", "REPLACE", self.library)
        except ResponseError as exc:
            self._refused(exc)
            return False
        listed = await client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", self._pattern)
        for stale in _stale(self, listed):
            with contextlib.suppress(ResponseError):
                await client.execute_command("FUNCTION", "DELETE", stale)
        return True

    def _refused(self, exc: ResponseError) -> None:
        """Say why calls of this script run as EVALSHA: quietly for a server without functions
        (before Redis 7: an unknown command) or a user without them (NOPERM), loudly for a
        library that did not load (a bug of the engine's)."""
        text = str(exc)
        expected = "unknown command" in text.lower() or isinstance(exc, NoPermissionError)
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "lua/%s.lua runs as EVALSHA: FUNCTION LOAD refused (%s)", self.name, text)

    @property
    def _pattern(self) -> str:
        return f"{LIBRARY_PREFIX}{self.name}_*"

    async def acall(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run now on an asyncio client (``redis.asyncio``, or an
        :class:`~engine.runtime.autopipe.AutoPipeline`): FCALL where the server has the
        script's function (loaded on first use), else EVALSHA; a server that lacks either is
        sent EVAL with the full source (which also caches it again). On a
        cluster, a call whose node failed is tried again after a pause, as
        :func:`stream_calls` does, within :data:`~engine.runtime.connect.RETRIES` tries."""
        self._check(keys)
        mode = self._modes.get(client)
        if mode is None:
            mode = self._modes[client] = await self._aload_function(client)
        if mode:
            try:
                return await client.execute_command("FCALL", self.function, len(keys), *keys, *args)
            except ResponseError as exc:
                if not function_missing(exc):
                    raise
                del self._modes[client]  # loaded again on the next call; this one: EVAL
                return await client.eval(self.source, len(keys), *keys, *args)
        for attempt in itertools.count():
            try:
                try:
                    return await client.evalsha(self.sha, len(keys), *keys, *args)
                except NoScriptError:
                    return await client.eval(self.source, len(keys), *keys, *args)
            except _NODE_AWAY:
                # on a cluster, a node that failed: its client retried without pausing; wait
                # for the failover and read the slot map again (the call is safe to repeat)
                if not is_cluster_client(client) or attempt >= RETRIES:
                    raise
                await asyncio.sleep(pause(attempt))
                with contextlib.suppress(*_NODE_AWAY):
                    await client.nodes_manager.initialize()
        raise AssertionError("unreachable")

    def command(
        self,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        inline: bool = False,
        function: bool = False,
    ) -> tuple[Any, ...]:
        """The EVALSHA (``inline``: EVAL; ``function``: FCALL) command for a pipeline; see
        :func:`run_calls`."""
        self._check(keys)
        if inline:
            return ("EVAL", self.source, len(keys), *keys, *args)
        if function:
            return ("FCALL", self.function, len(keys), *keys, *args)
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def load(self, client: Any) -> None:
        """Load the script (and its function, where the server takes functions) into the
        server: after NOSCRIPT or "Function not found" (a restart, a flush, a new node)."""
        client.script_load(self.source)
        if self.library is None:
            return
        if is_cluster_client(client):  # every primary: their node clients use FCALL
            with contextlib.suppress(ResponseError):
                client.function_load(self.library, replace=True)
        elif self._modes.get(client) is not False:
            self._modes[client] = self._load_function(client)


def _library(function: str, once: str, body: str) -> str:
    """A Redis Functions library whose one function, ``function``, runs ``body`` with the
    script's KEYS and ARGV; ``once`` (the rule tables and shared functions) runs at load, so a
    call no longer builds them."""
    return (
        f"#!lua name={function}\n{once}\n"
        f"redis.register_function('{function}', function(KEYS, ARGV)\n{body}\nend)\n"
    )


def function_missing(exc: Exception) -> bool:
    """Whether ``exc`` is Redis's answer to an FCALL of a function it does not have."""
    return isinstance(exc, ResponseError) and str(exc).startswith("Function not found")


def _names(listed: Any) -> list[str]:
    """The library names in a FUNCTION LIST reply (dicts through redis-py's reply callback,
    flat key/value lists without it)."""
    names = []
    for entry in listed or ():
        fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2]))
        name = fields.get("library_name", fields.get(b"library_name"))
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def _stale(script: LuaScript, listed: Any) -> list[str]:
    """The other libraries of ``script`` to delete, once more than MAX_LIBRARIES are loaded."""
    names = _names(listed)
    if len(names) <= MAX_LIBRARIES:
        return []
    return [n for n in names if n != script.function]


def _prune(client: Any, script: LuaScript, listed: Any) -> None:
    for stale in _stale(script, listed):
        with contextlib.suppress(ResponseError):  # another process deleted it first
            client.execute_command("FUNCTION", "DELETE", stale)


class ScriptRegistry:
    """Loads each ``lua/<name>.lua`` on first use; thread-safe.

    ``registry["board_position"]`` for a plain script; ``registry.get("award", RULES={...})``
    for one with ``--- @define`` lines.
    """

    def __init__(self, directory: Path = LUA_DIR) -> None:
        self.directory = directory
        self._scripts: dict[tuple[str, str], LuaScript] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> LuaScript:
        return self.get(name)

    def get(self, name: str, **defines: Any) -> LuaScript:
        """The script ``name`` with its ``--- @define`` lines set from ``defines``."""
        values = {k: lua_literal(v) for k, v in defines.items()}
        cache_key = (name, repr(sorted(values.items())))
        script = self._scripts.get(cache_key)
        if script is None:
            with self._lock:
                script = self._scripts.get(cache_key)
                if script is None:
                    source = self._define(name, self._flatten(name), values)
                    once, body = self._flatten(name, hoist=True)
                    parts = (self._define(name, once, values), body)
                    script = self._scripts[cache_key] = LuaScript(name, source, parts)
        return script

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.lua"))

    @staticmethod
    def _define(name: str, source: str, values: dict[str, str]) -> str:
        wanted = set(_DEFINE.findall(source))
        if wanted != set(values):
            raise TypeError(f"{name}.lua defines {sorted(wanted)}, got values for {sorted(values)}")
        return _DEFINE.sub(lambda m: f"local {m.group(1)} = {values[m.group(1)]}", source)

    @overload
    def _flatten(self, name: str) -> str: ...
    @overload
    def _flatten(self, name: str, *, hoist: bool) -> tuple[str, str]: ...

    def _flatten(self, name: str, *, hoist: bool = False) -> str | tuple[str, str]:
        """The script with its includes in place; ``hoist``: (its ``--- @define`` lines and
        includes, in order, the rest of the script), for a library that runs the first part
        once, at load, and the rest on each call."""
        path = self.directory / f"{name}.lua"
        if not path.is_file():
            raise KeyError(f"no script lua/{name}.lua")
        seen: set[str] = set()

        def include(match: re.Match[str]) -> str:
            part = match.group(1)
            if part in seen:
                return ""
            seen.add(part)
            inc = self.directory / "includes" / f"{part}.lua"
            if not inc.is_file():
                raise RuntimeError(f"lua/{name}.lua includes missing lua/includes/{part}.lua")
            return _INCLUDE.sub(include, inc.read_text(encoding="utf-8")).rstrip("\n")

        text = path.read_text(encoding="utf-8")
        if not hoist:
            return _INCLUDE.sub(include, text)
        once: list[str] = []

        def lift(match: re.Match[str]) -> str:
            once.append(include(match) if match.group(1) else match.group(0))
            return ""

        body = _HOISTED.sub(lift, text)
        return "\n".join(once), body


def lua_literal(value: Any) -> str:
    """``value`` (str, int, float, bool, list, or dict with identifier keys) as Lua source."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # ASCII letters and digits as they are, every other byte of the UTF-8 as a \ddd escape
        text = value.encode("utf-8")
        return (
            '"'
            + "".join(chr(b) if b < 128 and chr(b).isalnum() else f"\\{b:03d}" for b in text)
            + '"'
        )
    if isinstance(value, list | tuple):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_lua_key(k)} = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


#: Lua 5.1's reserved words: a table key that is one (an activity type named ``end``, say) is
#: written ``["end"]``.
_LUA_KEYWORDS = frozenset(
    "and break do else elseif end false for function if in local nil not or repeat return "
    "then true until while".split()
)
_LUA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _lua_key(key: str) -> str:
    if _LUA_NAME.match(key) and key not in _LUA_KEYWORDS:
        return key
    return f"[{lua_literal(key)}]"


#: The process-wide registry. Nothing is read from disk until a script is first used.
scripts = ScriptRegistry()


Call = tuple[LuaScript, Sequence[str], Sequence[Any]]

#: Calls sent per write while streaming; two chunks are kept in flight.
STREAM_CHUNK = 64
_RETRYABLE = (ConnectionError, TimeoutError)


def stream_calls(
    client: Any,
    items: Iterable[T],
    to_call: Callable[[T], Call],
    *,
    inline: bool = False,
    wait: tuple[int, int] | None = None,
) -> Iterator[tuple[T, Any]]:
    """Run one script call per item over one connection, pipelined, and yield
    ``(item, reply)`` in order (a reply is an exception instance when Redis refused the call).
    ``wait``: (replicas, timeout ms) of a ``WAIT`` sent after the last call on the same
    connection, so the stream ends once that many replicas hold its writes (or at the timeout).

    On a Redis Cluster the calls are grouped by the node that serves their slot (every script
    is single-slot) and each node's group is streamed as above, in order within the group. A
    call a node refused because its slot moved (``MOVED``, ``ASK``, ``TRYAGAIN``, a failover in
    progress), or whose node stopped answering, is sent again after the slot map is refreshed,
    within :data:`~engine.runtime.connect.RETRIES` tries; a call still unsettled after them gets
    the last error as its reply (the rest of the batch stands).

    Items are turned into calls lazily and replies are yielded as they arrive, with a chunk
    being processed by Redis while the caller prepares the next one and handles the last one's
    replies, so the Python and Redis sides of a batch overlap. If the connection drops, the
    calls not yet answered are sent again on a new connection (twice at most): callers only
    stream calls that are safe to repeat (awards carry their activity id; reads are reads).
    """
    if hasattr(client, "nodes_manager"):  # a RedisCluster: one stream per node
        yield from _stream_cluster(client, items, to_call, inline=inline, wait=wait)
        return
    if not hasattr(client, "connection_pool"):  # no one connection to stream on: one by one
        for item in items:
            yield item, _one_call(client, to_call(item))
        return
    source = iter(items)
    unsent: deque[T] = deque()  # taken from source, not yet sent (after a dropped connection)
    in_flight: deque[deque[T]] = deque()
    failures = 0
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        while True:
            try:
                chunk = [unsent.popleft() for _ in range(min(len(unsent), STREAM_CHUNK))]
                chunk += itertools.islice(source, STREAM_CHUNK - len(chunk))
                if chunk:
                    commands = []
                    for item in chunk:
                        script, keys, args = to_call(item)
                        function = script.uses_function(client)
                        commands.append(
                            script.command(keys, args, inline=inline, function=function)
                        )
                    in_flight.append(deque(chunk))
                    conn.send_packed_command(pack_commands(conn, commands), check_health=False)
                if not in_flight:
                    if wait is not None:
                        conn.send_command("WAIT", *wait, check_health=False)
                        conn.read_response()
                    return
                if chunk and len(in_flight) < 2:
                    continue
                done = in_flight[0]
                while done:
                    try:
                        reply = conn.read_response()
                    except ResponseError as exc:
                        # a function the server lost is handled as a flushed script cache
                        reply = NoScriptError(str(exc)) if function_missing(exc) else exc
                    yield done.popleft(), reply
                in_flight.popleft()
            except _RETRYABLE:
                failures += 1
                conn.disconnect()
                if failures > 2:
                    raise
                for sent in reversed(in_flight):
                    unsent.extendleft(reversed(sent))
                in_flight.clear()
    finally:
        if in_flight:
            conn.disconnect()  # unread replies would desynchronise the next user
        pool.release(conn)


#: What a call to a cluster node that failed (or whose slots have no primary yet) raises.
_NODE_AWAY = (ConnectionError, TimeoutError, ClusterDownError, RedisClusterException)
#: Replies that mean: the slot is served elsewhere now (or soon); send the call again there.
_MOVED = (MovedError, ClusterDownError)
#: Replies of a slot being migrated: the call goes alone through the cluster client, which sends
#: ASKING to the importing node (or waits out TRYAGAIN) as a migration requires.
_MIGRATING = (AskError, TryAgainError)


def _stream_cluster(
    client: Any,
    items: Iterable[T],
    to_call: Callable[[T], Call],
    *,
    inline: bool,
    wait: tuple[int, int] | None,
) -> Iterator[tuple[T, Any]]:
    pending = list(items)
    for attempt in range(RETRIES + 1):
        groups: dict[str, tuple[Any, list[T]]] = {}
        for item in pending:
            keys = to_call(item)[1]
            node = client.nodes_manager.get_node_from_slot(client.keyslot(keys[0]))
            groups.setdefault(node.name, (node, []))[1].append(item)
        again: list[T] = []
        failure: Exception | None = None
        for node, group in groups.values():
            answered = 0
            try:
                node_client = client.get_redis_connection(node)
                for item, reply in stream_calls(
                    node_client, group, to_call, inline=inline, wait=wait
                ):
                    answered += 1
                    if isinstance(reply, _MOVED):
                        again.append(item)
                    elif isinstance(reply, _MIGRATING):
                        yield item, _one_call(client, to_call(item))
                    else:
                        yield item, reply
            except _RETRYABLE as exc:  # the node is gone (or going): the rest go again
                failure = exc
                again.extend(group[answered:])
        if not again:
            return
        if attempt == RETRIES:
            break
        refresh_topology(client, attempt)
        pending = again
    # each call still unsettled fails on its own, the others of the batch stand
    last = failure or ClusterDownError(f"the slot of this call kept moving ({RETRIES} tries)")
    for item in again:
        yield item, last


def _one_call(client: Any, call: Call) -> Any:
    """One call on its own: its reply, or the error Redis (or, on a cluster, a slot still
    migrating after the client's own retries) refused it with; a lost connection raises."""
    script, keys, args = call
    try:
        return script(client, keys, args)
    except (ResponseError, ClusterError, RedisClusterException) as exc:
        return exc


def run_calls(client: Any, calls: Sequence[Call]) -> list[Any]:
    """Run ``(script, keys, args)`` calls pipelined and return one reply (or exception
    instance) per call, in order.

    Calls refused with NOSCRIPT (the script cache was flushed, possibly in the middle of the
    batch) changed nothing. They alone are sent again after the script is loaded, and if the
    cache is flushed yet again, once more as EVAL with the full source, which cannot be refused.
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in range(3):
        if not pending:
            break
        missing: list[int] = []
        for i, reply in stream_calls(client, pending, calls.__getitem__, inline=attempt == 2):
            if isinstance(reply, NoScriptError):
                missing.append(i)
            else:
                replies[i] = reply
        for script in {calls[i][0].name: calls[i][0] for i in missing}.values():
            script.load(client)
        pending = missing
    return replies
