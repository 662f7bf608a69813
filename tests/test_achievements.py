"""Achievements on a real Redis (and the cluster, K = 8) and real SQL: earned inside the award
and quest scripts once per user and level, under concurrency and replay; multi-level, hidden,
chained rewards; backfill racing live awards; rebuild; HTTP; the dashboard's feed."""

from __future__ import annotations

import threading

import pytest
from conftest import shards_for
from fastapi.testclient import TestClient
from helpers import ADMIN, API_KEYS, JWT_SECRET, READER, Clock, drain, in_threads, token
from sqlalchemy import text

from api.app import create_app
from engine import AwardRequest, ScoringEngine
from engine.domain.errors import ConfigError, ValidationError
from engine.domain.rules import build_rules, reward_id
from engine.runtime.settings import Settings
from engine.services.recovery import rebuild
from engine.storage.store import SqlStore

#: Rules with rewarded achievements (no weekly goals, whose rewards would blur the totals).
RULES = build_rules({
    "weekly_goals": {},
    "achievements": {
        "talker": {"kind": "count", "activity_type": "comment", "target": [3, 5, 8],
                   "reward": [10, 20, 30], "title": "Talker"},
        "rich": {"kind": "points", "target": 240, "reward": 15, "title": "Rich"},
        "blazing": {"kind": "tier", "target": "blaze", "reward": 5, "title": "Blazing"},
        "secret": {"kind": "count", "activity_type": "reaction", "target": 2, "hidden": True,
                   "title": "Secret", "description": "a hidden one"},
        "level10": {"kind": "level", "target": 10, "title": "Level 10"},
    },
})  # fmt: skip


def engine_with(state_redis, clock: Clock, store: SqlStore | None = None, rules=RULES):
    return ScoringEngine(
        state_redis, clock=clock, store=store, rules=rules, shards=shards_for(state_redis)
    )


def held(engine: ScoringEngine, user: str) -> dict[str, int]:
    earned = engine.achievements(user).earned
    out: dict[str, int] = {}
    for e in earned:
        out[e.achievement_id] = max(out.get(e.achievement_id, 0), e.level)
    return out


def test_multi_level_earned_once_per_level_with_rewards(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    earned = [engine.award("kim", "comment", amount=5).achievements for _ in range(9)]
    got = [[(a.achievement_id, a.level) for a in e] for e in earned]
    assert got == [[], [], [("talker", 1)], [], [("talker", 2)], [], [], [("talker", 3)], []]
    third = earned[2][0]
    assert (third.title, third.levels, third.points_reward) == ("Talker", 3, 10)
    assert engine.status("kim").total_points == 9 * 5 + 10 + 20 + 30
    # each level's reward is an activity of type achievement with a derived id
    result = engine.award("kim", "comment", amount=5)
    assert result.achievements == ()
    assert engine.status("kim").activity_counts["achievement"] == 3
    assert engine.leaderboard("type:achievement").rank("kim").score == 60
    mine = engine.achievements("kim")
    assert [(e.achievement_id, e.level) for e in mine.earned] == [
        ("talker", 1), ("talker", 2), ("talker", 3),
    ]  # fmt: skip
    assert "talker" not in {p.achievement_id for p in mine.progress}  # fully earned
    rich = next(p for p in mine.progress if p.achievement_id == "rich")
    assert (rich.current, rich.target, rich.next_level) == (110, 240, 1)
    assert "secret" not in {p.achievement_id for p in mine.progress}  # hidden until earned


def test_a_reward_that_lifts_the_total_earns_what_it_reaches(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    engine.award("lee", "quiz_complete", amount=230)
    result = engine.award("lee", "quiz_complete", amount=10)  # 240: rich (+15) -> 255: nothing
    assert [a.achievement_id for a in result.achievements] == ["rich"]
    assert engine.status("lee").total_points == 255
    # 490 + 15 reward... blaze is 500: the award to 490 earns nothing, the next to 500 blazing
    result = engine.award("lee", "quiz_complete", amount=240)  # 495
    assert result.achievements == ()
    result = engine.award("lee", "quiz_complete", amount=5)  # 500: blazing (+5)
    assert [a.achievement_id for a in result.achievements] == ["blazing"]
    assert result.user.total_points == 505
    # a reward crossing the next target earns it in the same call
    rules = build_rules({
        "weekly_goals": {},
        "achievements": {
            "first": {"kind": "count", "activity_type": "comment", "target": 1, "reward": 300,
                      "title": "First"},
            "spark": {"kind": "tier", "target": "spark", "title": "Spark"},
        },
    })  # fmt: skip
    other = engine_with(state_redis, clock, rules=rules)
    result = other.award("mo", "comment", amount=5)
    assert [a.achievement_id for a in result.achievements] == ["first", "spark"]
    assert result.user.total_points == 305 and result.new_tier == "spark"


def test_hidden_achievements_and_the_catalog(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    for user in ("a", "b", "c", "d"):
        engine.award(user, "comment", amount=5)
    for _ in range(3):
        engine.award("a", "comment", amount=5)
    engine.award("b", "reaction", amount=1)
    result = engine.award("b", "reaction", amount=1)
    assert [a.achievement_id for a in result.achievements] == ["secret"]
    assert "secret" in held(engine, "b")
    catalog = engine.achievement_catalog()
    assert catalog.users == 4
    assert "secret" not in {e.achievement_id for e in catalog.achievements}
    talker = next(e for e in catalog.achievements if e.achievement_id == "talker")
    assert [(lv.level, lv.target, lv.points_reward, lv.holders) for lv in talker.levels] == [
        (1, 3, 10, 1), (2, 5, 20, 0), (3, 8, 30, 0),
    ]  # fmt: skip
    assert talker.levels[0].share == 0.25
    hidden = engine.achievement_catalog(include_hidden=True)
    secret = next(e for e in hidden.achievements if e.achievement_id == "secret")
    assert secret.hidden and secret.levels[0].holders == 1


def test_one_of_16_concurrent_awards_earns_each_level(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    results = []
    lock = threading.Lock()

    def one() -> None:
        r = engine.award("race", "comment", amount=5)
        with lock:
            results.append(r)

    in_threads(one)
    levels = sorted(
        a.level for r in results for a in r.achievements if a.achievement_id == "talker"
    )
    assert levels == [1, 2, 3]
    assert engine.status("race").total_points == 16 * 5 + 60
    catalog = engine.achievement_catalog().achievements
    talker = next(e for e in catalog if e.achievement_id == "talker")
    assert [lv.holders for lv in talker.levels] == [1, 1, 1]


def test_a_replay_answers_with_the_first_calls_achievements(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    engine.award("rep", "comment", amount=5)
    engine.award("rep", "comment", amount=5)
    first = engine.award("rep", "comment", amount=5, idempotency_key="k1")
    again = engine.award("rep", "comment", amount=5, idempotency_key="k1")
    assert again.replayed and again.achievements == first.achievements
    assert [a.achievement_id for a in first.achievements] == ["talker"]
    assert [r.activity_id for r in again.rewards] == [reward_id("achievement:rep:talker:1")]
    assert engine.status("rep").total_points == 15 + 10


def test_drained_to_sql_and_restored_by_rebuild(state_redis, clock: Clock, store) -> None:
    engine = engine_with(state_redis, clock, store)
    for _ in range(5):
        engine.award("sq", "comment", amount=5)
    engine.award("sq", "quiz_complete", amount=450)  # rich, blazing
    drain(engine)
    with store.engine.connect() as c:
        rows = c.execute(text(
            "SELECT achievement_id, level, points_reward FROM user_achievement "
            "WHERE user_id = 'sq' ORDER BY achievement_id, level"
        )).all()  # fmt: skip
        types = c.execute(text(
            "SELECT COUNT(*) FROM point_activity WHERE user_id = 'sq' AND activity_type = "
            "'achievement'"
        )).scalar()  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("blazing", 1, 5), ("rich", 1, 15), ("talker", 1, 10), ("talker", 2, 20),
    ]  # fmt: skip
    assert types == 4
    before = engine.achievements("sq")
    total = engine.status("sq").total_points
    rebuild(engine, store)
    assert engine.achievements("sq") == before
    assert engine.status("sq").total_points == total
    # the levels held survive: the next awards do not pay them again
    engine.award("sq", "comment", amount=5)
    assert engine.status("sq").total_points == total + 5
    assert engine.achievement_catalog().achievements[0].levels[0].holders == 1


def test_backfill_grants_once_while_awards_race(state_redis, clock: Clock) -> None:
    plain = engine_with(
        state_redis, clock, rules=build_rules({"weekly_goals": {}, "achievements": {}})
    )
    users = [f"bf{i}" for i in range(300)]
    plain.award_many([AwardRequest(u, "comment", amount=5) for u in users for _ in range(2)])
    engine = engine_with(state_redis, clock)  # the rules now have achievements
    assert engine.backfill_achievements_if_changed() is not None
    assert engine.backfill_achievements_if_changed() is None  # the same rules: nothing to do
    assert held(engine, "bf0") == {}  # 2 comments: nothing yet
    # the third comment of each user races a backfill: each talker 1 is granted once
    plain.award_many([AwardRequest(u, "comment", amount=5) for u in users])
    stop = threading.Event()
    results = []

    def award() -> None:
        results.extend(engine.award_many([AwardRequest(u, "comment", amount=5) for u in users]))
        stop.set()

    def backfill() -> None:
        while not stop.is_set():
            engine.backfill_achievements()

    in_threads(lambda f: f(), [(award,), (backfill,)])
    report = engine.backfill_achievements()
    assert report.users == 300 and report.granted == 0
    for u in users[:20]:
        assert held(engine, u) == {"talker": 1}
        assert engine.status(u).total_points == 4 * 5 + 10
    talker = next(
        e for e in engine.achievement_catalog().achievements if e.achievement_id == "talker"
    )
    assert talker.levels[0].holders == 300


def test_quest_completion_earns_a_quests_achievement(state_redis, clock: Clock, store) -> None:
    rules = build_rules({"weekly_goals": {}, "achievements": {
        "quester": {"kind": "quests", "target": 1, "reward": 7, "title": "Quester"},
    }})  # fmt: skip
    engine = engine_with(state_redis, clock, store, rules=rules)
    quest = engine.create_quest(title="Q", quest_type="social", difficulty="easy",
                                points_reward=40, activity_type="comment")  # fmt: skip
    engine.start_quest("qu", quest.id)
    done = engine.complete_quest("qu", quest.id)
    assert [(a.achievement_id, a.points_reward) for a in done.achievements] == [("quester", 7)]
    assert engine.status("qu").total_points == 47


def test_invalid_definitions_stop_start_up_naming_the_field() -> None:
    cases = [
        ({"kind": "count", "target": 3, "title": "t"}, "achievements.x.activity_type"),
        ({"kind": "count", "activity_type": "nope", "target": 3, "title": "t"},
         "achievements.x.activity_type"),
        ({"kind": "points", "target": [5, 3], "title": "t"}, "achievements.x.target"),
        ({"kind": "tier", "target": "gold", "title": "t"}, "achievements.x.target"),
        ({"kind": "streak", "target": [3, 5], "reward": [1], "title": "t"},
         "achievements.x.reward"),
        ({"kind": "streak", "target": 3, "title": "t", "colour": "red"}, "achievements.x.colour"),
        ({"kind": "medal", "target": 3, "title": "t"}, "achievements.x.kind"),
        ({"kind": "streak", "target": 3, "title": "bad \ud800"}, "achievements.x.title"),
    ]  # fmt: skip
    for spec, field in cases:
        with pytest.raises(ConfigError) as exc:
            build_rules({"achievements": {"x": spec}})
        assert exc.value.field == field, (spec, str(exc.value))


def test_an_activity_type_named_after_a_lua_keyword_works(state_redis, clock: Clock) -> None:
    rules = build_rules({"weekly_goals": {}, "activity_types": {
        "end": {"display": "End", "points": 3, "max_points": 10},
    }, "achievements": {
        "ender": {"kind": "count", "activity_type": "end", "target": 2, "title": "Ender"},
    }})  # fmt: skip
    engine = engine_with(state_redis, clock, rules=rules)
    engine.award("kw", "end")
    assert [a.achievement_id for a in engine.award("kw", "end").achievements] == ["ender"]


def test_the_achievement_type_is_paid_by_the_engine_only(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    with pytest.raises(ValidationError) as exc:
        engine.award("mint", "achievement", amount=1_000_000)
    assert exc.value.field == "activity_type"
    assert engine.status("mint").total_points == 0


def test_http_catalog_user_achievements_and_award_responses(state_redis, clock: Clock) -> None:
    engine = engine_with(state_redis, clock)
    settings = Settings(SCORING_API_KEYS=API_KEYS, SCORING_JWT_SECRET=JWT_SECRET)
    client = TestClient(create_app(engine, settings))
    mine = token("ht")
    for _ in range(2):
        engine.award("ht", "comment", amount=5)
    r = client.post("/v1/users/ht/awards", json={"activity_type": "comment", "amount": 5},
                    headers=ADMIN)  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["achievements"] == [{"achievement_id": "talker", "level": 1, "levels": 3,
                                     "title": "Talker", "points_reward": 10}]  # fmt: skip
    assert [x["activity_type"] for x in body["rewards"]] == ["achievement"]
    r = client.get("/v1/users/ht/achievements", headers=mine)
    assert r.status_code == 200 and r.json()["earned"][0]["achievement_id"] == "talker"
    assert client.get("/v1/users/other/achievements", headers=mine).status_code == 403
    cat = client.get("/v1/achievements", headers=READER).json()
    assert cat["users"] == 1 and "secret" not in {a["id"] for a in cat["achievements"]}
    assert client.get("/v1/achievements?include_hidden=true", headers=READER).status_code == 403
    assert client.get("/v1/achievements?include_hidden=true", headers=ADMIN).status_code == 200
    live = engine.live_board("all_time", upgrades=10)
    assert any(u.achievement == "Talker" for u in live.upgrades)


def test_default_achievements(state_redis, clock: Clock) -> None:
    engine = ScoringEngine(state_redis, clock=clock, shards=shards_for(state_redis))
    assert set(engine.rules.achievements) == {"first_quiz", "commenter", "streak", "tiers"}
    result = engine.award("dd", "quiz_complete", amount=300)
    assert {a.achievement_id for a in result.achievements} == {"first_quiz", "tiers"}
    assert result.user.total_points == 300  # the defaults pay no points
    for _ in range(6):
        clock.advance(days=1)
        result = engine.award("dd", "daily_login")
    assert [a.achievement_id for a in result.achievements] == ["streak"]


def test_the_command_and_the_scheduler_job_backfill(
    state_redis, clock: Clock, store: SqlStore, state_env, monkeypatch, fresh_settings, tmp_path,
    capsys,
) -> None:  # fmt: skip
    """`scoring achievements backfill` with the settings' rules; the job only when they changed."""
    import workers.jobs
    from scoring.cli import main as cli_main

    shards = shards_for(state_redis)
    plain = ScoringEngine(state_redis, clock=clock, rules=build_rules({"achievements": {}}),
                          shards=shards)  # fmt: skip
    plain.award_many([AwardRequest(f"c{i}", "comment", amount=5) for i in range(30)])
    rules = tmp_path / "rules.toml"
    rules.write_text('[achievements.welcome]\nkind = "points"\ntarget = 5\nreward = 2\n'
                     'title = "Welcome"\n')  # fmt: skip
    for name, value in state_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SCORING_SHARDS", str(shards))
    monkeypatch.setenv("DATABASE_URL", store.url)
    monkeypatch.setenv("SCORING_RULES", str(rules))
    assert cli_main(["achievements", "backfill"]) == 0
    assert "30 users tested, 30 levels granted, 60 points paid" in capsys.readouterr().out
    assert plain.status("c7").total_points == 7
    # the job: the rules did not change since the command's backfill
    assert workers.jobs.backfill_achievements() is None
    assert workers.jobs.backfill_achievements(force=True)["granted"] == 0
    state_redis.delete(plain.keys.achievements_backfilled())  # as after a rules change
    assert workers.jobs.backfill_achievements()["users"] == 30
