"""Redis-native real-time scoring engine: points, tiers, levels, streaks and leaderboards."""

from engine.domain.errors import ScoringError
from engine.domain.results import (
    Activity,
    AdjustmentResult,
    AwardResult,
    LeaderboardEntry,
    Page,
    RankInfo,
    UserState,
)
from engine.domain.rules import Rules, load_rules
from engine.domain.ties import Ties
from engine.runtime.settings import Settings, get_settings
from engine.services.facade import AwardRequest, ScoringEngine

__all__ = [
    "Activity",
    "AdjustmentResult",
    "AwardRequest",
    "AwardResult",
    "LeaderboardEntry",
    "Page",
    "RankInfo",
    "Rules",
    "ScoringEngine",
    "ScoringError",
    "Settings",
    "Ties",
    "UserState",
    "get_settings",
    "load_rules",
]
