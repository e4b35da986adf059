"""Bad input raises ValidationError before anything is sent; nothing is written or audited."""

import pytest
from test_core_support import make_user, sample, users

from dbnexus import Q, ValidationError

pytestmark = pytest.mark.backend


async def assert_untouched(pool, User, expected):
    """The table holds exactly ``expected`` (names) and only their inserts are audited."""
    table = User.__dbnexus__.table_name
    async with pool.session("checker") as s, s.transaction():
        assert sorted(u.name for u in await User.find_all(s)) == sorted(expected)
    records = await pool.audit_log(table=table)
    assert all(r.action == "insert" and r.outcome == "ok" for r in records)
    assert len(records) == len(expected)


@pytest.mark.parametrize(
    "query",
    [
        {"where": {"nope": 1}},
        {"where": {"age__nope": 1}},
        {"where": {"age": "thirty"}},
        {"where": {"age": True}},
        {"where": {"age__in": "abc"}},
        {"where": {"age__in": [1, None]}},
        {"where": {"age__between": (1,)}},
        {"where": {"age__like": "1%"}},
        {"where": {"name__startswith": 5}},
        {"where": {"age__is_null": "yes"}},
        {"where": Q(nope=1) | Q(age=1)},
        {"where": ["age", 1]},
        {"order_by": "nope"},
        {"order_by": ["-age", "-nope"]},
        {"order_by": 5},
        {"limit": -1},
        {"offset": -1},
        {"limit": "10"},
    ],
)
async def test_bad_queries_are_rejected(make_pool, unique, query):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="a", email="a@x.org", age=1))
        with pytest.raises(ValidationError):
            await User.find_all(s, **query)
        if set(query) == {"where"}:
            with pytest.raises(ValidationError):
                await User.count(s, where=query["where"])
    assert sample(pool, "dbnexus_operations_total", table=table, action="read", outcome="ok") == 0


async def test_bad_values_are_rejected_and_nothing_is_written(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="a", email="a@x.org"))
        bad = [
            User(name="x" * 101, email="long@x.org"),
            User(name="ok", email="e" * 201),
            User(name="ok", email="t@x.org", age="31"),
            User(name="ok", email="t@x.org", age=3.5),
            User(name="ok", email="t@x.org", age=True),
            User(name=None, email="t@x.org"),
            User(name=b"bytes", email="t@x.org"),
            User(id="7", name="ok", email="t@x.org"),
        ]
        for obj in bad:
            with pytest.raises(ValidationError):
                await User.insert(s, obj)
            assert obj.id in (None, "7")
        with pytest.raises(ValidationError):
            await User.insert_batch(
                s, [User(name="fine", email="f@x.org"), User(name="y" * 101, email="y@x.org")]
            )
    # exactly 100 characters is allowed
    async with pool.session("alice") as s:
        await User.insert(s, User(name="z" * 100, email="z@x.org"))
    await assert_untouched(pool, User, ["a", "z" * 100])


async def test_bad_update_leaves_the_row_as_it_was(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="a", email="a@x.org", age=1))
        u.name = "x" * 101
        with pytest.raises(ValidationError):
            await User.update(s, u)
        u.name, u.age = "a", "two"
        with pytest.raises(ValidationError):
            await User.update(s, u)
        with pytest.raises(ValidationError):
            await User.update(s, User(name="no id", email="n@x.org"))
        got = await User.find_by_id(s, u.id)
        assert (got.name, got.age) == ("a", 1)
    await assert_untouched(pool, User, ["a"])


async def test_bad_primary_keys_are_rejected(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="a", email="a@x.org"))
        for bad in ("1", None, 1.0, [1]):
            with pytest.raises(ValidationError):
                await User.find_by_id(s, bad)
            with pytest.raises(ValidationError):
                await User.delete(s, bad)
        assert await User.find_by_id(s, u.id) is not None
    await assert_untouched(pool, User, ["a"])


async def test_objects_of_another_entity_are_rejected(make_pool, unique):
    User = make_user(unique("users"))
    Other = make_user(unique("others"))
    pool = await make_pool(User, Other)
    async with pool.session("alice") as s:
        stranger = Other(name="o", email="o@x.org")
        with pytest.raises(ValidationError):
            await User.insert(s, stranger)
        with pytest.raises(ValidationError):
            await User.insert_batch(s, [User(name="u", email="u@x.org"), stranger])
        with pytest.raises(ValidationError):
            await User.update(s, stranger)
        with pytest.raises(ValidationError):
            await s.insert_batch([User(name="u", email="u@x.org"), {"name": "dict"}])
        assert await Other.count(s) == 0
    await assert_untouched(pool, User, [])


async def test_validation_errors_are_value_errors_with_a_useful_message(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        with pytest.raises(ValueError, match="nope") as err:
            await User.find_all(s, where={"nope": 1})
        assert "email" in str(err.value)  # names the fields there are
        with pytest.raises(ValidationError, match="max_length"):
            await User.insert(s, User(name="x" * 101, email="e@x.org"))


async def test_bad_session_arguments(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    for bad in ("", None, 5):
        with pytest.raises(ValidationError):
            pool.session(bad)
    with pytest.raises(ValidationError):
        pool.session("alice", domain="")
    with pytest.raises(ValidationError):
        pool.session("alice", tags="not-a-list")
    with pytest.raises(ValidationError):
        pool.session("alice", tags=["has space"])
    async with pool.session("alice") as s:
        with pytest.raises(ValidationError):
            await User.insert_batch(s, users(User, 1), tags=["x" * 65])
        assert await User.count(s) == 0
