"""The three databases, and the untimed admin work done on them with the raw drivers.

:class:`Backend` turns the SQLAlchemy URL the suite is given into what each
library wants (asyncpg keywords, aiomysql keywords, a SQLite file path).
:class:`Admin` creates nothing of an implementation's own: it seeds, counts,
resets and drops the ``bench_`` tables between timed sections, always through
a connection of its own, so that a count also proves that a write was committed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

__all__ = ["BACKENDS", "SHARD_COUNT", "Admin", "Backend", "ShardSet", "backend_for"]

BACKENDS = ("sqlite", "postgres", "mysql")

DEFAULT_URLS = {
    "postgres": "postgresql+asyncpg://root@127.0.0.1:5432/test",
    "mysql": "mysql+aiomysql://root@127.0.0.1:3306/test",
}
SHARD_COUNT = 4
COLUMNS = ("name", "email", "age")
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

    async def try_lock(self) -> bool:
        """Take the suite's lock on this server for as long as this connection lives.

        The tables have fixed names, so two runs on one database would drop each
        other's tables; the second one is refused instead. (SQLite files are private.)
        """
        if self.backend.name == "postgres":
            rows = await self.fetch("SELECT pg_try_advisory_lock(hashtext('dbnexus-bench'))")
        elif self.mysql:
            rows = await self.fetch("SELECT GET_LOCK('dbnexus-bench', 0)")
        else:
            return True
        return bool(rows[0][0])

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

    async def seed(self, table: str, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """Insert *rows* in one transaction; return every id, ascending.

        A row is ``(name, email, age)``, or ``(id, name, email, age)`` to set the ids.
        """
        columns = ("id", "name", "email", "age") if rows and len(rows[0]) == 4 else COLUMNS
        p = ", ".join(self._param(i) for i in range(1, len(columns) + 1))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({p})"
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

    async def create_users_table(self, table: str) -> None:
        """The benchmark table's shape in this dialect (what the raw column creates)."""
        if self.backend.name == "postgres":
            ddl = "id SERIAL PRIMARY KEY"
        elif self.mysql:
            ddl = "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY"
        else:
            ddl = "id INTEGER PRIMARY KEY"
        await self.execute(
            f"CREATE TABLE {table} ({ddl}, name VARCHAR(100) NOT NULL,"
            " email VARCHAR(200) NOT NULL UNIQUE, age INTEGER)"
        )

    async def create_database(self, name: str) -> None:
        await self.drop_database(name)
        await self.execute(f"CREATE DATABASE {name}")

    async def drop_database(self, name: str) -> None:
        force = " WITH (FORCE)" if self.backend.name == "postgres" else ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await self.execute(f"DROP DATABASE IF EXISTS {name}{force}")

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


@dataclass
class ShardSet:
    """Four shard databases for the scatter-gather case: ``bench_<db>_shard<i>`` databases
    on the server (files for SQLite), each with the benchmark table, seeded with ids unique
    across shards and each row on the shard the router names for its email.
    """

    backends: dict[str, Backend]
    table: str
    expected_ids: list[int]  # what find_all (age = FIND_ALL_AGE, id desc, limit) returns

    @property
    def urls(self) -> dict[str, str]:
        return {name: b.url for name, b in self.backends.items()}

    @classmethod
    def plan(cls, backend: Backend, workdir: Path, table: str) -> ShardSet:
        backends: dict[str, Backend] = {}
        # Named after the main database too, so runs on two databases of one server
        # do not share shards.
        prefix = "bench_" + re.sub(r"\W", "_", backend.database or "main")
        for i in range(SHARD_COUNT):
            name, database = f"s{i}", f"{prefix}_shard{i}"
            if backend.name == "sqlite":
                path = str(workdir / f"{database}.sqlite3")
                backends[name] = Backend("sqlite", f"sqlite+aiosqlite:///{path}", path=path)
            else:
                url = make_url(backend.url).set(database=database)
                backends[name] = dataclasses.replace(
                    backend, url=url.render_as_string(hide_password=False), database=database
                )
        return cls(backends, table, [])

    async def create(
        self,
        admin: Admin,
        rows: Sequence[tuple[int, str, str, int | None]],
        route: Callable[[str], str],
        expected_ids: list[int],
    ) -> None:
        """Create the databases and tables, and put each row on ``route(email)``."""
        by_shard: dict[str, list[tuple[int, str, str, int | None]]] = {n: [] for n in self.backends}
        for row in rows:
            by_shard[route(row[2])].append(row)
        for name, shard in self.backends.items():
            if admin.backend.name != "sqlite":
                await admin.create_database(shard.database)
            shard_admin = Admin(shard)
            await shard_admin.open()
            try:
                await shard_admin.create_users_table(self.table)
                await shard_admin.seed(self.table, by_shard[name])
            finally:
                await shard_admin.close()
        self.expected_ids = expected_ids

    async def drop(self, admin: Admin) -> None:
        if admin.backend.name != "sqlite":  # SQLite files go with the temporary directory
            for shard in self.backends.values():
                await admin.drop_database(shard.database)
