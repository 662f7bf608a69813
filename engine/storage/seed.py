"""Reading the seed app's database (PostgreSQL, the tables Django made for the seed's models).

The default table names are Django's for the seed's models: the custom user model's table
(``core_user``, as the seed's schema section names it) and the ``thrive_circle`` app's
``pointactivity``, ``weeklygoal``, ``sidequest`` and ``usersidequest``; a foreign key ``user``
is the column ``user_id``. Each table is read with a server-side cursor in chunks, ordered by
user (then time, for activities), all in one read-only REPEATABLE READ transaction: the import
sees one snapshot, so a user's stored total and the activities it is compared with are of the
same moment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from engine.domain.errors import SeedImportError
from engine.runtime.settings import normalize_sql_url


@dataclass(frozen=True)
class SeedTables:
    """The seed's table names (``name`` or ``schema.name``)."""

    users: str = "core_user"
    activities: str = "thrive_circle_pointactivity"
    goals: str = "thrive_circle_weeklygoal"
    quests: str = "thrive_circle_sidequest"
    user_quests: str = "thrive_circle_usersidequest"


#: The columns each table must have (Django's names for the seed's fields).
REQUIRED: dict[str, tuple[str, ...]] = {
    "users": ("id", "total_points"),
    "activities": ("id", "user_id", "amount", "activity_type", "description", "created_at"),
    "goals": ("id", "user_id", "goal_type", "week_start", "week_end", "current_progress",
              "target_progress", "is_completed", "points_reward"),
    "quests": ("id", "title", "description", "quest_type", "difficulty", "points_reward",
               "is_active"),
    "user_quests": ("id", "user_id", "side_quest_id", "status", "current_progress",
                    "target_progress", "is_completed", "points_awarded"),
}  # fmt: skip
#: Columns read when the table has them (AbstractUser's and the seed's ``completed_at``).
OPTIONAL: dict[str, tuple[str, ...]] = {
    "users": ("username", "first_name", "last_name", "date_joined", "last_activity_date"),
    "user_quests": ("started_at", "completed_at"),
}
#: The command line's flag naming each table.
FLAGS = {"users": "--users-table", "activities": "--activity-table", "goals": "--goal-table",
         "quests": "--quest-table", "user_quests": "--user-quest-table"}  # fmt: skip
#: Rows fetched per round trip of a server-side cursor.
FETCH = 2000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_INTEGER_TYPES = ("smallint", "integer", "bigint")


def _quoted(name: str) -> str:
    """``name`` or ``schema.name`` as a quoted SQL identifier; refuses anything else."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_NAME.match(p) for p in parts):
        raise SeedImportError(f"{name!r} is not a table name (name or schema.name)")
    return ".".join(f'"{p}"' for p in parts)


class SeedSource:
    """The seed's database, read in one snapshot. Use as a context manager."""

    def __init__(self, url: str, tables: SeedTables, *, user_id_column: str = "id") -> None:
        url = normalize_sql_url(url)
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            raise SeedImportError(f"--from: {url!r} is not a database URL") from None
        if backend != "postgresql":
            raise SeedImportError(f"--from: the seed's database must be PostgreSQL, not {backend}")
        if not _NAME.match(user_id_column):
            raise SeedImportError(f"{user_id_column!r} is not a column name")
        self.tables = tables
        self.user_id_column = user_id_column
        self._engine = create_engine(url, connect_args={"connect_timeout": 10})
        self._connection: Connection | None = None
        self.columns: dict[str, set[str]] = {}
        self._names = {"users": tables.users, "activities": tables.activities,
                       "goals": tables.goals, "quests": tables.quests,
                       "user_quests": tables.user_quests}  # fmt: skip

    def __enter__(self) -> SeedSource:
        try:
            connection = self._engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        except SQLAlchemyError as exc:
            self._engine.dispose()
            safe = make_url(self._engine.url).render_as_string(hide_password=True)
            raise SeedImportError(
                f"cannot reach the seed's database {safe}: {_first_line(exc)}"
            ) from None
        self._connection = connection
        connection.begin()
        try:
            self._check_schema()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection is not None:
            self._connection.rollback()  # read only: nothing to keep
            self._connection.close()
            self._connection = None
        self._engine.dispose()

    def name(self, table: str) -> str:
        """The seed's name of ``table`` (``users``, ``activities``...)."""
        return self._names[table]

    def _check_schema(self) -> None:
        types: dict[str, dict[str, str]] = {}
        for table, name in self._names.items():
            schema, _, bare = name.rpartition(".")
            _quoted(name)
            rows = self._conn().execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = :t AND table_schema = coalesce(:s, current_schema())"
                ),
                {"t": bare, "s": schema or None},
            )
            types[table] = {c: t for c, t in rows}
            if not types[table]:
                raise SeedImportError(
                    f"the seed's database has no table {name!r} (the {table} table; "
                    f"{FLAGS[table]} names another)"
                )
            self.columns[table] = set(types[table])
            wanted = REQUIRED[table] + ((self.user_id_column,) if table == "users" else ())
            missing = [c for c in wanted if c not in types[table]]
            if missing:
                raise SeedImportError(
                    f"table {name!r} has no column(s) {', '.join(missing)}"
                    + (" (--user-id-column)" if self.user_id_column in missing else "")
                )
        for table in ("users", "activities", "goals", "user_quests"):
            column = "id" if table == "users" else "user_id"
            if types[table][column] not in _INTEGER_TYPES:
                raise SeedImportError(
                    f"{self._names[table]}.{column} is {types[table][column]}: the import "
                    "expects Django's integer user ids"
                )

    def _conn(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("SeedSource is used outside its with block")
        return self._connection

    def count(self, table: str) -> int:
        q = f"SELECT count(*) FROM {_quoted(self._names[table])}"
        return int(self._conn().execute(text(q)).scalar_one())

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        """Every row of ``table`` as a dict of the columns the import reads: users by id, the
        others by user id (activities then by created_at, id), the quest catalog by id."""
        wanted = REQUIRED[table] + OPTIONAL.get(table, ())
        columns = [c for c in wanted if c in self.columns[table]]
        if table == "users" and self.user_id_column not in columns:
            columns.append(self.user_id_column)
        order = {"users": "id", "quests": "id", "activities": "user_id, created_at, id"}.get(
            table, "user_id, id"
        )
        names = ", ".join(f'"{c}"' for c in columns)  # (names the schema check found)
        q = f"SELECT {names} FROM {_quoted(self._names[table])} ORDER BY {order}"
        # a server-side cursor, FETCH rows a round trip (the statement's option, not the
        # connection's: the other tables' cursors and counts share the connection)
        statement = text(q).execution_options(stream_results=True, yield_per=FETCH)
        result = self._conn().execute(statement)
        for row in result.mappings():
            yield dict(row)


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
