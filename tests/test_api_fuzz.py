"""Schemathesis drives every operation of the OpenAPI document with generated requests (valid and
malformed): no request gets a 5xx, and every error body is the API's error JSON."""

from __future__ import annotations

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from engine import ScoringEngine
from engine.settings import Settings
from engine.store import SqlStore

KEY = "fuzz-admin-key-0123456789abcdef"


def _app():  # noqa: ANN202
    from tests.conftest import LOCAL_URL, _pick_url  # the same Redis choice as the suite

    url = _pick_url()
    client = redis.Redis.from_url(url, decode_responses=True)
    if client.dbsize() and not client.exists("scoring-tests:marker"):
        pytest.skip(f"{url or LOCAL_URL} holds data these tests did not write")
    client.set("scoring-tests:marker", "1")
    import tempfile

    store = SqlStore(f"sqlite:///{tempfile.mkdtemp(prefix='scoring-fuzz-')}/fuzz.db")
    store.upgrade()
    engine = ScoringEngine(client, store=store)
    engine.award("fuzz-user", "comment")  # something to find
    settings = Settings(
        SCORING_API_KEYS=f"ops:{KEY}:admin", SCORING_JWT_SECRET="fuzz-secret-0123456789abcdefghijkl"
    )
    return create_app(engine, settings)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx(case) -> None:  # noqa: ANN001
    for headers in ({"X-API-Key": KEY}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        if response.status_code >= 400 and case.path != "/readyz":
            assert set(response.json()) == {"error"}, response.text[:300]
