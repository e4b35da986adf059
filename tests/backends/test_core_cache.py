"""The TTL result cache: what is cached, what invalidates it, and turning it off.

A second pool on the same database (with its cache off) changes rows behind the
first pool's back: a read that still returns the old value came from the cache.
"""

import asyncio

import pytest
from test_core_support import make_user, sample, users

pytestmark = pytest.mark.backend


async def two_pools(make_pool, User, **kwargs):
    """(cached pool, uncached pool) on the same database."""
    cached = await make_pool(User, cache_ttl=kwargs.pop("cache_ttl", 60), **kwargs)
    behind = await make_pool(User, cache_ttl=0)
    return cached, behind


async def rename_behind(behind, User, id, name):
    async with behind.session("other") as s:
        u = await User.find_by_id(s, id)
        u.name = name
        await User.update(s, u)


async def test_find_by_id_is_served_from_the_cache(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool, behind = await two_pools(make_pool, User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        start = pool.cache.stats()
        assert (await User.find_by_id(s, u.id)).name == "A"
        await rename_behind(behind, User, u.id, "changed behind")
        again = await User.find_by_id(s, u.id)
        assert again.name == "A"
        # a cached row is handed out as a fresh object each time
        assert again is not await User.find_by_id(s, u.id)
        stats = pool.cache.stats()
        assert stats["hits"] == start["hits"] + 2
        assert stats["misses"] == start["misses"] + 1
        assert stats["size"] >= 1
        assert sample(pool, "dbnexus_cache_hits_total", table=table) == 2
        assert sample(pool, "dbnexus_cache_misses_total", table=table) == 1


async def test_mutating_a_returned_object_does_not_change_the_cache(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        got = await User.find_by_id(s, u.id)
        got.name = "local edit"
        assert (await User.find_by_id(s, u.id)).name == "A"
        rows = await User.find_all(s)
        rows[0].name = "local edit"
        rows.clear()
        assert [r.name for r in await User.find_all(s)] == ["A"]


async def test_find_all_and_count_are_cached(make_pool, unique):
    User = make_user(unique("users"))
    pool, behind = await two_pools(make_pool, User)
    async with pool.session("alice") as s:
        await User.insert_batch(s, users(User, 3))
        assert len(await User.find_all(s, where={"age__gte": 20})) == 3
        assert await User.count(s, where={"age__gte": 20}) == 3
        async with behind.session("other") as o:
            await User.insert(o, User(name="x", email="x@x.org", age=99))
        assert len(await User.find_all(s, where={"age__gte": 20})) == 3
        assert await User.count(s, where={"age__gte": 20}) == 3
        # a different query is a different cache entry
        assert await User.count(s, where={"age__gte": 21}) == 3
        assert len(await User.find_all(s, where={"age__gte": 20}, order_by="id")) == 4


async def test_writes_invalidate_before_returning(make_pool, unique):
    User = make_user(unique("users"))
    pool, behind = await two_pools(make_pool, User)
    async with pool.session("alice") as s:
        a, b = await User.insert_batch(s, users(User, 2))
        assert await User.count(s) == 2
        assert len(await User.find_all(s)) == 2
        assert (await User.find_by_id(s, a.id)).age == 20

        await User.insert(s, User(name="c", email="c@x.org"))
        assert await User.count(s) == 3
        assert len(await User.find_all(s)) == 3

        a.age = 50
        await User.update(s, a)
        assert (await User.find_by_id(s, a.id)).age == 50
        assert await User.count(s, where={"age": 50}) == 1

        await User.insert_batch(s, users(User, 2, prefix="z"))
        assert await User.count(s) == 5

        await User.delete(s, a.id)
        assert await User.find_by_id(s, a.id) is None
        assert a.id not in [u.id for u in await User.find_all(s)]
        assert await User.count(s) == 4

        # a write through this pool also drops rows another pool changed behind it
        assert (await User.find_by_id(s, b.id)).name == "u1"
        await rename_behind(behind, User, b.id, "renamed")
        b2 = await User.find_by_id(s, b.id)
        assert b2.name == "u1"
        b2.age = 1
        await User.update(s, b2)
        assert (await User.find_by_id(s, b.id)).age == 1


async def test_a_write_in_one_session_is_seen_by_every_session(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s1, pool.session("bob") as s2:
        u = await User.insert(s1, User(name="A", email="a@x.org"))
        assert (await User.find_by_id(s2, u.id)).name == "A"
        assert await User.count(s2) == 1
        u.name = "B"
        await User.update(s1, u)
        assert (await User.find_by_id(s2, u.id)).name == "B"
        await User.delete(s1, u.id)
        assert await User.find_by_id(s2, u.id) is None
        assert await User.count(s2) == 0


async def test_committed_transaction_invalidates_and_rollback_leaves_no_trace(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s, pool.session("bob") as reader:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        assert (await User.find_by_id(reader, u.id)).name == "A"
        assert await User.count(reader) == 1

        async with s.transaction():
            u.name = "in tx"
            await User.update(s, u)
            await User.insert(s, User(name="B", email="b@x.org"))
            # others keep seeing the committed state while the transaction is open
            assert (await User.find_by_id(reader, u.id)).name == "A"
            assert await User.count(reader) == 1
        assert (await User.find_by_id(reader, u.id)).name == "in tx"
        assert await User.count(reader) == 2

        await s.begin()
        u.name = "rolled back"
        await User.update(s, u)
        await User.insert(s, User(name="C", email="c@x.org"))
        await s.rollback()
        assert (await User.find_by_id(reader, u.id)).name == "in tx"
        assert await User.count(reader) == 2
        assert sorted(x.name for x in await User.find_all(reader)) == ["B", "in tx"]


async def test_cache_ttl_zero_turns_the_cache_off(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool, behind = await two_pools(make_pool, User, cache_ttl=0)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        assert (await User.find_by_id(s, u.id)).name == "A"
        assert await User.count(s) == 1
        await rename_behind(behind, User, u.id, "fresh")
        async with behind.session("other") as o:
            await User.insert(o, User(name="B", email="b@x.org"))
        assert (await User.find_by_id(s, u.id)).name == "fresh"
        assert await User.count(s) == 2
        assert len(await User.find_all(s)) == 2
    stats = pool.cache.stats()
    assert (stats["hits"], stats["size"]) == (0, 0)
    assert sample(pool, "dbnexus_cache_hits_total", table=table) == 0


async def test_entries_expire_after_the_ttl(make_pool, unique):
    User = make_user(unique("users"))
    pool, behind = await two_pools(make_pool, User, cache_ttl=0.8)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        assert (await User.find_by_id(s, u.id)).name == "A"
        assert await User.count(s) == 1
        await rename_behind(behind, User, u.id, "later")
        async with behind.session("other") as o:
            await User.insert(o, User(name="B", email="b@x.org"))
        assert (await User.find_by_id(s, u.id)).name == "A"
        await asyncio.sleep(1.0)
        assert (await User.find_by_id(s, u.id)).name == "later"
        assert await User.count(s) == 2


async def test_cache_maxsize_bounds_the_size(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, cache_maxsize=3)
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, 6))
        for u in made:
            assert await User.find_by_id(s, u.id) == u
        for u in made:
            assert await User.find_by_id(s, u.id) == u
        stats = pool.cache.stats()
        assert 1 <= stats["size"] <= 3
        assert stats["misses"] >= 6


async def test_reads_inside_a_transaction_bypass_the_cache(make_pool, unique):
    User = make_user(unique("users"))
    pool, behind = await two_pools(make_pool, User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        assert (await User.find_by_id(s, u.id)).name == "A"
        await rename_behind(behind, User, u.id, "current")
        before = pool.cache.stats()
        async with s.transaction():
            assert (await User.find_by_id(s, u.id)).name == "current"
            assert [x.name for x in await User.find_all(s)] == ["current"]
        after = pool.cache.stats()
        assert after["hits"] == before["hits"]
