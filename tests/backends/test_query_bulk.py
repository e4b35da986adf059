"""Bulk writes: update_where, delete_where and update_batch (one check, audit per row)."""

import datetime as dt

import pytest
from test_core_support import RBAC_MODEL, sample
from test_query_support import as_dict, make_ranked, make_thing, thing_rows

from dbnexus import NotFound, PermissionDenied, Permissions, Q, ValidationError

pytestmark = pytest.mark.backend


def table_of(Entity):
    return Entity.__dbnexus__.table_name


async def seeded(make_pool, unique, **kwargs):
    Thing = make_thing(unique("things"))
    pool = await make_pool(Thing, **kwargs)
    async with pool.session("alice") as s:
        made = await Thing.insert_batch(s, thing_rows(Thing, 20))
    return pool, Thing, {t.id: as_dict(t) for t in made}


async def current(pool, Thing):
    """Every row as the database has it now (read in a transaction: no cache)."""
    async with pool.session("alice") as s, s.transaction():
        return {t.id: as_dict(t) for t in await Thing.find_all(s)}


async def test_update_where_changes_matching_rows_and_audits_each(make_pool, unique):
    pool, Thing, before = await seeded(make_pool, unique)
    table = table_of(Thing)
    where = Q(age__lt=3) | Q(age=None)
    hit = {i for i, r in before.items() if r["age"] is None or r["age"] < 3}
    assert 0 < len(hit) < len(before)
    async with pool.session("alice", tags=["job"]) as s:
        # a cached read that the bulk write must invalidate
        probe = next(iter(hit))
        assert (await Thing.find_by_id(s, probe)).nick == before[probe]["nick"]
        n = await Thing.update_where(s, where, {"nick": "bulk", "score": 9.5}, tags=["nightly"])
        assert n == len(hit)
        assert (await Thing.find_by_id(s, probe)).nick == "bulk"
    after = await current(pool, Thing)
    for i, row in after.items():
        if i in hit:
            assert row == {**before[i], "nick": "bulk", "score": 9.5}
        else:
            assert row == before[i]
    records = await pool.audit_log(table=table, action="update")
    assert sorted(int(r.record_id) for r in records) == sorted(hit)
    for r in records:
        old = before[int(r.record_id)]
        expected = {
            k: [old[k], v] for k, v in {"nick": "bulk", "score": 9.5}.items() if old[k] != v
        }
        assert r.changes == expected
        assert (r.user_id, r.outcome) == ("alice", "ok")
        assert sorted(r.tags) == ["job", "nightly"]


async def test_update_where_with_no_match_writes_nothing(make_pool, unique):
    pool, Thing, before = await seeded(make_pool, unique)
    async with pool.session("alice") as s:
        assert await Thing.update_where(s, {"age__gt": 100}, {"nick": "x"}) == 0
        assert await Thing.delete_where(s, {"name": "zzz"}) == 0
    assert await current(pool, Thing) == before
    assert await pool.audit_log(table=table_of(Thing), action="update") == []
    assert await pool.audit_log(table=table_of(Thing), action="delete") == []


async def test_delete_where_removes_matching_rows_and_audits_their_values(make_pool, unique):
    pool, Thing, before = await seeded(make_pool, unique)
    table = table_of(Thing)
    hit = {i for i, r in before.items() if r["active"] and r["score"] >= 0.5}
    assert hit
    async with pool.session("alice") as s:
        n = await Thing.delete_where(s, {"active": True, "score__gte": 0.5}, tags=["gc"])
        assert n == len(hit)
        for i in hit:
            assert await Thing.find_by_id(s, i) is None
    assert await current(pool, Thing) == {i: r for i, r in before.items() if i not in hit}
    records = await pool.audit_log(table=table, action="delete")
    assert sorted(int(r.record_id) for r in records) == sorted(hit)
    for r in records:
        old = before[int(r.record_id)]
        expected = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in old.items()}
        assert r.changes == expected
        assert r.tags == ["gc"]


async def test_an_empty_where_touches_every_row_but_none_is_refused(make_pool, unique):
    pool, Thing, before = await seeded(make_pool, unique)
    async with pool.session("alice") as s:
        with pytest.raises(ValidationError):
            await Thing.update_where(s, None, {"nick": "x"})
        with pytest.raises(ValidationError):
            await Thing.delete_where(s, None)
        assert await current(pool, Thing) == before
        assert await Thing.update_where(s, {}, {"age": 7}) == len(before)
        assert {r["age"] for r in (await current(pool, Thing)).values()} == {7}
        assert await Thing.delete_where(s, Q()) == len(before)
        assert await Thing.count(s) == 0


async def test_bad_update_where_values_are_validation_errors_and_write_nothing(make_pool, unique):
    Ranked = make_ranked(unique("ranked"), timestamps=True)
    pool = await make_pool(Ranked)
    async with pool.session("alice") as s:
        made = await Ranked.insert_batch(s, [Ranked(rank=k) for k in range(4)])
    snapshot = {r.id: (r.rank, r.label, r.updated_at) for r in made}
    now = dt.datetime.now(dt.UTC)
    bad = [
        {"rank": "high"},
        {"rank": None},
        {"label": "x" * 21},
        {"nope": 1},
        {"id": 99},
        {"created_at": now},
        {"updated_at": now},
        {},
        [("rank", 1)],
    ]
    async with pool.session("alice") as s:
        for values in bad:
            with pytest.raises(ValidationError):
                await Ranked.update_where(s, {}, values)
        with pytest.raises(ValidationError):
            await Ranked.update_where(s, {"nope": 1}, {"rank": 1})
        async with s.transaction():
            rows = await Ranked.find_all(s)
    assert {r.id: (r.rank, r.label, r.updated_at) for r in rows} == snapshot
    assert await pool.audit_log(table=table_of(Ranked), action="update") == []


async def test_update_batch_updates_every_object_and_audits_each(make_pool, unique):
    pool, Thing, before = await seeded(make_pool, unique)
    table = table_of(Thing)
    async with pool.session("alice") as s:
        objs = await Thing.find_all(s, order_by="id", limit=5)
        for k, o in enumerate(objs):
            o.age = 40 + k
            o.name = "upd"
        out = await Thing.update_batch(s, objs, tags=["batch"])
        assert out == objs
    after = await current(pool, Thing)
    for k, o in enumerate(objs):
        assert after[o.id] == {**before[o.id], "age": 40 + k, "name": "upd"}
    untouched = set(before) - {o.id for o in objs}
    assert all(after[i] == before[i] for i in untouched)
    records = await pool.audit_log(table=table, action="update")
    assert sorted(int(r.record_id) for r in records) == sorted(o.id for o in objs)
    for r in records:
        old = before[int(r.record_id)]
        new = after[int(r.record_id)]
        assert r.changes == {k: [old[k], new[k]] for k in ("name", "age") if old[k] != new[k]}
        assert r.tags == ["batch"]


async def test_update_batch_with_a_missing_row_writes_nothing(make_pool, unique):
    pool, Thing, before = await seeded(make_pool, unique)
    async with pool.session("alice") as s:
        objs = await Thing.find_all(s, order_by="id", limit=3)
        await Thing.delete(s, objs[2].id)
        for o in objs:
            o.name = "upd"
        with pytest.raises(NotFound):
            await Thing.update_batch(s, objs)
        objs[1].age = "old"
        with pytest.raises(ValidationError):
            await Thing.update_batch(s, objs[:2])
    del before[objs[2].id]
    assert await current(pool, Thing) == before
    assert await pool.audit_log(table=table_of(Thing), action="update", outcome="ok") == []


async def test_each_bulk_write_is_one_permission_check_of_its_action(make_pool, unique):
    Thing = make_thing(unique("things"))
    table = table_of(Thing)
    policy = "\n".join(
        [
            f"p, admin, {table}, insert",
            f"p, admin, {table}, read",
            f"p, updater, {table}, update",
            f"p, deleter, {table}, delete",
        ]
    )
    pool = await make_pool(Thing, permissions=Permissions.from_text(RBAC_MODEL, policy))
    async with pool.session("admin") as s:
        made = await Thing.insert_batch(s, [Thing(name="a", age=k) for k in range(6)])
    # update alone (no read) is enough for update_where and update_batch
    async with pool.session("updater") as s:
        assert await Thing.update_where(s, {"age__lt": 3}, {"nick": "u"}) == 3
        made[5].nick = "b"
        await Thing.update_batch(s, [made[5]])
        for call in (
            lambda: Thing.delete_where(s, {}),
            lambda: Thing.find_all(s),
        ):
            with pytest.raises(PermissionDenied):
                await call()
    async with pool.session("deleter") as s:
        assert await Thing.delete_where(s, {"age__gte": 4}) == 2
        with pytest.raises(PermissionDenied):
            await Thing.update_where(s, {}, {"nick": "d"})
        with pytest.raises(PermissionDenied):
            await Thing.update_batch(s, made[:4])
    async with pool.session("admin") as s, s.transaction():
        rows = {t.age: t.nick for t in await Thing.find_all(s)}
    assert rows == {0: "u", 1: "u", 2: "u", 3: None}
    # each refused bulk write is one denial, whatever the number of rows
    assert sample(pool, "dbnexus_permission_denied_total", table=table, action="update") == 2
    assert sample(pool, "dbnexus_permission_denied_total", table=table, action="delete") == 1
    denied = await pool.audit_log(table=table, outcome="denied")
    assert sorted((r.user_id, r.action) for r in denied) == [
        ("deleter", "update"),
        ("deleter", "update"),
        ("updater", "delete"),
        ("updater", "read"),
    ]
    assert all(r.record_id is None for r in denied)
