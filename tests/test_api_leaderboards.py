"""The HTTP API's leaderboard additions: tie modes, friends boards, rank movement on awards, and
a user's recent activities before the outbox is drained (read-your-writes)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from helpers import AWARDER, READER
from test_api import api_engine, api_settings, client, sqlite_store  # noqa: F401 - fixtures

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
