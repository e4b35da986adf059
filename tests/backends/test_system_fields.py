"""System fields: created_at/updated_at set by dbnexus, soft delete, restore and purge."""

import datetime as dt

import pytest
import sqlalchemy as sa
from test_core_support import sample
from test_query_support import make_library, make_note

from dbnexus import NotFound, ValidationError, entity, field

pytestmark = pytest.mark.backend

LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def now():
    return dt.datetime.now(dt.UTC)


def table_of(Entity):
    return Entity.__dbnexus__.table_name


async def stored(pool, Note, id):
    """The row as the database has it (in a transaction: never from the cache)."""
    async with pool.session("alice") as s, s.transaction():
        return await Note.find_by_id(s, id, include_deleted=True)


async def test_insert_sets_both_timestamps_in_utc_ignoring_the_callers(make_pool, unique):
    Note = make_note(unique("notes"), soft_delete=False)
    pool = await make_pool(Note)
    t0 = now()
    note = Note(title="a")
    note.created_at = note.updated_at = LONG_AGO
    async with pool.session("alice") as s:
        await Note.insert(s, note)
        batch = [Note(title="b"), Note(title="c")]
        batch[0].created_at = LONG_AGO
        await Note.insert_batch(s, batch)
    t1 = now()
    for n in (note, *batch):
        assert n.created_at == n.updated_at
        assert n.created_at.utcoffset() == dt.timedelta(0)
        assert t0 <= n.created_at <= t1
        back = await stored(pool, Note, n.id)
        assert (back.created_at, back.updated_at) == (n.created_at, n.updated_at)

    # what the database holds is the UTC wall time (naive columns hold UTC, not local time)
    def raw(conn):
        return conn.execute(sa.text(f"SELECT created_at FROM {table_of(Note)}")).scalars().all()

    for value in await pool.databases["default"].run_sync(raw):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        assert t0 <= value <= t1


async def test_updates_move_updated_at_and_keep_created_at(make_pool, unique):
    Note = make_note(unique("notes"), soft_delete=False)
    pool = await make_pool(Note)
    async with pool.session("alice") as s:
        notes = await Note.insert_batch(s, [Note(title=f"t{k}", n=k) for k in range(4)])
        first = {n.id: (n.created_at, n.updated_at) for n in notes}
        a, b, c, d = notes
        a.title = "changed"
        a.created_at = a.updated_at = LONG_AGO
        await Note.update(s, a)
        b.n = 10
        b.created_at = LONG_AGO
        await Note.update_batch(s, [b])
        assert await Note.update_where(s, {"id": c.id}, {"n": 20}) == 1
    for n, changed in ((a, True), (b, True), (c, True), (d, False)):
        back = await stored(pool, Note, n.id)
        created, updated = first[n.id]
        assert back.created_at == created
        if changed:
            assert back.updated_at > updated
        else:
            assert back.updated_at == updated
    # the objects passed in carry what was written
    assert (a.created_at, b.created_at) == (first[a.id][0], first[b.id][0])
    assert a.updated_at == (await stored(pool, Note, a.id)).updated_at


def test_a_class_may_not_declare_a_system_field():
    with pytest.raises(ValidationError, match="system field"):

        @entity(table="sysfield_clash", timestamps=True)
        class Clash:
            id: int | None = field(primary_key=True, default=None)
            created_at: dt.datetime | None = None

    with pytest.raises(ValidationError, match="system field"):

        @entity(table="sysfield_clash", soft_delete=True)
        class Clash2:
            id: int | None = field(primary_key=True, default=None)
            deleted_at: dt.datetime | None = None


async def test_soft_deleted_rows_leave_every_read_path(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    table = table_of(Note)
    async with pool.session("alice") as s:
        keep, gone = await Note.insert_batch(s, [Note(title="keep"), Note(title="gone")])
        assert (await Note.find_by_id(s, gone.id)).title == "gone"  # cached now
        t0 = now()
        await Note.delete(s, gone.id)
        t1 = now()
        assert await Note.find_by_id(s, gone.id) is None
        assert [n.id for n in await Note.find_all(s)] == [keep.id]
        assert await Note.count(s) == 1
        assert [n.id for n in await Note.find_page(s, order_by="-created_at")] == [keep.id]
        assert await Note.find_all(s, where={"title": "gone"}) == []
        # ...unless asked for
        back = await Note.find_by_id(s, gone.id, include_deleted=True)
        assert t0 <= back.deleted_at <= t1
        assert len(await Note.find_all(s, include_deleted=True)) == 2
        assert await Note.count(s, include_deleted=True) == 2
        page = await Note.find_page(s, order_by="id", include_deleted=True)
        assert [n.id for n in page] == [keep.id, gone.id]
        # the deleted row is now in the cache: a hit must still leave it out
        hits = sample(pool, "dbnexus_cache_hits_total", table=table)
        assert await Note.find_by_id(s, gone.id) is None
        assert sample(pool, "dbnexus_cache_hits_total", table=table) == hits + 1
        assert await Note.find_by_id(s, keep.id) is not None
    records = await pool.audit_log(table=table, action="delete")
    assert [r.record_id for r in records] == [str(gone.id)]
    assert records[0].changes["title"] == "gone"


async def test_deleted_rows_cannot_be_updated_or_deleted_again(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    async with pool.session("alice") as s:
        live, gone = await Note.insert_batch(s, [Note(title="live"), Note(title="gone")])
        await Note.delete(s, gone.id)
        deleted_at = (await stored(pool, Note, gone.id)).deleted_at
        gone.title = "zombie"
        with pytest.raises(NotFound):
            await Note.update(s, gone)
        with pytest.raises(NotFound):
            await Note.update_batch(s, [live, gone])
        with pytest.raises(NotFound):
            await Note.delete(s, gone.id)
        assert await Note.update_where(s, {}, {"title": "all"}) == 1
        assert await Note.delete_where(s, {}) == 1
    back = await stored(pool, Note, gone.id)
    assert (back.title, back.deleted_at) == ("gone", deleted_at)
    assert (await stored(pool, Note, live.id)).title == "all"


async def test_a_deleted_at_set_by_the_caller_is_ignored_on_insert(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    one, two = Note(title="one"), Note(title="two")
    for note in (one, two):
        note.deleted_at = now()
    async with pool.session("alice") as s:
        await Note.insert(s, one)
        await Note.insert_batch(s, [two])
        # deleted_at is written by delete() only: both rows are live
        assert (one.deleted_at, two.deleted_at) == (None, None)
        assert sorted(n.title for n in await Note.find_all(s)) == ["one", "two"]


async def test_a_deleted_at_set_by_the_caller_is_ignored_on_update(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    async with pool.session("alice") as s:
        a, b = await Note.insert_batch(s, [Note(title="a"), Note(title="b")])
        a.deleted_at = b.deleted_at = now()
        await Note.update(s, a)
        await Note.update_batch(s, [b])
        assert (a.deleted_at, b.deleted_at) == (None, None)
        assert await Note.count(s) == 2
        with pytest.raises(ValidationError, match="system field"):
            await Note.update_where(s, {}, {"deleted_at": now()})
        assert await Note.count(s) == 2


async def test_restore_brings_a_row_back_and_is_audited(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    table = table_of(Note)
    async with pool.session("alice") as s:
        a = await Note.insert(s, Note(title="a"))
        await Note.delete(s, a.id)
        deleted_at = (await stored(pool, Note, a.id)).deleted_at
        assert await Note.find_by_id(s, a.id) is None  # cached as deleted
        back = await Note.restore(s, a.id, tags=["undo"])
        assert isinstance(back, Note)
        assert (back.id, back.title, back.deleted_at) == (a.id, "a", None)
        assert (await Note.find_by_id(s, a.id)).deleted_at is None
        assert await Note.count(s) == 1
        with pytest.raises(NotFound):
            await Note.restore(s, a.id)  # not deleted
        with pytest.raises(NotFound):
            await Note.restore(s, a.id + 1000)
    (record,) = await pool.audit_log(table=table, action="restore", outcome="ok")
    assert (record.record_id, record.outcome, record.tags) == (str(a.id), "ok", ["undo"])
    assert record.changes["deleted_at"][0] == deleted_at.isoformat()
    assert record.changes["deleted_at"][1] is None


async def test_purge_removes_a_row_for_good_and_is_audited(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    table = table_of(Note)
    async with pool.session("alice") as s:
        a, b = await Note.insert_batch(s, [Note(title="a"), Note(title="b")])
        await Note.delete(s, a.id)
        assert (await Note.find_by_id(s, a.id, include_deleted=True)).id == a.id  # cached
        await Note.purge(s, a.id)
        assert await Note.find_by_id(s, a.id, include_deleted=True) is None
        assert await Note.count(s, include_deleted=True) == 1
        with pytest.raises(NotFound):
            await Note.restore(s, a.id)
        with pytest.raises(NotFound):
            await Note.purge(s, a.id)
    assert await stored(pool, Note, a.id) is None
    assert (await stored(pool, Note, b.id)).title == "b"
    (record,) = await pool.audit_log(table=table, action="purge", outcome="ok")
    assert (record.record_id, record.outcome) == (str(a.id), "ok")
    assert record.changes["title"] == "a"
    assert record.changes["deleted_at"] is not None


async def test_restore_and_purge_need_a_soft_delete_entity(make_pool, unique):
    Note = make_note(unique("notes"), soft_delete=False)
    pool = await make_pool(Note)
    async with pool.session("alice") as s:
        a = await Note.insert(s, Note(title="a"))
        with pytest.raises(ValidationError, match="soft"):
            await Note.restore(s, a.id)
        with pytest.raises(ValidationError, match="soft"):
            await Note.purge(s, a.id)
        await Note.delete(s, a.id)
        # without soft delete, delete removes the row
        assert await Note.find_by_id(s, a.id, include_deleted=True) is None


async def test_relation_loads_leave_soft_deleted_rows_out(make_pool, unique):
    Author, Book = make_library(unique("authors"), unique("books"), soft_delete=True)
    pool = await make_pool(Author, Book)
    async with pool.session("alice") as s:
        ann, bob = await Author.insert_batch(s, [Author(name="ann"), Author(name="bob")])
        b1, b2, b3 = await Book.insert_batch(
            s,
            [
                Book(title="one", author_id=ann.id),
                Book(title="two", author_id=ann.id),
                Book(title="three", author_id=bob.id),
            ],
        )
        await Book.delete(s, b2.id)
        await Author.delete(s, bob.id)
        got = await Author.find_by_id(s, ann.id, include=["books"])
        assert [b.title for b in got.books] == ["one"]
        books = {b.id: b for b in await Book.find_all(s, include=["author"])}
        assert set(books) == {b1.id, b3.id}
        assert books[b1.id].author.name == "ann"
        assert books[b3.id].author is None
        authors = await Author.find_all(s, include=["books"], include_deleted=True)
        assert {a.name: [b.title for b in a.books] for a in authors} == {
            "ann": ["one"],
            "bob": ["three"],
        }


async def test_delete_where_marks_soft_delete_rows_and_audits_each(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    table = table_of(Note)
    async with pool.session("alice") as s:
        notes = await Note.insert_batch(s, [Note(title=f"t{k}", n=k) for k in range(5)])
        t0 = now()
        assert await Note.delete_where(s, {"n__gte": 3}, tags=["sweep"]) == 2
        t1 = now()
        assert sorted(n.n for n in await Note.find_all(s)) == [0, 1, 2]
        gone = await Note.find_all(s, where={"n__gte": 3}, include_deleted=True)
        assert len(gone) == 2 and all(t0 <= g.deleted_at <= t1 for g in gone)
        assert sorted(n.n for n in await Note.find_all(s, include_deleted=True)) == [0, 1, 2, 3, 4]
    records = await pool.audit_log(table=table, action="delete")
    assert sorted(r.record_id for r in records) == sorted(str(n.id) for n in notes[3:])
    for r in records:
        assert r.tags == ["sweep"]
        # a soft delete is audited like delete(): the old values of the row
        assert r.changes["deleted_at"] is None
        assert r.changes["n"] in (3, 4) and r.changes["id"] == int(r.record_id)
