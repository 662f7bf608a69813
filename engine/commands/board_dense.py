"""``lua/board_dense.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.reads import Cmd, script
from engine.commands.scripts import scripts
from engine.domain.keys import Keys


def keys(k: Keys, shard: int, board_id: str) -> list[str]:
    return [k.board(shard, board_id)]


def args(score: str, after: str, cap: int) -> list[Any]:
    """``score``: the exclusive bound as Redis writes a score; ``after``: ``-inf``, or
    ``(<score>`` to go on past a score a call returned; ``cap``: the most to return."""
    return [score, after, cap]


def command(k: Keys, shard: int, board_id: str, score: str, after: str, cap: int) -> Cmd:
    """The read (for :mod:`engine.commands.reads`) of up to ``cap`` distinct scores of
    ``shard``'s board better than ``score``, past ``after``."""
    return script(scripts["board_dense"], keys(k, shard, board_id), args(score, after, cap))


def parse(reply: Any) -> list[float]:
    """The distinct better scores, best first."""
    return [float(s) for s in reply or ()]
