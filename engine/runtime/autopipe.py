"""Auto-pipelining on asyncio: the commands that one event loop's coroutines send while a batch
is on the wire go to Redis together, in one write on one connection, and each caller gets its
own reply (as ioredis's ``enableAutoPipelining`` does).

An API worker answering many awards at once sends each award's script call on its own through
redis-py's client: a pooled connection taken and given back, a write and a read, the client's
retry wrapper, per call. Here a call costs appending its packed command to a list; one task
writes whatever has gathered, reads the replies in order and hands each to its caller, then
writes what gathered meanwhile. Redis executes the commands one after the other as it would
from separate connections, so nothing changes for the callers but the cost.

Only for commands that are safe to send again: when a connection fails after the commands were
written and before their replies arrived (the server or a proxy closed it, a killed client),
they are sent again on a new connection, up to :data:`TRIES` writes in all, since only the same
call can settle whether the first one ran. When no connection can be made, the callers get the
error at once (a Redis that is down is a 503 within milliseconds, as with redis-py's client).
The award script is safe to repeat: its activity id makes a second run a replay. Single Redis
servers only; a cluster client routes each command to its slot's node itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from engine.runtime.connect import pack_commands

_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]
#: Writes of a command at most: the first, and again on a new connection after each that
#: failed before its reply came.
TRIES = 3


class _Unreachable(Exception):
    """No connection to Redis could be made (the error is the cause)."""


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` says no connection could be made at all (redis-py's "Error 111
    connecting to ...", "Timeout connecting to server"), rather than one lost once made."""
    return "connecting to" in str(exc).lower()


class AutoPipeline:
    """The commands of one event loop's coroutines, pipelined on one connection of ``client``'s
    pool (its address, database, credentials and timeouts). Made and used in one event loop;
    :meth:`aclose` before the loop ends."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._connection: Any = None
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: times the connection failed and commands were sent again on a new one
        self.reconnects = 0

    @property
    def client(self) -> Any:
        """The redis-py asyncio client whose pool this pipeline's connection comes from (for
        the commands that want redis-py's reply parsing: a pipeline's replies are as Redis
        sends them)."""
        return self._client

    async def execute_command(self, *args: Any) -> Any:
        """Send one command with the others of this turn; its reply (an error reply raises
        redis-py's exception for it, e.g. ``NoScriptError``)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        return await future

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute_command("EVAL", script, numkeys, *keys_and_args)

    async def aclose(self) -> None:
        """Stop the writer (callers still waiting get ``ConnectionError``) and close the
        connection and the client."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail(self._queue, ConnectionError("the auto-pipeline was closed"))
        self._queue = []
        if self._connection is not None:
            await self._connection.disconnect()
            self._connection = None
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if batch:
                try:
                    await self._send(batch)
                except asyncio.CancelledError:
                    self._fail(batch, ConnectionError("the auto-pipeline was closed"))
                    raise

    async def _send(self, batch: list[_Pending]) -> None:
        """Write ``batch`` and settle each of its futures; the commands whose connection failed
        before their replies go once more on a new connection."""
        for attempt in range(TRIES):
            try:
                await self._round(batch)
                return
            except _Unreachable as exc:  # nothing was written: no reason to wait for Redis
                self._fail(batch, exc.__cause__ or exc)
                return
            except (ConnectionError, TimeoutError, OSError) as exc:
                self.reconnects += 1
                if self._connection is not None:
                    await self._connection.disconnect()
                if attempt == TRIES - 1:
                    self._fail(batch, exc)
                    return

    async def _round(self, batch: list[_Pending]) -> None:
        """One write of ``batch`` and its replies; raises the connection's error, with
        ``batch`` cut to the commands not yet answered."""
        if self._connection is None:
            self._connection = self._client.connection_pool.make_connection()
        connection = self._connection
        try:
            await connection.connect()
        except (ConnectionError, TimeoutError, OSError) as exc:
            if _refused(exc):
                raise _Unreachable from exc
            raise  # made, then lost (in the handshake): as any lost connection
        packed = pack_commands(connection, [args for args, _ in batch])
        await connection.send_packed_command(packed, check_health=False)
        for i, (_, future) in enumerate(batch):
            try:
                reply = await connection.read_response()
            except ResponseError as exc:  # an error reply: this command's, not the connection's
                if not future.done():
                    future.set_exception(exc)
                continue
            except (ConnectionError, TimeoutError, OSError):
                del batch[:i]
                raise
            if not future.done():  # a caller that was cancelled meanwhile is not answered
                future.set_result(reply)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
