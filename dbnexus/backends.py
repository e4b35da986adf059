"""Driver adapters: run compiled SQL on a raw driver connection.

One small class per driver (asyncpg, aiomysql, aiosqlite) with the same few
coroutines. Each one is chosen from the URL's driver name and imports its
driver only when used. Driver errors are translated into the dbnexus tree here
and nowhere else (:meth:`Driver.translate`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import ConfigError, DatabaseError, IntegrityError, MissingDependencyError

__all__ = [
    "ALL",
    "COMMIT",
    "EXEC",
    "FLUSH",
    "INSERT",
    "ONE",
    "RETURNING",
    "Driver",
    "Held",
    "LongText",
    "Then",
    "driver_for",
]

Row = Sequence[Any]


class Then:
    """What follows a held query in the same trip (drivers with ``runs_python``):
    ``fn(row)`` gets the query's first row (None if none) and returns the statements
    to run next, as ``(sql, params)`` pairs."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Row | None], Iterable[tuple[str, Sequence[Any]]]]) -> None:
        self.fn = fn


#: a statement sent ahead of another in one trip, and what takes the key it
#: generated (an INSERT whose key is read only once it has run) or what follows
#: it (:class:`Then`), if anything
Held = tuple[str, Sequence[Any], Callable[[Any], None] | Then | None]


class LongText(str):
    """A long text parameter (a JSON document) that aiomysql sends as a hex literal.

    PyMySQL escapes a string in Python one character at a time; ``str.hex`` is
    one C call. Wrap it in ``CONVERT(... USING utf8mb4)`` in the SQL: a hex
    literal is a binary string. Other drivers bind it as the plain string it is.
    """

    __slots__ = ()


# what the last statement of :meth:`Driver.run` returns
ONE = "one"  #: its first row (or None)
ALL = "all"  #: its rows
INSERT = "insert"  #: the key it generated
RETURNING = "returning"  #: the first column of its first row (INSERT ... RETURNING)
EXEC = "exec"  #: nothing
COMMIT = "commit"  #: nothing: the statement is ignored, the transaction commits
FLUSH = "flush"  #: nothing: the statement is ignored (only ``before`` runs)


class Driver:
    """Executes SQL on one kind of driver connection."""

    name = "?"
    #: can send several statements in one trip (:meth:`run`)
    pipelines = False
    #: runs Python between the statements of one trip (a held query's :class:`Then`)
    runs_python = False
    #: the statement :meth:`begin` sends
    begin_sql = "BEGIN"
    #: savepoint statements (all three dialects use the standard syntax)
    savepoint_sql = "SAVEPOINT {}"
    release_sql = "RELEASE SAVEPOINT {}"
    rollback_to_sql = "ROLLBACK TO SAVEPOINT {}"

    async def setup(self, conn: Any) -> None:
        """Prepare a new connection once (session settings)."""

    async def fetch_one(self, conn: Any, sql: str, params: Sequence[Any]) -> Row | None:
        raise NotImplementedError

    async def fetch_all(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        raise NotImplementedError

    async def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> None:
        """Run a statement that returns no rows."""
        raise NotImplementedError

    async def insert(self, conn: Any, sql: str, params: Sequence[Any], returning: bool) -> Any:
        """Run an INSERT of one row; return the new primary key."""
        raise NotImplementedError

    async def execute_script(self, conn: Any, sql: str) -> None:
        """Run a parameterless statement (BEGIN, SAVEPOINT ...)."""
        await self.execute(conn, sql, ())

    async def run(
        self, conn: Any, before: Sequence[Held], last: str, sql: str, params: Sequence[Any]
    ) -> Any:
        """Run ``before`` and then ``sql``, in one trip to the database; return what
        ``last`` (ONE, ALL, INSERT, RETURNING, EXEC, COMMIT, FLUSH: ``before`` only)
        says of ``sql``.

        Of ``before``, only the keys their own callbacks want are read. Only for
        drivers with ``pipelines``. A failing statement stops the ones after it.
        """
        raise NotImplementedError

    async def begin(self, conn: Any) -> None:
        await self.execute_script(conn, self.begin_sql)

    async def commit(self, conn: Any) -> None:
        await self.execute_script(conn, "COMMIT")

    async def rollback(self, conn: Any) -> None:
        await self.execute_script(conn, "ROLLBACK")

    def translate(self, exc: BaseException) -> DatabaseError | None:
        """The dbnexus error for a driver exception, or None if it is not the driver's."""
        return None


class AsyncpgDriver(Driver):
    name = "asyncpg"

    def __init__(self) -> None:
        import asyncpg

        self._integrity = asyncpg.exceptions.IntegrityConstraintViolationError
        self._errors = (asyncpg.PostgresError, asyncpg.InterfaceError)

    async def fetch_one(self, conn: Any, sql: str, params: Sequence[Any]) -> Row | None:
        return await conn.fetchrow(sql, *params)

    async def fetch_all(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        return await conn.fetch(sql, *params)

    async def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> None:
        await conn.execute(sql, *params)

    async def execute_script(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def insert(self, conn: Any, sql: str, params: Sequence[Any], returning: bool) -> Any:
        return await conn.fetchval(sql, *params)

    def translate(self, exc: BaseException) -> DatabaseError | None:
        if isinstance(exc, self._integrity):
            return IntegrityError(f"constraint violated: {exc}", exc)
        if isinstance(exc, (*self._errors, OSError)):
            return DatabaseError(f"postgresql error: {exc}", exc)
        return None


class AiomysqlDriver(Driver):
    name = "aiomysql"
    pipelines = True

    def __init__(self) -> None:
        import pymysql
        from pymysql.converters import escape_string

        self._integrity = pymysql.err.IntegrityError
        self._errors = (pymysql.err.MySQLError,)
        # the characters PyMySQL escapes, read off its own escape_string
        special = "".join(c for c in map(chr, range(128)) if escape_string(c) != c)
        self._special = re.compile(f"[{re.escape(special)}]").search

    def render(self, conn: Any, sql: str, params: Sequence[Any]) -> str:
        """``sql`` with ``params`` rendered exactly as ``cursor.execute`` renders them,
        with shortcuts, and a :class:`LongText` as a hex literal.

        PyMySQL's escaping costs about a microsecond per value. A string with no
        character it escapes, an int and None come out the same without it.
        """
        special, escape = self._special, conn.escape
        out = []
        for p in params:
            kind = type(p)
            if kind is str and special(p) is None:
                out.append(f"'{p}'")
            elif kind is int:
                out.append(str(p))
            elif p is None:
                out.append("NULL")
            elif kind is LongText:
                out.append(f"X'{p.encode().hex()}'")
            else:
                out.append(escape(p))
        return sql % tuple(out)

    async def setup(self, conn: Any) -> None:
        # transactions are explicit (BEGIN ... COMMIT); a bare read must not open
        # a REPEATABLE READ snapshot that would outlive the operation
        await conn.autocommit(True)

    # one statement is a run of one: rendered and read the same way
    async def fetch_one(self, conn: Any, sql: str, params: Sequence[Any]) -> Row | None:
        return await self.run(conn, (), ONE, sql, params)

    async def fetch_all(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        return await self.run(conn, (), ALL, sql, params)

    async def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> None:
        await self.run(conn, (), EXEC, sql, params)

    async def insert(self, conn: Any, sql: str, params: Sequence[Any], returning: bool) -> Any:
        return await self.run(conn, (), RETURNING if returning else INSERT, sql, params)

    async def run(
        self, conn: Any, before: Sequence[Held], last: str, sql: str, params: Sequence[Any]
    ) -> Any:
        cur = await conn.cursor()
        try:
            # aiomysql connections accept several statements per query
            if last == COMMIT:
                sql, params = "COMMIT", ()
            parts = [self.render(conn, s, p) for s, p, _ in before]
            if last != FLUSH:
                parts.append(self.render(conn, sql, params))
            await cur.execute(";\n".join(parts))
            for _, _, on_key in before:
                if callable(on_key):  # (no Then here: aiomysql does not run Python)
                    on_key(cur.lastrowid)
                await cur.nextset()
            if last == ONE:
                return await cur.fetchone()
            if last == ALL:
                return list(await cur.fetchall())
            if last == RETURNING:
                return (await cur.fetchone())[0]
            return cur.lastrowid if last == INSERT else None
        finally:
            # reads what is left of the results, so the connection is ready again
            await cur.close()

    async def begin(self, conn: Any) -> None:
        await conn.begin()

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    def translate(self, exc: BaseException) -> DatabaseError | None:
        if isinstance(exc, self._integrity):
            return IntegrityError(f"constraint violated: {exc}", exc)
        if isinstance(exc, (*self._errors, OSError)):
            return DatabaseError(f"mysql error: {exc}", exc)
        return None


class AiosqliteDriver(Driver):
    name = "aiosqlite"
    # IMMEDIATE takes the write lock up front: a deferred transaction that
    # later writes can fail with "database is locked" without waiting
    begin_sql = "BEGIN IMMEDIATE"

    def __init__(self) -> None:
        import sqlite3

        import aiosqlite

        # run() queues a function for aiosqlite's thread as its own methods do
        # (Connection._execute); without it, one trip per statement
        self.pipelines = callable(getattr(aiosqlite.Connection, "_execute", None))
        self._integrity = sqlite3.IntegrityError
        self._errors = (sqlite3.Error, ValueError)

    @property
    def runs_python(self) -> bool:  # type: ignore[override]
        # run() is a Python function in aiosqlite's thread: it can read a row and go on
        return self.pipelines

    async def setup(self, conn: Any) -> None:
        await conn.execute("PRAGMA foreign_keys=ON")

    async def fetch_one(self, conn: Any, sql: str, params: Sequence[Any]) -> Row | None:
        rows = await conn.execute_fetchall(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        return list(await conn.execute_fetchall(sql, params))

    async def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> None:
        # one trip to aiosqlite's thread (execute + close would be two)
        await conn.execute_fetchall(sql, params)

    async def insert(self, conn: Any, sql: str, params: Sequence[Any], returning: bool) -> Any:
        if returning:
            rows = await conn.execute_fetchall(sql, params)
            return rows[0][0]
        row = await conn.execute_insert(sql, params)
        return None if row is None else row[0]

    async def run(
        self, conn: Any, before: Sequence[Held], last: str, sql: str, params: Sequence[Any]
    ) -> Any:
        # one trip to aiosqlite's thread for all of them (its queue of calls is
        # what aiosqlite's own methods use)
        return await conn._execute(_run_sqlite, conn._conn, before, last, sql, params)

    async def begin(self, conn: Any) -> None:
        await conn.execute_fetchall(self.begin_sql, ())

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    def translate(self, exc: BaseException) -> DatabaseError | None:
        if isinstance(exc, self._integrity):
            return IntegrityError(f"constraint violated: {exc}", exc)
        if isinstance(exc, self._errors):
            return DatabaseError(f"sqlite error: {exc}", exc)
        return None


def _run_sqlite(db: Any, before: Sequence[Held], last: str, sql: str, params: Sequence[Any]) -> Any:
    """:meth:`AiosqliteDriver.run` in aiosqlite's thread, on its ``sqlite3`` connection."""
    for s, p, after in before:
        cur = db.execute(s, p)
        try:
            if isinstance(after, Then):
                for s2, p2 in after.fn(cur.fetchone()):
                    db.execute(s2, p2).close()
            elif after is not None:
                after(cur.lastrowid)
        finally:
            cur.close()
    if last == COMMIT:
        db.commit()
        return None
    if last == FLUSH:
        return None
    cur = db.execute(sql, params)
    try:
        if last == INSERT:
            return cur.lastrowid
        if last == EXEC:
            return None
        rows = cur.fetchall()
        if last == ALL:
            return rows
        first = rows[0] if rows else None
        return first[0] if last == RETURNING else first  # type: ignore[index]
    finally:
        cur.close()


# SQLAlchemy driver name -> (adapter, module to import, extra that installs it)
_DRIVERS: dict[str, tuple[type[Driver], str, str]] = {
    "asyncpg": (AsyncpgDriver, "asyncpg", "postgres"),
    "aiomysql": (AiomysqlDriver, "aiomysql", "mysql"),
    "aiosqlite": (AiosqliteDriver, "aiosqlite", "sqlite"),
}
# URL schemes without a driver name, and the async driver dbnexus uses for them
DEFAULT_DRIVERS = {
    "postgresql": "asyncpg",
    "postgres": "asyncpg",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
    "sqlite": "aiosqlite",
}


def require_driver(driver: str) -> None:
    """Import the driver module, or raise MissingDependencyError naming the extra."""
    try:
        _, module, extra = _DRIVERS[driver]
    except KeyError:
        known = ", ".join(sorted(_DRIVERS))
        raise ConfigError(f"unsupported driver {driver!r}; dbnexus supports {known}") from None
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra) from exc


def driver_for(driver: str) -> Driver:
    """The adapter for a SQLAlchemy async driver name (``asyncpg``, ``aiomysql``, ``aiosqlite``)."""
    require_driver(driver)
    return _DRIVERS[driver][0]()
