"""Driver adapters: run compiled SQL on a raw driver connection.

One small class per driver (asyncpg, aiomysql, aiosqlite) with the same few
coroutines. Each one is chosen from the URL's driver name and imports its
driver only when used. Driver errors are translated into the dbnexus tree here
and nowhere else (:meth:`Driver.translate`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, DatabaseError, IntegrityError, MissingDependencyError

__all__ = ["Driver", "driver_for"]

Row = Sequence[Any]


class Driver:
    """Executes SQL on one kind of driver connection."""

    name = "?"
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

    async def begin(self, conn: Any) -> None:
        await self.execute_script(conn, "BEGIN")

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

    def __init__(self) -> None:
        import pymysql

        self._integrity = pymysql.err.IntegrityError
        self._errors = (pymysql.err.MySQLError,)

    async def setup(self, conn: Any) -> None:
        # transactions are explicit (BEGIN ... COMMIT); a bare read must not open
        # a REPEATABLE READ snapshot that would outlive the operation
        await conn.autocommit(True)

    async def fetch_one(self, conn: Any, sql: str, params: Sequence[Any]) -> Row | None:
        cur = await conn.cursor()
        try:
            await cur.execute(sql, params)
            return await cur.fetchone()
        finally:
            await cur.close()

    async def fetch_all(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        cur = await conn.cursor()
        try:
            await cur.execute(sql, params)
            return list(await cur.fetchall())
        finally:
            await cur.close()

    async def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> None:
        cur = await conn.cursor()
        try:
            await cur.execute(sql, params or None)
        finally:
            await cur.close()

    async def insert(self, conn: Any, sql: str, params: Sequence[Any], returning: bool) -> Any:
        cur = await conn.cursor()
        try:
            await cur.execute(sql, params)
            if returning:
                row = await cur.fetchone()
                return row[0]
            return cur.lastrowid
        finally:
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

    def __init__(self) -> None:
        import sqlite3

        self._integrity = sqlite3.IntegrityError
        self._errors = (sqlite3.Error, ValueError)

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

    async def begin(self, conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that
        # later writes can fail with "database is locked" without waiting
        await conn.execute("BEGIN IMMEDIATE")

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
