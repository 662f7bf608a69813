"""The hot handlers (api.hot) answer exactly as the FastAPI routes they stand in front of: the
same status, headers and bytes, on one Redis and on the cluster; what they do not take (bad
input, missing credentials, other parameters) is FastAPI's own answer."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import ADMIN, AWARDER, READER, token
from test_api import api_engine, api_settings, sqlite_store  # noqa: F401 - fixtures

from api.app import create_app
from api.hot import HotRoutes
from engine import ScoringEngine

#: route path -> requests its hot handler answered itself (not handed to the FastAPI route)
answered: Counter[str] = Counter()


def _counting(path: str, handle: Any) -> Any:
    async def counted(scope: Any, receive: Any, params: Any) -> Any:
        response, receive = await handle(scope, receive, params)
        if response is not None:
            answered[path] += 1
        return response, receive

    return counted


@pytest.fixture
def apps(api_engine: ScoringEngine) -> tuple[TestClient, TestClient]:  # noqa: F811
    """(the app, the same app without its hot handlers: the reference)."""
    hot = create_app(api_engine, api_settings())
    reference = create_app(api_engine, api_settings())
    for m in hot.user_middleware:
        if m.cls is HotRoutes:
            m.kwargs["routes"] = [(r, _counting(r.path, h)) for r, h in m.kwargs["routes"]]
    for m in reference.user_middleware:
        if m.cls is HotRoutes:
            m.kwargs["routes"] = []
    answered.clear()
    return TestClient(hot), TestClient(reference)


def _same(a, b) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    for name in ("content-type", "content-length", "idempotent-replayed", "www-authenticate"):
        assert a.headers.get(name) == b.headers.get(name), name


def test_the_award_route(apps: tuple[TestClient, TestClient]) -> None:
    hot, ref = apps
    first = hot.post("/v1/users/ann/awards", json={"activity_type": "comment"},
                     headers={**AWARDER, "Idempotency-Key": "k1"})  # fmt: skip
    assert first.status_code == 201 and first.json()["user"]["total_points"] == 5
    _same(
        hot.post("/v1/users/ann/awards", json={"activity_type": "comment"},
                 headers={**AWARDER, "Idempotency-Key": "k1"}),
        ref.post("/v1/users/ann/awards", json={"activity_type": "comment"},
                 headers={**AWARDER, "Idempotency-Key": "k1"}),
    )  # fmt: skip
    # ?include=rank (and any query string) is the FastAPI route's: the same bytes
    for query in ["?include=rank", "?include=nope", "?x=1"]:
        _same(
            hot.post(f"/v1/users/ann/awards{query}", json={"activity_type": "comment"},
                     headers={**AWARDER, "Idempotency-Key": "k1"}),
            ref.post(f"/v1/users/ann/awards{query}", json={"activity_type": "comment"},
                     headers={**AWARDER, "Idempotency-Key": "k1"}),
        )  # fmt: skip
    # refusals: the hot handler hands them to the FastAPI route
    for body, headers in [
        (b'{"activity_type": "nope"}', AWARDER),
        (b'{"activity_type": "comment", "amount": 0}', AWARDER),
        (b'{"activity_type": "comment", "extra": 1}', AWARDER),
        (b"[1, 2]", AWARDER),
        (b"", AWARDER),
        (b"{not json", AWARDER),
        (b'{"activity_type": "comment"}', {**AWARDER, "Content-Type": "text/plain"}),
        (b'{"activity_type": "comment"}', {**READER}),
        (b'{"activity_type": "comment"}', token("bob")),
        (b'{"activity_type": "comment"}', {**AWARDER, "Idempotency-Key": "k1"}),  # a conflict
    ]:
        headers = {"Content-Type": "application/json", **headers}
        _same(
            hot.post("/v1/users/ann/awards", content=body, headers=headers),
            ref.post("/v1/users/ann/awards", content=body, headers=headers),
        )
    # the two awards and the five the engine refused (as its error handlers answer them); what
    # pydantic or the content type refuses is the FastAPI route's
    assert answered["/v1/users/{user_id}/awards"] == 7


def test_the_leaderboard_route(apps: tuple[TestClient, TestClient]) -> None:
    hot, ref = apps
    for i in range(12):
        hot.post(f"/v1/users/u{i}/awards", json={"activity_type": "comment", "amount": 1 + i % 4},
                 headers=AWARDER)  # fmt: skip
    for query in ["", "?limit=5", "?limit=5&offset=3", "?offset=10", "?limit=1000",
                  "?limit=0", "?limit=1001", "?limit=-1", "?limit=abc", "?limit=5&limit=6",
                  "?around=u3", "?limit=4&around=u3", "?period=2020-01", "?x=1",
                  "?ties=competition", "?ties=dense&offset=2", "?limit=3&ties=ordinal",
                  "?ties=nope", "?around=u3&ties=dense", "?friends_of=u1"]:  # fmt: skip
        for board in ["all_time", "week", "type:comment", "nope"]:
            for headers in [READER, ADMIN, token("u1"), {}, {"X-API-Key": "wrong"}]:
                path = f"/v1/leaderboards/{board}{query}"
                _same(hot.get(path, headers=headers), ref.get(path, headers=headers))
    # current boards' pages within bounds, for readers with the read scope
    assert answered["/v1/leaderboards/{board}"] == 3 * 5 * 3


def test_the_status_route(apps: tuple[TestClient, TestClient]) -> None:
    hot, ref = apps
    hot.post("/v1/users/ann/awards", json={"activity_type": "quiz_complete"}, headers=AWARDER)
    for user in ["ann", "nobody", "%C3%A9"]:
        for headers in [READER, AWARDER, token("ann"), token("bob"), {}, {"X-API-Key": "x"},
                        {"Authorization": "Basic abc"}]:  # fmt: skip
            path = f"/v1/users/{user}"
            _same(hot.get(path, headers=headers), ref.get(path, headers=headers))
    assert answered["/v1/users/{user_id}"] == 3 * 2 + 1  # keys with read; ann's own token


def test_the_award_route_with_a_seasonal_event(
    apps: tuple[TestClient, TestClient],
    api_engine: ScoringEngine,  # noqa: F811
) -> None:
    """An award a seasonal event multiplied: the same bytes from both, its multiplier in them."""
    from datetime import timedelta

    hot, ref = apps
    now = api_engine.clock()
    api_engine.create_event(id="hot", title="Hot", start=now - timedelta(hours=1),
                            end=now + timedelta(hours=1), multiplier=1.5)  # fmt: skip
    body = {"activity_type": "comment", "amount": 5}
    headers = {**AWARDER, "Idempotency-Key": "ev1"}
    first = hot.post("/v1/users/ann/awards", json=body, headers=headers)
    assert first.status_code == 201, first.text
    out = first.json()
    assert (out["point_activity"]["amount"], out["base_amount"], out["multiplier"],
            out["event_id"]) == (8, 5, 1.5, "hot")  # fmt: skip
    _same(
        hot.post("/v1/users/ann/awards", json=body, headers=headers),
        ref.post("/v1/users/ann/awards", json=body, headers=headers),
    )
    assert answered["/v1/users/{user_id}/awards"] == 2
