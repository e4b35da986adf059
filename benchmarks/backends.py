"""The three databases, and the untimed admin work done on them with the raw drivers.

:class:`Backend` turns the SQLAlchemy URL the suite is given into what each
library wants (asyncpg keywords, aiomysql keywords, a SQLite file path).
:class:`Admin` creates nothing of an implementation's own: it seeds, counts,
resets and drops the ``bench_`` tables between timed sections, always through
a connection of its own, so that a count also proves that a write was committed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

__all__ = ["BACKENDS", "Admin", "Backend", "backend_for"]

BACKENDS = ("sqlite", "postgres", "mysql")

DEFAULT_URLS = {
    "postgres": "postgresql+asyncpg://root@127.0.0.1:5432/test",
    "mysql": "mysql+aiomysql://root@127.0.0.1:3306/test",
}
URL_ENV = {
    "postgres": "DBNEXUS_TEST_POSTGRES_URL",
    "mysql": "DBNEXUS_TEST_MYSQL_URL",
}


@dataclass(frozen=True)
class Backend:
    """One database the suite runs on, with its connection details in every form needed."""

    name: str
    url: str
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    database: str = ""
    path: str = ""  # SQLite file

    @property
    def asyncpg_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password or None,
            "database": self.database,
        }

    @property
    def aiomysql_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database,
        }


def backend_for(name: str, workdir: Path) -> Backend:
    """Build the :class:`Backend` called *name*; SQLite gets a fresh file in *workdir*."""
    if name == "sqlite":
        path = str(workdir / "bench.sqlite3")
        return Backend(name, f"sqlite+aiosqlite:///{path}", path=path)
    if name not in URL_ENV:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    url = os.environ.get(URL_ENV[name]) or DEFAULT_URLS[name]
    parsed = make_url(url)
    expected = "postgresql" if name == "postgres" else "mysql"
    if parsed.get_backend_name() != expected:
        raise ValueError(f"{URL_ENV[name]}={url!r} is not a {expected} URL")
    return Backend(
        name,
        url,
        host=parsed.host or "127.0.0.1",
        port=parsed.port or (5432 if name == "postgres" else 3306),
        user=parsed.username or "",
        password=parsed.password or "",
        database=parsed.database or "",
    )


class Admin:
    """Untimed housekeeping on one backend through a raw driver connection of its own."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._conn: Any = None

    async def open(self) -> None:
        b = self.backend
        if b.name == "postgres":
            import asyncpg

            self._conn = await asyncpg.connect(**b.asyncpg_kwargs)
        elif b.name == "mysql":
            import aiomysql

            self._conn = await aiomysql.connect(**b.aiomysql_kwargs, autocommit=True)
        else:
            import aiosqlite

            self._conn = await aiosqlite.connect(b.path, isolation_level=None)
            # WAL is a property of the file, so every implementation shares it (Tortoise
            # would switch the file to WAL on its own anyway); synchronous stays at FULL.
            await self._conn.execute("PRAGMA journal_mode=WAL")

    async def close(self) -> None:
        if self._conn is not None:
            if self.backend.name == "mysql":
                self._conn.close()
            else:
                await self._conn.close()
            self._conn = None

    def _param(self, n: int) -> str:
        if self.backend.name == "postgres":
            return f"${n}"
        return "%s" if self.mysql else "?"

    @property
    def mysql(self) -> bool:
        return self.backend.name == "mysql"

    async def execute(self, sql: str, *args: Any) -> None:
        if self.backend.name == "postgres":
            await self._conn.execute(sql, *args)
        elif self.mysql:
            async with self._conn.cursor() as cur:
                await cur.execute(sql, args or None)
        else:
            await self._conn.execute(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.backend.name == "postgres":
            return [tuple(r) for r in await self._conn.fetch(sql, *args)]
        if self.mysql:
            async with self._conn.cursor() as cur:
                await cur.execute(sql, args or None)
                return list(await cur.fetchall())
        async with self._conn.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def server_version(self) -> str:
        if self.backend.name == "postgres":
            row = await self.fetch("SHOW server_version")
            return f"PostgreSQL {row[0][0]}"
        if self.mysql:
            row = await self.fetch("SELECT VERSION()")
            return f"MySQL/MariaDB {row[0][0]}"
        row = await self.fetch("SELECT sqlite_version()")
        return f"SQLite {row[0][0]} (WAL, synchronous=FULL)"

    async def table_names(self) -> set[str]:
        if self.backend.name == "postgres":
            rows = await self.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        elif self.mysql:
            rows = await self.fetch("SHOW TABLES")
        else:
            rows = await self.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}

    async def drop_table(self, table: str) -> None:
        with warnings.catch_warnings():  # MySQL warns "Unknown table" for IF EXISTS
            warnings.simplefilter("ignore")
            await self.execute(f"DROP TABLE IF EXISTS {table}")

    async def seed(self, table: str, rows: Sequence[tuple[str, str, int | None]]) -> list[int]:
        """Insert *rows* (name, email, age) in one transaction; return every id, ascending."""
        p = [self._param(i) for i in (1, 2, 3)]
        sql = f"INSERT INTO {table} (name, email, age) VALUES ({p[0]}, {p[1]}, {p[2]})"
        if self.backend.name == "postgres":
            async with self._conn.transaction():
                await self._conn.executemany(sql, rows)
        elif self.mysql:
            await self._conn.begin()
            async with self._conn.cursor() as cur:
                await cur.executemany(sql, rows)
            await self._conn.commit()
        else:
            await self._conn.execute("BEGIN")
            await self._conn.executemany(sql, rows)
            await self._conn.execute("COMMIT")
        await self.analyze(table)
        return [r[0] for r in await self.fetch(f"SELECT id FROM {table} ORDER BY id")]

    async def analyze(self, table: str) -> None:
        """Refresh planner statistics (and, on PostgreSQL, clear dead rows) for *table*."""
        if self.backend.name == "postgres":
            await self.execute(f"VACUUM ANALYZE {table}")
        elif self.mysql:
            await self.fetch(f"ANALYZE TABLE {table}")
        else:
            await self.execute(f"ANALYZE {table}")

    async def count_above(self, table: str, last_seed_id: int) -> int:
        p = self._param(1)
        rows = await self.fetch(f"SELECT COUNT(*) FROM {table} WHERE id > {p}", last_seed_id)
        return int(rows[0][0])

    async def delete_above(self, table: str, last_seed_id: int) -> None:
        """Remove what a write case added, so the next case starts from the seeded table."""
        await self.execute(f"DELETE FROM {table} WHERE id > {self._param(1)}", last_seed_id)
        await self.analyze(table)

    async def ages(self, table: str, ids: Sequence[int]) -> dict[int, int | None]:
        listed = ", ".join(str(int(i)) for i in ids)
        rows = await self.fetch(f"SELECT id, age FROM {table} WHERE id IN ({listed})")
        return {r[0]: r[1] for r in rows}
