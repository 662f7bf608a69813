"""Change the number of shards K of a populated deployment (``scoring reshard --from K_OLD``).

A user's shard is ``crc32(user_id) % K``, so a new K moves most users to another shard, and
with them every key that carries their shard's hash tag. :func:`reshard` moves, in place:

* each user's hash, day bitmap, weekly goal progress, side quests, achievements and friend
  list (``DUMP``, ``RESTORE`` under the new name with the same time to live, then ``UNLINK``
  of the old name);
* each leaderboard entry (every board: all-time, per type, the window boards) to the same board
  of the user's new shard, with the board's time to live;
* each deleted user's tombstone, written again from SQL under the user's new shard;
* each idempotency record to the shard of the user whose activity it answers for (the user is
  read from the audit trail), so a client retrying an award after the change still gets its
  first answer.

It needs the writers stopped (API processes and workers) and every outbox drained into SQL with
no dead letters left, and refuses otherwise. Each step is idempotent (a key is moved only when
it is not in its user's new shard), so a reshard that stopped halfway is finished by running it
again with the same ``--from``. Shards beyond the new K are emptied of their (drained) outbox,
its bookkeeping and the upgrade feed. On a Redis Cluster the keys move between nodes too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.commands.delete_user import write_tombstones
from engine.domain.errors import ConfigError
from engine.domain.keys import Keys
from engine.runtime.connect import scan_keys
from engine.storage.outbox import backlog
from engine.storage.store import SqlStore

#: Keys or board entries moved per round trip.
_CHUNK = 500


@dataclass
class ReshardReport:
    old_shards: int
    new_shards: int
    user_keys_moved: int = 0
    board_entries_moved: int = 0
    idempotency_records_moved: int = 0
    idempotency_records_dropped: int = 0  # their activity is not in SQL (nothing to answer for)


def reshard(
    engine: Any,
    store: SqlStore,
    old_shards: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> ReshardReport:
    """Move the state of ``engine``'s key prefix from ``old_shards`` shards to the engine's
    (``engine.keys.shards``); see the module docstring. :class:`ConfigError` if an outbox
    still holds entries SQL lacks, or dead letters."""
    r, new = engine.redis, engine.keys
    old = Keys(prefix=new.prefix, shards=old_shards)
    if old_shards < 1:
        raise ConfigError("--from must be the old number of shards (>= 1)")
    for shard in range(old_shards):
        if r.exists(old.outbox(shard)) and backlog(r, old.outbox(shard)):
            raise ConfigError(
                f"shard {shard}'s outbox holds entries not yet in SQL: stop the API, then drain "
                "(scoring worker --burst with the old SCORING_SHARDS) before resharding"
            )
        if r.xlen(old.dead_letters(shard)):
            raise ConfigError(
                f"shard {shard} has dead letters: replay or remove them before resharding"
            )
    report = ReshardReport(old_shards, new.shards)
    say = progress or (lambda _: None)
    for shard in range(old_shards):
        near = old.outbox(shard)
        say(f"shard {shard}: users")
        for kind, prefix, build in _user_kinds(old, new, shard):
            batch = []
            for key in scan_keys(r, prefix + "*", near=near):
                user_id = key[len(prefix) :]
                if kind == "quests" and key.startswith(old.quests_done("", shard)):
                    continue  # a completed-quests hash: the next kind
                if new.shard_of(user_id) != shard:
                    batch.append((key, build(user_id)))
                if len(batch) >= _CHUNK:
                    report.user_keys_moved += _move_keys(r, batch)
                    batch = []
            report.user_keys_moved += _move_keys(r, batch)
        say(f"shard {shard}: boards")
        for key in scan_keys(r, old.board(shard, "*"), near=near):
            board_id = key[len(old.board(shard, "")) :]
            report.board_entries_moved += _move_board(r, new, shard, board_id, key)
        say(f"shard {shard}: idempotency records")
        prefix = old.idempotency(shard, "")
        batch_ids: list[str] = []
        for key in scan_keys(r, prefix + "*", near=near):
            batch_ids.append(key[len(prefix) :])
            if len(batch_ids) >= _CHUNK:
                _move_records(r, store, old, new, shard, batch_ids, report)
                batch_ids = []
        _move_records(r, store, old, new, shard, batch_ids, report)
    for shard in range(new.shards, old_shards):  # shards that are no more: drained, dropped
        r.unlink(old.outbox(shard), old.drain_failures(shard), old.drain_flag(shard),
                 old.drain_outage(shard), old.feed(shard))  # fmt: skip
    say("achievement holders")
    engine.badges.recount_holders(old_shards=old_shards)
    say("tombstones of deleted users")
    _move_tombstones(r, store, old, new, engine.clock())
    return report


def _move_tombstones(r: Any, store: SqlStore, old: Keys, new: Keys, now: Any) -> None:
    """Deleted users' tombstones are named by the digest of the id, which says nothing of the
    new shard: they are written again from SQL (``deleted_user`` keeps the id's CRC-32), and
    the old shards' copies dropped."""
    kept = write_tombstones(r, new, store.tombstones(now), now)
    for shard in range(old.shards):
        stale = [old.tombstones(shard)]
        stale += scan_keys(r, old.tombstone_of(shard, "*"), near=old.outbox(shard))
        for key in stale:
            if key not in kept:
                r.unlink(key)


def _user_kinds(old: Keys, new: Keys, shard: int) -> list[tuple[str, str, Callable[[str], str]]]:
    """(kind, old key prefix, new key of a user) of every per-user key."""
    return [
        ("user", old.user_prefix(shard), new.user),
        ("days", old.days("", shard), new.days),
        ("frozen", old.frozen("", shard), new.frozen),
        ("goals", old.goals("", shard), new.goals),
        ("quests", old.quests("", shard), new.quests),
        ("quests_done", old.quests_done("", shard), new.quests_done),
        ("achievements", old.achievements("", shard), new.achievements),
        ("friends", old.friends("", shard), new.friends),
        ("reversed", old.reversed("", shard), new.reversed),
    ]


def _move_keys(r: Any, moves: list[tuple[str, str]]) -> int:
    """Move each (old key, new key): its dump and time to live restored under the new name."""
    if not moves:
        return 0
    pipe = r.pipeline(transaction=False)
    for source, _ in moves:
        pipe.dump(source)
        pipe.pttl(source)
    replies = pipe.execute()
    pipe = r.pipeline(transaction=False)
    moved = []
    for (source, target), dump, ttl in zip(moves, replies[0::2], replies[1::2]):
        if dump is None:
            continue  # gone meanwhile (expired)
        pipe.restore(target, max(0, ttl), dump, replace=True)
        moved.append(source)
    pipe.execute()
    if moved:
        r.unlink(*moved)
    return len(moved)


def _move_board(r: Any, new: Keys, shard: int, board_id: str, key: str) -> int:
    """Move the entries of one board of ``shard`` whose users now belong to other shards."""
    ttl = r.pttl(key)
    moved = 0
    leaving: dict[int, dict[str, float]] = defaultdict(dict)
    for member, score in r.zscan_iter(key, count=_CHUNK):
        target = new.shard_of(member)
        if target != shard:
            leaving[target][member] = score
    for target, entries in leaving.items():
        items = list(entries.items())
        destination = new.board(target, board_id)
        for i in range(0, len(items), _CHUNK):
            chunk = dict(items[i : i + _CHUNK])
            r.zadd(destination, chunk)
            r.zrem(key, *chunk)
            moved += len(chunk)
        if ttl > 0 and r.pttl(destination) == -1:
            r.pexpire(destination, ttl)
    return moved


def _move_records(
    r: Any,
    store: SqlStore,
    old: Keys,
    new: Keys,
    shard: int,
    activity_ids: list[str],
    report: ReshardReport,
) -> None:
    """Move idempotency records to the shard of their activity's user (read from SQL)."""
    if not activity_ids:
        return
    users = store.users_of_activities(activity_ids)
    moves, dropped = [], []
    for activity_id in activity_ids:
        user_id = users.get(activity_id)
        if user_id is None:
            dropped.append(old.idempotency(shard, activity_id))
        elif new.shard_of(user_id) != shard:
            target = new.idempotency(new.shard_of(user_id), activity_id)
            moves.append((old.idempotency(shard, activity_id), target))
    report.idempotency_records_moved += _move_keys(r, moves)
    if dropped:
        r.unlink(*dropped)
        report.idempotency_records_dropped += len(dropped)
