"""dbnexus with its full stack, through its public API only.

Two columns share the table ``bench_users_dbnexus``: one pool with the result cache on
(``cache_ttl=60``, ``cache_maxsize=10_000``) and one with it off (``cache_ttl=0``).
Both have permissions on (an RBAC policy: alice is an editor, editors may read, insert
and update the table), metrics on (always, in a fresh registry per pool) and audit on
(always for writes: each insert/update/batch writes its audit row(s) in the same
transaction). Every operation takes a fresh ``pool.session("alice")``, as a request
handler would.

Importing this module fails while dbnexus cannot be imported; the runner then prints
the columns as n/a with the error.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import dbnexus
from benchmarks.backends import Backend
from benchmarks.common import (
    BATCH_SIZE,
    FIND_ALL_AGE,
    FIND_ALL_LIMIT,
    POOL_SIZE,
    Dataset,
    Implementation,
    NotApplicable,
    Operation,
    concurrent_lookups,
)
from dbnexus import DbPool, Permissions, crud, entity, field

__all__ = ["MODEL", "BenchUser", "implementations", "policy_text"]

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
MODEL = """\
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def policy_text(table: str = TABLE) -> str:
    return "\n".join(
        [f"p, editor, {table}, {action}" for action in ("read", "insert", "update")]
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

    async def setup(self, backend: Backend) -> None:
        await super().setup(backend)
        self.pool = await DbPool.connect(
            backend.url,
            permissions=Permissions.from_text(MODEL, policy_text()),
            cache_ttl=60 if self.cache else 0,
            cache_maxsize=10_000,
            max_connections=POOL_SIZE,
        )
        await self.pool.migrate()

    async def teardown(self) -> None:
        await self.pool.close()

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
        # dbnexus.ShardManager routes keys, but no DbPool opens shards with it yet.
        if not hasattr(dbnexus, "ShardManager") or not _pool_takes_shards():
            raise NotApplicable("sharding not implemented yet")
        raise NotApplicable("sharding not implemented yet (DbPool takes shards: add this case)")


def _pool_takes_shards() -> bool:
    return "shards" in inspect.signature(DbPool.connect).parameters
