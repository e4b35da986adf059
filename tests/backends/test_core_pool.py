"""The pool: settings checked up front, exhaustion ends in PoolTimeout, lifecycle."""

import asyncio
import time

import pytest
from test_core_support import make_user, sample_sum, users

from dbnexus import (
    ConfigError,
    DatabaseError,
    DbNexusError,
    DbPool,
    Permissions,
    PoolTimeout,
    ValidationError,
)

pytestmark = pytest.mark.backend


async def test_exhausted_pool_raises_pool_timeout_instead_of_hanging(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=1, acquire_timeout=0.3, cache_ttl=0)
    async with pool.session("alice") as holder, pool.session("bob") as waiter:
        u = await User.insert(holder, User(name="a", email="a@x.org"))
        await holder.begin()
        await User.find_by_id(holder, u.id)  # the transaction now holds the only connection
        for call in (
            lambda: User.find_by_id(waiter, u.id),
            lambda: User.count(waiter),
            lambda: User.insert(waiter, User(name="b", email="b@x.org")),
        ):
            with pytest.raises(PoolTimeout) as err:
                await asyncio.wait_for(call(), 10)
            assert isinstance(err.value, DbNexusError)
            assert "max_connections" in str(err.value)
        # the holder is unaffected and, once it lets go, others get through
        await User.insert(holder, User(name="c", email="c@x.org"))
        await holder.commit()
        assert await User.count(waiter) == 2
        assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_exhausted_pool_waits_no_longer_than_acquire_timeout(make_pool, unique):
    User = make_user(unique("users"))
    timeout = 0.5
    pool = await make_pool(User, max_connections=1, acquire_timeout=timeout, cache_ttl=0)
    async with pool.session("alice") as holder, pool.session("bob") as waiter:
        await holder.begin()
        await User.count(holder)
        for call in (
            lambda: User.count(waiter),
            lambda: User.insert(waiter, User(name="b", email="b@x.org")),
        ):
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                await asyncio.wait_for(call(), 10)
            waited = time.monotonic() - started
            assert timeout * 0.9 <= waited < timeout * 1.8, f"waited {waited:.2f}s"
        await holder.rollback()


async def test_waiters_get_a_connection_when_one_is_returned_in_time(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=1, acquire_timeout=5, cache_ttl=0)
    async with pool.session("alice") as holder, pool.session("bob") as waiter:
        await holder.begin()
        await User.insert(holder, User(name="a", email="a@x.org"))
        waiting = asyncio.ensure_future(User.count(waiter))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await holder.commit()
        assert await asyncio.wait_for(waiting, 5) == 1


async def test_many_concurrent_sessions_share_a_small_pool(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=2, cache_ttl=0)

    async def work(k):
        async with pool.session(f"user{k}") as s:
            u = await User.insert(s, User(name=f"n{k}", email=f"{k}@x.org"))
            return (await User.find_by_id(s, u.id)).name

    names = await asyncio.gather(*[work(k) for k in range(20)])
    assert names == [f"n{k}" for k in range(20)]
    async with pool.session("alice") as s:
        assert await User.count(s) == 20
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_connections_are_returned_after_errors(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=1, acquire_timeout=2)
    async with pool.session("alice") as s:
        a = await User.insert(s, User(name="a", email="a@x.org"))
        for _ in range(3):
            with pytest.raises(DbNexusError):
                await User.insert(s, User(name="b", email="a@x.org"))
            with pytest.raises(DbNexusError):
                await User.delete(s, a.id + 1000)
            with pytest.raises(ValidationError):
                await User.find_all(s, where={"nope": 1})
        assert await User.count(s) == 1
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_min_connections_are_opened_up_front(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, min_connections=2, max_connections=4)
    assert sample_sum(pool, "dbnexus_pool_connections_open") >= 2
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_short_idle_timeout_and_max_lifetime_still_work(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, idle_timeout=0.05, max_lifetime=0.1, cache_ttl=0)
    async with pool.session("alice") as s:
        await User.insert_batch(s, users(User, 2))
        for k in range(3):
            await asyncio.sleep(0.15)  # every connection is now idle and old
            assert await User.count(s) == 2 + k
            await User.insert(s, User(name=f"t{k}", email=f"t{k}@x.org"))
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"max_connections": 0},
        {"max_connections": -1},
        {"min_connections": 5, "max_connections": 2},
        {"min_connections": -1},
        {"connect_timeout": 0},
        {"acquire_timeout": -1},
        {"idle_timeout": 0},
        {"max_lifetime": float("nan")},
        {"acquire_timeout": float("inf")},
        {"max_connections": 2.5},
        {"max_connections": True},
        {"cache_ttl": -1},
        {"cache_maxsize": -5},
    ],
)
async def test_bad_settings_raise_config_error_before_connecting(db_url, settings):
    with pytest.raises(ConfigError):
        await DbPool.connect(db_url, permissions=Permissions.allow_all(), **settings)


async def test_pool_lifecycle(db_url):
    async with await DbPool.connect(db_url, permissions=Permissions.allow_all()) as pool:
        s = pool.session("alice")
        assert s.user_id == "alice"
        assert pool.dialect_name in ("sqlite", "postgresql", "mysql")
        with pytest.raises(ValidationError):
            pool.session("")
    with pytest.raises(ConfigError):
        pool.session("alice")
    await pool.close()  # closing twice is harmless


@pytest.mark.parametrize(
    ("driver", "url"),
    [
        ("asyncpg", "postgresql+asyncpg://root@127.0.0.1:1/test"),
        ("aiomysql", "mysql+aiomysql://root@127.0.0.1:1/test"),
    ],
)
async def test_unreachable_server_raises_database_error(driver, url):
    pytest.importorskip(driver)
    started = time.monotonic()
    with pytest.raises(DatabaseError) as err:
        await DbPool.connect(url, permissions=Permissions.allow_all(), connect_timeout=2)
    assert time.monotonic() - started < 10
    assert "127.0.0.1" in str(err.value)


async def test_sessions_are_cheap_and_borrow_nothing_until_used(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=2)
    opened = sample_sum(pool, "dbnexus_pool_connections_open")
    started = time.monotonic()
    sessions = [pool.session(f"user{k}") for k in range(5000)]
    assert time.monotonic() - started < 1
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0
    assert sample_sum(pool, "dbnexus_pool_connections_open") == opened
    # more sessions than connections, all working at once
    assert await asyncio.gather(*[User.count(s) for s in sessions[:50]]) == [0] * 50
    for s in sessions:
        await s.close()
