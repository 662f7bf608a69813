"""``lua/board_dense.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.reads import Cmd, script
from engine.commands.scripts import scripts
from engine.domain.keys import Keys


def keys(k: Keys, shard: int, board_id: str) -> list[str]:
    return [k.board(shard, board_id)]


def args(score: str, cap: int) -> list[Any]:
    """``score``: the exclusive bound as Redis writes a score; ``cap``: the most to return
    (one more is returned when there are more)."""
    return [score, cap]


def command(k: Keys, shard: int, board_id: str, score: str, cap: int) -> Cmd:
    """The read (for :mod:`engine.commands.reads`) of the distinct scores of ``shard``'s board
    better than ``score``."""
    return script(scripts["board_dense"], keys(k, shard, board_id), args(score, cap))


def parse(reply: Any) -> list[float]:
    """The distinct better scores, best first."""
    return [float(s) for s in reply or ()]
