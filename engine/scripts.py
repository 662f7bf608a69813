"""The one script registry: loads ``lua/*.lua`` once per process.

Each script may pull in shared pieces with a line ``--- @include "name"`` (from
``lua/includes/name.lua``, each at most once), so one flattened source is what runs. The number
of keys a script takes is read from its header (the highest ``KEYS[n]`` it documents) and checked
on every call. Calls go through :class:`redis.commands.core.Script` (EVALSHA with a NOSCRIPT
fallback); :func:`run_calls` runs a batch on one pipeline and re-runs the calls a flushed
script cache refused.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
_INCLUDE = re.compile(r'^--- @include "([\w.-]+)"\s*$', re.M)
_HEADER = re.compile(r"\A--\[\[(.*?)\]\]", re.S)
_KEY_REF = re.compile(r"KEYS\[(\d+)\]")


class LuaScript:
    """One loaded script: its flattened source, SHA1 and number of keys."""

    def __init__(self, name: str, source: str) -> None:
        header = _HEADER.search(source)
        if header is None:
            raise RuntimeError(f"lua/{name}.lua must open with a --[[ ... ]] header")
        self.name = name
        self.source = source
        self.numkeys = max((int(n) for n in _KEY_REF.findall(header.group(1))), default=0)
        self._script = Script(None, source.encode("utf-8"))

    @property
    def sha(self) -> str:
        return self._script.sha

    def _check(self, keys: Sequence[str]) -> None:
        if len(keys) != self.numkeys:
            raise TypeError(f"{self.name}.lua takes {self.numkeys} keys, got {len(keys)}")

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run now (EVALSHA, loading the script if the server lacks it)."""
        self._check(keys)
        return self._script(keys=keys, args=args, client=client)

    def queue(
        self, pipe: Any, keys: Sequence[str], args: Sequence[Any], *, inline: bool = False
    ) -> None:
        """Queue a bare EVALSHA (or, ``inline``, an EVAL) on ``pipe``; see :func:`run_calls`."""
        self._check(keys)
        if inline:
            pipe.execute_command("EVAL", self.source, self.numkeys, *keys, *args)
        else:
            pipe.execute_command("EVALSHA", self.sha, self.numkeys, *keys, *args)

    def load(self, client: Any) -> None:
        client.script_load(self.source)


class ScriptRegistry:
    """Loads each ``lua/<name>.lua`` on first use; thread-safe; ``registry["award"]``."""

    def __init__(self, directory: Path = LUA_DIR) -> None:
        self.directory = directory
        self._scripts: dict[str, LuaScript] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> LuaScript:
        script = self._scripts.get(name)
        if script is None:
            with self._lock:
                script = self._scripts.get(name) or LuaScript(name, self._flatten(name))
                self._scripts[name] = script
        return script

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.lua"))

    def _flatten(self, name: str) -> str:
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

        return _INCLUDE.sub(include, path.read_text(encoding="utf-8"))


#: The process-wide registry. Nothing is read from disk until a script is first used.
scripts = ScriptRegistry()


def run_calls(client: Any, calls: Sequence[tuple[LuaScript, Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run ``(script, keys, args)`` calls on one non-transactional pipeline, in one round trip,
    and return one reply (or exception instance) per call, in order.

    Calls refused with NOSCRIPT (the script cache was flushed, possibly in the middle of the
    batch) changed nothing. They alone are sent again after the script is loaded, and if the
    cache is flushed yet again, once more as EVAL with the full source, which cannot be refused.
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in range(3):
        if not pending:
            break
        inline = attempt == 2
        pipe = client.pipeline(transaction=False)
        for i in pending:
            script, keys, args = calls[i]
            script.queue(pipe, keys, args, inline=inline)
        missing: list[int] = []
        for i, reply in zip(pending, pipe.execute(raise_on_error=False)):
            if isinstance(reply, NoScriptError):
                missing.append(i)
            else:
                replies[i] = reply
        for script in {calls[i][0].name: calls[i][0] for i in missing}.values():
            script.load(client)
        pending = missing
    return replies
