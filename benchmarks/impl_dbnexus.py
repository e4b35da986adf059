"""dbnexus with its full stack, through its public API only.

Two columns share the table ``bench_users_dbnexus``: one pool with the result cache on
(``cache_ttl=60``, ``cache_maxsize=10_000``) and one with it off (``cache_ttl=0``).
Both have permissions on (an RBAC policy: alice is an editor, editors may read, insert
and update the table), metrics on (always, in a fresh registry per pool) and audit on
(always for writes: each insert/update/batch writes its audit row(s) in the same
transaction). Every operation takes a fresh ``pool.session("alice")``, as a request
handler would. Case 10 opens a second pool of each kind over four shard databases
(``DbPool.connect(shards=ShardManager.hash(urls))``) for a sharded twin of the entity.

Importing this module fails while dbnexus cannot be imported; the runner then prints
the columns as n/a with the error.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import dbnexus
from benchmarks.backends import Backend
from benchmarks.common import (
    BATCH_SIZE,
    FIND_ALL_AGE,
    FIND_ALL_LIMIT,
    POOL_SIZE,
    SHARDED_TABLE,
    Dataset,
    Implementation,
    NotApplicable,
    Operation,
    concurrent_lookups,
    require_shards,
)
from dbnexus import DbPool, Permissions, crud, entity, field
from dbnexus.permissions import RBAC_MODEL

__all__ = ["MODEL", "BenchUser", "implementations", "policy_text", "sharded_entity"]

TABLE = "bench_users_dbnexus"
USER = "alice"


@crud
@entity(table=TABLE)
class BenchUser:
    id: int | None = field(primary_key=True, default=None)
    name: str = field(max_length=100)
    email: str = field(max_length=200, unique=True)
    age: int | None = None


#: The RBAC model every dbnexus column (and the permission case) uses.
MODEL = RBAC_MODEL


def policy_text() -> str:
    return "\n".join(
        [
            f"p, editor, {table}, {action}"
            for table in (TABLE, SHARDED_TABLE)
            for action in ("read", "insert", "update")
        ]
        + [f"g, {USER}, editor"]
    )


def implementations(backend: Backend) -> list[Implementation]:
    return [DbnexusImpl(cache=True), DbnexusImpl(cache=False)]


class DbnexusImpl(Implementation):
    table = TABLE

    def __init__(self, *, cache: bool) -> None:
        self.cache = cache
        self.key = "dbnexus" if cache else "dbnexus_nocache"
        self.label = "dbnexus cache on" if cache else "dbnexus cache off"
        super().__init__()

    def _options(self) -> dict[str, Any]:
        return {
            "permissions": Permissions.from_text(MODEL, policy_text()),
            "cache_ttl": 60 if self.cache else 0,
            "cache_maxsize": 10_000,
            "max_connections": POOL_SIZE,
        }

    async def setup(self, backend: Backend) -> None:
        await super().setup(backend)
        self.shard_pool: Any = None
        self.pool = await DbPool.connect(backend.url, **self._options())
        await self.pool.migrate([BenchUser])

    async def teardown(self) -> None:
        for pool in (self.pool, self.shard_pool):
            if pool is not None:
                await pool.close()

    async def _find(self, id_: int) -> Any:
        async with self.pool.session(USER) as s:
            return await BenchUser.find_by_id(s, id_)

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        find, id_ = self._find, data.hit_id
        assert (await find(id_)).id == id_
        note = None if self.cache else "cache off: the same select as the other columns"

        async def op() -> object:
            return await find(id_)

        return Operation(op, note=note)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        find, ids = self._find, iter(data.miss_ids)

        async def op() -> object:
            return await find(next(ids))

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        pool, rows = self.pool, self.rows

        async def op() -> object:
            name, email, age = rows.row()
            async with pool.session(USER) as s:
                return await BenchUser.insert(s, BenchUser(name=name, email=email, age=age))

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        pool, rows = self.pool, self.rows
        async with pool.session(USER) as s:
            loaded = [await BenchUser.find_by_id(s, id_) for id_ in data.update_ids]
        objects = itertools.cycle(loaded)

        async def op() -> object:
            user = next(objects)
            user.age = rows.next_age()
            async with pool.session(USER) as s:
                return await BenchUser.update(s, user)

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        pool, rows = self.pool, self.rows

        async def op() -> object:
            users = [BenchUser(name=n, email=e, age=a) for n, e, a in rows.rows(BATCH_SIZE)]
            async with pool.session(USER) as s:
                return await BenchUser.insert_batch(s, users)

        return Operation(op, rows_written=BATCH_SIZE)

    async def find_all(self, data: Dataset) -> Operation:
        pool, where, limit = self.pool, {"age": FIND_ALL_AGE}, FIND_ALL_LIMIT

        async def op() -> object:
            async with pool.session(USER) as s:
                return await BenchUser.find_all(s, where=where, order_by="-id", limit=limit)

        got = await op()
        assert isinstance(got, list) and len(got) == FIND_ALL_LIMIT, got
        note = "cache on: repeated query served from the result cache" if self.cache else None
        return Operation(op, note=note)

    async def concurrent_find(self, data: Dataset) -> Operation:
        note = "cache on: after the first pass the lookups are cache hits" if self.cache else None
        return concurrent_lookups(self._find, data.concurrent_ids, note)

    async def session_create(self, data: Dataset) -> Operation:
        pool = self.pool

        async def op() -> object:
            async with pool.session(USER) as s:
                return s

        return Operation(op)

    async def sharded_find_all(self, data: Dataset) -> Operation:
        if not sharding_works():
            raise NotApplicable("sharding not implemented yet")
        shards = require_shards(data)
        cls = sharded_entity()
        self.shard_pool = await DbPool.connect(
            shards=dbnexus.ShardManager.hash(shards.urls), **self._options()
        )
        await self.shard_pool.migrate([cls])
        pool, where, limit = self.shard_pool, {"age": FIND_ALL_AGE}, FIND_ALL_LIMIT

        async def op() -> object:
            async with pool.session(USER) as s:
                return await cls.find_all(s, where=where, order_by="-id", limit=limit)

        got = await op()
        if [u.id for u in got] != shards.expected_ids:  # type: ignore[attr-defined]
            raise AssertionError(f"scatter-gather returned {got!r}")
        note = "cache on: the shards' results come from the result cache" if self.cache else None
        return Operation(op, note=note)

    def shard_router(self, urls: dict[str, str]) -> Callable[[str], str] | None:
        return dbnexus.ShardManager.hash(urls).shard_for_key if sharding_works() else None


def sharding_works() -> bool:
    """dbnexus has a ShardManager and DbPool.connect can open a pool over one."""
    return hasattr(dbnexus, "ShardManager") and (
        "shards" in inspect.signature(DbPool.connect).parameters
    )


@functools.cache
def sharded_entity() -> type:
    """The sharded twin of :class:`BenchUser`, declared on first use (only when needed)."""

    @crud
    @entity(table=SHARDED_TABLE, shard_key="email")
    class ShardedUser:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=100)
        email: str = field(max_length=200, unique=True)
        age: int | None = None

    return ShardedUser
