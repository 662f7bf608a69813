"""The HTTP API's leaderboard additions: tie modes, friends boards, rank movement on awards, and
a user's recent activities before the outbox is drained (read-your-writes)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from helpers import AWARDER, JWT_SECRET, READER, drain, token
from test_api import api_engine, api_settings, client, sqlite_store  # noqa: F401 - fixtures

from api.app import create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings

TIES = {"competition": [1, 1, 3], "dense": [1, 1, 2], "ordinal": [1, 2, 3]}


def _fill(client: TestClient, scores: dict[str, int]) -> None:  # noqa: F811
    for user, points in scores.items():
        r = client.post(f"/v1/users/{user}/awards", headers=AWARDER,
                        json={"activity_type": "special_event", "amount": points})  # fmt: skip
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("ties", sorted(TIES))
def test_tie_modes_on_every_board_endpoint(client: TestClient, ties: str) -> None:  # noqa: F811
    _fill(client, {"bo": 50, "al": 50, "cy": 30})
    want = list(zip(TIES[ties], ["al", "bo", "cy"], strict=True))
    for path in ["/v1/leaderboards/all_time", "/v1/leaderboards/week",
                 "/v1/leaderboards/type:special_event", "/v1/leaderboards/all_time?around=bo",
                 "/v1/leaderboards/all_time?around=cy&limit=3"]:  # fmt: skip
        sep = "&" if "?" in path else "?"
        body = client.get(f"{path}{sep}ties={ties}", headers=READER).json()
        assert [(e["rank"], e["user_id"]) for e in body["entries"]] == want, path
    page = client.get(f"/v1/leaderboards/all_time?offset=2&ties={ties}", headers=READER).json()
    assert [(e["rank"], e["user_id"]) for e in page["entries"]] == want[2:]
    for user, rank in zip(["al", "bo", "cy"], TIES[ties], strict=True):
        me = client.get(f"/v1/leaderboards/all_time/users/{user}?ties={ties}", headers=READER)
        assert me.status_code == 200 and me.json()["rank"] == rank
    seed = client.get(f"/api/v1/me/thrive-circle/?ties={ties}",
                      headers={**READER, "X-User-Id": "al"}).json()  # fmt: skip
    assert [(e["rank"], e["user_id"]) for e in seed["entries"]] == want
    # the default is competition
    if ties == "competition":
        plain = client.get("/v1/leaderboards/all_time", headers=READER).json()
        assert [e["rank"] for e in plain["entries"]] == TIES["competition"]


def test_bad_tie_modes_are_422(client: TestClient) -> None:  # noqa: F811
    _fill(client, {"al": 5})
    for path in ["/v1/leaderboards/all_time", "/v1/leaderboards/all_time/users/al",
                 "/v1/leaderboards/all_time?around=al", "/api/v1/me/thrive-circle/"]:  # fmt: skip
        for bad in ["Dense", "", "1", "competition,dense"]:
            sep = "&" if "?" in path else "?"
            r = client.get(f"{path}{sep}ties={bad}", headers={**READER, "X-User-Id": "al"})
            assert r.status_code == 422, (path, bad)
            error = r.json()["error"]
            assert error["code"] == "invalid_request" and error["field"] == "ties"
            assert "'competition', 'dense' or 'ordinal'" in error["message"]


# -- friends ----------------------------------------------------------------------------------


def test_put_and_get_friends(client: TestClient) -> None:  # noqa: F811
    put = client.put("/v1/users/al/friends", headers=AWARDER, json={"friends": ["cy", "bo", "cy"]})
    assert put.status_code == 200, put.text
    assert put.json() == {"user_id": "al", "friends": ["bo", "cy"]}
    assert client.get("/v1/users/al/friends", headers=READER).json()["friends"] == ["bo", "cy"]
    # the user-write rules: a key with the award scope, or the user's own token
    own = client.put("/v1/users/al/friends", headers=token("al"), json={"friends": ["dee"]})
    assert own.status_code == 200 and own.json()["friends"] == ["dee"]
    for headers, status in [(READER, 403), (token("bo"), 403), ({}, 401),
                            ({"X-API-Key": "wrong"}, 401)]:  # fmt: skip
        r = client.put("/v1/users/al/friends", headers=headers, json={"friends": ["x"]})
        assert r.status_code == status, (headers, r.text)
    assert client.get("/v1/users/al/friends", headers=token("al")).json()["friends"] == ["dee"]
    assert client.get("/v1/users/al/friends", headers=token("bo")).status_code == 403
    assert client.get("/v1/users/al/friends").status_code == 401


def test_bad_friend_lists_are_422(client: TestClient) -> None:  # noqa: F811
    client.put("/v1/users/al/friends", headers=AWARDER, json={"friends": ["bo"]})
    for body, field in [
        ({"friends": [f"f{i}" for i in range(1001)]}, "friends"),
        ({"friends": ["ok", ""]}, "friends.1"),
        ({"friends": ["x" * 129]}, "friends.0"),
        ({"friends": ["é" * 65]}, "friends.0"),
        ({"friends": ["a\u0007"]}, "friends.0"),
        ({"friends": [1]}, "friends.0"),
        ({"friends": "bo"}, "friends"),
        ({}, "friends"),
        ({"friends": [], "extra": 1}, "extra"),
    ]:
        r = client.put("/v1/users/al/friends", headers=AWARDER, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"] == field, r.text
    r = client.put("/v1/users/%C3%A9%00/friends", headers=AWARDER, json={"friends": []})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_user_id"
    ok = client.put("/v1/users/al/friends", headers=AWARDER,
                    json={"friends": [f"f{i}" for i in range(1000)]})  # fmt: skip
    assert ok.status_code == 200 and len(ok.json()["friends"]) == 1000


@pytest.mark.parametrize("ties", sorted(TIES))
def test_a_friends_board(client: TestClient, api_engine: ScoringEngine, ties: str) -> None:  # noqa: F811
    _fill(client, {f"x{i}": 100 + i for i in range(20)})
    _fill(client, {"bo": 50, "al": 50, "cy": 30})
    client.put("/v1/users/al/friends", headers=AWARDER, json={"friends": ["bo", "cy", "nobody"]})
    body = client.get(f"/v1/leaderboards/all_time?friends_of=al&ties={ties}",
                      headers=READER).json()  # fmt: skip
    assert body["total_users"] == 3
    assert [(e["rank"], e["user_id"], e["score"]) for e in body["entries"]] == list(
        zip(TIES[ties], ["al", "bo", "cy"], [50, 50, 30], strict=True)
    )
    paged = client.get(f"/v1/leaderboards/all_time?friends_of=al&ties={ties}&limit=1&offset=2",
                       headers=token("al")).json()  # fmt: skip
    assert paged["total_users"] == 3
    assert [(e["rank"], e["user_id"]) for e in paged["entries"]] == [(TIES[ties][2], "cy")]
    typed = client.get("/v1/leaderboards/type:special_event?friends_of=al", headers=READER)
    assert typed.json()["total_users"] == 3
    # a user's friends are the user's own data: a read key, or the user's token
    assert client.get("/v1/leaderboards/all_time?friends_of=al",
                      headers=token("bo")).status_code == 403  # fmt: skip
    assert client.get("/v1/leaderboards/all_time?friends_of=al").status_code == 401
    # on public boards too
    public = TestClient(create_app(api_engine, api_settings().model_copy(
        update={"public_leaderboards": "yes"})))  # fmt: skip
    assert public.get("/v1/leaderboards/all_time").status_code == 200
    assert public.get("/v1/leaderboards/all_time?friends_of=al").status_code == 401
    assert public.get("/v1/leaderboards/all_time?friends_of=al", headers=READER).status_code == 200
    both = client.get("/v1/leaderboards/all_time?friends_of=al&around=al", headers=READER)
    assert both.status_code == 422 and both.json()["error"]["field"] == "friends_of"


# -- read-your-writes -------------------------------------------------------------------------


def test_my_status_lists_an_award_at_once(client: TestClient, api_engine: ScoringEngine) -> None:  # noqa: F811
    award = client.post("/api/v1/me/thrive-circle/award-points/", headers=token("123"),
                        json={"activity_type": "daily_login", "amount": 5})  # fmt: skip
    assert award.status_code == 201, award.text
    made = award.json()["point_activity"]
    # no drain: the activity is still in the outbox only
    assert api_engine.store.recent_activities("123") == []
    status = client.get("/api/v1/me/thrive-circle/my-status/", headers=token("123")).json()
    assert [a["id"] for a in status["recent_activities"]] == [made["id"]]
    assert status["recent_activities"][0]["amount"] == 5
    listed = client.get("/v1/users/123/activities", headers=token("123")).json()
    assert [a["id"] for a in listed["activities"]] == [made["id"]]
    drain(api_engine)
    again = client.get("/api/v1/me/thrive-circle/my-status/", headers=token("123")).json()
    assert again["recent_activities"] == status["recent_activities"]


# -- rank movement ----------------------------------------------------------------------------


def test_an_award_with_its_rank_movement(client: TestClient) -> None:  # noqa: F811
    _fill(client, {"al": 50, "bo": 50})

    def award(user: str, points: int, query: str = "?include=rank", **headers: str):
        r = client.post(f"/v1/users/{user}/awards{query}", headers={**AWARDER, **headers},
                        json={"activity_type": "special_event", "amount": points})  # fmt: skip
        assert r.status_code == 201, r.text
        return r.json()

    first = award("cy", 30)
    assert first["rank"] == {"before": None, "after": 3}  # not on the board before
    assert first["user"]["total_points"] == 30
    assert award("cy", 20)["rank"] == {"before": 3, "after": 1}  # ties the leaders
    assert award("al", 1)["rank"] == {"before": 1, "after": 1}
    assert award("bo", 2)["rank"] == {"before": 2, "after": 1}
    # a replay changes nothing: the rank now, twice
    once = award("dee", 5, **{"Idempotency-Key": "dee-1"})
    assert once["rank"] == {"before": None, "after": 4}
    again = award("dee", 5, **{"Idempotency-Key": "dee-1"})
    assert again["rank"] == {"before": 4, "after": 4} and again["user"]["total_points"] == 5
    # without include, no rank; the rest of the answer is the same either way
    plain = award("eve", 1, query="")
    assert "rank" not in plain
    ranked = award("eve", 1)
    assert set(ranked) - set(plain) == {"rank"}
    bad = client.post("/v1/users/eve/awards?include=ranks", headers=AWARDER,
                      json={"activity_type": "comment"})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "include"
    assert client.get("/v1/leaderboards/all_time/users/eve", headers=READER).json()["score"] == 2


def test_include_rank_is_a_board_read(api_engine: ScoringEngine) -> None:  # noqa: F811
    """An award-only key may award, not read ranks: unless boards are public to the client,
    ?include=rank needs the read scope (or the user's own token)."""
    only = "award-only-0123456789abcdef"
    settings = Settings(SCORING_API_KEYS=f"only:{only}:award", SCORING_JWT_SECRET=JWT_SECRET,
                        SCORING_SELF_AWARD_TYPES="daily_login",
                        SCORING_PUBLIC_LEADERBOARDS="no")  # fmt: skip
    closed = TestClient(create_app(api_engine, settings))
    body = {"activity_type": "comment"}
    headers = {"X-API-Key": only}
    assert closed.post("/v1/users/ro/awards", json=body, headers=headers).status_code == 201
    r = closed.post("/v1/users/ro/awards?include=rank", json=body, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    mine = closed.post("/v1/users/ro/awards?include=rank", headers=token("ro"),
                       json={"activity_type": "daily_login"})  # fmt: skip
    assert mine.status_code == 201 and mine.json()["rank"]["after"] == 1
    public = Settings(SCORING_API_KEYS=f"only:{only}:award", SCORING_PUBLIC_LEADERBOARDS="yes")
    open_client = TestClient(create_app(api_engine, public))
    r = open_client.post("/v1/users/ro/awards?include=rank", json=body, headers=headers)
    assert r.status_code == 201 and r.json()["rank"]["after"] == 1
