"""Rules: the seed's tiers and the level table, pure functions of points, and the rules file."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.domain.errors import ConfigError
from engine.domain.rules import DEFAULT_ACTIVITY_TYPES, build_rules, load_rules

RULES = load_rules()


@pytest.mark.parametrize(
    ("points", "tier", "to_next"),
    [
        (0, "ember", 250),
        (249, "ember", 1),
        (250, "spark", 250),
        (499, "spark", 1),
        (500, "blaze", 500),
        (999, "blaze", 1),
        (1000, "beacon", 1500),
        (2499, "beacon", 1),
        (2500, "phoenix", None),
        (10**9, "phoenix", None),
    ],
)
def test_tier_boundaries(points: int, tier: str, to_next: int | None) -> None:
    assert RULES.tier_for(points) == tier
    assert RULES.points_to_next_tier(points) == to_next


@pytest.mark.parametrize(
    ("points", "level", "to_next"),
    [
        (0, 1, 50),
        (49, 1, 1),
        (50, 2, 50),
        (150, 3, 50),  # the seed's example says level 2: its own table says 3 (see README)
        (650, 6, 100),  # the seed's example says level 4
        (79_999, 22, 1),
        (80_000, 23, 10_000),
        (89_999, 23, 1),
        (90_000, 24, 10_000),
        (125_000, 27, 5_000),
    ],
)
def test_level_boundaries(points: int, level: int, to_next: int) -> None:
    assert RULES.level_for(points) == level
    assert RULES.points_to_next_level(points) == to_next


def test_defaults_cover_the_seed() -> None:
    assert list(RULES.tiers) == ["ember", "spark", "blaze", "beacon", "phoenix"]
    assert (
        set(RULES.activity_types) == set(DEFAULT_ACTIVITY_TYPES)
        and len(DEFAULT_ACTIVITY_TYPES) == 12
    )
    # every amount in the seed's examples is admitted
    for activity_type, amount in [
        ("quiz_complete", 25), ("project_create", 100), ("project_create", 150),
        ("streak_bonus", 50), ("streak_bonus", 500), ("comment", 50), ("special_event", 500),
        ("weekly_goal", 30),
    ]:  # fmt: skip
        assert amount <= RULES.activity_types[activity_type].max_points
    assert RULES.display_for("phoenix") == "Phoenix"


def test_rules_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        """
[tiers]
bronze = 0
silver = 100
[tier_display]
silver = "Silver ✦"
[levels]
thresholds = [0, 10, 20]
step_after = 5
[activity_types.comment]
max_points = 7
[activity_types.bug_report]
display = "Bug Report"
points = 40
max_points = 400
[retention]
day_days = 2
"""
    )
    rules = load_rules(path)
    assert rules.tier_for(150) == "silver" and rules.display_for("silver") == "Silver ✦"
    assert rules.level_for(29) == 4 and rules.level_for(30) == 5
    assert rules.activity_types["comment"].max_points == 7
    assert rules.activity_types["comment"].points == 5  # merged over the default
    assert rules.activity_types["bug_report"].points == 40
    assert rules.retention.day_days == 2 and rules.retention.week_days == 35


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[tiers]\nember = 10\n", "tiers"),
        ("[tiers]\nember = 0\nspark = 0\n", "tiers"),
        ("[levels]\nthresholds = [0, 5, 5]\n", "levels"),
        ("[activity_types.comment]\npoints = -1\n", "activity_types.comment.points"),
        ("[activity_types.comment]\npoints = 500\n", "activity_types.comment"),
        ("[activity_types.new_type]\npoints = 5\n", "activity_types.new_type"),
        ('[activity_types.comment]\npoints = "five"\n', "activity_types.comment.points"),
        ("[retention]\nday_days = 0\n", "retention.day_days"),
        ("[surprise]\nx = 1\n", "surprise"),
        ("[tiers\n", "SCORING_RULES"),
    ],
)
def test_invalid_rules_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert info.value.field.startswith(field), info.value
    assert str(path) in str(info.value)


def test_missing_rules_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules("/nonexistent/rules.toml")


def test_build_rules_rejects_non_table_types() -> None:
    with pytest.raises(ConfigError):
        build_rules({"activity_types": 3})


def test_rules_texts_with_control_characters_stop_start_up() -> None:
    with pytest.raises(ConfigError) as raised:
        build_rules({"weekly_goals": {"g": {"kind": "points", "target": 5, "title": "a\x00"}}})
    assert raised.value.field == "weekly_goals.g.title"
