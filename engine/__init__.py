"""Redis-native real-time scoring engine: points, tiers, levels, streaks and leaderboards."""

from .errors import ScoringError
from .results import Activity, AwardResult, LeaderboardEntry, Page, RankInfo, UserState
from .rules import Rules, load_rules
from .service import AwardRequest, ScoringEngine
from .settings import Settings, get_settings

__all__ = [
    "Activity",
    "AwardRequest",
    "AwardResult",
    "LeaderboardEntry",
    "Page",
    "RankInfo",
    "Rules",
    "ScoringEngine",
    "ScoringError",
    "Settings",
    "UserState",
    "get_settings",
    "load_rules",
]
