"""The live board stream (Server-Sent Events) on a real uvicorn server over a real Redis, the
dashboard's files, and who may read leaderboards without credentials."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from helpers import PLAIN_RULES
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.app import create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings
from tests.serving import EventReader, serve

READ_KEY = "dash-read-key-0123456789"
KEYS = f"dash:{READ_KEY}:read"


@pytest.fixture
def eng(real_redis: redis.Redis) -> ScoringEngine:
    return ScoringEngine(real_redis, rules=PLAIN_RULES)  # the real clock: the stream is live


def settings(**env: str) -> Settings:
    return Settings(SCORING_API_KEYS=KEYS, **env)


@pytest.fixture
def url(eng: ScoringEngine) -> Iterator[str]:
    """The API on the embedded default's access rule (no REDIS_URL: local clients read freely)."""
    with serve(create_app(eng, settings(SCORING_STREAM_INTERVAL_MS="100"))) as base:
        yield base


def test_an_award_reaches_the_stream_within_a_second(eng: ScoringEngine) -> None:
    eng.set_profile("ann", display_name="Ann")
    eng.award("ann", "comment", amount=5)
    with serve(create_app(eng, settings())) as base:  # the default interval (500 ms)
        reader = EventReader(f"{base}/v1/leaderboards/all_time/stream?limit=5")
        assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
        first = reader.next("board").data
        assert first["rows"] == [{"rank": 1, "user_id": "ann", "name": "Ann", "points": 5,
                                  "tier": "ember", "tier_display": "Ember", "level": 1,
                                  "streak": 1}]  # fmt: skip
        for amount in (60, 200, 40):
            sent = time.monotonic()
            eng.award("ann", "quiz_complete", amount=amount)
            got = reader.next("board", timeout=2)
            assert got.at - sent < 1.0, f"{got.at - sent:.3f} s"
            assert got.data["rows"][0]["points"] == eng.status("ann").total_points
        reader.close()


def test_events_are_sent_only_when_their_part_changed(eng: ScoringEngine, url: str) -> None:
    eng.award("ann", "comment", amount=5)
    reader = EventReader(f"{url}/v1/leaderboards/all_time/stream")
    assert {e.name for e in reader.drain(0.5)} == {"board", "tiers", "upgrades"}
    assert reader.drain(0.6) == []  # 6 polls, nothing changed: nothing sent
    eng.award("ann", "comment", amount=5)  # points change; tier and level do not
    assert [e.name for e in reader.drain(0.6)] == ["board"]
    eng.award("bo", "project_create", amount=300)  # a new user in a new tier, at a new level
    events = {e.name: e.data for e in reader.drain(0.6)}
    assert set(events) == {"board", "tiers", "upgrades"}
    assert [r["user_id"] for r in events["board"]["rows"]] == ["bo", "ann"]
    assert {t["tier"]: t["users"] for t in events["tiers"]["tiers"]}["spark"] == 1
    assert events["upgrades"]["upgrades"][0]["user_id"] == "bo"
    # an award on another board leaves a type board's stream quiet
    typed = EventReader(f"{url}/v1/leaderboards/type:comment/stream")
    assert typed.next("board").data["rows"][0]["points"] == 10
    typed.drain(0.3)
    eng.award("cy", "reaction", amount=1)
    assert "board" not in {e.name for e in typed.drain(0.5)}
    reader.close()
    typed.close()


def test_a_quiet_board_sends_heartbeats_only(
    eng: ScoringEngine, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.live

    monkeypatch.setattr(api.live, "HEARTBEAT_S", 0.3)
    reader = EventReader(f"{url}/v1/leaderboards/all_time/stream")
    reader.drain(0.4)
    before = reader.comments
    assert reader.drain(1.0) == []  # no events: nothing changed
    assert reader.comments - before >= 2  # but a comment line every 0.3 s
    reader.close()


def test_many_clients_share_one_watcher(eng: ScoringEngine) -> None:
    app = create_app(eng, settings(SCORING_STREAM_INTERVAL_MS="100"))
    with serve(app) as base:
        readers = [EventReader(f"{base}/v1/leaderboards/week/stream?limit=3") for _ in range(20)]
        assert len(app.state.live.watches) == 1 and app.state.live.clients() == 20
        eng.award("dee", "quiz_complete", amount=25)
        for r in readers:
            assert r.next("board").data["rows"] == []  # the first read: empty
            assert r.next("board", timeout=2).data["rows"][0]["user_id"] == "dee"
        for r in readers:
            r.close()
        deadline = time.monotonic() + 20  # a gone client is noticed at its next write
        eng.award("dee", "quiz_complete", amount=25)
        while app.state.live.watches and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.state.live.watches == {}


def test_bad_board_and_limits_are_refused_before_streaming(url: str) -> None:
    import httpx

    for path, status in (("/v1/leaderboards/nope/stream", 404),
                         ("/v1/leaderboards/type:nope/stream", 404),
                         ("/v1/leaderboards/all_time/stream?limit=0", 422),
                         ("/v1/leaderboards/all_time/stream?limit=101", 422),
                         ("/v1/leaderboards/all_time/stream?upgrades=-1", 422)):  # fmt: skip
        response = httpx.get(url + path, timeout=5)
        assert response.status_code == status, path
        assert set(response.json()) == {"error"}


def test_the_stream_says_when_redis_is_away_and_recovers(eng: ScoringEngine, url: str) -> None:
    eng.award("ann", "comment", amount=5)
    reader = EventReader(f"{url}/v1/leaderboards/all_time/stream")
    reader.next("board")
    live = eng.redis
    eng.redis = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    try:
        error = reader.next("error", timeout=3)
        assert error.data["code"] == "unavailable"
    finally:
        eng.redis = live
    assert reader.next("board", timeout=3).data["rows"][0]["user_id"] == "ann"  # all sent again
    reader.close()


def test_dashboard_files_are_served(url: str) -> None:
    import httpx

    page = httpx.get(url + "/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/dashboard/dashboard.js" in page.text and "/dashboard/dashboard.css" in page.text
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        response = httpx.get(f"{url}/dashboard/{name}", timeout=5)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    boards = httpx.get(url + "/v1/leaderboards", timeout=5).json()["boards"]
    ids = [b["id"] for b in boards]
    assert ids[:4] == ["all_time", "month", "week", "day"] and "type:quiz_complete" in ids


# -- who reads leaderboards without credentials ------------------------------------------------


def test_a_remote_client_needs_a_read_key_unless_boards_are_public(eng: ScoringEngine) -> None:
    eng.award("ann", "comment", amount=5)
    paths = ["/v1/leaderboards", "/v1/leaderboards/all_time", "/v1/leaderboards/all_time/users/ann"]
    local = TestClient(create_app(eng, settings()))  # a TestClient is not a loopback client
    public = TestClient(create_app(eng, settings(SCORING_PUBLIC_LEADERBOARDS="yes")))
    for path in paths:
        assert local.get(path).status_code == 401
        assert local.get(path, headers={"X-API-Key": READ_KEY}).status_code == 200
        assert public.get(path).status_code == 200
        # credentials that are sent are checked, public or not
        assert public.get(path, headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    assert local.get("/").status_code == 200  # the page itself holds no data


def test_local_clients_read_freely_only_in_local_mode(eng: ScoringEngine) -> None:
    import httpx

    with serve(create_app(eng, settings(SCORING_PUBLIC_LEADERBOARDS="no"))) as base:
        assert httpx.get(base + "/v1/leaderboards/all_time/stream").status_code == 401
        reader = EventReader(
            base + "/v1/leaderboards/all_time/stream", headers={"X-API-Key": READ_KEY}
        )
        assert reader.status == 200
        reader.close()
    with serve(create_app(eng, settings())) as base:
        assert httpx.get(base + "/v1/leaderboards/all_time").status_code == 200
