"""``lua/forget_consumers.lua``: the script, its KEYS, its ARGV and its reply, written once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.commands.scripts import scripts
from engine.domain.keys import Keys


def keys(k: Keys, shard: int) -> list[str]:
    return [k.outbox(shard)]


def args(group: str, consumers: Sequence[str]) -> list[Any]:
    return [group, *consumers]


def run(client: Any, k: Keys, shard: int, group: str, consumers: Sequence[str]) -> int:
    """Delete those of ``consumers`` of the shard's outbox ``group`` that hold no pending
    entry; return how many were."""
    return parse(scripts["forget_consumers"](client, keys(k, shard), args(group, consumers)))


def parse(reply: Any) -> int:
    """How many consumers were deleted."""
    return int(reply)
