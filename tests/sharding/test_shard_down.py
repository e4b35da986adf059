"""A shard that is down fails only the operations that need it, with a ShardError naming it.

The down shard is a URL nothing answers on: a closed port of the layout's
server backend (port 1), or for the all-SQLite layout a file in a directory
that does not exist. ``DbPool.connect`` still opens; the other shards keep working.
"""

import uuid

import pytest
from shard_support import keys_for_each_shard, make_order, shard_rows

from dbnexus import DbPool, ShardError, ShardManager, entity_info
from dbnexus.audit import audit_table

pytestmark = pytest.mark.backend

DOWN = "down"
DEAD_URLS = {
    "sqlite4": "sqlite+aiosqlite:////nonexistent-dbnexus-dir/shard.db",
    "postgres2": "postgresql+asyncpg://root@127.0.0.1:1/test",
    "mysql2": "mysql+aiomysql://root@127.0.0.1:1/test",
    "mixed": "postgresql+asyncpg://root@127.0.0.1:1/test",
}


async def _pool_with_a_down_shard(make_sharded, layout, Order) -> DbPool:
    shards = ShardManager.hash({**layout.urls, DOWN: DEAD_URLS[layout.name]})
    pool = await make_sharded(Order, shards=shards, migrate=False, cache_ttl=0)
    tables = [entity_info(Order).table, audit_table]
    for name, db in pool.databases.items():
        if name != DOWN:
            await db.run_sync(lambda c: [t.create(c, checkfirst=True) for t in tables])
    return pool


def _names_down(err: pytest.ExceptionInfo[ShardError]) -> None:
    assert err.value.shard == DOWN
    assert repr(DOWN) in str(err.value)


async def test_down_shard_fails_only_its_own_operations(make_sharded, layout, unique):
    Order = make_order(unique("orders"))
    pool = await _pool_with_a_down_shard(make_sharded, layout, Order)
    assert set(pool.databases) == {*layout.urls, DOWN}
    keys = keys_for_each_shard(pool)
    live = [n for n in pool.shards.names if n != DOWN]
    async with pool.session("alice") as s:
        made = {n: await Order.insert(s, Order(tenant_id=keys[n], item="x")) for n in live}
        with pytest.raises(ShardError) as err:
            await Order.insert(s, Order(tenant_id=keys[DOWN], item="x"))
        _names_down(err)

        for n, o in made.items():
            assert await Order.find_by_id(s, o.id, shard_key=keys[n]) == o
            o.qty = 5
            await Order.update(s, o)
            assert await Order.count(s, where={"tenant_id": keys[n]}) == 1
            assert await Order.find_all(s, where={"tenant_id__in": [keys[n]]}) == [o]
        with pytest.raises(ShardError) as err:
            await Order.find_by_id(s, uuid.uuid4(), shard_key=keys[DOWN])
        _names_down(err)
        # without a shard-key hint or condition every shard is needed
        with pytest.raises(ShardError) as err:
            await Order.find_by_id(s, made[live[0]].id)
        _names_down(err)
        with pytest.raises(ShardError) as err:
            await Order.find_all(s, order_by="item", limit=5)
        _names_down(err)
        with pytest.raises(ShardError) as err:
            await Order.count(s)
        _names_down(err)
        with pytest.raises(ShardError) as err:
            await Order.count(s, where={"tenant_id__in": [keys[live[0]], keys[DOWN]]})
        _names_down(err)
        # a transaction on a live shard is unaffected
        async with s.transaction():
            extra = await Order.insert(s, Order(tenant_id=keys[live[0]], item="tx"))
            await Order.delete(s, made[live[0]].id, shard_key=keys[live[0]])
    async with pool.session("alice") as s:
        assert await Order.find_by_id(s, extra.id, shard_key=keys[live[0]]) == extra
    rows = await shard_rows(pool, Order, live)
    assert [r[0] for r in rows[live[0]]] == [extra.id]
    for n in live[1:]:
        assert [(r[0], r[3]) for r in rows[n]] == [(made[n].id, 5)]


async def test_admin_operations_needing_a_down_shard_name_it(make_sharded, layout, unique):
    Order = make_order(unique("orders"))
    pool = await _pool_with_a_down_shard(make_sharded, layout, Order)
    with pytest.raises(ShardError) as err:
        await pool.audit_log()
    _names_down(err)
    with pytest.raises(ShardError) as err:
        await pool.migrate(entities=[Order])
    _names_down(err)
