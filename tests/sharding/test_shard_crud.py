"""CRUD on a sharded pool, per layout: where rows land, how each operation routes.

Routing is checked two ways: by reading each shard's table directly, and by the
``dbnexus_shard_operations_total{shard}`` counter (the pools here keep the
cache off where a cache hit would hide a shard's work).
"""

import uuid

import pytest
import sqlalchemy as sa
from shard_support import (
    RBAC_MODEL,
    keys_for_each_shard,
    make_account,
    make_order,
    make_setting,
    make_tenant,
    ops_delta,
    shard_audit,
    shard_ops,
    shard_rows,
)

from dbnexus import (
    DbPool,
    NotFound,
    PermissionDenied,
    Permissions,
    Q,
    ShardError,
    ShardManager,
    entity_info,
)
from dbnexus.audit import audit_table
from dbnexus.sharding import CustomStrategy

pytestmark = pytest.mark.backend


async def _seeded(
    make_sharded, unique, per_shard: int = 3, *, soft_delete: bool = False, cache_ttl: float = 0
) -> tuple[type, DbPool, list, dict[str, str]]:
    """An Order entity, a pool over the layout, ``per_shard`` orders for a tenant of each
    shard (inserted one by one) and that tenant key per shard."""
    Order = make_order(unique("orders"), soft_delete=soft_delete)
    pool = await make_sharded(Order, cache_ttl=cache_ttl)
    keys = keys_for_each_shard(pool)
    made = []
    async with pool.session("alice") as s:
        for shard in pool.shards.names:
            for k in range(per_shard):
                made.append(
                    await Order.insert(s, Order(tenant_id=keys[shard], item=f"i{k}", qty=k + 1))
                )
    return Order, pool, made, keys


async def test_migrate_creates_the_tables_on_every_shard(make_sharded, layout, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order)
    for name, db in pool.databases.items():
        tables = await db.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert {entity_info(Order).table_name, audit_table.name} <= tables, name
    assert set(pool.databases) == set(layout.urls)


async def test_insert_lands_on_the_shard_of_its_key_and_find_by_id_finds_it(make_sharded, unique):
    Order, pool, made, _ = await _seeded(make_sharded, unique)
    rows = await shard_rows(pool, Order)
    for name in pool.shards.names:
        expected = sorted(o.id for o in made if pool.shards.shard_for(Order, o.tenant_id) == name)
        assert sorted(r[0] for r in rows[name]) == expected, name
        assert expected, f"no order routed to shard {name}"
    async with pool.session("alice") as s:
        for o in made:
            shard = pool.shards.shard_for(Order, o.tenant_id)
            # pk is not the shard key: without a hint every shard is asked
            before = shard_ops(pool)
            assert await Order.find_by_id(s, o.id) == o
            assert ops_delta(before, shard_ops(pool)) == dict.fromkeys(pool.shards.names, 1)
            # with the hint only the row's shard
            before = shard_ops(pool)
            assert await Order.find_by_id(s, o.id, shard_key=o.tenant_id) == o
            assert ops_delta(before, shard_ops(pool)) == {shard: 1}
        # a hint naming another shard's key finds nothing there
        last = made[-1]
        other = next(o for o in made if o.tenant_id != last.tenant_id)
        assert await Order.find_by_id(s, last.id, shard_key=other.tenant_id) is None
        assert await Order.find_by_id(s, uuid.uuid4()) is None


async def test_entity_without_shard_key_lives_on_the_default_shard(make_sharded, unique):
    Setting = make_setting(unique("settings"))
    pool = await make_sharded(Setting, cache_ttl=0)
    default = pool.shards.manager.default_shard
    async with pool.session("alice") as s:
        before = shard_ops(pool)
        a = await Setting.insert(s, Setting(key="a", value="1"))
        await Setting.insert_batch(s, [Setting(key=f"k{i}", value=str(i)) for i in range(5)])
        assert await Setting.find_by_id(s, a.id) == a
        assert len(await Setting.find_all(s, order_by="key")) == 6
        assert await Setting.count(s) == 6
        a.value = "2"
        await Setting.update(s, a)
        await Setting.delete(s, a.id)
        assert ops_delta(before, shard_ops(pool)) == {default: 7}
    rows = await shard_rows(pool, Setting)
    assert len(rows[default]) == 5
    assert all(not r for name, r in rows.items() if name != default)


async def test_pk_that_is_the_shard_key_routes_reads_updates_and_deletes_to_one_shard(
    make_sharded, unique
):
    Tenant = make_tenant(unique("tenants"))
    pool = await make_sharded(Tenant, cache_ttl=0)
    codes = [f"acme-{i}" for i in range(12)]
    async with pool.session("alice") as s:
        await Tenant.insert_batch(s, [Tenant(code=c, name=c.upper()) for c in codes])
        for code in codes:
            shard = pool.shards.shard_for(Tenant, code)
            before = shard_ops(pool)
            t = await Tenant.find_by_id(s, code)
            assert t == Tenant(code=code, name=code.upper())
            t.name = "renamed"
            await Tenant.update(s, t)
            assert (await Tenant.find_by_id(s, code)).name == "renamed"
            await Tenant.delete(s, code)
            assert await Tenant.find_by_id(s, code) is None
            with pytest.raises(NotFound):
                await Tenant.delete(s, code)
            assert ops_delta(before, shard_ops(pool)) == {shard: 6}
    assert all(not r for r in (await shard_rows(pool, Tenant)).values())


async def test_insert_batch_writes_each_shard_once_with_its_rows_and_audit(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order, cache_ttl=0)
    tenants = [f"tenant-{i}" for i in range(40)]
    objs = [Order(tenant_id=t, item="x", qty=i) for i, t in enumerate(tenants)]
    touched = {pool.shards.shard_for(Order, t) for t in tenants}
    assert touched == set(pool.shards.names)
    async with pool.session("alice") as s:
        before = shard_ops(pool)
        assert await Order.insert_batch(s, objs) == objs
        # one round trip (one transaction) per shard
        assert ops_delta(before, shard_ops(pool)) == dict.fromkeys(touched, 1)
    rows = await shard_rows(pool, Order)
    audits = await shard_audit(pool, Order)
    for name in pool.shards.names:
        mine = {str(o.id) for o in objs if pool.shards.shard_for(Order, o.tenant_id) == name}
        assert {str(r[0]) for r in rows[name]} == mine
        # the audit rows of a shard's rows are on that shard
        assert sorted(a[3] for a in audits[name] if a[1] == "insert") == sorted(mine)


async def test_update_and_delete_touch_only_the_rows_shard(make_sharded, unique):
    Order, pool, made, _ = await _seeded(make_sharded, unique, 2)
    target = made[0]
    shard = pool.shards.shard_for(Order, target.tenant_id)
    snapshot = await shard_rows(pool, Order)
    async with pool.session("alice") as s:
        target.qty = 99
        before = shard_ops(pool)
        await Order.update(s, target)
        assert ops_delta(before, shard_ops(pool)) == {shard: 1}
        after = await shard_rows(pool, Order)
        for name in pool.shards.names:
            if name != shard:
                assert after[name] == snapshot[name]
        assert (await Order.find_by_id(s, target.id)).qty == 99
        # delete with a hint: one shard; without: located by asking every shard
        before = shard_ops(pool)
        await Order.delete(s, target.id, shard_key=target.tenant_id)
        assert ops_delta(before, shard_ops(pool)) == {shard: 1}
        victim = made[-1]
        await Order.delete(s, victim.id)
        with pytest.raises(NotFound):
            await Order.delete(s, victim.id)
        with pytest.raises(NotFound):
            await Order.delete(s, target.id, shard_key=target.tenant_id)
    left = {str(r[0]) for rows in (await shard_rows(pool, Order)).values() for r in rows}
    assert left == {str(o.id) for o in made[1:-1]}
    audits = await shard_audit(pool, Order)
    # (the failed second deletes are audited as errors)
    assert [a[1] for a in audits[shard] if a[3] == str(target.id) and a[4] == "ok"] == [
        "insert",
        "update",
        "delete",
    ]
    victim_shard = pool.shards.shard_for(Order, victim.tenant_id)
    ok = [a[1] for a in audits[victim_shard] if a[3] == str(victim.id) and a[4] == "ok"]
    assert ok == ["insert", "delete"]


async def test_soft_delete_restore_and_purge_take_a_shard_key_hint(make_sharded, unique):
    Order, pool, made, _ = await _seeded(make_sharded, unique, 1, soft_delete=True)
    o = made[-1]
    shard = pool.shards.shard_for(Order, o.tenant_id)
    async with pool.session("alice") as s:
        before = shard_ops(pool)
        await Order.delete(s, o.id, shard_key=o.tenant_id)
        assert await Order.find_by_id(s, o.id, shard_key=o.tenant_id) is None
        restored = await Order.restore(s, o.id, shard_key=o.tenant_id)
        assert restored.id == o.id and restored.deleted_at is None
        await Order.delete(s, o.id, shard_key=o.tenant_id)
        await Order.purge(s, o.id, shard_key=o.tenant_id)
        assert ops_delta(before, shard_ops(pool)) == {shard: 5}
        # without hints every shard is asked to locate the row
        p = made[0]
        await Order.delete(s, p.id)
        assert (await Order.restore(s, p.id)).id == p.id
        await Order.delete(s, p.id)
        await Order.purge(s, p.id)
        with pytest.raises(NotFound):
            await Order.purge(s, p.id)
    left = {str(r[0]) for rows in (await shard_rows(pool, Order)).values() for r in rows}
    assert left == {str(x.id) for x in made[1:-1]}


async def test_custom_chooser_routes_every_operation(make_sharded, layout, unique):
    Order = make_order(unique("orders"))
    eu, us = list(layout.urls)[:2]
    shards = ShardManager.custom(
        {eu: layout.urls[eu], us: layout.urls[us]},
        lambda key: eu if key.startswith("eu-") else us,
    )
    pool = await make_sharded(Order, shards=shards, cache_ttl=0)
    async with pool.session("alice") as s:
        await Order.insert_batch(
            s, [Order(tenant_id=t, item="x") for t in ("eu-acme", "eu-globex", "us-initech")]
        )
        before = shard_ops(pool)
        got = await Order.find_all(s, where={"tenant_id__in": ["eu-acme", "eu-globex"]})
        assert sorted(o.tenant_id for o in got) == ["eu-acme", "eu-globex"]
        assert ops_delta(before, shard_ops(pool)) == {eu: 1}
    rows = await shard_rows(pool, Order)
    assert sorted(r[1] for r in rows[eu]) == ["eu-acme", "eu-globex"]
    assert [r[1] for r in rows[us]] == ["us-initech"]


async def test_update_batch_over_two_shards_writes_nothing_when_a_row_is_gone(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order, cache_ttl=0)
    keys = keys_for_each_shard(pool)
    first, second = pool.shards.names[:2]
    async with pool.session("alice") as s:
        kept = await Order.insert(s, Order(tenant_id=keys[first], item="kept", qty=1))
        gone = await Order.insert(s, Order(tenant_id=keys[second], item="gone", qty=1))
        await Order.delete(s, gone.id, shard_key=gone.tenant_id)
        kept.qty = gone.qty = 2
        # the documented contract: NotFound, and nothing written
        with pytest.raises(NotFound):
            await Order.update_batch(s, [kept, gone])
        assert (await Order.find_by_id(s, kept.id, shard_key=kept.tenant_id)).qty == 1


async def test_same_primary_key_on_two_shards_is_a_shard_error(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order, cache_ttl=0)
    keys = keys_for_each_shard(pool)
    first, second = pool.shards.names[:2]
    pk = uuid.uuid4()
    table = entity_info(Order).table
    for name in (first, second):
        row = {"id": pk, "tenant_id": keys[name], "item": "dup", "qty": 1, "note": None}
        await pool.databases[name].run_sync(lambda c, row=row: c.execute(table.insert(), [row]))
    async with pool.session("alice") as s:
        with pytest.raises(ShardError, match="several shards"):
            await Order.find_by_id(s, pk)
        with pytest.raises(ShardError, match="several shards"):
            await Order.delete(s, pk)
        # a hint picks one of them
        assert (await Order.find_by_id(s, pk, shard_key=keys[second])).tenant_id == keys[second]
        await Order.delete(s, pk, shard_key=keys[first])
        assert (await Order.find_by_id(s, pk)).tenant_id == keys[second]


async def test_find_all_and_count_with_shard_key_condition_ask_only_those_shards(
    make_sharded, unique
):
    Order, pool, made, keys = await _seeded(make_sharded, unique)
    names = pool.shards.names
    async with pool.session("alice") as s:
        for name in names:
            mine = sorted(str(o.id) for o in made if o.tenant_id == keys[name])
            before = shard_ops(pool)
            got = await Order.find_all(s, where={"tenant_id": keys[name]}, order_by="item")
            assert sorted(str(o.id) for o in got) == mine
            assert await Order.count(s, where={"tenant_id": keys[name], "qty__gte": 2}) == 2
            assert await Order.count(s, where=Q(tenant_id=keys[name])) == 3
            assert ops_delta(before, shard_ops(pool)) == {name: 3}
        two = [keys[n] for n in names[:2]]
        before = shard_ops(pool)
        got = await Order.find_all(s, where={"tenant_id__in": two}, order_by=["-qty", "item"])
        assert sorted(str(o.id) for o in got) == sorted(
            str(o.id) for o in made if o.tenant_id in two
        )
        assert [o.qty for o in got] == [3, 3, 2, 2, 1, 1]
        assert await Order.count(s, where={"tenant_id__in": two}) == 6
        assert ops_delta(before, shard_ops(pool)) == dict.fromkeys(names[:2], 2)
        # no shard-key condition: every shard
        before = shard_ops(pool)
        assert len(await Order.find_all(s, where={"qty": 1})) == len(names)
        assert await Order.count(s) == 3 * len(names)
        assert ops_delta(before, shard_ops(pool)) == dict.fromkeys(names, 2)


async def test_shard_key_condition_and_ed_with_q_asks_only_its_shard(make_sharded, unique):
    Order, pool, _, keys = await _seeded(make_sharded, unique)
    name = pool.shards.names[-1]
    key = keys[name]
    async with pool.session("alice") as s:
        before = shard_ops(pool)
        where = Q(tenant_id=key) & Q(qty__gte=2)
        assert len(await Order.find_all(s, where=where)) == 2
        assert await Order.count(s, where=where) == 2
        assert ops_delta(before, shard_ops(pool)) == {name: 2}


async def test_empty_in_list_on_the_shard_key_matches_nothing(make_sharded, unique):
    Order, pool, _, _ = await _seeded(make_sharded, unique, 1)
    async with pool.session("alice") as s:
        assert await Order.find_all(s, where={"tenant_id__in": []}) == []
        assert await Order.count(s, where={"tenant_id__in": []}) == 0
        assert await Order.delete_where(s, {"tenant_id__in": []}) == 0


async def test_update_where_and_delete_where_work_shard_by_shard(make_sharded, unique):
    Order, pool, made, keys = await _seeded(make_sharded, unique)
    names = pool.shards.names
    async with pool.session("alice") as s:
        before = shard_ops(pool)
        assert await Order.update_where(s, {"tenant_id": keys[names[0]]}, {"note": "one"}) == 3
        assert ops_delta(before, shard_ops(pool)) == {names[0]: 1}
        assert await Order.update_where(s, {"qty": 3}, {"note": "three"}) == len(names)
        assert await Order.delete_where(s, {"qty": 1}) == len(names)
        assert await Order.count(s) == 2 * len(names)
        assert await Order.count(s, where={"note": "three"}) == len(names)
    audits = await shard_audit(pool, Order)
    for name in names:
        ids = {str(o.id) for o in made if o.tenant_id == keys[name]}
        assert {a[3] for a in audits[name]} == ids
        deleted = [a for a in audits[name] if a[1] == "delete"]
        assert len(deleted) == 1


async def test_cache_keys_keep_shards_apart(make_sharded, unique):
    Order = make_order(unique("orders"))
    pool = await make_sharded(Order)
    keys = keys_for_each_shard(pool)
    first, second = pool.shards.names[:2]
    async with pool.session("alice") as s:
        o = await Order.insert(s, Order(tenant_id=keys[first], item="a"))
        assert await Order.find_by_id(s, o.id, shard_key=keys[first]) == o
        # the row cached for the first shard is not an answer for the second
        assert await Order.find_by_id(s, o.id, shard_key=keys[second]) is None
        assert await Order.find_by_id(s, o.id, shard_key=keys[first]) == o
        assert len(await Order.find_all(s)) == 1
        assert await Order.count(s) == 1
        # a write on one shard invalidates the scatter results that include it
        await Order.insert(s, Order(tenant_id=keys[second], item="b"))
        assert len(await Order.find_all(s)) == 2
        assert await Order.count(s) == 2
        assert await Order.count(s, where={"tenant_id": keys[first]}) == 1


async def test_permissions_are_checked_before_any_shard_is_touched(make_sharded, unique):
    Order = make_order(unique("orders"))
    table = entity_info(Order).table_name
    policy = "\n".join(
        [
            f"p, alice, {table}, read",
            f"p, alice, {table}, insert",
            f"p, bob, {table}, read",
        ]
    )
    pool = await make_sharded(
        Order, permissions=Permissions.from_text(RBAC_MODEL, policy), cache_ttl=0
    )
    keys = keys_for_each_shard(pool)
    async with pool.session("alice") as s:
        await Order.insert_batch(s, [Order(tenant_id=k, item="a") for k in keys.values()])
    async with pool.session("bob") as s:
        assert await Order.count(s) == len(keys)
        before = shard_ops(pool)
        for key in keys.values():
            with pytest.raises(PermissionDenied):
                await Order.insert(s, Order(tenant_id=key, item="b"))
        with pytest.raises(PermissionDenied):
            await Order.insert_batch(s, [Order(tenant_id=k, item="b") for k in keys.values()])
        with pytest.raises(PermissionDenied):
            await Order.delete_where(s, {})
        assert ops_delta(before, shard_ops(pool)) == {}
    rows = await shard_rows(pool, Order)
    assert sum(len(r) for r in rows.values()) == len(keys)
    denied = await pool.audit_log(table=table, outcome="denied")
    assert len(denied) == len(keys) + 2
    assert {r.user_id for r in denied} == {"bob"}


async def test_audit_rows_are_written_on_the_shard_of_the_write_and_merged_newest_first(
    make_sharded, unique
):
    Order, pool, made, _ = await _seeded(make_sharded, unique, 2, cache_ttl=60)
    table = entity_info(Order).table_name
    async with pool.session("alice") as s:
        for o in made[::2]:
            o.qty += 10
            await Order.update(s, o)
    log = await pool.audit_log(table=table, limit=None)
    assert len(log) == len(made) + len(made[::2])
    assert [(r.ts, r.id) for r in log] == sorted(((r.ts, r.id) for r in log), reverse=True)
    by_id = {str(o.id): o for o in made}
    for r in log:
        assert r.shard == pool.shards.shard_for(Order, by_id[r.record_id].tenant_id)
    # the newest record is the last update
    assert (log[0].action, log[0].record_id) == ("update", str(made[::2][-1].id))
    direct = await shard_audit(pool, Order)
    assert sorted((n, a[0]) for n, rows in direct.items() for a in rows) == sorted(
        (r.shard, r.id) for r in log
    )
    limited = await pool.audit_log(table=table, limit=3)
    assert [(r.shard, r.id) for r in limited] == [(r.shard, r.id) for r in log[:3]]


async def test_every_shard_round_trips_the_same_values(make_sharded, layout, unique):
    Order, pool, made, _ = await _seeded(make_sharded, unique, 2, cache_ttl=60)
    async with pool.session("alice") as s:
        got = await Order.find_all(s, order_by=["tenant_id", "item"])
        assert got == sorted(made, key=lambda o: (o.tenant_id, o.item))
        assert all(isinstance(o.id, uuid.UUID) for o in got)
    dialects = {db.dialect.name for db in pool.databases.values()}
    if layout.name == "mixed":
        assert dialects == {"sqlite", "postgresql"}


async def test_unroutable_rows_are_shard_errors_before_anything_is_written(
    make_sharded, layout, unique
):
    Account = make_account(unique("accounts"))
    names = list(layout.urls)
    # number 1000*i + 5 belongs to shard i; 10**6 to none
    good = [Account(id=i + 1, number=1000 * i + 5, owner="ok") for i in range(len(names))]
    ranges = [(1000 * (i + 1), name) for i, name in enumerate(names)]
    cases = {
        "range beyond the last bound": (ShardManager.range(layout.urls, bounds=ranges), 10**6),
        "custom chooser naming no shard": (
            ShardManager.custom(
                layout.urls, lambda n: names[n // 1000] if n < 1000 * len(names) else "atlantis"
            ),
            10**6,
        ),
        "missing shard-key value": (ShardManager.range(layout.urls, bounds=ranges), None),
    }
    for case, (shards, bad) in cases.items():
        pool = await make_sharded(Account, shards=shards)
        assert {pool.shards.shard_for(Account, a.number) for a in good} == set(names)
        async with pool.session("alice") as s:
            with pytest.raises(ShardError) as err:
                await Account.insert(s, Account(id=100, number=bad, owner="bad"))
            if isinstance(shards.strategy, CustomStrategy):
                assert "atlantis" in str(err.value)
            with pytest.raises(ShardError):
                await Account.insert_batch(s, [*good, Account(id=101, number=bad, owner="bad")])
            with pytest.raises(ShardError):
                async with s.transaction():
                    await Account.insert(s, good[0])
                    await Account.insert(s, Account(id=102, number=bad, owner="bad"))
        rows = await shard_rows(pool, Account)
        assert all(not r for r in rows.values()), case
        audits = await shard_audit(pool, Account)
        assert [a for rows in audits.values() for a in rows if a[4] == "ok"] == [], case
