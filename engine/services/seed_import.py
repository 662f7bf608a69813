"""Import the seed app's database: its audit trail, weekly goals and side quests into SQL,
then Redis rebuilt from SQL (``scoring import-seed``).

Each seed ``PointActivity`` becomes a ``point_activity`` row whose id is uuid5 of
``seed:pointactivity:<pk>``, with the user's state after it computed as the award script
would (running total, tier, level, streak in UTC days: the seed stores no time zones), so a
re-run inserts nothing twice. Each user gets a ``user_score`` snapshot with the profile
(username, first and last name). Weekly goals and user quests are upserted on their natural
keys ((user, goal, week), (user, quest)); the quest catalog keeps the seed's ids.

Every row is validated with the engine's own checks before anything is written; a bad row is
reported (table, pk, why) and skipped on its own, the user's other rows still imported. Rows
are written a chunk of users per transaction, so a user's rows are in SQL all or not at all.

Drift: the seed updates ``total_points`` with ``F()`` and inserts the activity in two
statements, so they can disagree. A user drifted when the stored total differs from the sum
of the user's imported activities. ``trust="activities"`` (the default) reports them and keeps
the audit trail's sum; ``trust="totals"`` also writes one ``adjustment`` activity per drifted
user for the difference (id uuid5 of ``seed:adjustment:<pk>``, dated at the user's last
activity), so the engine's total is the stored one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from engine.domain import validation
from engine.domain.errors import ValidationError
from engine.domain.events import MAX_STORED_AMOUNT
from engine.domain.keys import user_digest
from engine.domain.periods import day_to_date, local_day, parse_timestamp, week_of
from engine.domain.results import UserQuest
from engine.domain.rules import ADJUSTMENT_TYPE, QUEST_REWARD_TYPE, REWARD_TYPES, Rules
from engine.services.recovery import RebuildReport, rebuild
from engine.storage.seed import SeedSource, SeedTables
from engine.storage.store import SqlStore

#: Namespace of the ids of imported rows: uuid5 of ``seed:<model>:<pk>``.
SEED_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5e6f-9d0c-1b2a3c4d5e6f")
#: The description of a drift correction (``trust="totals"``).
CORRECTION_REASON = "import: seed total_points correction"
#: Problems and drifts kept in the report (all are counted, and passed to the callbacks).
KEPT = 1000

Trust = Literal["activities", "totals"]


def seed_id(model: str, pk: object) -> uuid.UUID:
    """The engine's id of an imported seed row (``model``: ``pointactivity``, ``adjustment``)."""
    return uuid.uuid5(SEED_NAMESPACE, f"seed:{model}:{pk}")


@dataclass(frozen=True)
class Problem:
    """A seed row not imported: its table, primary key and why."""

    table: str
    pk: object
    reason: str

    def __str__(self) -> str:
        return f"{self.table} pk={self.pk}: {self.reason}"


@dataclass(frozen=True)
class DriftedUser:
    """A user whose stored ``total_points`` differs from the sum of the imported activities."""

    user_id: str
    stored_total: int
    activities_sum: int
    corrected: bool  # an adjustment for the difference was written

    def __str__(self) -> str:
        diff = self.stored_total - self.activities_sum
        what = "corrected by an adjustment" if self.corrected else "the activities' sum kept"
        return (
            f"user {self.user_id}: stored total_points {self.stored_total}, activities sum "
            f"{self.activities_sum} ({diff:+d}; {what})"
        )


@dataclass
class SeedImportReport:
    users: int = 0
    activities: int = 0  # seed activities imported (already present or new)
    new_activities: int = 0  # rows point_activity did not have
    goals: int = 0
    quests: int = 0
    user_quests: int = 0
    corrections: int = 0
    skipped: int = 0
    drifted: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first KEPT
    drifts: list[DriftedUser] = field(default_factory=list)  # the first KEPT
    rebuild: RebuildReport | None = None
    seconds: float = 0.0


@dataclass
class _User:
    pk: int
    user_id: str | None  # None: the user row is bad (its rows are skipped)
    row: dict[str, Any]
    activities: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    quests: list[dict[str, Any]] = field(default_factory=list)


class _Importer:
    def __init__(
        self, rules: Rules, source: SeedSource, *, trust: Trust, now: datetime,
        on_problem: Callable[[Problem], None] | None,
        on_drift: Callable[[DriftedUser], None] | None,
    ) -> None:  # fmt: skip
        self.rules, self.source, self.trust, self.now = rules, source, trust, now
        self.on_problem, self.on_drift = on_problem, on_drift
        self.report = SeedImportReport()
        self.quest_ids: set[int] = set()

    # -- reporting ------------------------------------------------------------------------

    def problem(self, table: str, pk: object, reason: str) -> None:
        p = Problem(self.source.name(table), pk, reason)
        self.report.skipped += 1
        if len(self.report.problems) < KEPT:
            self.report.problems.append(p)
        if self.on_problem is not None:
            self.on_problem(p)

    def drift(self, d: DriftedUser) -> None:
        self.report.drifted += 1
        if len(self.report.drifts) < KEPT:
            self.report.drifts.append(d)
        if self.on_drift is not None:
            self.on_drift(d)

    # -- the quest catalog ------------------------------------------------------------------

    def quest_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A ``side_quest`` row from a seed SideQuest; ValidationError if it is bad. Its
        activity type: the seed's ``quest_type`` when it names a type the rules know (not a
        reward), else ``side_quest``, which no award advances."""
        quest_type = _text(row["quest_type"], "quest_type", 30)
        kind = quest_type if quest_type in self.rules.activity_types else QUEST_REWARD_TYPE
        if kind in REWARD_TYPES:
            kind = QUEST_REWARD_TYPE
        return {
            "id": _whole(row["id"], "id", minimum=1),
            "title": _text(row["title"], "title", 200, empty=False),
            "description": _long_text(row["description"], "description"),
            "quest_type": quest_type,
            "difficulty": _text(row["difficulty"], "difficulty", 20),
            "points_reward": _whole(row["points_reward"], "points_reward"),
            "is_active": _flag(row["is_active"], "is_active"),
            "activity_type": kind,
            "target_count": 1,
            "starts_at": None,
            "ends_at": None,
        }

    # -- one user ---------------------------------------------------------------------------

    def user_id(self, row: dict[str, Any]) -> str:
        column = self.source.user_id_column
        value = row[column]
        if isinstance(value, int | uuid.UUID) and not isinstance(value, bool):
            value = str(value)
        return validation.user_id(value)

    def profile(self, u: _User) -> dict[str, Any]:
        row = u.row
        username = row.get("username")
        names = " ".join(str(row.get(c) or "").strip() for c in ("first_name", "last_name"))
        display = names.strip() or None
        try:
            if username is not None:
                validation.profile_text(username, field="username", limit=validation.MAX_USERNAME)
            if display is not None:
                validation.profile_text(display, field="display_name",
                                        limit=validation.MAX_DISPLAY_NAME)  # fmt: skip
        except ValidationError as exc:
            self.problem("users", u.pk, f"profile not imported ({exc})")
            username = display = None
        return {"user_id": u.user_id, "username": username, "display_name": display,
                "time_zone": None, "profile_version": 1, "updated_at": self.now,
                "tier": self.rules.tier_names[0]}  # fmt: skip

    def user_rows(self, u: _User) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The user's point_activity rows and state snapshot (None: no activity)."""
        assert u.user_id is not None
        run = _Running(self.rules)
        rows: list[dict[str, Any]] = []
        for a in u.activities:
            try:
                amount, kind, description, at = check_activity(self.rules, a, now=self.now)
            except ValidationError as exc:
                self.problem("activities", a["id"], str(exc))
                continue
            streak = self.rules.activity_types[kind].streak
            rows.append(run.row(seed_id("pointactivity", a["id"]), u.user_id, amount, kind,
                                description, at, streak))  # fmt: skip
        self.report.activities += len(rows)
        stored = u.row["total_points"]
        if (
            isinstance(stored, bool)
            or not isinstance(stored, int)
            or not (0 <= stored <= MAX_STORED_AMOUNT)
        ):
            self.problem("users", u.pk, f"total_points {stored!r} is not a total: not compared")
        elif stored != run.total:
            diff = stored - run.total
            correct = self.trust == "totals"
            if correct and abs(diff) > MAX_STORED_AMOUNT:
                self.problem("users", u.pk, f"a correction of {diff} is too large")
                correct = False
            if correct:
                at = rows[-1]["created_at"] if rows else self.undated(u.row)
                rows.append(run.row(seed_id("adjustment", u.pk), u.user_id, diff,
                                    ADJUSTMENT_TYPE, CORRECTION_REASON, at, False))  # fmt: skip
                self.report.corrections += 1
            self.drift(DriftedUser(u.user_id, stored, stored - diff, correct))
        if not rows:
            return rows, None
        last = rows[-1]
        state = {
            "user_id": u.user_id, "total_points": run.total, "tier": last["tier_at_time"],
            "level": last["level"], "current_streak_days": last["current_streak_days"],
            "longest_streak_days": last["longest_streak_days"],
            "last_activity_date": last["last_activity_date"], "state_version": run.version,
            "updated_at": self.now,
        }  # fmt: skip
        return rows, state

    def undated(self, row: dict[str, Any]) -> datetime:
        """When a correction of a user without activities is dated: the user's
        last_activity_date (midnight UTC), else date_joined, else now."""
        day = row.get("last_activity_date")
        if isinstance(day, date):
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        joined = row.get("date_joined")
        if isinstance(joined, datetime):
            return joined if joined.tzinfo else joined.replace(tzinfo=UTC)
        return self.now

    def goal_rows(self, u: _User) -> list[dict[str, Any]]:
        out: dict[tuple[str, date], dict[str, Any]] = {}
        for g in u.goals:
            try:
                start = _day(g["week_start"], "week_start", self.now)
                end = _day(g["week_end"], "week_end", self.now)
                if end < start:
                    raise ValidationError("week_end is before week_start", field="week_end")
                row = {
                    "user_id": u.user_id, "goal_type": _text(g["goal_type"], "goal_type", 30,
                                                             empty=False),
                    "week_start": start, "week_end": end,
                    "current_progress": _whole(g["current_progress"], "current_progress"),
                    "target_progress": _whole(g["target_progress"], "target_progress",
                                              minimum=1),
                    "is_completed": _flag(g["is_completed"], "is_completed"),
                    "points_reward": _whole(g["points_reward"], "points_reward"),
                }  # fmt: skip
            except ValidationError as exc:
                self.problem("goals", g["id"], str(exc))
                continue
            key = (str(row["goal_type"]), start)
            if key in out:
                self.problem("goals", g["id"], "a second goal of its type for the same week")
                continue
            out[key] = row
        return list(out.values())

    def user_quest_rows(self, u: _User) -> list[dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for q in u.quests:
            try:
                quest = q["side_quest_id"]
                if quest not in self.quest_ids:
                    raise ValidationError(f"side quest {quest!r} was not imported")
                done = q.get("completed_at")
                row = {
                    "user_id": u.user_id, "side_quest_id": quest,
                    "status": _text(q["status"], "status", 20, empty=False),
                    "current_progress": _whole(q["current_progress"], "current_progress"),
                    "target_progress": _whole(q["target_progress"], "target_progress"),
                    "is_completed": _flag(q["is_completed"], "is_completed"),
                    "points_awarded": _whole(q["points_awarded"], "points_awarded"),
                    "completed_at": _time(done, "completed_at", self.now) if done else None,
                }  # fmt: skip
                started = q.get("started_at") or done
                row["started_at"] = _time(started, "started_at", self.now) if started else self.now
            except ValidationError as exc:
                self.problem("user_quests", q["id"], str(exc))
                continue
            if quest in out:
                self.problem("user_quests", q["id"], "a second row of the same user and quest")
                continue
            out[quest] = row
        return list(out.values())


def check_activity(
    rules: Rules, row: dict[str, Any], *, now: datetime
) -> tuple[int, str, str, datetime]:
    """(amount, type, description, created_at) of a seed PointActivity row, checked as an
    award's are (a type the rules know, a positive amount within its cap, a description
    PostgreSQL and SQLite can store, a time from 2000 to now); ValidationError if not."""
    if row["activity_type"] == ADJUSTMENT_TYPE:
        raise ValidationError("activity type 'adjustment' is reserved for the engine's corrections")
    spec = validation.activity_type(rules, row["activity_type"])
    if row["amount"] is None:
        raise ValidationError("amount is missing", field="amount")
    amount = validation.amount(spec, row["amount"])
    description = validation.description(row["description"])
    if row["created_at"] is None:
        raise ValidationError("created_at is missing", field="created_at")
    return amount, row["activity_type"], description, parse_timestamp(row["created_at"], now=now)


class _Running:
    """A user's state after each activity, as the award script keeps it (UTC days, no
    freezes): total, tier, level, current and longest streak, last active day, version."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.total = self.version = self.current = self.longest = 0
        self.last_day: int | None = None

    def row(
        self, activity_id: uuid.UUID, user_id: str, amount: int, kind: str, description: str,
        at: datetime, streak: bool,
    ) -> dict[str, Any]:  # fmt: skip
        self.total += amount
        self.version += 1
        day = local_day(at, "UTC")
        if streak and (self.last_day is None or day > self.last_day):
            gap = None if self.last_day is None else day - self.last_day
            self.current = self.current + 1 if gap == 1 else 1
            self.last_day = day
            self.longest = max(self.longest, self.current)
        return {
            "id": activity_id, "user_id": user_id, "amount": amount, "activity_type": kind,
            "description": description, "tier_at_time": self.rules.tier_for(self.total),
            "created_at": at, "total_points": self.total,
            "level": self.rules.level_for(self.total), "current_streak_days": self.current,
            "longest_streak_days": self.longest,
            "last_activity_date": day_to_date(day if self.last_day is None else self.last_day),
            "version": self.version, "frozen_days": None, "base_amount": None,
            "multiplier": None, "event_id": None,
        }  # fmt: skip


def _users(source: SeedSource, im: _Importer) -> Iterator[_User]:
    """Each seed user with its activities, goals and quests (merged from four streams, each
    ordered by user); rows of users not in the user table are reported and skipped."""
    streams = {t: _peekable(source.rows(t)) for t in ("activities", "goals", "user_quests")}
    into = {"activities": "activities", "goals": "goals", "user_quests": "quests"}
    for row in source.rows("users"):
        pk = row["id"]
        for table, stream in streams.items():
            while stream.head is not None and stream.head["user_id"] < pk:
                orphan = stream.pop()
                im.problem(table, orphan["id"], f"user {orphan['user_id']} does not exist")
        try:
            user_id: str | None = im.user_id(row)
        except ValidationError as exc:
            im.problem("users", pk, f"{exc}; the user's rows are skipped")
            user_id = None
        u = _User(pk, user_id, row)
        for table, stream in streams.items():
            bucket = getattr(u, into[table])
            while stream.head is not None and stream.head["user_id"] == pk:
                bucket.append(stream.pop())
        if user_id is None:
            for table in streams:
                for r in getattr(u, into[table]):
                    im.problem(table, r["id"], "its user was not imported")
            continue
        yield u
    for table, stream in streams.items():
        while stream.head is not None:
            orphan = stream.pop()
            im.problem(table, orphan["id"], f"user {orphan['user_id']} does not exist")


class _peekable:
    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self._rows = rows
        self.head: dict[str, Any] | None = next(rows, None)

    def pop(self) -> dict[str, Any]:
        assert self.head is not None
        row, self.head = self.head, next(self._rows, None)
        return row


def import_seed(
    engine: Any,
    store: SqlStore,
    source_url: str,
    *,
    tables: SeedTables | None = None,
    user_id_column: str = "id",
    trust: Trust = "activities",
    chunk_users: int = 500,
    rebuild_redis: bool = True,
    progress: Callable[[int, int], None] | None = None,
    rebuild_progress: Callable[[int, int], None] | None = None,
    on_problem: Callable[[Problem], None] | None = None,
    on_drift: Callable[[DriftedUser], None] | None = None,
) -> SeedImportReport:
    """Import the seed's database at ``source_url`` into ``store``, then rebuild the engine's
    Redis state from SQL (drain the outbox first: see :func:`rebuild`).

    ``tables``: the seed's table names; ``user_id_column``: the user table's column whose
    value is the engine's user id (``id``: the primary key as a string); ``trust``: which side
    wins for a drifted user (see the module's doc); ``progress(done, total)``: activities read.

    Raises:
        SeedImportError: the seed's database is unreachable, or lacks a table or column.
    """
    if trust not in ("activities", "totals"):
        raise ValueError(f"trust must be 'activities' or 'totals', not {trust!r}")
    started = time.monotonic()
    before = store.count_activities()
    with SeedSource(source_url, tables or SeedTables(), user_id_column=user_id_column) as source:
        im = _Importer(engine.rules, source, trust=trust, now=engine.clock(),
                       on_problem=on_problem, on_drift=on_drift)  # fmt: skip
        report = im.report
        quests = []
        for row in source.rows("quests"):
            try:
                quests.append(im.quest_row(row))
            except ValidationError as exc:
                im.problem("quests", row["id"], str(exc))
        added, taken = store.import_quests(quests)
        for quest_id in taken:
            im.problem("quests", quest_id, "the engine has another quest with this id")
        im.quest_ids = {q["id"] for q in quests} - set(taken)
        catalog = {q["id"]: q for q in quests if q["id"] in im.quest_ids}
        report.quests = len(im.quest_ids)
        total = source.count("activities")
        done = 0
        batch: dict[str, list[dict[str, Any]]] = {
            "activities": [], "states": [], "profiles": [], "goals": [], "quests": []
        }  # fmt: skip
        users_in_batch = 0
        # users deleted from the engine stay deleted: a re-run after a deletion imports none of
        # their rows (their tombstones name them by digest)
        gone = {digest for digest, _, _ in store.tombstones(im.now)}
        for u in _users(source, im):
            if gone and u.user_id is not None and user_digest(u.user_id) in gone:
                im.problem("users", u.pk, "the user was deleted from the engine: not imported")
                continue
            activities, state = im.user_rows(u)
            batch["activities"] += activities
            if state is not None:
                batch["states"].append(state)
            batch["profiles"].append(im.profile(u))
            batch["goals"] += im.goal_rows(u)
            batch["quests"] += im.user_quest_rows(u)
            users_in_batch += 1
            done += len(u.activities)
            if users_in_batch >= chunk_users:
                _flush(store, batch, report, users_in_batch, engine if rebuild_redis else None,
                       catalog)  # fmt: skip
                users_in_batch = 0
                if progress is not None:
                    progress(done, total)
        _flush(store, batch, report, users_in_batch, engine if rebuild_redis else None, catalog)
        if progress is not None:
            progress(total, total)
    report.new_activities = store.count_activities() - before
    if rebuild_redis:
        report.rebuild = rebuild(engine, store, progress=rebuild_progress)
    report.seconds = time.monotonic() - started
    return report


def _flush(
    store: SqlStore, batch: dict[str, list[dict[str, Any]]], report: SeedImportReport,
    users: int, engine: Any, catalog: dict[int, dict[str, Any]],
) -> None:  # fmt: skip
    """Write a chunk of users' rows in one transaction; then, with ``engine``, their quests
    and this week's goal progress to Redis (which :func:`rebuild` does not restore)."""
    if users:
        # a drift correction already written by an earlier run stays the one: when the seed
        # gained activities since, this run dates it later, and on a partitioned table (whose
        # key is (id, created_at)) it would be a second row with the same id
        corrections = [str(a["id"]) for a in batch["activities"]
                       if a["activity_type"] == ADJUSTMENT_TYPE]  # fmt: skip
        if corrections:
            written = store.users_of_activities(corrections)
            batch["activities"][:] = [a for a in batch["activities"] if str(a["id"]) not in written]
        store.write(batch["activities"], batch["states"], batch["profiles"],
                    quests=batch["quests"], goals=batch["goals"])  # fmt: skip
        if engine is not None:
            _engagement_to_redis(engine, catalog, batch["quests"], batch["goals"])
    report.users += users
    report.goals += len(batch["goals"])
    report.user_quests += len(batch["quests"])
    for rows in batch.values():
        rows.clear()


def _engagement_to_redis(
    engine: Any, catalog: dict[int, dict[str, Any]], quests: list[dict[str, Any]],
    goals: list[dict[str, Any]],
) -> None:  # fmt: skip
    """The users' side quests (so a quest completed in the seed cannot be completed and paid
    again) and their progress on the rules' goals of this week (UTC), in Redis. A record
    Redis already holds is kept."""
    keys, r, now = engine.keys, engine.redis, engine.clock()
    pipe = r.pipeline(transaction=False)
    for q in quests:
        quest, done, uid = catalog[q["side_quest_id"]], q["is_completed"], q["user_id"]
        record = UserQuest(
            quest_id=quest["id"], title=quest["title"], activity_type=quest["activity_type"],
            status="completed" if done else "in_progress",
            current_progress=q["current_progress"], target_progress=q["target_progress"],
            points_reward=q["points_awarded"] if done else quest["points_reward"],
            points_awarded=q["points_awarded"] if done else 0, started_at=q["started_at"],
            completed_at=(q["completed_at"] or q["started_at"]) if done else None, ends_at=None,
        ).record()  # fmt: skip
        if done:
            pipe.hsetnx(keys.quests_done(uid), str(quest["id"]), record)
            pipe.hdel(keys.quests(uid), str(quest["id"]))
        else:
            pipe.hsetnx(keys.quests(uid), str(quest["id"]), record)
    today = local_day(now, "UTC")
    monday = day_to_date(today) - timedelta(days=day_to_date(today).weekday())
    progress: dict[str, dict[str, int]] = {}
    for g in goals:
        if g["week_start"] == monday and g["goal_type"] in engine.rules.weekly_goals:
            progress.setdefault(g["user_id"], {})[f"g:{g['goal_type']}"] = g["current_progress"]
    pipe.execute()
    users = sorted(progress)
    held = [r.hgetall(keys.goals(u)) for u in users] if users else []
    week = week_of(today)
    for uid, h in zip(users, held):
        if h and int(h.get("wk", -1)) > week:
            continue
        same_week = bool(h) and int(h.get("wk", -1)) == week
        fields = {f: max(n, int(h.get(f, 0))) if same_week else n for f, n in progress[uid].items()}
        if not same_week:
            pipe.delete(keys.goals(uid))
        pipe.hset(keys.goals(uid), mapping={"wk": week, **fields})
    pipe.execute()


# -- field checks (each raises ValidationError naming the field) ----------------------------


def _text(value: object, name: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be text", field=name)
    if not empty and not value:
        raise ValidationError(f"{name} must not be empty", field=name)
    return validation.profile_text(value, field=name, limit=limit)


def _long_text(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise ValidationError(f"{name} must be text without NUL characters", field=name)
    if not value.isprintable() and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValidationError(f"{name} is not valid Unicode", field=name)
    return value


def _whole(value: object, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be a whole number", field=name)
    if not minimum <= value <= MAX_STORED_AMOUNT:
        raise ValidationError(f"{name} {value} is out of range", field=name)
    return value


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false", field=name)
    return value


def _day(value: object, name: str, now: datetime) -> date:
    if not isinstance(value, date) or isinstance(value, datetime):
        raise ValidationError(f"{name} must be a date", field=name)
    if value.year < 2000 or value > now.date() + timedelta(days=366):
        raise ValidationError(f"{name} {value} is out of range", field=name)
    return value


def _time(value: object, name: str, now: datetime) -> datetime:
    try:
        return parse_timestamp(value, now=now)
    except ValidationError as exc:
        raise ValidationError(f"{name}: {exc}", field=name) from None
