"""A transaction is bound to the shard of its first operation.

An operation routing to another shard is refused with a ShardError, the whole
transaction is rolled back (nothing partial committed on any shard, no ``ok``
audit row anywhere), later operations in it and its commit are TransactionErrors.
"""

import uuid

import pytest
from shard_support import keys_for_each_shard, make_order, shard_audit, shard_rows

from dbnexus import ShardError, TransactionError

pytestmark = pytest.mark.backend


async def _insert(s, Order, key):
    return await Order.insert(s, Order(tenant_id=key, item="x"))


async def _batch(s, Order, key):
    return await Order.insert_batch(
        s, [Order(tenant_id=key, item="b1"), Order(tenant_id=key, item="b2")]
    )


async def _update(s, Order, key):
    # the row is committed before the transaction starts (see ``seeded``)
    o = (await Order.find_all(s, where={"tenant_id": key, "item": "seed"}))[0]
    o.qty = 50
    return await Order.update(s, o)


async def _scatter(s, Order, key):
    return await Order.find_all(s, order_by="item")


async def _count(s, Order, key):
    return await Order.count(s, where={"tenant_id": key})


async def _delete_where(s, Order, key):
    return await Order.delete_where(s, {"tenant_id": key})


SECOND_OPS = {
    "insert": _insert,
    "insert_batch": _batch,
    "update": _update,
    "count": _count,
    "delete_where": _delete_where,
}


async def _state(pool, Order):
    rows = await shard_rows(pool, Order)
    audits = await shard_audit(pool, Order)
    return (
        {name: sorted(map(str, r)) for name, r in rows.items()},
        {name: [a for a in rows if a[4] == "ok"] for name, rows in audits.items()},
    )


async def test_operation_on_another_shard_rolls_everything_back(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order)
    keys = keys_for_each_shard(pool)
    names = pool.shards.names
    async with pool.session("seed") as s:
        await Order.insert_batch(s, [Order(tenant_id=k, item="seed") for k in keys.values()])
    before = await _state(pool, Order)
    for n, (second, op) in enumerate(SECOND_OPS.items()):
        first, other = names[n % len(names)], names[(n + 1) % len(names)]
        async with pool.session("alice") as s:
            await s.begin()
            await _insert(s, Order, keys[first])
            await _update(s, Order, keys[first])
            with pytest.raises(ShardError) as err:
                await op(s, Order, keys[other])
            assert first in str(err.value) and other in str(err.value), second
            assert err.value.shard == other, second
            # the transaction is over: what follows in it is refused, commit too
            with pytest.raises(TransactionError):
                await _insert(s, Order, keys[first])
            with pytest.raises(TransactionError):
                await Order.find_by_id(s, uuid.uuid4(), shard_key=keys[first])
            with pytest.raises(TransactionError):
                await s.commit()
            assert not s.in_transaction
        assert await _state(pool, Order) == before, f"{second} on {other} after {first}"
        # the session is usable again afterwards
        async with pool.session("alice") as s:
            assert await Order.count(s) == len(keys)


async def test_scatter_read_as_first_operation_is_refused(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order)
    keys = keys_for_each_shard(pool)
    async with pool.session("alice") as s:
        await Order.insert_batch(s, [Order(tenant_id=k, item="seed") for k in keys.values()])
    before = await _state(pool, Order)
    async with pool.session("alice") as s:
        with pytest.raises(ShardError, match="cannot span shards"):
            async with s.transaction():
                await _scatter(s, Order, None)
        assert not s.in_transaction
    assert await _state(pool, Order) == before


async def test_transaction_context_on_two_shards_leaves_nothing(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order)
    keys = keys_for_each_shard(pool)
    first, other = pool.shards.names[-2:]
    async with pool.session("alice") as s:
        with pytest.raises(ShardError):
            async with s.transaction():
                await _insert(s, Order, keys[first])
                await _batch(s, Order, keys[first])
                async with s.transaction():  # a savepoint does not change the rule
                    await _insert(s, Order, keys[other])
        assert not s.in_transaction
    rows, audits = await _state(pool, Order)
    assert all(not r for r in rows.values())
    assert all(not a for a in audits.values())


async def test_transaction_on_one_shard_commits_every_operation(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order)
    keys = keys_for_each_shard(pool)
    name = pool.shards.names[-1]
    key = keys[name]
    async with pool.session("alice") as s:
        async with s.transaction():
            a = await _insert(s, Order, key)
            await _batch(s, Order, key)
            assert await _count(s, Order, key) == 3
            a.qty = 7
            await Order.update(s, a)
            assert (await Order.find_by_id(s, a.id, shard_key=key)).qty == 7
            assert len(await Order.find_all(s, where={"tenant_id__in": [key]})) == 3
        assert await Order.count(s) == 3
    rows, audits = await _state(pool, Order)
    assert {n for n, r in rows.items() if r} == {name}
    assert {n for n, a in audits.items() if a} == {name}
    assert len(audits[name]) == 4  # three inserts, one update
