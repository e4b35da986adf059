"""SQLAlchemy Core: a ``Table`` and an ``AsyncEngine``, the layer dbnexus is built on.

Each operation is what a request handler would write: check a connection out of the
engine's pool (``engine.connect()`` for reads, ``engine.begin()`` for writes, which
commits), build the statement, execute it. The pool holds up to 10 connections
(``pool_size=10, max_overflow=0``); sequential cases only ever use one of them.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks.backends import Backend
from benchmarks.common import (
    BATCH_SIZE,
    FIND_ALL_AGE,
    FIND_ALL_LIMIT,
    POOL_SIZE,
    SHARDED_TABLE,
    Dataset,
    Implementation,
    Operation,
    concurrent_lookups,
    require_shards,
    top_rows,
)

__all__ = ["implementations"]

metadata = MetaData()
users = Table(
    "bench_users_core",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("email", String(200), nullable=False, unique=True),
    Column("age", Integer, nullable=True),
)


sharded_users = Table(
    SHARDED_TABLE, MetaData(), *(Column(c.name, c.type, primary_key=c.primary_key) for c in users.c)
)


def implementations(backend: Backend) -> list[Implementation]:
    return [CoreImpl()]


def engine_for(backend: Backend) -> AsyncEngine:
    """The engine both SQLAlchemy columns use: a pool of 10, nothing else changed."""
    return create_async_engine(backend.url, pool_size=POOL_SIZE, max_overflow=0)


class CoreImpl(Implementation):
    key = "core"
    label = "SQLAlchemy Core"
    table = users.name

    async def setup(self, backend: Backend) -> None:
        await super().setup(backend)
        self.engine = engine_for(backend)
        self.shard_engines: list[AsyncEngine] = []
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def teardown(self) -> None:
        for engine in [self.engine, *self.shard_engines]:
            await engine.dispose()

    async def _find(self, id_: int) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(users).where(users.c.id == id_))).first()

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        find, id_ = self._find, data.hit_id
        assert await find(id_) is not None

        async def op() -> object:
            return await find(id_)

        return Operation(op)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        find, ids = self._find, iter(data.miss_ids)

        async def op() -> object:
            return await find(next(ids))

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        engine, rows = self.engine, self.rows

        async def op() -> object:
            name, email, age = rows.row()
            async with engine.begin() as conn:
                result = await conn.execute(insert(users).values(name=name, email=email, age=age))
                return result.inserted_primary_key[0]

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        engine, rows, ids = self.engine, self.rows, itertools.cycle(data.update_ids)

        async def op() -> object:
            stmt = update(users).where(users.c.id == next(ids)).values(age=rows.next_age())
            async with engine.begin() as conn:
                return await conn.execute(stmt)

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        engine, rows = self.engine, self.rows

        async def op() -> object:
            params = [{"name": n, "email": e, "age": a} for n, e, a in rows.rows(BATCH_SIZE)]
            async with engine.begin() as conn:
                return await conn.execute(insert(users), params)

        return Operation(op, rows_written=BATCH_SIZE)

    async def find_all(self, data: Dataset) -> Operation:
        engine = self.engine

        async def op() -> object:
            stmt = (
                select(users)
                .where(users.c.age == FIND_ALL_AGE)
                .order_by(users.c.id.desc())
                .limit(FIND_ALL_LIMIT)
            )
            async with engine.connect() as conn:
                return (await conn.execute(stmt)).all()

        got = await op()
        assert isinstance(got, list) and len(got) == FIND_ALL_LIMIT
        return Operation(op)

    async def concurrent_find(self, data: Dataset) -> Operation:
        return concurrent_lookups(self._find, data.concurrent_ids, "engine pool_size=10")

    async def sharded_find_all(self, data: Dataset) -> Operation:
        shards = require_shards(data)
        self.shard_engines = [create_async_engine(url) for url in shards.urls.values()]
        engines, t = self.shard_engines, sharded_users

        async def one(engine: AsyncEngine) -> Any:
            stmt = (
                select(t)
                .where(t.c.age == FIND_ALL_AGE)
                .order_by(t.c.id.desc())
                .limit(FIND_ALL_LIMIT)
            )
            async with engine.connect() as conn:
                return (await conn.execute(stmt)).all()

        async def op() -> object:
            return top_rows(await asyncio.gather(*(one(e) for e in engines)))

        top_rows(await asyncio.gather(*(one(e) for e in engines)), shards.expected_ids)
        return Operation(op, note="an engine per shard, asyncio.gather, merged in Python")
