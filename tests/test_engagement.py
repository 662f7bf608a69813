"""Weekly goals, side quests, streak bonuses and archived periods, on a real Redis and SQL.

These run the default rules (with the weekly goals). Times are passed in through the clock,
never slept for; the clock starts on the Tuesday of the run's week (or the one before), 12:00
UTC.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import redis
from helpers import (
    Clock,
    archive_last_week,
    at_utc,
    drain,
    in_threads,
    monday_of,
    snapshot,
    week_id,
)

from engine import ScoringEngine
from engine.domain.errors import (
    QuestAlreadyCompleted,
    QuestAlreadyStarted,
    QuestInactive,
    QuestNotOpen,
    QuestNotStarted,
    UnknownGoal,
    UnknownQuest,
    ValidationError,
)
from engine.domain.rules import reward_id

# -- weekly goals --------------------------------------------------------------------------


def test_goal_reached_by_the_crossing_award_once_per_week(eng: ScoringEngine, clock: Clock) -> None:
    monday = monday_of(clock.now.date())
    rewards = [eng.award("ann", "quiz_complete").rewards for _ in range(7)]
    assert [len(r) for r in rewards] == [0, 0, 0, 0, 1, 0, 0]  # the 5th quiz, and only it
    (reward,) = rewards[4]
    week = (monday - date(1970, 1, 1)).days // 7 + 1  # the engine's number of this week
    assert reward.activity_type == "weekly_goal" and reward.ref == "complete_quizzes"
    assert reward.points == 30
    assert reward.activity_id == reward_id(f"goal:ann:complete_quizzes:{week}")
    assert eng.status("ann").total_points == 7 * 25 + 30
    goal = eng.weekly_goal("ann", "complete_quizzes")
    assert (goal.current_progress, goal.is_completed, goal.week_start) == (
        7, True, monday,
    )  # fmt: skip
    assert eng.leaderboard("type:weekly_goal").rank("ann").score == 30

    clock.advance(days=6)  # next Monday: a new week starts from nothing
    assert eng.weekly_goal("ann", "complete_quizzes").current_progress == 0
    more = [eng.award("ann", "quiz_complete").rewards for _ in range(5)]
    assert [len(r) for r in more] == [0, 0, 0, 0, 1]
    assert more[4][0].activity_id != reward.activity_id
    # a late award for last week advances nothing of this week's
    eng.award("ann", "quiz_complete", occurred_at=clock.now - timedelta(days=3))
    assert eng.weekly_goal("ann", "complete_quizzes").current_progress == 5

    drain(eng)
    rows = eng.store.weekly_goal_rows(monday)
    assert [(g.user_id, g.goal_type, g.is_completed, g.current_progress) for g in rows] == [
        ("ann", "complete_quizzes", True, 5)
    ]
    assert eng.points_by_type("ann")["weekly_goal"] == 60


def test_goal_weeks_follow_the_users_zone(eng: ScoringEngine, clock: Clock) -> None:
    eng.set_profile("kiri", time_zone="Pacific/Auckland")
    sunday = clock.now.date() + timedelta(days=5)
    clock.now = at_utc(sunday, 12)  # Sunday UTC, Monday 00:00 or 01:00 in Auckland (UTC+12/13)
    for _ in range(4):
        eng.award("kiri", "project_create", amount=10)
    goal = eng.weekly_goal("kiri", "create_projects")
    assert goal.week_start == sunday + timedelta(days=1) and goal.current_progress == 4
    assert goal.is_completed  # the target is 2: the 2nd award completed it
    assert eng.status("kiri").points_by_type["weekly_goal"] == 30


def test_points_and_active_day_goals(eng: ScoringEngine, clock: Clock) -> None:
    clock.now = at_utc(monday_of(clock.now.date()), 9)  # Monday
    result = eng.award("pat", "special_event", amount=999)
    assert result.rewards == ()
    result = eng.award("pat", "comment", amount=1)  # 1,000 points of awards: earn_points done
    assert [r.ref for r in result.rewards] == ["earn_points"]
    # the reward's 30 points do not count towards the points goal
    assert eng.weekly_goal("pat", "earn_points").current_progress == 1000
    refs = []
    for _ in range(4):
        clock.advance(days=1)
        refs += [r.ref for r in eng.award("pat", "daily_login").rewards]
    assert refs == ["active_days"]  # the 5th active day of the week
    assert eng.weekly_goal("pat", "active_days").current_progress == 5
    # a streak bonus is no day of activity
    clock.advance(days=1)
    eng.award("pat", "streak_bonus", amount=5)
    assert eng.weekly_goal("pat", "active_days").current_progress == 5
    assert eng.status("pat").current_streak_days == 5


def test_replay_returns_the_same_rewards(eng: ScoringEngine) -> None:
    for _ in range(4):
        eng.award("rex", "quiz_complete")
    first = eng.award("rex", "quiz_complete", idempotency_key="k5")
    again = eng.award("rex", "quiz_complete", idempotency_key="k5")
    assert again.replayed and again.rewards == first.rewards and len(first.rewards) == 1
    assert eng.status("rex").total_points == 5 * 25 + 30


def test_unknown_goal(eng: ScoringEngine) -> None:
    with pytest.raises(UnknownGoal):
        eng.weekly_goal("ann", "climb_everest")


def test_create_weekly_goals_twice_writes_once(eng: ScoringEngine, clock: Clock) -> None:
    for i in range(5):  # active in the last weeks
        eng.award(f"u{i}", "comment", occurred_at=clock.now - timedelta(days=7 * i))
    monday = clock.now.date() + timedelta(days=6)
    clock.now = at_utc(monday)  # Monday 00:00 UTC
    added = eng.create_weekly_goals()
    goals = len(eng.rules.weekly_goals)
    assert added == 4 * goals  # u4 was last active 4 weeks before: not in the last 4 weeks
    assert eng.create_weekly_goals() == 0
    rows = eng.store.weekly_goal_rows(monday)
    assert len(rows) == 4 * goals and {r.user_id for r in rows} == {"u0", "u1", "u2", "u3"}
    assert all(r.week_end == monday + timedelta(days=6) and not r.is_completed for r in rows)


# -- side quests ---------------------------------------------------------------------------


def make_quest(engine: ScoringEngine, **over) -> int:
    fields = {"title": "Quiz master", "quest_type": "learning", "difficulty": "easy",
              "points_reward": 100, "activity_type": "quiz_complete",
              "target_count": 3}  # fmt: skip
    return engine.create_quest(**{**fields, **over}).id


def test_quest_completed_by_progress_rewards_once_under_16_threads(
    eng: ScoringEngine, real_redis: redis.Redis
) -> None:
    qid = make_quest(eng, activity_type="comment", target_count=20)
    eng.start_quest("zoe", qid)
    errors: list[Exception] = []
    results = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(eng.award("zoe", "comment", amount=1))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    in_threads(work)
    assert not errors
    quest_rewards = [w for r in results for w in r.rewards if w.activity_type == "side_quest"]
    assert len(quest_rewards) == 1 and quest_rewards[0].points == 100
    (mine,) = eng.user_quests("zoe")
    assert (mine.status, mine.current_progress, mine.points_awarded) == ("completed", 20, 100)
    state = eng.status("zoe")
    assert state.points_by_type["side_quest"] == 100
    assert state.total_points == 80 + 100 + 30  # 80 comments, the quest, post_comments goal
    with pytest.raises(QuestAlreadyCompleted):
        eng.complete_quest("zoe", qid)
    drain(eng)
    (row,) = eng.store.user_quest_rows("zoe")
    assert (row.status, row.current_progress, row.is_completed, row.points_awarded) == (
        "completed", 20, True, 100,
    )  # fmt: skip
    assert eng.points_by_type("zoe")["side_quest"] == 100


def test_explicit_complete_rewards_once_under_16_threads(eng: ScoringEngine) -> None:
    qid = make_quest(eng, points_reward=250)
    eng.start_quest("yan", qid)
    outcomes: list[object] = []

    def work() -> None:
        try:
            outcomes.append(eng.complete_quest("yan", qid))
        except QuestAlreadyCompleted as exc:
            outcomes.append(exc)

    in_threads(work)
    done = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(done) == 1 and len(outcomes) == 16
    assert done[0].reward.points == 250
    assert done[0].reward.activity_id == reward_id(f"quest:yan:{qid}")
    assert eng.status("yan").total_points == 250 and eng.status("yan").tier == "spark"
    # an award of the quest's type no longer moves it
    eng.award("yan", "quiz_complete")
    (mine,) = eng.user_quests("yan")
    assert mine.current_progress == 0 and mine.status == "completed"


def test_explicit_progress(eng: ScoringEngine) -> None:
    qid = make_quest(eng, target_count=10)
    eng.start_quest("val", qid)
    assert eng.advance_quest("val", qid, 4).quest.current_progress == 4
    result = eng.advance_quest("val", qid, 100)
    assert result.quest.current_progress == 10 and result.reward is not None
    with pytest.raises(QuestAlreadyCompleted):
        eng.advance_quest("val", qid)


def test_quest_bad_input_writes_nothing(eng: ScoringEngine, clock) -> None:
    inactive = make_quest(eng, is_active=False)
    ended = make_quest(eng, ends_at=clock.now - timedelta(minutes=1))
    future = make_quest(eng, starts_at=clock.now + timedelta(days=1))
    open_ = make_quest(eng)
    eng.start_quest("amy", open_)
    before = snapshot(eng)
    for call, error in (
        (lambda: eng.start_quest("amy", inactive), QuestInactive),
        (lambda: eng.start_quest("amy", ended), QuestNotOpen),
        (lambda: eng.start_quest("amy", future), QuestNotOpen),
        (lambda: eng.start_quest("amy", open_), QuestAlreadyStarted),
        (lambda: eng.start_quest("amy", 999_999), UnknownQuest),
        (lambda: eng.advance_quest("amy", inactive), QuestNotStarted),
        (lambda: eng.complete_quest("bob", open_), QuestNotStarted),
        (lambda: eng.advance_quest("amy", open_, 0), ValidationError),
        (lambda: eng.complete_quest("amy", 999_999), UnknownQuest),
    ):
        with pytest.raises(error):
            call()
    assert snapshot(eng) == before
    with pytest.raises(ValidationError):
        make_quest(eng, activity_type="weekly_goal")  # a quest cannot count rewards
    with pytest.raises(ValidationError):
        make_quest(eng, starts_at=clock.now, ends_at=clock.now - timedelta(hours=1))
    with pytest.raises(ValidationError):
        eng.update_quest(open_, points_reward=0)
    assert [q.id for q in eng.quests(active_only=True)] == [ended, future, open_]


def test_a_quest_ends(eng: ScoringEngine, clock) -> None:
    qid = make_quest(eng, ends_at=clock.now + timedelta(hours=1), target_count=2)
    eng.start_quest("eve", qid)
    eng.award("eve", "quiz_complete")
    clock.advance(hours=2)
    eng.award("eve", "quiz_complete")  # after the end: no progress
    (mine,) = eng.user_quests("eve")
    assert mine.current_progress == 1 and mine.status == "in_progress"


# -- streak bonuses --------------------------------------------------------------------------


def test_streak_bonus_once_per_user_and_day(eng: ScoringEngine, clock) -> None:
    start = clock.now
    for d in range(3):  # sam: 3 days in a row; lee: today only; old: 2 days ago
        clock.now = start + timedelta(days=d)
        eng.award("sam", "daily_login")
    eng.award("lee", "daily_login")
    eng.award("old", "daily_login", occurred_at=clock.now - timedelta(days=2))
    eng.redis.zadd(eng.keys.board(0, f"day:{clock.now.date()}"), {"old": -1})  # on the board
    report = eng.streak_bonuses(batch=1)
    assert report == {"users": 3, "awarded": 2, "already": 0, "skipped": 1}
    assert eng.status("sam").points_by_type["streak_bonus"] == 15
    assert eng.status("lee").points_by_type["streak_bonus"] == 5
    assert eng.status("sam").current_streak_days == 3  # the bonus is no day of activity
    again = eng.streak_bonuses()
    assert again == {"users": 3, "awarded": 0, "already": 2, "skipped": 1}
    assert eng.status("sam").points_by_type["streak_bonus"] == 15
    drain(eng)
    assert eng.points_by_type("sam")["streak_bonus"] == 15


def test_streak_bonus_is_capped_at_100_days(eng: ScoringEngine) -> None:
    eng.award("max", "daily_login")
    eng.redis.hset(eng.keys.user("max"), "streak", 250)
    eng.streak_bonuses()
    assert eng.status("max").points_by_type["streak_bonus"] == 500


# -- archived leaderboard periods ---------------------------------------------------------------


def test_ended_periods_archived_and_read_back(eng: ScoringEngine, clock: Clock) -> None:
    sunday, week, done = archive_last_week(eng, clock)
    assert ("day", sunday.isoformat(), 3) in done and ("week", week, 3) in done
    assert eng.archive_ended_periods() == []  # a second run adds nothing
    assert eng.archive_period("week", week_id(clock.now)) is None  # not ended
    eng.redis.delete(*eng.keys.boards(f"week:{week}"))  # the live board expires later
    users, entries = eng.archived_top("week", week, limit=10)
    assert users == 3
    assert [(e.rank, e.user_id, e.score) for e in entries] == [
        (1, "b", 70), (2, "a", 50), (2, "c", 50),
    ]  # fmt: skip
    assert eng.archived_rank("week", week, "c") == (2, 50, 3)
