"""The HTTP API over a real Redis and SQL: endpoints, auth, idempotency, errors."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
import redis
from conftest import shards_for
from fastapi.testclient import TestClient
from helpers import (
    ADMIN,
    API_KEYS,
    AWARD_KEY,
    AWARDER,
    BASE,
    JWT_SECRET,
    LIFETIME_RULES,
    READER,
    Clock,
    drain,
    iso,
    token,
    week_id,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.app import create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings
from engine.storage.store import SqlStore


@pytest.fixture
def sqlite_store(tmp_path) -> SqlStore:
    store = SqlStore(f"sqlite:///{tmp_path / 'api.db'}")
    store.upgrade()
    return store


@pytest.fixture
def api_engine(
    state_redis, state_env: dict[str, str], clock, sqlite_store: SqlStore
) -> ScoringEngine:
    """On a Redis, then on the cluster (K = 8). from_url, as the server builds it: awards take
    the asyncio client path."""
    return ScoringEngine.from_url(
        state_env["REDIS_URL"], clock=clock, store=sqlite_store, shards=shards_for(state_redis)
    )


def api_settings() -> Settings:
    return Settings(
        SCORING_API_KEYS=API_KEYS,
        SCORING_JWT_SECRET=JWT_SECRET,
        SCORING_SELF_AWARD_TYPES="daily_login",
    )


@pytest.fixture
def client(api_engine: ScoringEngine) -> TestClient:
    return TestClient(create_app(api_engine, api_settings()))


# -- awards ---------------------------------------------------------------------------------


def test_award_and_read_back(client: TestClient) -> None:
    r = client.post(
        "/v1/users/alice/awards",
        headers=AWARDER,
        json={"activity_type": "quiz_complete", "amount": 260, "description": "Quiz"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["user"]["total_points"] == 260 and body["user"]["tier"] == "spark"
    assert body["tier_upgraded"] and (body["old_tier"], body["new_tier"]) == ("ember", "spark")
    assert body["point_activity"]["description"] == "Quiz" and not body["replayed"]
    user = client.get("/v1/users/alice", headers=READER).json()
    assert user["total_points"] == 260 and user["lifetime_quizzes_completed"] == 1


def test_idempotency_key(client: TestClient, api_engine: ScoringEngine) -> None:
    headers = {**AWARDER, "Idempotency-Key": "order-77"}
    first = client.post("/v1/users/bo/awards", headers=headers, json={"activity_type": "referral"})
    again = client.post("/v1/users/bo/awards", headers=headers, json={"activity_type": "referral"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() | {"replayed": False} == first.json()
    assert api_engine.status("bo").total_points == 100
    clash = client.post(
        "/v1/users/bo/awards", headers=headers, json={"activity_type": "referral", "amount": 5}
    )
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_conflict"
    assert api_engine.status("bo").total_points == 100


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"activity_type": "comment", "amount": 0}, "amount"),
        ({"activity_type": "comment", "amount": -3}, "amount"),
        ({"activity_type": "comment", "amount": 1.5}, "amount"),
        ({"activity_type": "comment", "amount": "50"}, "amount"),
        ({"activity_type": "comment", "amount": 101}, "amount"),
        ({"activity_type": "commentt"}, "activity_type"),
        ({"activity_type": "comment", "description": "x" * 256}, "description"),
        ({"activity_type": "comment", "colour": "red"}, "colour"),
        ({"activity_type": "comment", "occurred_at": "soon"}, "occurred_at"),
        (
            {"activity_type": "comment", "occurred_at": iso(BASE + timedelta(days=30))},
            "occurred_at",
        ),
        ({}, "activity_type"),
        ([1, 2], None),
    ],
)
def test_bad_awards_are_422_and_write_nothing(
    client: TestClient,
    api_engine: ScoringEngine,
    body,
    field,
) -> None:
    r = client.post("/v1/users/cy/awards", headers=AWARDER, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] and error["message"]
    if field:
        assert error.get("field") == field
    assert api_engine.redis.dbsize() <= 1  # only the test marker


@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/%09tab/awards",
        "/v1/users/" + "u" * 129 + "/awards",
    ],
)
def test_bad_user_ids(client: TestClient, path: str) -> None:
    r = client.post(path, headers=AWARDER, json={"activity_type": "comment"})
    assert 400 <= r.status_code < 500 and r.json()["error"]


def test_malformed_requests_never_5xx(client: TestClient) -> None:
    cases = [
        client.post(
            "/v1/users/a/awards",
            headers={**AWARDER, "content-type": "application/json"},
            content=b"{not json",
        ),
        client.post(
            "/v1/users/a/awards",
            headers={**AWARDER, "content-type": "application/json"},
            content="\ud800".encode("utf-8", "surrogatepass"),
        ),
        client.post(
            "/v1/awards/batch", headers={**AWARDER, "content-length": str(10**9)}, content=b"{}"
        ),
        client.get("/v1/leaderboards/all_time?limit=abc", headers=READER),
        client.get("/v1/leaderboards/..%2F..%2Fetc%2Fpasswd", headers=READER),
        client.get("/v1/users/a/activities?cursor=!!!", headers=READER),
        client.delete("/v1/users/a/awards", headers=AWARDER),
        client.get("/nowhere"),
    ]
    assert [c.status_code for c in cases] == [422, 422, 413, 422, 404, 422, 405, 404]
    assert all("error" in c.json() for c in cases)


def test_batch(client: TestClient, api_engine: ScoringEngine) -> None:
    awards = [
        {"user_id": "b1", "activity_type": "comment", "amount": 5},
        {"user_id": "b2", "activity_type": "nope"},
        {"user_id": "b1", "activity_type": "comment", "amount": 500},
        {"user_id": "b3", "activity_type": "quiz_complete", "idempotency_key": "k"},
        {"user_id": "b3", "activity_type": "quiz_complete", "idempotency_key": "k"},
    ]
    r = client.post("/v1/awards/batch", headers=AWARDER, json={"awards": awards})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["applied"], body["refused"]) == (3, 2)
    codes = [x["error"]["code"] if x["error"] else None for x in body["results"]]
    assert codes == [None, "unknown_activity_type", "invalid_amount", None, None]
    assert body["results"][4]["result"]["replayed"]
    assert api_engine.status("b1").total_points == 5 and api_engine.status("b3").total_points == 25
    too_many = {"awards": [{"user_id": "x", "activity_type": "comment"}] * 1001}
    assert client.post("/v1/awards/batch", headers=AWARDER, json=too_many).status_code == 422


# -- auth -----------------------------------------------------------------------------------


def test_credentials_api_keys(client: TestClient) -> None:
    award = {"activity_type": "comment"}
    assert client.post("/v1/users/d/awards", json=award).status_code == 401
    assert (
        client.post(
            "/v1/users/d/awards", json=award, headers={"X-API-Key": "wrong-key-0123456789"}
        ).status_code
        == 401
    )
    assert client.post("/v1/users/d/awards", json=award, headers=READER).status_code == 403
    assert client.post("/v1/users/d/awards", json=award, headers=ADMIN).status_code == 201
    assert client.get("/v1/users/d", headers={"Authorization": "Basic abc"}).status_code == 401


def test_credentials_user_tokens(client: TestClient) -> None:
    assert (
        client.get(
            "/v1/users/d", headers=token("d", secret="another-secret-0123456789abcdefghij")
        ).status_code
        == 401
    )
    expired = token("d", exp=int(time.time()) - 10)
    assert client.get("/v1/users/d", headers=expired).status_code == 401
    assert client.get("/v1/users/d", headers=token("d")).status_code == 200
    assert client.get("/v1/users/e", headers=token("d")).status_code == 403  # not theirs
    assert client.get("/v1/stats", headers=token("d")).status_code == 200


def test_credentials_self_awards(client: TestClient) -> None:
    award = {"activity_type": "comment"}
    r = client.post("/v1/users/d/awards", json=award, headers=token("d"))
    assert r.status_code == 403  # comment is not open to self-awards
    r = client.post("/v1/users/d/awards", json={"activity_type": "daily_login"}, headers=token("d"))
    assert r.status_code == 201
    r = client.post("/v1/users/e/awards", json={"activity_type": "daily_login"}, headers=token("d"))
    assert r.status_code == 403


def test_credentials_in_a_batch(client: TestClient) -> None:
    batch = {
        "awards": [
            {"user_id": "d", "activity_type": "daily_login"},
            {"user_id": "e", "activity_type": "daily_login"},
        ]
    }
    results = client.post("/v1/awards/batch", json=batch, headers=token("d")).json()["results"]
    assert results[0]["result"] and results[1]["error"]["code"] == "forbidden"
    assert client.post("/v1/awards/batch", json=batch, headers=READER).status_code == 403


# -- users, activities, leaderboards, stats -------------------------------------------------


def test_profile(client: TestClient) -> None:
    r = client.put(
        "/v1/users/kiri/profile",
        headers=token("kiri"),
        json={"username": "kiri", "display_name": "Kiri", "time_zone": "Pacific/Auckland"},
    )
    assert r.status_code == 200 and r.json()["time_zone"] == "Pacific/Auckland"
    r = client.put("/v1/users/kiri/profile", headers=AWARDER, json={"display_name": None})
    assert r.json()["display_name"] is None and r.json()["username"] == "kiri"
    bad = client.put("/v1/users/kiri/profile", headers=AWARDER, json={"time_zone": "Mars/Base"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_time_zone"
    assert client.put("/v1/users/kiri/profile", headers=token("other"), json={}).status_code == 403


def test_activities_paging(client: TestClient, api_engine: ScoringEngine, clock) -> None:
    for i in range(7):
        clock.advance(seconds=1)
        client.post(
            "/v1/users/pat/awards",
            headers=AWARDER,
            json={"activity_type": "comment" if i % 2 else "reaction", "description": f"a{i}"},
        )
    drain(api_engine)
    page = client.get("/v1/users/pat/activities?limit=3", headers=READER).json()
    assert [a["description"] for a in page["activities"]] == ["a6", "a5", "a4"]
    page2 = client.get(
        f"/v1/users/pat/activities?limit=3&cursor={page['next_cursor']}", headers=READER
    ).json()
    assert [a["description"] for a in page2["activities"]] == ["a3", "a2", "a1"]
    only = client.get("/v1/users/pat/activities?activity_type=comment", headers=token("pat")).json()
    assert [a["description"] for a in only["activities"]] == ["a5", "a3", "a1"]
    assert only["next_cursor"] is None


def test_leaderboards(client: TestClient, clock: Clock) -> None:
    for user, points in [("l1", 50), ("l2", 50), ("l3", 30), ("l4", 10), ("l5", 5)]:
        client.post(
            f"/v1/users/{user}/awards",
            headers=AWARDER,
            json={"activity_type": "special_event", "amount": points},
        )
    top = client.get("/v1/leaderboards/all_time?limit=3", headers=READER).json()
    assert [(e["rank"], e["user_id"]) for e in top["entries"]] == [(1, "l1"), (1, "l2"), (3, "l3")]
    assert top["total_users"] == 5
    page = client.get("/v1/leaderboards/all_time?limit=2&offset=3", headers=READER).json()
    assert [e["user_id"] for e in page["entries"]] == ["l4", "l5"]
    around = client.get("/v1/leaderboards/day?around=l5&limit=3", headers=READER).json()
    assert [e["user_id"] for e in around["entries"]] == ["l3", "l4", "l5"]
    typed = client.get("/v1/leaderboards/type:special_event", headers=READER).json()
    assert typed["entries"][0]["score"] == 50
    this_week = week_id(clock.now)
    week = client.get(f"/v1/leaderboards/week?period={this_week}", headers=READER).json()
    assert week["total_users"] == 5
    me = client.get("/v1/leaderboards/all_time/users/l3", headers=READER).json()
    assert (me["rank"], me["score"], me["points_to_next_rank"], me["percentile"]) == (
        3,
        30,
        20,
        60.0,
    )
    assert client.get("/v1/leaderboards/all_time/users/nobody", headers=READER).status_code == 404
    assert client.get("/v1/leaderboards/yearly", headers=READER).status_code == 404
    assert client.get("/v1/leaderboards/day?period=2026-02-30", headers=READER).status_code == 404
    assert client.get("/v1/leaderboards/all_time", headers=AWARDER).status_code == 200


def test_stats(client: TestClient, api_engine: ScoringEngine) -> None:
    client.post(
        "/v1/users/s1/awards",
        headers=AWARDER,
        json={"activity_type": "special_event", "amount": 600},
    )
    client.post("/v1/users/s2/awards", headers=AWARDER, json={"activity_type": "comment"})
    drain(api_engine)
    stats = client.get("/v1/stats", headers=READER).json()
    assert stats["points_awarded_today"] == 605
    assert stats["tier_distribution"]["blaze"] == 1 and stats["tier_distribution"]["ember"] == 1
    assert stats["most_active_users"][0] == {"user_id": "s1", "points": 600}


# -- the seed's endpoints ---------------------------------------------------------------------


def seed_award(client: TestClient, api_engine: ScoringEngine) -> httpx.Response:
    """The seed's award of 50 points to user 123 (username alice), as its clients send it."""
    api_engine.set_profile("123", username="alice")
    return client.post(
        "/api/v1/me/thrive-circle/award-points/",
        headers={**AWARDER, "X-User-Id": "123"},
        json={"amount": 50, "activity_type": "comment", "description": "Posted helpful comment"},
    )


def test_seed_endpoints_award_answers_in_the_seed_shape(
    client: TestClient, api_engine: ScoringEngine
) -> None:
    r = seed_award(client, api_engine)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user", "point_activity", "tier_upgraded", "old_tier", "new_tier"}
    assert set(body["user"]) == {
        "id",
        "username",
        "total_points",
        "tier",
        "tier_display",
        "level",
        "points_to_next_tier",
        "points_to_next_level",
    }
    assert set(body["point_activity"]) == {
        "id",
        "amount",
        "activity_type",
        "description",
        "created_at",
    }
    assert body["user"]["username"] == "alice" and body["user"]["points_to_next_tier"] == 200
    assert body["tier_upgraded"] is False and body["old_tier"] is None


def test_seed_endpoints_status_and_board_of_me(
    client: TestClient, api_engine: ScoringEngine
) -> None:
    assert seed_award(client, api_engine).status_code == 201
    drain(api_engine)
    status = client.get("/api/v1/me/thrive-circle/my-status/", headers=token("123")).json()
    assert status["user"]["total_points"] == 50 and len(status["recent_activities"]) == 1
    board = client.get("/api/v1/me/thrive-circle/", headers=token("123")).json()
    assert board["entries"][0]["user_id"] == "123"


def test_seed_endpoints_need_a_user_and_the_award_scope(client: TestClient) -> None:
    missing = client.get("/api/v1/me/thrive-circle/my-status/", headers=READER)
    assert missing.status_code == 401  # a key must say which user is "me"
    denied = client.post(
        "/api/v1/me/thrive-circle/award-points/",
        headers=token("123"),
        json={"amount": 50, "activity_type": "comment"},
    )
    assert denied.status_code == 403


# -- operations -----------------------------------------------------------------------------


def test_health_ready_metrics_docs(client: TestClient, api_engine: ScoringEngine) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "sql": "ok"}
    client.post("/v1/users/m/awards", headers=AWARDER, json={"activity_type": "comment"})
    client.post("/v1/users/m/awards", headers=AWARDER, json={"activity_type": "x"})
    text = client.get("/metrics").text
    assert 'scoring_awards_total{outcome="applied"} 1.0' in text
    assert 'scoring_errors_total{code="unknown_activity_type"} 1.0' in text
    assert 'scoring_outbox_backlog{shard="0"} 1.0' in text
    assert (
        'scoring_request_seconds_count{method="POST",route="/v1/users/{user_id}/awards"} 2.0'
        in text
    )
    assert client.get("/openapi.json").json()["info"]["title"] == "Scoring engine"
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("build", ["client", "url"])
def test_readyz_when_redis_is_down(build: str, sqlite_store: SqlStore) -> None:
    if build == "client":  # awards run in a thread
        down = ScoringEngine(redis.Redis(port=1, retry=Retry(NoBackoff(), 0)), store=sqlite_store)
    else:  # as the server builds it: awards on the asyncio client
        down = ScoringEngine.from_url("redis://127.0.0.1:1/0", store=sqlite_store)
    app_client = TestClient(create_app(down, Settings(SCORING_API_KEYS=f"svc:{AWARD_KEY}:award")))
    r = app_client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["redis"].startswith("down")
    for path in ("/v1/users/a/awards", "/api/v1/me/thrive-circle/award-points/"):
        r = app_client.post(path, headers={**AWARDER, "X-User-Id": "a"},
                            json={"activity_type": "comment", "amount": 5})  # fmt: skip
        assert r.status_code == 503 and r.json()["error"]["code"] == "redis_unavailable"


SEED_LIFETIME = ["lifetime_quizzes_completed", "lifetime_projects_created",
                 "lifetime_comments_posted"]  # fmt: skip


def lifetime_fields(fields: list[str]) -> list[str]:
    """The fields between ``streak_active`` and ``activity_counts``, where the counters stand."""
    return fields[fields.index("streak_active") + 1 : fields.index("activity_counts")]


def test_a_rules_files_lifetime_table_is_the_users_lifetime_fields(
    client: TestClient, redis_url: str, clock, sqlite_store: SqlStore, tmp_path
) -> None:
    from engine.domain.rules import load_rules

    path = tmp_path / "rules.toml"
    path.write_text(LIFETIME_RULES)
    engine = ScoringEngine.from_url(
        redis_url, clock=clock, store=sqlite_store, rules=load_rules(path)
    )
    custom = TestClient(create_app(engine, api_settings()))
    counters = ["lifetime_reactions_given", "lifetime_logins", "lifetime_quizzes_completed"]
    for kind in ("reaction", "daily_login"):
        r = custom.post("/v1/users/u/awards", headers=AWARDER, json={"activity_type": kind})
        assert r.status_code == 201, r.text
    r = custom.post("/v1/users/u/awards", headers=AWARDER, json={"activity_type": "reaction"})
    assert lifetime_fields(list(r.json()["user"])) == counters
    assert r.json()["user"]["lifetime_reactions_given"] == 2
    user = custom.get("/v1/users/u", headers=READER).json()
    assert lifetime_fields(list(user)) == counters
    assert [user[c] for c in counters] == [2, 1, 0]
    me = {**READER, "X-User-Id": "u"}
    status = custom.get("/api/v1/me/thrive-circle/my-status/", headers=me).json()
    assert status["user"] == user
    batch = {"awards": [{"user_id": "u", "activity_type": "daily_login"}]}
    done = custom.post("/v1/awards/batch", headers=AWARDER, json=batch).json()["results"][0]
    assert lifetime_fields(list(done["result"]["user"])) == counters
    assert done["result"]["user"]["lifetime_logins"] == 2
    schema = custom.get("/openapi.json").json()["components"]["schemas"]["UserOut"]
    assert lifetime_fields(list(schema["properties"])) == counters
    assert set(counters) <= set(schema["required"])
    # an app with the default rules, in the same process, keeps the seed's three
    default = client.get("/openapi.json").json()["components"]["schemas"]["UserOut"]
    assert lifetime_fields(list(default["properties"])) == SEED_LIFETIME
    client.post("/v1/users/d/awards", headers=AWARDER, json={"activity_type": "comment"})
    assert lifetime_fields(list(client.get("/v1/users/d", headers=READER).json())) == SEED_LIFETIME


def test_fast_rendering_matches_the_documented_models(client: TestClient, api_engine) -> None:
    from api.schemas import AwardOut, BatchOut, ErrorBody

    api_engine.set_profile("fr", username="fr", time_zone="Asia/Tokyo")
    r = client.post("/v1/users/fr/awards", headers=AWARDER, json={"activity_type": "comment"})
    assert AwardOut.model_validate(r.json()).model_dump(mode="json") == r.json()
    batch = {"awards": [{"user_id": "fr", "activity_type": "comment"},
                        {"user_id": "fr", "activity_type": "bad"}]}  # fmt: skip
    body = client.post("/v1/awards/batch", headers=AWARDER, json=batch).json()
    BatchOut.model_validate(body)
    done, refused = body["results"]
    assert AwardOut.model_validate(done["result"]).model_dump(mode="json") == done["result"]
    assert done["error"] is None and refused["result"] is None
    assert (
        ErrorBody.model_validate(refused["error"]).model_dump(exclude_none=True) == refused["error"]
    )
