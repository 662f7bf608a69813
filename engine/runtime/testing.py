"""Testing mode: an engine over ``fakeredis`` for applications' own test suites.

    from engine.runtime.testing import fake_engine

    def test_quiz_gives_points():
        engine = fake_engine()
        result = engine.award("alice", "quiz_complete", amount=25)
        assert result.user.total_points == 25

Every engine returned is independent (its own in-memory server) and runs the same Lua scripts
as production (fakeredis executes them with Lua 5.1 through ``lupa``). Needs the ``dev`` extra
(``fakeredis[lua]``).
"""

from __future__ import annotations

from typing import Any

from engine.services.facade import ScoringEngine


def fake_redis() -> Any:
    """A fresh in-memory fakeredis client, decoding responses as the engine expects."""
    import fakeredis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)


def fake_engine(**kwargs: Any) -> ScoringEngine:
    """A :class:`ScoringEngine` over a fresh fakeredis server; ``kwargs`` as for the engine.
    Its ``award_async`` uses an asyncio fakeredis client of the same server."""
    import fakeredis

    client = fake_redis()
    server = client.connection_pool.connection_kwargs["server"]
    kwargs.setdefault(
        "async_client", lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    )
    return ScoringEngine(client, **kwargs)
