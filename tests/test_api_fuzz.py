"""Schemathesis drives every operation of the OpenAPI document with generated requests (valid and
malformed): no request gets a 5xx, and every error body is the API's error JSON."""

from __future__ import annotations

import fakeredis
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings
from engine.runtime.testing import fake_engine
from engine.storage.store import SqlStore

KEY = "fuzz-admin-key-0123456789abcdef"

# The document is read at collection, from an app over fakeredis (no I/O); the requests go to
# the same app once the fixture below has put a real-Redis engine behind it.
APP = create_app(
    fake_engine(),
    Settings(
        SCORING_API_KEYS=f"ops:{KEY}:admin", SCORING_JWT_SECRET="fuzz-secret-0123456789abcdefghijkl"
    ),
)
# the live stream never ends by itself: tests/test_stream.py drives it on a real server
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path_regex="/stream$")


@pytest.fixture(autouse=True)
def real_engine_behind_the_app(real_redis: redis.Redis, tmp_path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'fuzz.db'}")
    store.upgrade()
    engine = ScoringEngine(real_redis, store=store)
    engine.award("fuzz-user", "comment")  # something to find
    APP.state.engine = engine


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx(case) -> None:
    assert not isinstance(APP.state.engine.redis, fakeredis.FakeRedis)  # the real server
    for headers in ({"X-API-Key": KEY}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        if response.status_code >= 400 and case.path != "/readyz":
            assert set(response.json()) == {"error"}, response.text[:300]
