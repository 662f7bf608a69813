"""``lua/board_position.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.reads import Cmd, script
from engine.commands.scripts import scripts
from engine.domain.keys import Keys


def keys(k: Keys, shard: int, board_id: str) -> list[str]:
    return [k.board(shard, board_id)]


def args(score: str, member: str) -> list[Any]:
    """``score``: the pair's score as Redis writes it; ``member``: the user id."""
    return [score, member]


def command(k: Keys, shard: int, board_id: str, score: str, member: str) -> Cmd:
    """The read (for :mod:`engine.commands.reads`) that counts the entries of ``shard``'s
    board that sort before the pair (score, member)."""
    return script(scripts["board_position"], keys(k, shard, board_id), args(score, member))


def parse(reply: Any) -> int:
    """The number of entries that sort before the pair."""
    return int(reply)
