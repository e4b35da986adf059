"""Tortoise ORM, initialised in a ``TortoiseContext`` of its own for each backend.

Engines: ``tortoise.backends.asyncpg``, ``tortoise.backends.mysql`` (aiomysql, as
asyncmy is not installed) and ``tortoise.backends.sqlite``, each with a pool of up to
10 connections where the backend has a pool. Writes run in ``in_transaction()``, which
commits, like every other column; ``update`` saves only the changed field.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from tortoise import fields
from tortoise.context import TortoiseContext
from tortoise.models import Model
from tortoise.transactions import in_transaction

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
)

__all__ = ["TortoiseUser", "implementations"]


class TortoiseUser(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=200, unique=True)
    age = fields.IntField(null=True)

    class Meta:
        table = "bench_users_tortoise"


def implementations(backend: Backend) -> list[Implementation]:
    return [TortoiseImpl()]


def tortoise_config(backend: Backend) -> dict[str, Any]:
    if backend.name == "sqlite":
        connection: dict[str, Any] = {
            "engine": "tortoise.backends.sqlite",
            "credentials": {"file_path": backend.path},
        }
    else:
        engine = "asyncpg" if backend.name == "postgres" else "mysql"
        connection = {
            "engine": f"tortoise.backends.{engine}",
            "credentials": {
                "host": backend.host,
                "port": backend.port,
                "user": backend.user,
                "password": backend.password,
                "database": backend.database,
                "minsize": 1,
                "maxsize": POOL_SIZE,
            },
        }
    # Tortoise caches generated SQL per (connection name, table): a name per backend
    # keeps SQLite's "?" placeholders out of PostgreSQL's queries.
    name = f"bench_{backend.name}"
    return {
        "connections": {name: connection},
        "apps": {"bench": {"models": [__name__], "default_connection": name}},
        "use_tz": False,
    }


class TortoiseImpl(Implementation):
    key = "tortoise"
    label = "Tortoise ORM"
    table = TortoiseUser.Meta.table

    async def setup(self, backend: Backend) -> None:
        await super().setup(backend)
        # The context must be entered in the task that runs the cases (the runner's
        # main task); tasks gathered from it inherit it.
        self._stack = contextlib.AsyncExitStack()
        ctx = await self._stack.enter_async_context(TortoiseContext())
        await ctx.init(config=tortoise_config(backend))
        await ctx.generate_schemas(safe=True)

    async def teardown(self) -> None:
        await self._stack.aclose()

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        get, id_ = TortoiseUser.get, data.hit_id
        assert (await get(id=id_)).id == id_

        async def op() -> object:
            return await get(id=id_)

        return Operation(op)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        get, ids = TortoiseUser.get, iter(data.miss_ids)

        async def op() -> object:
            return await get(id=next(ids))

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        rows = self.rows

        async def op() -> object:
            name, email, age = rows.row()
            async with in_transaction():
                return await TortoiseUser.create(name=name, email=email, age=age)

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        rows = self.rows
        objects = itertools.cycle(await TortoiseUser.filter(id__in=data.update_ids))

        async def op() -> object:
            user = next(objects)
            user.age = rows.next_age()
            async with in_transaction():
                await user.save(update_fields=["age"])
            return user

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        rows = self.rows

        async def op() -> object:
            users = [TortoiseUser(name=n, email=e, age=a) for n, e, a in rows.rows(BATCH_SIZE)]
            async with in_transaction():
                return await TortoiseUser.bulk_create(users)

        return Operation(op, rows_written=BATCH_SIZE)

    async def find_all(self, data: Dataset) -> Operation:
        async def op() -> object:
            return await TortoiseUser.filter(age=FIND_ALL_AGE).order_by("-id").limit(FIND_ALL_LIMIT)

        got = await op()
        assert isinstance(got, list) and len(got) == FIND_ALL_LIMIT
        return Operation(op)

    async def concurrent_find(self, data: Dataset) -> Operation:
        async def lookup(id_: int) -> object:
            return await TortoiseUser.get(id=id_)

        assert self.backend is not None
        note = (
            "Tortoise's sqlite client has one connection (no pool)"
            if self.backend.name == "sqlite"
            else "Tortoise pool maxsize=10"
        )
        return concurrent_lookups(lookup, data.concurrent_ids, note)
