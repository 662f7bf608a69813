"""The script registry, and awards that survive a flushed script cache without double-applying."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import redis
from helpers import PLAIN_RULES

from engine import AwardRequest, ScoringEngine
from engine.commands.scripts import (
    LUA_DIR,
    ScriptRegistry,
    _names,
    lua_literal,
    run_calls,
    scripts,
)
from engine.domain.rules import build_rules, load_rules


def test_every_script_loads_and_counts_its_keys(real_redis: redis.Redis) -> None:
    names = scripts.names()
    assert {"award", "set_profile", "board_position"} <= set(names)
    rules = load_rules().script_tables
    for name in names:
        defined = name in ("award", "quest", "achieve", "adjust")
        script = scripts.get(name, RULES=rules) if defined else scripts[name]
        assert not re.search(r"^--- @(include|define)", script.source, re.M)
        assert real_redis.script_load(script.source) == script.sha
    assert (
        scripts.get("award", RULES=rules).numkeys == 22 and scripts["board_position"].numkeys == 1
    )
    # KEYS[12...]: eleven keys, then as many as a call passes (the user's other keys, as many
    # as its ARGV[5] says, then the shard's boards)
    deletion = scripts["delete_user"]
    assert (deletion.numkeys, deletion.variadic, scripts["board_position"].variadic) == (
        11, True, False,
    )  # fmt: skip
    with pytest.raises(TypeError, match="takes 11 keys, got 10"):
        deletion(real_redis, ["k"] * 10, [])


def test_defines_are_required_and_make_distinct_scripts() -> None:
    with pytest.raises(TypeError, match="RULES"):
        scripts["award"]
    a = scripts.get("award", RULES=load_rules().script_tables)
    b = scripts.get("award", RULES=build_rules({"tiers": {"low": 0, "high": 10}}).script_tables)
    assert a.sha != b.sha and 'tier_names = {"low", "high"}' in b.source
    assert scripts.get("award", RULES=load_rules().script_tables) is a
    assert lua_literal(["é", 'a"b', 1.5, True]) == '{"\\195\\169", "a\\034b", 1.5, true}'


def test_key_count_is_checked(real_redis: redis.Redis) -> None:
    with pytest.raises(TypeError, match="takes 1 keys"):
        scripts["board_position"](real_redis, ["a", "b"], [0, "x"])


def test_includes_are_resolved_once(tmp_path: Path) -> None:
    (tmp_path / "includes").mkdir()
    (tmp_path / "includes" / "one.lua").write_text("local function one() return 1 end\n")
    (tmp_path / "s.lua").write_text(
        '--[[\n  KEYS[1] k  KEYS[2] j\n]]\n--- @include "one"\n--- @include "one"\nreturn one()\n'
    )
    script = ScriptRegistry(tmp_path)["s"]
    assert script.source.count("local function one") == 1 and script.numkeys == 2
    (tmp_path / "bad.lua").write_text('--[[ x ]]\n--- @include "missing"\n')
    with pytest.raises(RuntimeError, match="missing"):
        ScriptRegistry(tmp_path)["bad"]
    (tmp_path / "noheader.lua").write_text("return 1\n")
    with pytest.raises(RuntimeError, match="header"):
        ScriptRegistry(tmp_path)["noheader"]
    assert LUA_DIR.is_dir()


def test_script_flush_between_calls(engine: ScoringEngine) -> None:
    engine.award("sam", "comment", amount=5)
    engine.redis.script_flush()
    assert engine.award("sam", "comment", amount=5).user.total_points == 10
    engine.redis.script_flush()
    assert engine.leaderboard().rank("sam").score == 10
    engine.redis.script_flush()
    assert engine.set_profile("sam", username="sam").username == "sam"


def test_flushed_cache_before_a_batch(real_redis: redis.Redis) -> None:
    """Every call of the batch is refused, re-sent once, and applied once."""
    engine = ScoringEngine(real_redis, rules=PLAIN_RULES)
    engine.award("pat", "comment", amount=1)
    real_redis.script_flush()
    results = engine.award_many([AwardRequest("pat", "comment", amount=1) for _ in range(20)])
    assert [r.user.total_points for r in results] == list(range(2, 22))


def test_calls_fall_back_to_eval(real_redis: redis.Redis) -> None:
    """Even when the cache is flushed after every load, a batch completes (as EVAL)."""
    script = scripts["board_position"]
    real_redis.zadd("t:board", {"a": -3, "b": -2})
    original = type(script).load
    type(script).load = lambda self, client: client.script_flush()
    try:
        real_redis.script_flush()
        replies = run_calls(real_redis, [(script, ["t:board"], ["-2", m]) for m in "abc"])
    finally:
        type(script).load = original
    assert replies == [1, 1, 2]


def test_script_flush_during_award_many(real_engine: ScoringEngine) -> None:
    """A flusher thread empties the script cache while batches run; every item applies once."""
    engine = real_engine
    flusher = redis.Redis(connection_pool=engine.redis.connection_pool)
    loads = []
    original = type(scripts["board_position"]).load

    def counting_load(self, client):
        loads.append(self.name)
        return original(self, client)

    stop = threading.Event()

    def flush_loop() -> None:
        while not stop.is_set():
            flusher.script_flush()
            flusher.function_flush()  # the award script runs as a Redis Function
            stop.wait(0.002)

    type(scripts["board_position"]).load = counting_load
    thread = threading.Thread(target=flush_loop)
    thread.start()
    try:
        batches = 0
        while batches < 40 and (batches < 5 or not loads):
            results = engine.award_many(
                AwardRequest(f"u{i % 50}", "comment", amount=1) for i in range(1000)
            )
            assert all(r.activity.amount == 1 for r in results)
            batches += 1
    finally:
        stop.set()
        thread.join()
        type(scripts["board_position"]).load = original
    assert loads, "no flush landed during a batch; the test proved nothing"
    total = sum(engine.status(f"u{i}").total_points for i in range(50))
    assert total == batches * 1000
    assert engine.redis.xlen(engine.keys.outbox(0)) == batches * 1000


def test_connection_dropped_in_the_middle_of_a_batch(
    real_redis: redis.Redis, redis_url: str
) -> None:
    """The server closes the batch's connection mid-stream: the unanswered calls are sent again
    on a new connection and, thanks to their activity ids, every award applies exactly once."""
    engine = ScoringEngine(real_redis, rules=PLAIN_RULES)
    killer = redis.Redis.from_url(redis_url)
    original = engine.awards._call
    killed = []

    def call_then_kill(item):
        if item[0] == 700 and not killed:
            killed.append(killer.client_kill_filter(_type="normal", skipme=True))
        return original(item)

    engine.awards._call = call_then_kill
    results = engine.award_many(AwardRequest(f"k{i % 7}", "comment", amount=1) for i in range(1500))
    assert killed and killed[0] >= 1
    assert all(r.activity.amount == 1 for r in results)
    assert sum(engine.status(f"k{i}").total_points for i in range(7)) == 1500
    assert real_redis.xlen(engine.keys.outbox(0)) == 1500
    # a call whose reply was lost reports the first application, not a second one
    assert sorted(r.user.version for r in results if r.user.user_id == "k0") == list(range(1, 216))


class _WithoutPool:
    """A client exposing no single connection pool, as RedisCluster does."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def __getattr__(self, name: str):
        if name == "connection_pool":
            raise AttributeError(name)
        return getattr(self._client, name)


def test_award_many_on_a_client_without_a_connection_pool(real_redis: redis.Redis) -> None:
    engine = ScoringEngine(_WithoutPool(real_redis), rules=PLAIN_RULES)
    real_redis.script_flush()
    results = engine.award_many([AwardRequest("cl", "comment", amount=2) for _ in range(5)])
    assert [r.user.total_points for r in results] == [2, 4, 6, 8, 10]


# -- Redis Functions: the scripts' libraries -----------------------------------------------------


def _commands(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


def test_every_script_loads_as_a_library_whose_function_matches_eval(
    real_redis: redis.Redis,
) -> None:
    rules = load_rules().script_tables
    for name in scripts.names():
        script = (
            scripts.get(name, RULES=rules)
            if name in ("award", "quest", "achieve", "adjust")
            else scripts[name]
        )
        assert script.library is not None and script.library.startswith("#!lua name=scoring_")
        assert not re.search(r"^--- @(include|define)", script.library, re.M)
        assert script.uses_function(real_redis), name  # FUNCTION LOAD took it
    names = set(_names(real_redis.function_list(library="scoring_*")))
    assert scripts["board_position"].function in names


def test_awards_run_as_fcall_and_survive_a_function_flush(real_engine: ScoringEngine) -> None:
    import asyncio

    r = real_engine.redis
    before = _commands(r)
    real_engine.award("alice", "comment")
    assert _commands(r).get("fcall", 0) > before.get("fcall", 0)
    r.function_flush()  # a restart without persistence, or an operator's flush
    assert real_engine.award("alice", "comment").user.total_points == 10
    r.function_flush()
    results = real_engine.award_many([AwardRequest("bob", "comment") for _ in range(3)])
    assert [x.user.total_points for x in results] == [5, 10, 15]

    engine = ScoringEngine.from_url(_url(real_engine), clock=real_engine.clock)

    async def run() -> int:
        try:
            await engine.award_async("carol", "comment")
            r.function_flush()
            return (await engine.award_async("carol", "comment")).user.total_points
        finally:
            await engine.aclose()

    assert asyncio.run(run()) == 10


def _url(engine: ScoringEngine) -> str:
    kw = engine.redis.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def test_a_server_that_refuses_functions_gets_evalsha(
    real_redis: redis.Redis, real_engine: ScoringEngine
) -> None:
    """A user without FUNCTION (a managed Redis may deny it; Redis before 7 lacks it)."""
    kw = real_redis.connection_pool.connection_kwargs
    user = "scoring-test-nofunction"
    real_redis.acl_setuser(
        user, enabled=True, nopass=True, keys=["*"], channels=["*"],
        commands=["+@all", "-function"], reset=True,
    )  # fmt: skip
    try:
        client = redis.Redis(
            host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379), db=kw.get("db", 0),
            username=user, decode_responses=True,
        )  # fmt: skip
        engine = ScoringEngine(client, clock=real_engine.clock)
        before = _commands(real_redis)
        assert engine.award("dave", "comment").user.total_points == 5
        assert engine.award_many([AwardRequest("dave", "comment")])[0].user.total_points == 10
        after = _commands(real_redis)
        assert after.get("evalsha", 0) >= before.get("evalsha", 0) + 2
        assert not engine.awards._award.uses_function(client)
        client.close()
    finally:
        real_redis.acl_deluser(user)


def test_libraries_of_old_rule_sets_are_bounded(real_redis: redis.Redis) -> None:
    from engine.commands.scripts import MAX_LIBRARIES

    real_redis.function_flush()
    for n in range(MAX_LIBRARIES + 3):
        rules = build_rules({"tiers": {"low": 0, f"high{n}": 10 + n}})
        assert scripts.get("award", RULES=rules.script_tables).uses_function(real_redis)
    listed = _names(real_redis.function_list(library="scoring_award_*"))
    assert 1 <= len(listed) <= MAX_LIBRARIES + 1
