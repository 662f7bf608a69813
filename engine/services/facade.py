"""The facade applications use: :class:`ScoringEngine`, one object over the engine's services.

Each service is an object of its own, given the engine's :class:`~engine.services.context.Context`
(its Redis client, keys, rules, clock, SQL store and drain queue):

==================  ===================================================================
``awards``          awards, single, batched and awaited (``lua/award.lua``)
``adjustments``     corrections, reversals and decay (``lua/adjust.lua``)
``decays``          the ``[decay]`` job over every user (through ``adjustments``)
``users``           a user's state and profile
``boards``          leaderboard reads and the live dashboard view
``archives``        ended periods' standings in SQL
``goals``           weekly goals
``side_quests``     the side quest catalog and users' quests (``lua/quest.lua``)
``events``          seasonal events (rules file and SQL) and their multipliers
``streaks``         the daily streak bonus job, grants of streak freezes
``friend_lists``    users' friend lists, for friends boards (``lua/set_friends.lua``)
``stats``           queries over the SQL audit trail
``deletion``        deleting a user and exporting one (``lua/delete_user.lua``)
``subscriptions``   webhook subscriptions, their secrets and delivery log (SQL)
==================  ===================================================================

The facade's methods are the services' own bound methods (``engine.award`` is
``engine.awards.award``), so each is defined, documented and typed once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.domain.deletion import TOMBSTONE_DAYS, DeleteMode
from engine.domain.keys import Keys
from engine.domain.results import DeletionReport
from engine.domain.rules import Rules, load_rules
from engine.runtime.connect import (
    clients,
    is_cluster_client,
    queue_redis_url,
    server_is_cluster,
    uses_cluster,
)
from engine.runtime.embedded import state_redis_url
from engine.runtime.settings import Settings, get_settings
from engine.services.achievements import Achievements
from engine.services.adjustments import Adjustments
from engine.services.archives import Archives
from engine.services.awards import AwardRequest, Awards
from engine.services.boards import Boards
from engine.services.context import Context
from engine.services.decay import Decay
from engine.services.deletion import Deletion
from engine.services.events import Events
from engine.services.friends import Friends
from engine.services.goals import Goals
from engine.services.quests import Quests
from engine.services.stats import Stats
from engine.services.streaks import Streaks
from engine.services.users import Users
from engine.services.webhooks import Resolver, Webhooks
from engine.storage.outbox import DrainQueue
from engine.storage.store import SqlStore

__all__ = ["AwardRequest", "DeletionReport", "ScoringEngine"]


class ScoringEngine:
    """Awards points and answers reads. Thread-safe; share one per process.

    Args:
        client: a redis-py client (``Redis`` or ``RedisCluster``) created with
            ``decode_responses=True``.
        rules: the scoring rules (defaults: the seed's).
        shards: number of user shards K; every read merges them.
        key_prefix: prefix of every key.
        clock: returns the current aware UTC time (tests pass their own).
        drain_queue: where to request a drain of a shard's outbox when an award raises its
            drain flag (see :mod:`engine.storage.outbox`); None leaves draining to the periodic
            sweep and ``scoring worker --burst``.
        store: the SQL audit trail, for the queries over it (recent activities, stats).
        async_client: makes an asyncio client (``redis.asyncio``) of the same Redis, for
            :meth:`award_async` and the reads' ``_async`` forms (``status_async``, a board's
            ``top_async``, ``rank_async``...); called once per event loop (a client belongs to
            the loop that made it). :meth:`from_url` supplies one; without it they run their
            sync counterparts in a worker thread.
        wait_replicas: replicas that must hold each award before it is answered (Redis
            ``WAIT``, up to ``wait_timeout_ms``); 0 answers at once.
        delete_mode: what :meth:`delete_user` does to the user's SQL rows: ``erase`` them or
            ``anonymise`` them (see :class:`~engine.domain.deletion.DeleteMode`).
        tombstone_days: how long a deleted user's tombstone refuses writes to the id.
    """

    def __init__(
        self,
        client: Any,
        *,
        rules: Rules | None = None,
        shards: int = 1,
        key_prefix: str = "scoring",
        clock: Callable[[], datetime] | None = None,
        drain_queue: DrainQueue | None = None,
        store: SqlStore | None = None,
        async_client: Callable[[], Any] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
        delete_mode: DeleteMode | str = DeleteMode.ERASE,
        tombstone_days: int = TOMBSTONE_DAYS,
        webhooks_allow_private: bool = False,
        webhook_resolver: Resolver | None = None,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.ctx = ctx = Context(
            redis=client,
            keys=Keys(prefix=key_prefix, shards=shards),
            rules=rules or load_rules(),
            clock=clock or (lambda: datetime.now(UTC)),
            store=store,
            drain_queue=drain_queue,
        )
        self.events = Events(ctx)
        self.awards = Awards(
            ctx, async_client, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms,
            events=self.events,
        )  # fmt: skip
        # the reads share the awards' asyncio client of each event loop (closed by aclose)
        ctx.async_redis = self.awards.async_client
        self.adjustments = Adjustments(ctx)
        self.decays = Decay(ctx, self.adjustments)
        self.stats = Stats(ctx)
        self.users = Users(ctx)
        self.boards = Boards(ctx)
        self.archives = Archives(ctx, self.boards)
        self.goals = Goals(ctx)
        self.side_quests = Quests(ctx)
        self.streaks = Streaks(ctx, self.awards)
        self.badges = Achievements(ctx)
        self.friend_lists = Friends(ctx)
        self.deletion = Deletion(
            ctx, mode=DeleteMode(delete_mode), tombstone_days=tombstone_days, users=self.users,
            boards=self.boards, goals=self.goals, quests=self.side_quests, badges=self.badges,
            friends=self.friend_lists,
        )  # fmt: skip
        self.subscriptions = Webhooks(
            ctx, allow_private=webhooks_allow_private, resolve=webhook_resolver
        )

        # the documented methods, each its service's own
        self.award = self.awards.award
        self.award_async = self.awards.award_async
        self.award_many = self.awards.award_many
        self.adjust = self.adjustments.adjust
        self.run_decay = self.decays.run
        self.status = self.users.status
        self.status_async = self.users.status_async
        self.status_and_recent_async = self.users.status_and_recent_async
        self.set_profile = self.users.set_profile
        self.leaderboard = self.boards.leaderboard
        self.live_board = self.boards.live_board
        self.archive_ended_periods = self.archives.archive_ended_periods
        self.archive_period = self.archives.archive_period
        self.archived_top = self.archives.archived_top
        self.archived_rank = self.archives.archived_rank
        self.weekly_goals = self.goals.weekly_goals
        self.weekly_goal = self.goals.weekly_goal
        self.goal_week = self.goals.goal_week
        self.create_weekly_goals = self.goals.create_weekly_goals
        self.create_quest = self.side_quests.create_quest
        self.update_quest = self.side_quests.update_quest
        self.quest = self.side_quests.quest
        self.quests = self.side_quests.quests
        self.start_quest = self.side_quests.start_quest
        self.advance_quest = self.side_quests.advance_quest
        self.complete_quest = self.side_quests.complete_quest
        self.user_quests = self.side_quests.user_quests
        self.create_event = self.events.create_event
        self.end_event = self.events.end_event
        self.event = self.events.event
        self.seasonal_events = self.events.events
        self.streak_bonuses = self.streaks.streak_bonuses
        self.achievements = self.badges.achievements
        self.achievement_catalog = self.badges.catalog
        self.backfill_achievements = self.badges.backfill
        self.backfill_achievements_if_changed = self.badges.backfill_if_changed
        self.grant_freezes = self.streaks.grant_freezes
        self.recent_activities = self.stats.recent_activities
        self.pending_activities = self.stats.pending_activities
        self.points_by_type = self.stats.points_by_type
        self.points_awarded_today = self.stats.points_awarded_today
        self.tier_distribution = self.stats.tier_distribution
        self.most_active_users = self.stats.most_active_users
        self.set_friends = self.friend_lists.set_friends
        self.friends = self.friend_lists.friends
        self.delete_user = self.deletion.delete_user
        self.export_user = self.deletion.export_user
        self.queue_drain = ctx.queue_drain
        self.create_webhook = self.subscriptions.create_webhook
        self.webhooks = self.subscriptions.webhooks
        self.webhook = self.subscriptions.webhook
        self.update_webhook = self.subscriptions.update_webhook
        self.delete_webhook = self.subscriptions.delete_webhook
        self.rotate_webhook_secret = self.subscriptions.rotate_secret
        self.webhook_signing_secrets = self.subscriptions.signing_secrets
        self.webhook_deliveries = self.subscriptions.deliveries
        self.redeliver_webhook = self.subscriptions.redeliver
        self.prune_webhook_deliveries = self.subscriptions.prune_deliveries

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_url(
        cls, redis_url: str, *, cluster: bool | None = None, **kwargs: Any
    ) -> ScoringEngine:
        """An engine over the Redis at ``redis_url`` (``redis://``, ``rediss://``, ``unix://``).

        ``cluster``: whether it is a node of a Redis Cluster (then the engine uses redis-py's
        cluster clients); None asks the server (``INFO cluster``).
        """
        if cluster is None:
            cluster = server_is_cluster(redis_url)
        client, async_client = clients(redis_url, cluster)
        kwargs.setdefault("async_client", async_client)
        return cls(client, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> ScoringEngine:
        """An engine configured by :class:`~engine.runtime.settings.Settings` (the environment).

        With no ``REDIS_URL``, starts (or joins) the embedded Redis under the data directory.
        On a Redis Cluster, :class:`~engine.domain.errors.ConfigError` unless ``RQ_REDIS_URL``
        names a single server for the job queues.
        """
        settings = settings or get_settings()
        cluster = uses_cluster(settings)
        url = state_redis_url(settings)
        kwargs.setdefault("rules", load_rules(settings.rules_path))
        kwargs.setdefault("shards", settings.shards)
        kwargs.setdefault("key_prefix", settings.key_prefix)
        kwargs.setdefault("wait_replicas", settings.redis_wait_replicas)
        kwargs.setdefault("wait_timeout_ms", settings.redis_wait_timeout_ms)
        kwargs.setdefault("delete_mode", settings.delete_mode)
        kwargs.setdefault("tombstone_days", settings.delete_tombstone_days)
        kwargs.setdefault("webhooks_allow_private", settings.webhooks_allow_private)
        if "drain_queue" not in kwargs:
            kwargs["drain_queue"] = DrainQueue.from_url(
                queue_redis_url(settings, cluster), name=settings.queue_name
            )
        if "store" not in kwargs:
            kwargs["store"] = SqlStore.from_settings(settings)
        return cls.from_url(url, cluster=cluster, **kwargs)

    # -- what the services share ----------------------------------------------------------

    @property
    def redis(self) -> Any:
        """The Redis client (a redis-py client made with ``decode_responses=True``)."""
        return self.ctx.redis

    @redis.setter
    def redis(self, client: Any) -> None:
        self.ctx.redis = client

    @property
    def keys(self) -> Keys:
        return self.ctx.keys

    @property
    def rules(self) -> Rules:
        return self.ctx.rules

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.ctx.clock

    @property
    def store(self) -> SqlStore | None:
        return self.ctx.store

    @property
    def drain_queue(self) -> DrainQueue | None:
        return self.ctx.drain_queue

    # -- connections ----------------------------------------------------------------------

    def close(self) -> None:
        """Close this engine's connections: Redis, the drain queue's Redis and SQL (a later
        call opens them again)."""
        if is_cluster_client(self.redis):
            self.redis.disconnect_connection_pools()
        else:
            self.redis.connection_pool.disconnect()
        connection = getattr(getattr(self.drain_queue, "queue", None), "connection", None)
        if connection is not None:
            connection.connection_pool.disconnect()
        if self.store is not None:
            self.store.engine.dispose()

    async def aclose(self) -> None:
        """Close the running event loop's asyncio client, if one was made."""
        await self.awards.aclose()
