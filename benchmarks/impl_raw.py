"""The baseline: the raw async drivers (asyncpg, aiomysql, aiosqlite) with hand-written SQL.

One connection for every case but the concurrent one, which uses the driver's own pool
(``asyncpg.create_pool`` / ``aiomysql.create_pool``) or, for SQLite, a small pool of
aiosqlite connections made here. Writes run in an explicit transaction and commit,
like every other column; reads run outside one (autocommit).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from benchmarks.backends import Backend
from benchmarks.common import (
    BATCH_SIZE,
    FIND_ALL_AGE,
    FIND_ALL_LIMIT,
    POOL_SIZE,
    Dataset,
    Implementation,
    Operation,
    concurrent_lookups,
    require_shards,
    top_rows,
)

__all__ = ["implementations"]

TABLE = "bench_users_raw"
COLUMNS = "id, name, email, age"
SHARD_NOTE = "one connection per shard, asyncio.gather, merged in Python"


def implementations(backend: Backend) -> list[Implementation]:
    cls = {"postgres": RawPostgres, "mysql": RawMysql, "sqlite": RawSqlite}[backend.name]
    return [cls()]


def _check_found(row: Any, what: str) -> None:
    if row is None:
        raise AssertionError(f"raw: {what} found nothing")


class RawPostgres(Implementation):
    key = "raw"
    label = "raw driver"
    table = TABLE
    driver = "asyncpg"

    SELECT_ID = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = $1"
    INSERT = f"INSERT INTO {TABLE} (name, email, age) VALUES ($1, $2, $3)"
    UPDATE = f"UPDATE {TABLE} SET age = $1 WHERE id = $2"
    FIND_ALL = f"SELECT {COLUMNS} FROM {TABLE} WHERE age = $1 ORDER BY id DESC LIMIT $2"

    async def setup(self, backend: Backend) -> None:
        import asyncpg

        await super().setup(backend)
        self.conn = await asyncpg.connect(**backend.asyncpg_kwargs)
        await self.conn.execute(
            f"CREATE TABLE {TABLE} (id SERIAL PRIMARY KEY, name VARCHAR(100) NOT NULL,"
            " email VARCHAR(200) NOT NULL UNIQUE, age INTEGER)"
        )
        self.pool: Any = None
        self.shard_conns: list[Any] = []

    async def teardown(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        for conn in [self.conn, *self.shard_conns]:
            await conn.close()

    async def _find(self, id_: int) -> Any:
        return await self.conn.fetchrow(self.SELECT_ID, id_)

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        conn, sql, id_ = self.conn, self.SELECT_ID, data.hit_id
        _check_found(await self._find(id_), "find_by_id")

        async def op() -> object:
            return await conn.fetchrow(sql, id_)

        return Operation(op)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        conn, sql, ids = self.conn, self.SELECT_ID, iter(data.miss_ids)

        async def op() -> object:
            return await conn.fetchrow(sql, next(ids))

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        conn, sql, rows = self.conn, self.INSERT + " RETURNING id", self.rows

        async def op() -> object:
            async with conn.transaction():
                return await conn.fetchval(sql, *rows.row())

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        conn, sql, rows, ids = self.conn, self.UPDATE, self.rows, itertools.cycle(data.update_ids)

        async def op() -> object:
            async with conn.transaction():
                return await conn.execute(sql, rows.next_age(), next(ids))

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        conn, sql, rows = self.conn, self.INSERT, self.rows

        async def op() -> object:
            async with conn.transaction():
                return await conn.executemany(sql, rows.rows(BATCH_SIZE))

        return Operation(op, rows_written=BATCH_SIZE, note="asyncpg executemany")

    async def insert_batch_copy(self, data: Dataset) -> Operation:
        conn, rows = self.conn, self.rows

        async def op() -> object:
            async with conn.transaction():
                return await conn.copy_records_to_table(
                    TABLE, records=rows.rows(BATCH_SIZE), columns=["name", "email", "age"]
                )

        return Operation(op, rows_written=BATCH_SIZE, note="asyncpg copy_records_to_table")

    async def find_all(self, data: Dataset) -> Operation:
        conn, sql = self.conn, self.FIND_ALL
        got = await conn.fetch(sql, FIND_ALL_AGE, FIND_ALL_LIMIT)
        assert len(got) == FIND_ALL_LIMIT, got

        async def op() -> object:
            return await conn.fetch(sql, FIND_ALL_AGE, FIND_ALL_LIMIT)

        return Operation(op)

    async def concurrent_find(self, data: Dataset) -> Operation:
        import asyncpg

        assert self.backend is not None
        self.pool = await asyncpg.create_pool(
            **self.backend.asyncpg_kwargs, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        pool, sql = self.pool, self.SELECT_ID

        async def lookup(id_: int) -> object:
            async with pool.acquire() as conn:
                return await conn.fetchrow(sql, id_)

        return concurrent_lookups(lookup, data.concurrent_ids, "asyncpg.create_pool(10)")

    async def sharded_find_all(self, data: Dataset) -> Operation:
        import asyncpg

        shards = require_shards(data)
        conns = [await asyncpg.connect(**b.asyncpg_kwargs) for b in shards.backends.values()]
        self.shard_conns = conns
        sql, args = self.FIND_ALL.replace(TABLE, shards.table), (FIND_ALL_AGE, FIND_ALL_LIMIT)

        async def op() -> object:
            return top_rows(await asyncio.gather(*(c.fetch(sql, *args) for c in conns)))

        top_rows(await asyncio.gather(*(c.fetch(sql, *args) for c in conns)), shards.expected_ids)
        return Operation(op, note=SHARD_NOTE)


class RawMysql(Implementation):
    key = "raw"
    label = "raw driver"
    table = TABLE
    driver = "aiomysql"

    SELECT_ID = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"
    INSERT = f"INSERT INTO {TABLE} (name, email, age) VALUES (%s, %s, %s)"
    UPDATE = f"UPDATE {TABLE} SET age = %s WHERE id = %s"
    FIND_ALL = f"SELECT {COLUMNS} FROM {TABLE} WHERE age = %s ORDER BY id DESC LIMIT %s"

    async def setup(self, backend: Backend) -> None:
        import aiomysql

        await super().setup(backend)
        # autocommit: a read is one round trip; writes say BEGIN ... COMMIT themselves.
        self.conn = await aiomysql.connect(**backend.aiomysql_kwargs, autocommit=True)
        async with self.conn.cursor() as cur:
            await cur.execute(
                f"CREATE TABLE {TABLE} (id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                " name VARCHAR(100) NOT NULL, email VARCHAR(200) NOT NULL UNIQUE,"
                " age INTEGER) ENGINE=InnoDB"
            )
        self.pool: Any = None
        self.shard_conns: list[Any] = []

    async def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()
            await self.pool.wait_closed()
        for conn in [self.conn, *self.shard_conns]:
            conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        conn = self.conn
        await conn.begin()
        try:
            async with conn.cursor() as cur:
                yield cur
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    async def _fetchone(self, sql: str, args: tuple[Any, ...]) -> Any:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, args)
            return await cur.fetchone()

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        fetchone, sql, id_ = self._fetchone, self.SELECT_ID, (data.hit_id,)
        _check_found(await fetchone(sql, id_), "find_by_id")

        async def op() -> object:
            return await fetchone(sql, id_)

        return Operation(op)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        fetchone, sql, ids = self._fetchone, self.SELECT_ID, iter(data.miss_ids)

        async def op() -> object:
            return await fetchone(sql, (next(ids),))

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        transaction, sql, rows = self._transaction, self.INSERT, self.rows

        async def op() -> object:
            async with transaction() as cur:
                await cur.execute(sql, rows.row())
                return cur.lastrowid

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        transaction, sql, rows = self._transaction, self.UPDATE, self.rows
        ids = itertools.cycle(data.update_ids)

        async def op() -> object:
            async with transaction() as cur:
                return await cur.execute(sql, (rows.next_age(), next(ids)))

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        transaction, sql, rows = self._transaction, self.INSERT, self.rows

        async def op() -> object:
            async with transaction() as cur:
                return await cur.executemany(sql, rows.rows(BATCH_SIZE))

        return Operation(op, rows_written=BATCH_SIZE, note="aiomysql executemany")

    async def find_all(self, data: Dataset) -> Operation:
        conn, sql, args = self.conn, self.FIND_ALL, (FIND_ALL_AGE, FIND_ALL_LIMIT)

        async def op() -> object:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                return await cur.fetchall()

        got = await op()
        assert isinstance(got, tuple | list) and len(got) == FIND_ALL_LIMIT, got
        return Operation(op)

    async def concurrent_find(self, data: Dataset) -> Operation:
        import aiomysql

        assert self.backend is not None
        self.pool = await aiomysql.create_pool(
            **self.backend.aiomysql_kwargs, minsize=POOL_SIZE, maxsize=POOL_SIZE, autocommit=True
        )
        pool, sql = self.pool, self.SELECT_ID

        async def lookup(id_: int) -> object:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(sql, (id_,))
                return await cur.fetchone()

        return concurrent_lookups(lookup, data.concurrent_ids, "aiomysql.create_pool(10)")

    async def sharded_find_all(self, data: Dataset) -> Operation:
        import aiomysql

        shards = require_shards(data)
        for b in shards.backends.values():
            self.shard_conns.append(await aiomysql.connect(**b.aiomysql_kwargs, autocommit=True))
        conns = self.shard_conns
        sql, args = self.FIND_ALL.replace(TABLE, shards.table), (FIND_ALL_AGE, FIND_ALL_LIMIT)

        async def fetch(conn: Any) -> Any:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                return await cur.fetchall()

        async def op() -> object:
            return top_rows(await asyncio.gather(*(fetch(c) for c in conns)))

        top_rows(await asyncio.gather(*(fetch(c) for c in conns)), shards.expected_ids)
        return Operation(op, note=SHARD_NOTE)


class RawSqlite(Implementation):
    key = "raw"
    label = "raw driver"
    table = TABLE
    driver = "aiosqlite"

    SELECT_ID = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = ?"
    INSERT = f"INSERT INTO {TABLE} (name, email, age) VALUES (?, ?, ?)"
    UPDATE = f"UPDATE {TABLE} SET age = ? WHERE id = ?"
    FIND_ALL = f"SELECT {COLUMNS} FROM {TABLE} WHERE age = ? ORDER BY id DESC LIMIT ?"

    async def setup(self, backend: Backend) -> None:
        import aiosqlite

        await super().setup(backend)
        # The sqlite3 module's default mode: it says BEGIN before the first write and
        # commit() says COMMIT; a read opens no transaction.
        self.conn = await aiosqlite.connect(backend.path)
        await self.conn.execute(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL,"
            " email VARCHAR(200) NOT NULL UNIQUE, age INTEGER)"
        )
        await self.conn.commit()
        self.pool: list[Any] = []
        self.shard_conns: list[Any] = []

    async def teardown(self) -> None:
        for conn in [*self.pool, *self.shard_conns, self.conn]:
            await conn.close()

    async def _find(self, id_: int) -> Any:
        rows = await self.conn.execute_fetchall(self.SELECT_ID, (id_,))
        return rows[0] if rows else None

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        conn, sql, args = self.conn, self.SELECT_ID, (data.hit_id,)
        _check_found(await self._find(data.hit_id), "find_by_id")

        async def op() -> object:
            rows = await conn.execute_fetchall(sql, args)
            return rows[0] if rows else None

        return Operation(op)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        conn, sql, ids = self.conn, self.SELECT_ID, iter(data.miss_ids)

        async def op() -> object:
            rows = await conn.execute_fetchall(sql, (next(ids),))
            return rows[0] if rows else None

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        conn, sql, rows = self.conn, self.INSERT, self.rows

        async def op() -> object:
            got = await conn.execute_insert(sql, rows.row())
            await conn.commit()
            return got

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        conn, sql, rows, ids = self.conn, self.UPDATE, self.rows, itertools.cycle(data.update_ids)

        async def op() -> object:
            await conn.execute(sql, (rows.next_age(), next(ids)))
            await conn.commit()
            return None

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        conn, sql, rows = self.conn, self.INSERT, self.rows

        async def op() -> object:
            await conn.executemany(sql, rows.rows(BATCH_SIZE))
            await conn.commit()
            return None

        return Operation(op, rows_written=BATCH_SIZE, note="aiosqlite executemany")

    async def find_all(self, data: Dataset) -> Operation:
        conn, sql, args = self.conn, self.FIND_ALL, (FIND_ALL_AGE, FIND_ALL_LIMIT)
        got = await conn.execute_fetchall(sql, args)
        assert len(got) == FIND_ALL_LIMIT, got

        async def op() -> object:
            return await conn.execute_fetchall(sql, args)

        return Operation(op)

    async def concurrent_find(self, data: Dataset) -> Operation:
        import aiosqlite

        assert self.backend is not None
        self.pool = [await aiosqlite.connect(self.backend.path) for _ in range(POOL_SIZE)]
        free: asyncio.Queue[Any] = asyncio.Queue()
        for conn in self.pool:
            free.put_nowait(conn)
        sql = self.SELECT_ID

        async def lookup(id_: int) -> object:
            conn = await free.get()
            try:
                rows = await conn.execute_fetchall(sql, (id_,))
            finally:
                free.put_nowait(conn)
            return rows[0] if rows else None

        note = "aiosqlite has no pool: 10 connections in an asyncio.Queue"
        return concurrent_lookups(lookup, data.concurrent_ids, note)

    async def sharded_find_all(self, data: Dataset) -> Operation:
        import aiosqlite

        shards = require_shards(data)
        for b in shards.backends.values():
            self.shard_conns.append(await aiosqlite.connect(b.path))
        conns = self.shard_conns
        sql, args = self.FIND_ALL.replace(TABLE, shards.table), (FIND_ALL_AGE, FIND_ALL_LIMIT)

        async def op() -> object:
            return top_rows(await asyncio.gather(*(c.execute_fetchall(sql, args) for c in conns)))

        parts = await asyncio.gather(*(c.execute_fetchall(sql, args) for c in conns))
        top_rows(parts, shards.expected_ids)
        return Operation(op, note=SHARD_NOTE)
