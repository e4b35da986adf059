"""CRUD through ``@crud`` classmethods on every backend: round trips, queries, constraints."""

import datetime as dt
import decimal
import uuid
import warnings

import pytest
from test_core_support import make_everything, make_user, users

from dbnexus import DatabaseError, IntegrityError, NotFound, Q, crud, entity, field

pytestmark = pytest.mark.backend


async def test_insert_returns_object_with_generated_id_and_find_by_id_reads_it(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = User(name="A", email="a@example.com")
        got = await User.insert(s, u)
        assert got is u
        assert isinstance(u.id, int) and u.id > 0
        found = await User.find_by_id(s, u.id)
        assert found == User(id=u.id, name="A", email="a@example.com", age=None)
        assert found is not u


async def test_find_by_id_of_absent_row_is_none(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        assert await User.find_by_id(s, 424242) is None
        u = await User.insert(s, User(name="A", email="a@example.com"))
        assert await User.find_by_id(s, u.id + 1) is None


async def test_insert_with_explicit_primary_key_keeps_it(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(id=77, name="A", email="a@example.com"))
        assert u.id == 77
        assert (await User.find_by_id(s, 77)).name == "A"
        # the sequence / autoincrement still hands out fresh ids afterwards
        v = await User.insert(s, User(name="B", email="b@example.com"))
        assert v.id not in (None, 77)


async def test_update_writes_every_field(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@example.com"))
        other = await User.insert(s, User(name="O", email="o@example.com", age=5))
        got = await User.find_by_id(s, u.id)
        got.age = 31
        got.name = "Anne"
        assert await User.update(s, got) is got
        again = await User.find_by_id(s, u.id)
        assert (again.name, again.email, again.age) == ("Anne", "a@example.com", 31)
        # only the addressed row changed
        assert await User.find_by_id(s, other.id) == other


async def test_update_of_deleted_row_raises_not_found(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@example.com"))
        await User.delete(s, u.id)
        u.age = 3
        with pytest.raises(NotFound) as err:
            await User.update(s, u)
        assert err.value.table == User.__dbnexus__.table_name
        assert err.value.record_id == u.id
        assert await User.count(s) == 0


async def test_delete_removes_the_row_and_raises_not_found_when_absent(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        a, b = await User.insert_batch(s, users(User, 2))
        assert await User.delete(s, a.id) is None
        assert await User.find_by_id(s, a.id) is None
        assert [u.id for u in await User.find_all(s)] == [b.id]
        with pytest.raises(NotFound):
            await User.delete(s, a.id)
        with pytest.raises(NotFound):
            await User.delete(s, 999_999)
        assert await User.count(s) == 1


async def test_find_all_filters_orders_and_windows(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        made = await User.insert_batch(
            s,
            [
                User(name="A", email="a1@example.com", age=30),
                User(name="B", email="b@example.com", age=40),
                User(name="A", email="a2@example.com", age=50),
                User(name="A", email="a3@example.com", age=None),
            ],
        )
        ids_a = sorted(u.id for u in made if u.name == "A")
        rows = await User.find_all(s, where={"name": "A"}, order_by="-id", limit=10, offset=0)
        assert [r.id for r in rows] == ids_a[::-1]
        assert all(isinstance(r, User) for r in rows)
        page = await User.find_all(s, where={"name": "A"}, order_by="id", limit=2, offset=1)
        assert [r.id for r in page] == ids_a[1:3]
        assert await User.find_all(s, where={"name": "nobody"}) == []
        everyone = await User.find_all(s)
        assert sorted(u.id for u in everyone) == sorted(u.id for u in made)


async def test_limit_without_offset(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, 5))
        rows = await User.find_all(s, order_by="id", limit=2)
        assert [r.id for r in rows] == [u.id for u in made][:2]
        assert await User.find_all(s, order_by="id", limit=0) == []


async def test_offset_without_limit(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, 5))
        rows = await User.find_all(s, order_by="id", offset=3)
        assert [r.id for r in rows] == [u.id for u in made][3:]
        assert await User.find_all(s, order_by="id", offset=5) == []


async def test_order_by_list_sorts_by_each_key_in_turn(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert_batch(
            s,
            [
                User(name="c", email="1@x.org", age=30),
                User(name="a", email="2@x.org", age=30),
                User(name="b", email="3@x.org", age=40),
                User(name="d", email="4@x.org", age=20),
            ],
        )
        rows = await User.find_all(s, order_by=["-age", "name"])
        assert [(r.age, r.name) for r in rows] == [(40, "b"), (30, "a"), (30, "c"), (20, "d")]
        rows = await User.find_all(s, order_by=["age", "-name"])
        assert [r.name for r in rows] == ["d", "c", "a", "b"]


async def test_count_with_and_without_where(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        assert await User.count(s) == 0
        await User.insert_batch(
            s,
            [
                User(name="A", email="a@x.org", age=31),
                User(name="B", email="b@x.org", age=31),
                User(name="C", email="c@x.org", age=32),
            ],
        )
        assert await User.count(s) == 3
        assert await User.count(s, where={"age": 31}) == 2
        assert await User.count(s, where={"age": 99}) == 0


async def test_insert_batch_assigns_distinct_ids_in_order(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        first = await User.insert(s, User(name="first", email="first@x.org"))
        batch = users(User, 25)
        got = await User.insert_batch(s, batch)
        assert [u.name for u in got] == [u.name for u in batch]
        ids = [u.id for u in got]
        assert len(set(ids)) == 25 and first.id not in ids
        assert ids == sorted(ids)
        for u in got:
            assert await User.find_by_id(s, u.id) == u
        assert await User.insert_batch(s, []) == []
        assert await User.count(s) == 26


async def test_insert_batch_mixing_given_and_generated_ids(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        got = await User.insert_batch(
            s,
            [
                User(name="gen1", email="g1@x.org"),
                User(id=500, name="given", email="given@x.org"),
                User(name="gen2", email="g2@x.org"),
            ],
        )
        assert got[1].id == 500
        for u in got:
            assert (await User.find_by_id(s, u.id)).name == u.name
        assert len({u.id for u in got}) == 3


async def test_migrate_is_idempotent_and_keeps_rows(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="A", email="a@x.org"))
    await pool.migrate(entities=[User])
    await pool.migrate(entities=[User])
    async with pool.session("alice") as s:
        assert await User.count(s) == 1


async def test_every_type_round_trips(make_pool, unique):
    Everything = make_everything(unique("everything"))
    pool = await make_pool(Everything)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    full = Everything(
        i=2**40 + 7,
        s="héllo wörld ✓ 😀 'quoted' \"double\" \\ back",
        f=1.5,
        b=True,
        ts=dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=plus2),
        day=dt.date(1999, 12, 31),
        clock=dt.time(13, 14, 15),
        amount=decimal.Decimal("12345.678901"),
        key=uuid.uuid4(),
        doc={"a": [1, 2, {"b": None}], "ünï": "cödé", "n": 1.25, "t": True},
        items=[1, "two", None, [3.5], {"k": "v"}],
        maybe_i=-5,
        maybe_s="",
        maybe_ts=dt.datetime(2020, 1, 1, 0, 0, 0, 1),  # naive: taken as UTC
        maybe_doc={},
    )
    empty = Everything(
        i=0,
        s="",
        f=-0.25,
        b=False,
        ts=dt.datetime(1970, 1, 2, tzinfo=dt.UTC),
        day=dt.date(2000, 1, 1),
        clock=dt.time(0, 0),
        amount=decimal.Decimal("-0.5"),
        key=uuid.UUID(int=0),
        doc={"x": 1},
        items=[],
    )
    async with pool.session("alice") as s:
        await Everything.insert_batch(s, [full, empty])
        for want in (full, empty):
            got = await Everything.find_by_id(s, want.id)
            for name in (
                "i",
                "s",
                "f",
                "b",
                "day",
                "clock",
                "amount",
                "key",
                "doc",
                "items",
                "maybe_i",
                "maybe_s",
                "maybe_doc",
            ):
                assert getattr(got, name) == getattr(want, name), name
                assert isinstance(getattr(got, name), type(getattr(want, name))), name
            assert got.ts == want.ts
            assert got.ts.utcoffset() == dt.timedelta(0)
        got = await Everything.find_by_id(s, full.id)
        assert got.ts.replace(tzinfo=None) == dt.datetime(2024, 2, 29, 21, 59, 58, 123456)
        assert got.maybe_ts == dt.datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)
        got_empty = await Everything.find_by_id(s, empty.id)
        assert (got_empty.maybe_i, got_empty.maybe_s, got_empty.maybe_ts, got_empty.maybe_doc) == (
            None,
            None,
            None,
            None,
        )
        # the same values also come back through find_all, and can be filtered on
        rows = await Everything.find_all(
            s, where={"key": full.key, "amount": full.amount, "day": full.day, "b": True}
        )
        assert [r.id for r in rows] == [full.id]
        rows = await Everything.find_all(s, where={"ts__lt": full.ts}, order_by="id")
        assert [r.id for r in rows] == [empty.id]


async def test_bytes_round_trip(make_pool, unique):
    table = unique("blobs")

    @crud
    @entity(table=table)
    class Blob:
        id: int | None = field(primary_key=True, default=None)
        data: bytes
        small: bytes | None = field(default=None, max_length=16)

    pool = await make_pool(Blob)
    values = [bytes(range(256)), b"", b"'; DROP TABLE x; --\x00", "ü".encode() * 1000]
    async with pool.session("alice") as s:
        made = await Blob.insert_batch(s, [Blob(data=v, small=v[:16] or None) for v in values])
        one = await Blob.insert(s, Blob(data=b"\xff\x00", small=b"\x00"))
        for want in [*made, one]:
            got = await Blob.find_by_id(s, want.id)
            assert got.data == want.data and type(got.data) is bytes
            assert got.small == want.small
        one.data = b"changed"
        await Blob.update(s, one)
        assert (await Blob.find_by_id(s, one.id)).data == b"changed"
        assert await Blob.count(s, where={"small": b"\x00"}) == 1


async def test_values_are_bound_parameters_not_sql(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    nasty = "x'); DROP TABLE users; --"
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name=nasty, email="robert'); --@x.org"))
        assert (await User.find_by_id(s, u.id)).name == nasty
        assert [r.id for r in await User.find_all(s, where={"name": nasty})] == [u.id]
        assert await User.count(s, where={"name__contains": "'); DROP"}) == 1
        assert await User.count(s, where={"name": "x' OR '1'='1"}) == 0
        u.name = nasty + nasty
        await User.update(s, u)
        assert (await User.find_by_id(s, u.id)).name == nasty + nasty


async def test_unique_violation_raises_integrity_error_and_writes_nothing(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="A", email="same@x.org"))
        with pytest.raises(IntegrityError) as err:
            await User.insert(s, User(name="B", email="same@x.org"))
        assert err.value.orig is not None
        with pytest.raises(IntegrityError):
            await User.insert_batch(
                s, [User(name="C", email="c@x.org"), User(name="D", email="same@x.org")]
            )
        assert [u.name for u in await User.find_all(s)] == ["A"]


async def test_operators(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        rows = await User.insert_batch(
            s,
            [
                User(name="Alice", email="1@x.org", age=20),
                User(name="alfred", email="2@x.org", age=30),
                User(name="Bob", email="3@x.org", age=40),
                User(name="50%_off", email="4@x.org", age=None),
                User(name="500 off", email="5@x.org", age=50),
            ],
        )
        ids = {u.name: u.id for u in rows}

        async def names(where):
            return sorted(u.name for u in await User.find_all(s, where=where))

        assert await names({"age__gt": 30}) == ["500 off", "Bob"]
        assert await names({"age__gte": 30, "age__lte": 40}) == ["Bob", "alfred"]
        assert await names({"age__lt": 30}) == ["Alice"]
        assert await names({"age__between": (20, 30)}) == ["Alice", "alfred"]
        assert await names({"age__in": [20, 50, 99]}) == ["500 off", "Alice"]
        assert await names({"age__in": []}) == []
        # "differs from" keeps the NULL row, as it would in Python
        assert await names({"age__ne": 20}) == ["50%_off", "500 off", "Bob", "alfred"]
        assert await names({"age__not_in": [20, 30]}) == ["50%_off", "500 off", "Bob"]
        assert await names({"age__is_null": True}) == ["50%_off"]
        assert await names({"age": None}) == ["50%_off"]
        assert await names({"age__is_null": False}) == ["500 off", "Alice", "Bob", "alfred"]
        # (whether LIKE folds case is the database's business: patterns here avoid it)
        assert await names({"name__like": "_o_"}) == ["Bob"]
        assert await names({"name__like": "%ice"}) == ["Alice"]
        assert await names({"name__ilike": "AL%"}) == ["Alice", "alfred"]
        assert await names({"name__ilike": "bOB"}) == ["Bob"]
        # wildcards in startswith/contains are literal characters
        assert await names({"name__startswith": "50%"}) == ["50%_off"]
        assert await names({"name__contains": "%_"}) == ["50%_off"]
        assert await names({"name__contains": "0 o"}) == ["500 off"]
        assert await names(Q(age__lt=25) | Q(name="Bob")) == ["Alice", "Bob"]
        assert await names(Q(age__gte=30) & ~Q(name="Bob")) == ["500 off", "alfred"]
        # NOT keeps rows where the inner condition is unknown (NULL age)
        assert await names(~Q(age__gt=25)) == ["50%_off", "Alice"]
        assert await User.count(s, where=Q(name__startswith="50") | Q(age=20)) == 3
        assert ids["Bob"] in {u.id for u in await User.find_all(s, where={"name": "Bob"})}


async def test_crud_methods_forward_to_the_session(make_pool, unique):
    table = unique("notes")

    @crud
    @entity(table=table)
    class Note:
        key: str = field(primary_key=True, max_length=40)
        body: str

    pool = await make_pool(Note)
    async with pool.session("alice") as s:
        n = await s.insert(Note(key="k1", body="hello"))
        assert n.key == "k1"
        assert await s.find_by_id(Note, "k1") == Note(key="k1", body="hello")
        assert await Note.find_by_id(s, "k2") is None
        n.body = "bye"
        await s.update(n)
        assert [x.body for x in await s.find_all(Note, where={"key": "k1"})] == ["bye"]
        assert await s.count(Note) == 1
        await s.delete(Note, "k1")
        assert await Note.count(s) == 0


async def test_driver_errors_are_translated_to_database_error(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        # the table disappears behind the library's back
        await pool.databases["default"].run_sync(lambda conn: table.drop(conn))
        for call in (
            lambda: User.find_by_id(s, u.id),
            lambda: User.count(s),
            lambda: User.insert(s, User(name="B", email="b@x.org")),
            lambda: User.delete(s, u.id),
        ):
            with pytest.raises(DatabaseError) as err:
                await call()
            assert not isinstance(err.value, IntegrityError)
            assert err.value.orig is not None
            assert err.value.__cause__ is err.value.orig
    errors = await pool.audit_log(table=table.name, outcome="error")
    assert [r.action for r in errors] == ["delete", "insert", "read", "read"]


async def test_large_insert_batch(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    n = 2500  # more rows than one multi-row statement carries
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, n))
        assert len({u.id for u in made}) == n
        assert await User.count(s) == n
        sample_rows = made[:: n // 10]
        for u in sample_rows:
            assert await User.find_by_id(s, u.id) == u
    records = await pool.audit_log(table=User.__dbnexus__.table_name, limit=None)
    assert len(records) == n
    assert {r.record_id for r in records} == {str(u.id) for u in made}


async def test_string_primary_key_entity_raises_no_warnings(make_pool, unique):
    table = unique("codes")

    @crud
    @entity(table=table)
    class Code:
        code: str = field(primary_key=True, max_length=20)
        label: str | None = None

    pool = await make_pool(Code)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with pool.session("alice") as s:
            await Code.insert(s, Code(code="A1", label="first"))
            await Code.insert_batch(s, [Code(code="B2"), Code(code="C3")])
            assert (await Code.find_by_id(s, "A1")).label == "first"
            assert await Code.count(s) == 3
    assert [str(w.message) for w in caught] == []
