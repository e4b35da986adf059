"""The audit log: one row per write, in the write's own transaction; queries over it."""

import asyncio
import datetime as dt
import decimal
import time
import uuid

import pytest
from test_core_support import make_everything, make_user, users

from dbnexus import AuditRecord, IntegrityError, NotFound, ValidationError

pytestmark = pytest.mark.backend


def name_of(User):
    return User.__dbnexus__.table_name


async def test_insert_update_delete_are_audited_with_their_changes(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    async with pool.session("alice", tags=["api"]) as s:
        u = await User.insert(s, User(name="A", email="a@x.org"), tags=["signup"])
        u.age = 31
        u.name = "Anne"
        await User.update(s, u)
        await User.delete(s, u.id)
    ins, upd, dele = (await pool.audit_log(table=table))[::-1]
    for r in (ins, upd, dele):
        assert isinstance(r, AuditRecord)
        assert (r.user_id, r.table_name, r.record_id, r.outcome) == (
            "alice",
            table,
            str(u.id),
            "ok",
        )
        assert r.domain is None
        assert r.ts.utcoffset() == dt.timedelta(0)
        assert t0 <= r.ts <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        assert "api" in r.tags
    assert (ins.action, upd.action, dele.action) == ("insert", "update", "delete")
    assert ins.changes == {"id": u.id, "name": "A", "email": "a@x.org", "age": None}
    assert sorted(ins.tags) == ["api", "signup"]
    assert upd.changes == {"name": ["A", "Anne"], "age": [None, 31]}
    assert dele.changes == {"id": u.id, "name": "Anne", "email": "a@x.org", "age": 31}
    assert ins.id < upd.id < dele.id


async def test_insert_batch_writes_one_audit_row_per_row(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, 4))
    records = await pool.audit_log(table=table, action="insert")
    assert sorted(r.record_id for r in records) == sorted(str(u.id) for u in made)
    by_id = {r.record_id: r.changes for r in records}
    for u in made:
        assert by_id[str(u.id)] == {"id": u.id, "name": u.name, "email": u.email, "age": u.age}


async def test_rolled_back_write_leaves_neither_data_nor_audit(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        keep = await User.insert(s, User(name="keep", email="k@x.org"))
        with pytest.raises(RuntimeError):
            async with s.transaction():
                await User.insert(s, User(name="gone", email="g@x.org"))
                keep.age = 99
                await User.update(s, keep)
                await User.insert_batch(s, users(User, 2))
                raise RuntimeError("abort")
        await s.begin()
        await User.delete(s, keep.id)
        await s.rollback()
        assert [(u.name, u.age) for u in await User.find_all(s)] == [("keep", None)]
    records = await pool.audit_log(table=table)
    assert [(r.action, r.record_id) for r in records] == [("insert", str(keep.id))]


async def test_committed_transaction_keeps_every_audit_row(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        async with s.transaction():
            a = await User.insert(s, User(name="a", email="a@x.org"))
            a.age = 1
            await User.update(s, a)
        assert await User.count(s) == 1
    assert [r.action for r in await pool.audit_log(table=table)] == ["update", "insert"]


async def test_failed_write_is_audited_as_error_and_writes_nothing(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="A", email="dup@x.org"))
        with pytest.raises(IntegrityError):
            await User.insert(s, User(name="B", email="dup@x.org"))
        with pytest.raises(NotFound):
            await User.delete(s, 123456)
        assert await User.count(s) == 1
    errors = await pool.audit_log(table=table, outcome="error")
    assert [r.action for r in errors] == ["delete", "insert"]
    assert errors[0].record_id == "123456"
    oks = await pool.audit_log(table=table, outcome="ok")
    assert [r.action for r in oks] == ["insert"]


async def test_rejected_input_is_not_audited(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        with pytest.raises(ValidationError):
            await User.insert(s, User(name="x" * 101, email="e@x.org"))
    assert await pool.audit_log(table=table) == []


async def test_reads_are_not_audited_by_default(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        await User.find_by_id(s, u.id)
        await User.find_all(s)
        await User.count(s)
    assert [r.action for r in await pool.audit_log(table=table)] == ["insert"]


async def test_audit_reads_records_every_read(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User, audit_reads=True)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        await User.find_by_id(s, u.id)
        await User.find_by_id(s, u.id)  # a cache hit is still a read
        await User.find_all(s, where={"name": "A"})
        await User.count(s)
        async with s.transaction():
            await User.find_by_id(s, u.id)
    reads = await pool.audit_log(table=table, action="read")
    assert len(reads) == 5
    assert all(r.outcome == "ok" and r.user_id == "alice" for r in reads)
    assert sorted(r.record_id or "" for r in reads) == ["", "", str(u.id), str(u.id), str(u.id)]


async def test_audit_log_filters_and_orders_newest_first(make_pool, unique):
    User = make_user(unique("users"))
    Other = make_user(unique("others"))
    table, other = name_of(User), name_of(Other)
    pool = await make_pool(User, Other)
    async with pool.session("alice") as s:
        a = await User.insert(s, User(name="a", email="a@x.org"))
        await Other.insert(s, Other(name="o", email="o@x.org"))
    middle = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.01)  # timestamps on either side of the mark differ
    async with pool.session("bob") as s:
        b = await User.insert(s, User(name="b", email="b@x.org"))
        b.age = 3
        await User.update(s, b)
        await User.delete(s, a.id)

    everything = await pool.audit_log(table=table)
    assert [(r.user_id, r.action) for r in everything] == [
        ("bob", "delete"),
        ("bob", "update"),
        ("bob", "insert"),
        ("alice", "insert"),
    ]
    assert [r.ts for r in everything] == sorted((r.ts for r in everything), reverse=True)
    assert [r.action for r in await pool.audit_log(user_id="alice", table=table)] == ["insert"]
    assert [r.table_name for r in await pool.audit_log(user_id="alice", table=other)] == [other]
    assert [r.record_id for r in await pool.audit_log(table=table, action="insert")] == [
        str(b.id),
        str(a.id),
    ]
    assert [r.action for r in await pool.audit_log(table=table, limit=2)] == ["delete", "update"]
    assert [r.user_id for r in await pool.audit_log(table=table, since=middle)] == ["bob"] * 3
    assert await pool.audit_log(table=table, outcome="denied") == []
    assert await pool.audit_log(table=table, limit=0) == []
    with pytest.raises(ValidationError):
        await pool.audit_log(outcome="maybe")
    with pytest.raises(ValidationError):
        await pool.audit_log(limit=-1)


async def test_failed_write_inside_a_transaction_is_audited_without_stalling(make_pool, unique):
    User = make_user(unique("users"))
    table = name_of(User)
    pool = await make_pool(User, acquire_timeout=2)
    async with pool.session("alice") as s:
        async with s.transaction():
            a = await User.insert(s, User(name="a", email="a@x.org"))
            started = time.monotonic()
            with pytest.raises(NotFound):
                await User.delete(s, a.id + 1000)
            assert time.monotonic() - started < 1.5
            a.age = 5
            await User.update(s, a)
        assert (await User.find_by_id(s, a.id)).age == 5
    records = await pool.audit_log(table=table)
    assert [(r.action, r.outcome) for r in records] == [
        ("update", "ok"),
        ("delete", "error"),
        ("insert", "ok"),
    ]


async def test_changes_of_every_type_are_json(make_pool, unique):
    Everything = make_everything(unique("everything"))
    table = name_of(Everything)
    pool = await make_pool(Everything)
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    key = uuid.uuid4()
    obj = Everything(
        i=1,
        s="s",
        f=0.5,
        b=True,
        ts=when,
        day=dt.date(2024, 5, 6),
        clock=dt.time(7, 8, 9),
        amount=decimal.Decimal("1.25"),
        key=key,
        doc={"a": [1]},
        items=[1, "x"],
    )
    async with pool.session("alice") as s:
        await Everything.insert(s, obj)
        obj.ts = when + dt.timedelta(days=1)
        obj.amount = decimal.Decimal("2.5")
        obj.doc = {"a": [2]}
        await Everything.update(s, obj)
    upd, ins = await pool.audit_log(table=table)
    assert ins.changes["ts"].startswith("2024-05-06T07:08:09.123456")
    assert ins.changes["day"] == "2024-05-06"
    assert ins.changes["key"] == str(key)
    assert decimal.Decimal(ins.changes["amount"]) == decimal.Decimal("1.25")
    assert (ins.changes["doc"], ins.changes["items"], ins.changes["b"]) == (
        {"a": [1]},
        [1, "x"],
        True,
    )
    assert set(upd.changes) == {"ts", "amount", "doc"}
    old_ts, new_ts = upd.changes["ts"]
    assert old_ts.startswith("2024-05-06T07:08:09") and new_ts.startswith("2024-05-07T07:08:09")
    assert [decimal.Decimal(v) for v in upd.changes["amount"]] == [
        decimal.Decimal("1.25"),
        decimal.Decimal("2.5"),
    ]
    assert upd.changes["doc"] == [{"a": [1]}, {"a": [2]}]
