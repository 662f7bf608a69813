"""The engagement endpoints over HTTP: side quests, weekly goals and archived periods, on a real
Redis and SQL, with the default rules (``eng`` of conftest.py: the clock on a Tuesday)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from helpers import (
    ADMIN,
    API_KEYS,
    AWARDER,
    JWT_SECRET,
    READER,
    Clock,
    archive_last_week,
    monday_of,
    token,
)

from api.app import create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings


@pytest.fixture
def client(eng: ScoringEngine) -> TestClient:
    """The app over ``eng`` with the tests' keys (award, read, admin) and token secret."""
    settings = Settings(SCORING_API_KEYS=API_KEYS, SCORING_JWT_SECRET=JWT_SECRET)
    return TestClient(create_app(eng, settings))


def test_ended_periods_read_back_over_http(
    client: TestClient, eng: ScoringEngine, clock: Clock
) -> None:
    _, week, _ = archive_last_week(eng, clock)
    eng.redis.delete(*eng.keys.boards(f"week:{week}"))  # the live board expires later
    body = client.get(f"/v1/leaderboards/week?period={week}&limit=2", headers=READER).json()
    assert body["total_users"] == 3 and [e["user_id"] for e in body["entries"]] == ["b", "a"]
    rank = client.get(f"/v1/leaderboards/week/users/c?period={week}", headers=READER).json()
    assert rank["rank"] == 2 and rank["score"] == 50
    bad = client.get("/v1/leaderboards/week?period=2026-W99", headers=READER)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "unknown_board"


def test_quest_and_goal_endpoints_quests(client: TestClient) -> None:
    mine = token("kim")
    quest = {"title": "Commenter", "quest_type": "social", "difficulty": "easy",
             "points_reward": 40, "activity_type": "comment", "target_count": 2}  # fmt: skip
    assert client.post("/v1/quests", json=quest, headers=AWARDER).status_code == 403
    r = client.post("/v1/quests", json=quest, headers=ADMIN)
    assert r.status_code == 201, r.text
    qid = r.json()["id"]
    assert client.get("/v1/quests?active=true", headers=READER).json()[0]["title"] == "Commenter"
    r = client.post(f"/v1/users/kim/quests/{qid}/start", headers=mine)  # a user starts their own
    assert r.status_code == 201 and r.json()["quest"]["status"] == "in_progress"
    r = client.post(f"/v1/users/kim/quests/{qid}/start", headers=mine)
    assert r.status_code == 409 and r.json()["error"]["code"] == "quest_already_started"
    assert client.post(f"/v1/users/kim/quests/{qid}/complete", headers=mine).status_code == 403
    assert client.post(f"/v1/users/bob/quests/{qid}/start", headers=mine).status_code == 403
    r = client.post(f"/v1/users/kim/quests/{qid}/progress", headers=AWARDER, json={"by": 1})
    assert r.status_code == 200 and r.json()["quest"]["current_progress"] == 1
    r = client.post("/v1/users/kim/awards", headers=AWARDER, json={"activity_type": "comment"})
    assert [w["activity_type"] for w in r.json()["rewards"]] == ["side_quest"]
    r = client.post(f"/v1/users/kim/quests/{qid}/complete", headers=AWARDER)
    assert r.status_code == 409 and r.json()["error"]["code"] == "quest_already_completed"
    r = client.post(f"/v1/users/kim/quests/{qid + 99}/complete", headers=AWARDER)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_quest"
    r = client.post(f"/v1/users/bob/quests/{qid}/progress", headers=AWARDER)
    assert r.status_code == 409 and r.json()["error"]["code"] == "quest_not_started"
    r = client.patch(f"/v1/quests/{qid}", headers=ADMIN, json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False
    r = client.post(f"/v1/users/lee/quests/{qid}/start", headers=AWARDER)
    assert r.status_code == 409 and r.json()["error"]["code"] == "quest_inactive"
    quests = client.get("/v1/users/kim/quests", headers=mine).json()
    assert quests[0]["status"] == "completed" and quests[0]["points_awarded"] == 40


def test_quest_and_goal_endpoints_goals(client: TestClient, clock: Clock) -> None:
    mine = token("kim")
    r = client.post("/v1/users/kim/awards", headers=AWARDER, json={"activity_type": "comment"})
    assert r.status_code == 201
    goals = client.get("/v1/users/kim/goals", headers=mine).json()
    monday = monday_of(clock.now.date())
    assert goals["week_start"] == f"{monday}" and goals["week_end"] == f"{monday + timedelta(6)}"
    by_id = {g["goal_id"]: g for g in goals["goals"]}
    assert by_id["post_comments"]["current_progress"] == 1
    r = client.get("/v1/users/kim/goals/nope", headers=mine)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_goal"
    assert client.get("/v1/users/bob/goals", headers=mine).status_code == 403
