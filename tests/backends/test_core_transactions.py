"""Session transactions: context manager, explicit begin/commit/rollback, misuse, concurrency."""

import asyncio

import pytest
from test_core_support import make_user, sample_sum, users

from dbnexus import TransactionError

pytestmark = pytest.mark.backend


async def committed_names(pool, User):
    async with pool.session("auditor") as s, s.transaction():
        return sorted(u.name for u in await User.find_all(s))


async def test_transaction_commits_on_exit(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        async with s.transaction() as tx:
            assert tx is s
            assert s.in_transaction
            a = await User.insert(s, User(name="a", email="a@x.org"))
            await User.insert_batch(s, users(User, 2))
            a.age = 7
            await User.update(s, a)
            # the transaction sees its own writes
            assert (await User.find_by_id(s, a.id)).age == 7
            assert await User.count(s) == 3
        assert not s.in_transaction
    assert await committed_names(pool, User) == ["a", "u0", "u1"]


async def test_transaction_rolls_back_on_exception(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        keep = await User.insert(s, User(name="keep", email="k@x.org"))

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            async with s.transaction():
                await User.insert(s, User(name="gone", email="g@x.org"))
                await User.delete(s, keep.id)
                raise Boom
        assert not s.in_transaction
        # the session is still usable afterwards
        await User.insert(s, User(name="after", email="after@x.org"))
    assert await committed_names(pool, User) == ["after", "keep"]


async def test_explicit_begin_commit_and_rollback(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await s.begin()
        assert s.in_transaction
        await User.insert(s, User(name="a", email="a@x.org"))
        await s.commit()
        assert not s.in_transaction
        await s.begin()
        await User.insert(s, User(name="b", email="b@x.org"))
        await s.rollback()
        assert not s.in_transaction
        # an empty transaction commits and rolls back too
        await s.begin()
        await s.commit()
        await s.begin()
        await s.rollback()
    assert await committed_names(pool, User) == ["a"]


async def test_transaction_misuse_raises_transaction_error(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        with pytest.raises(TransactionError):
            await s.commit()
        with pytest.raises(TransactionError):
            await s.rollback()
        await s.begin()
        with pytest.raises(TransactionError):
            await s.begin()
        # the failed second begin did not disturb the open transaction
        await User.insert(s, User(name="a", email="a@x.org"))
        await s.commit()
        with pytest.raises(TransactionError):
            await s.commit()
    assert await committed_names(pool, User) == ["a"]


async def test_uncommitted_writes_are_invisible_to_other_sessions(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s, pool.session("bob") as other:
        await s.begin()
        u = await User.insert(s, User(name="a", email="a@x.org"))
        assert await User.find_by_id(other, u.id) is None
        assert await User.count(other) == 0
        await s.commit()
        assert (await User.find_by_id(other, u.id)).name == "a"
        assert await User.count(other) == 1


async def test_closing_a_session_rolls_back_its_open_transaction(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await s.begin()
        await User.insert(s, User(name="a", email="a@x.org"))
    assert not s.in_transaction
    assert await committed_names(pool, User) == []
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_concurrent_operations_inside_a_transaction(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=2)
    async with pool.session("alice") as s:
        async with s.transaction():
            made = await asyncio.gather(
                *[User.insert(s, User(name=f"n{k}", email=f"{k}@x.org", age=k)) for k in range(20)]
            )
            counts = await asyncio.gather(*[User.count(s) for _ in range(5)])
            assert all(1 <= c <= 20 for c in counts)
            found = await asyncio.gather(*[User.find_by_id(s, u.id) for u in made])
            assert found == made
            for u in made[:10]:
                u.age += 100
            await asyncio.gather(*[User.update(s, u) for u in made[:10]])
            assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 1
        assert await User.count(s) == 20
        assert await User.count(s, where={"age__gte": 100}) == 10
    assert len(await committed_names(pool, User)) == 20


async def test_concurrent_operations_outside_a_transaction(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=3)
    async with pool.session("alice") as s:
        made = await asyncio.gather(
            *[User.insert(s, User(name=f"n{k}", email=f"{k}@x.org")) for k in range(15)]
        )
        assert len({u.id for u in made}) == 15
        results = await asyncio.gather(
            *[User.find_by_id(s, u.id) for u in made], *[User.count(s) for _ in range(10)]
        )
        assert results[:15] == made
        assert results[15:] == [15] * 10
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_nested_transaction_is_a_savepoint(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s, s.transaction():
        await User.insert(s, User(name="outer", email="o@x.org"))
        with pytest.raises(KeyError):
            async with s.transaction():
                await User.insert(s, User(name="inner", email="i@x.org"))
                raise KeyError("undo the inner block only")
        async with s.transaction():
            await User.insert(s, User(name="inner ok", email="ok@x.org"))
        assert await User.count(s) == 2
    assert await committed_names(pool, User) == ["inner ok", "outer"]
