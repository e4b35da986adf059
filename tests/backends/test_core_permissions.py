"""Casbin permissions on every operation: denials, runtime policy changes, roles, domains."""

import time

import pytest
from test_core_support import (
    DOMAIN_MODEL,
    RBAC_MODEL,
    admin_policy,
    make_user,
    sample,
    users,
)

from dbnexus import ConfigError, PermissionDenied, Permissions, ValidationError

pytestmark = pytest.mark.backend


async def rbac_pool(make_pool, User, *extra, **kwargs):
    """A pool where ``admin`` may do everything on User's table, plus ``extra`` lines."""
    table = User.__dbnexus__.table_name
    perms = Permissions.from_text(RBAC_MODEL, admin_policy(table, *extra))
    return await make_pool(User, permissions=perms, **kwargs)


async def seeded(pool, User, n=2):
    async with pool.session("admin") as s:
        return await User.insert_batch(s, users(User, n))


async def snapshot(pool, User):
    """What an allowed reader sees, ignoring the cache: rows by id."""
    async with pool.session("admin") as s, s.transaction():
        return {u.id: u for u in await User.find_all(s)}


async def assert_denied(pool, User, action, call, *, record_id=None):
    """``call()`` is refused for bob: PermissionDenied, audit row, metrics; nothing written."""
    table = User.__dbnexus__.table_name
    before = await snapshot(pool, User)
    denied_before = sample(pool, "dbnexus_permission_denied_total", table=table, action=action)
    ops_before = sample(
        pool, "dbnexus_operations_total", table=table, action=action, outcome="denied"
    )
    stats = pool.cache.stats()
    with pytest.raises(PermissionDenied) as err:
        await call()
    # refused before the cache was consulted
    after = pool.cache.stats()
    assert (after["hits"], after["misses"]) == (stats["hits"], stats["misses"])
    e = err.value
    assert (e.user_id, e.table, e.action) == ("bob", table, action)
    assert "bob" in str(e) and table in str(e) and action in str(e)
    assert await snapshot(pool, User) == before
    records = await pool.audit_log(table=table, outcome="denied")
    assert records, "the denial was not audited"
    r = records[0]
    assert (r.user_id, r.action, r.table_name, r.outcome) == ("bob", action, table, "denied")
    if record_id is not None:
        assert r.record_id == str(record_id)
    assert (
        sample(pool, "dbnexus_permission_denied_total", table=table, action=action)
        == denied_before + 1
    )
    assert (
        sample(pool, "dbnexus_operations_total", table=table, action=action, outcome="denied")
        == ops_before + 1
    )
    return e


async def test_find_by_id_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    u, _ = await seeded(pool, User)
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "read", lambda: User.find_by_id(s, u.id), record_id=u.id)


async def test_find_all_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    await seeded(pool, User)
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "read", lambda: User.find_all(s, where={"age": 20}))


async def test_count_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    await seeded(pool, User)
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "read", lambda: User.count(s))


async def test_insert_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User, f"p, bob, {User.__dbnexus__.table_name}, read")
    await seeded(pool, User)
    new = User(name="N", email="n@x.org")
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "insert", lambda: User.insert(s, new))
        assert new.id is None


async def test_insert_batch_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    await seeded(pool, User)
    batch = users(User, 3, prefix="b")
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "insert", lambda: User.insert_batch(s, batch))
    assert [u.id for u in batch] == [None, None, None]


async def test_update_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    u, _ = await seeded(pool, User)
    u.name = "hijacked"
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "update", lambda: User.update(s, u), record_id=u.id)


async def test_delete_denied(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    u, _ = await seeded(pool, User)
    async with pool.session("bob") as s:
        await assert_denied(pool, User, "delete", lambda: User.delete(s, u.id), record_id=u.id)


async def test_denial_of_a_cached_row_after_revoke(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await rbac_pool(make_pool, User, f"p, bob, {table}, read")
    u, _ = await seeded(pool, User)
    async with pool.session("bob") as s:
        assert await User.find_by_id(s, u.id) == u
        assert await User.find_by_id(s, u.id) == u
        stats = pool.cache.stats()
        assert stats["hits"] >= 1, "the row should sit in the cache"
        assert await pool.permissions.revoke("bob", table, "read") is True
        await assert_denied(pool, User, "read", lambda: User.find_by_id(s, u.id), record_id=u.id)
        # the check ran before the cache: it was not consulted at all
        after = pool.cache.stats()
        assert (after["hits"], after["misses"]) == (stats["hits"], stats["misses"])
        await pool.permissions.grant("bob", table, "read")
        assert await User.find_by_id(s, u.id) == u


async def test_permission_is_checked_before_input_validation(make_pool, unique):
    User = make_user(unique("users"))
    pool = await rbac_pool(make_pool, User)
    async with pool.session("bob") as s:
        with pytest.raises(PermissionDenied):
            await User.find_all(s, where={"no_such_field": 1})
        with pytest.raises(PermissionDenied):
            await User.insert(s, User(name="x" * 500, email="e@x.org"))
        with pytest.raises(PermissionDenied):
            await User.find_by_id(s, "not an int")
    async with pool.session("admin") as s:
        with pytest.raises(ValidationError):
            await User.find_all(s, where={"no_such_field": 1})


async def test_runtime_grant_and_revoke_apply_to_open_sessions(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await rbac_pool(make_pool, User)
    await seeded(pool, User, 3)
    async with pool.session("bob") as bob, pool.session("carol") as carol:
        with pytest.raises(PermissionDenied):
            await User.count(bob)
        assert await pool.permissions.grant("bob", table, "read") is True
        assert await pool.permissions.grant("bob", table, "read") is False
        assert await User.count(bob) == 3
        with pytest.raises(PermissionDenied):
            await User.count(carol)
        # a grant is per action
        with pytest.raises(PermissionDenied):
            await User.insert(bob, User(name="b", email="b@x.org"))
        await pool.permissions.grant("bob", table, "insert")
        new = await User.insert(bob, User(name="b", email="b@x.org"))
        assert new.id is not None
        assert await pool.permissions.revoke("bob", table, "read") is True
        assert await pool.permissions.revoke("bob", table, "read") is False
        with pytest.raises(PermissionDenied):
            await User.find_all(bob)
        # the revoke did not take the other action with it
        await User.insert(bob, User(name="b2", email="b2@x.org"))
    async with pool.session("admin") as s:
        assert await User.count(s) == 5


async def test_roles_added_and_removed_at_runtime(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await rbac_pool(
        make_pool,
        User,
        f"p, reader, {table}, read",
        f"p, writer, {table}, insert",
        "g, dave, reader",
    )
    u, _ = await seeded(pool, User)
    async with pool.session("dave") as dave, pool.session("erin") as erin:
        assert await User.find_by_id(dave, u.id) == u
        with pytest.raises(PermissionDenied):
            await User.insert(dave, User(name="d", email="d@x.org"))
        with pytest.raises(PermissionDenied):
            await User.count(erin)
        assert await pool.permissions.add_role("erin", "reader") is True
        assert await User.count(erin) == 2
        await pool.permissions.add_role("dave", "writer")
        await User.insert(dave, User(name="d", email="d@x.org"))
        assert await pool.permissions.remove_role("dave", "reader") is True
        with pytest.raises(PermissionDenied):
            await User.find_by_id(dave, u.id)
        with pytest.raises(PermissionDenied):
            await User.find_all(dave)
        assert await User.count(erin) == 3
        await pool.permissions.remove_role("erin", "reader")
        with pytest.raises(PermissionDenied):
            await User.count(erin)


async def test_policy_is_per_table(make_pool, unique):
    User = make_user(unique("users"))
    Other = make_user(unique("others"))
    t_user, t_other = User.__dbnexus__.table_name, Other.__dbnexus__.table_name
    perms = Permissions.from_text(
        RBAC_MODEL,
        "\n".join([admin_policy(t_user), admin_policy(t_other), f"p, bob, {t_user}, read"]),
    )
    pool = await make_pool(User, Other, permissions=perms)
    async with pool.session("bob") as s:
        assert await User.count(s) == 0
        with pytest.raises(PermissionDenied) as err:
            await Other.count(s)
        assert err.value.table == t_other


async def test_pool_without_permissions_denies_everything(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await make_pool(User, permissions=None)
    async with pool.session("root") as s:
        calls = [
            ("read", lambda: User.find_by_id(s, 1)),
            ("read", lambda: User.find_all(s)),
            ("read", lambda: User.count(s)),
            ("insert", lambda: User.insert(s, User(name="a", email="a@x.org"))),
            ("insert", lambda: User.insert_batch(s, users(User, 2))),
            ("update", lambda: User.update(s, User(id=1, name="a", email="a@x.org"))),
            ("delete", lambda: User.delete(s, 1)),
        ]
        for action, call in calls:
            with pytest.raises(PermissionDenied) as err:
                await call()
            assert err.value.action == action
            message = str(err.value)
            assert "permissions" in message and "Permissions.from_files" in message
    with pytest.raises(ConfigError, match="permissions"):
        pool.permissions  # noqa: B018
    assert len(await pool.audit_log(table=table, outcome="denied")) == len(calls)
    assert sample(pool, "dbnexus_permission_denied_total", table=table, action="read") == 3


async def test_permissions_from_files(make_pool, unique, tmp_path):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    model = tmp_path / "model.conf"
    model.write_text(RBAC_MODEL)
    policy = tmp_path / "policy.csv"
    text = admin_policy(table, f"p, bob, {table}, read") + "\n"
    policy.write_text(text)
    perms = Permissions.from_files(model, policy)
    pool = await make_pool(User, permissions=perms)
    u, _ = await seeded(pool, User)
    async with pool.session("bob") as s:
        assert await User.count(s) == 2
        with pytest.raises(PermissionDenied):
            await User.delete(s, u.id)
    await pool.permissions.grant("bob", table, "delete")
    async with pool.session("bob") as s:
        await User.delete(s, u.id)
        assert await User.count(s) == 1
    # runtime changes are in memory only: the csv is never rewritten
    assert policy.read_text() == text


async def test_domain_sessions(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    perms = Permissions.from_text(
        DOMAIN_MODEL,
        "\n".join(
            [
                f"p, manager, acme, {table}, read",
                f"p, manager, acme, {table}, insert",
                "g, alice, manager, acme",
            ]
        ),
    )
    pool = await make_pool(User, permissions=perms)
    async with pool.session("alice", domain="acme") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        assert await User.find_by_id(s, u.id) == u
    async with pool.session("alice", domain="globex") as s:
        with pytest.raises(PermissionDenied) as err:
            await User.count(s)
        assert err.value.domain == "globex"
        assert "globex" in str(err.value)
    async with pool.session("alice") as s:
        with pytest.raises(ValidationError, match="domain"):
            await User.count(s)
    await pool.permissions.add_role("bob", "manager", domain="globex")
    await pool.permissions.grant("manager", table, "read", domain="globex")
    async with pool.session("bob", domain="globex") as s:
        assert await User.count(s) == 1
    async with pool.session("bob", domain="acme") as s:
        with pytest.raises(PermissionDenied):
            await User.count(s)
    records = await pool.audit_log(table=table)
    assert [(r.user_id, r.domain, r.action, r.outcome) for r in records][-1] == (
        "alice",
        "acme",
        "insert",
        "ok",
    )
    assert ("alice", "globex", "read", "denied") in [
        (r.user_id, r.domain, r.action, r.outcome) for r in records
    ]


async def test_denial_inside_a_transaction_is_audited_even_after_rollback(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await rbac_pool(make_pool, User, f"p, bob, {table}, insert", acquire_timeout=2)
    async with pool.session("bob") as s:
        await s.begin()
        await User.insert(s, User(name="a", email="a@x.org"))
        started = time.monotonic()
        with pytest.raises(PermissionDenied):
            await User.count(s)
        assert time.monotonic() - started < 1.5
        # the transaction is still usable after the denial
        await User.insert(s, User(name="b", email="b@x.org"))
        await s.rollback()
    records = await pool.audit_log(table=table)
    assert [(r.user_id, r.action, r.outcome) for r in records] == [("bob", "read", "denied")]


async def test_denial_inside_a_transaction_on_a_one_connection_pool(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await rbac_pool(
        make_pool, User, f"p, bob, {table}, insert", max_connections=1, acquire_timeout=0.5
    )
    async with pool.session("bob") as s, s.transaction():
        await User.insert(s, User(name="a", email="a@x.org"))
        started = time.monotonic()
        with pytest.raises(PermissionDenied):
            await User.count(s)
        # a denial needs no connection to decide: it must not wait for one
        assert time.monotonic() - started < 0.4
    records = await pool.audit_log(table=table, outcome="denied")
    assert [(r.user_id, r.action) for r in records] == [("bob", "read")]
