"""``lua/board_rank.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from typing import Any

from engine.commands.reads import Cmd, script
from engine.commands.scripts import scripts
from engine.domain.keys import Keys


def keys(k: Keys, shard: int, board_id: str) -> list[str]:
    return [k.board(shard, board_id)]


def args(member: str) -> list[Any]:
    """``member``: the user id."""
    return [member]


def command(k: Keys, shard: int, board_id: str, member: str) -> Cmd:
    """The read (for :mod:`engine.commands.reads`) of ``member``'s standing on ``shard``'s
    board."""
    return script(scripts["board_rank"], keys(k, shard, board_id), args(member))


def parse(reply: Any) -> tuple[float, int, int, float | None] | None:
    """(score, entries with a better score, board size, nearest better score or None), or
    None when the member is not on the board."""
    if not reply:
        return None
    score, better, size, nearest = reply
    return float(score), int(better), int(size), None if nearest is None else float(nearest)
