"""Operation tags: per session and per call, merged into audit rows and events, validated."""

import pytest
from test_core_support import RBAC_MODEL
from test_query_support import make_note

from dbnexus import PermissionDenied, Permissions, ValidationError
from dbnexus.signals import DatabaseEvent

pytestmark = pytest.mark.backend

BAD_TAGS = [
    "api",  # a bare string, not a list
    [""],
    ["has space"],
    ["tab\there"],
    ["new\nline"],
    ["nul\x00"],
    ["x" * 65],
    [f"t{k}" for k in range(33)],
    [5],
    [None],
    ["ok", b"bytes"],
]


def table_of(Entity):
    return Entity.__dbnexus__.table_name


async def test_every_write_merges_session_and_call_tags_into_its_audit_row(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    table = table_of(Note)
    async with pool.session("alice", tags=["api", "v2"]) as s:
        a = await Note.insert(s, Note(title="a"), tags=["insert"])
        (b,) = await Note.insert_batch(s, [Note(title="b")], tags=["insert_batch"])
        a.n = 1
        await Note.update(s, a, tags=["update"])
        b.n = 2
        await Note.update_batch(s, [b], tags=["update_batch", "api"])
        await Note.update_where(s, {"id": a.id}, {"n": 3}, tags=["update_where"])
        await Note.delete(s, a.id, tags=["delete"])
        await Note.restore(s, a.id, tags=["restore"])
        await Note.delete_where(s, {"id": a.id}, tags=["delete_where"])
        await Note.purge(s, a.id, tags=["purge"])
        await Note.delete(s, b.id)
    records = (await pool.audit_log(table=table))[::-1]
    got = [(r.action, r.record_id, r.tags) for r in records]
    assert got == [
        ("insert", str(a.id), ["api", "v2", "insert"]),
        ("insert", str(b.id), ["api", "v2", "insert_batch"]),
        ("update", str(a.id), ["api", "v2", "update"]),
        # a call tag already on the session is not repeated
        ("update", str(b.id), ["api", "v2", "update_batch"]),
        ("update", str(a.id), ["api", "v2", "update_where"]),
        ("delete", str(a.id), ["api", "v2", "delete"]),
        ("restore", str(a.id), ["api", "v2", "restore"]),
        ("delete", str(a.id), ["api", "v2", "delete_where"]),
        ("purge", str(a.id), ["api", "v2", "purge"]),
        ("delete", str(b.id), ["api", "v2"]),
    ]


async def test_audited_reads_carry_tags_too(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note, audit_reads=True)
    table = table_of(Note)
    async with pool.session("alice", tags=["web"]) as s:
        a = await Note.insert(s, Note(title="a"))
        await Note.find_by_id(s, a.id, tags=["by_id"])
        await Note.find_all(s, tags=["all"])
        await Note.count(s, tags=["count"])
        await Note.find_page(s, tags=["page"])
        await Note.find_all(s)
    reads = (await pool.audit_log(table=table, action="read"))[::-1]
    assert [r.tags for r in reads] == [
        ["web", "by_id"],
        ["web", "all"],
        ["web", "count"],
        ["web", "page"],
        ["web"],
    ]


async def test_events_carry_the_merged_tags(make_pool, unique):
    Note = make_note(unique("notes"), soft_delete=False)
    pool = await make_pool(Note)
    events: list[DatabaseEvent] = []
    pool.signals.connect(events.append)
    async with pool.session("alice", tags=["svc"]) as s:
        a = await Note.insert(s, Note(title="a"), tags=["one"])
        await Note.delete(s, a.id)
    await pool.signals.drain()
    assert [(e.event_type, e.tags) for e in events] == [
        ("create", ("svc", "one")),
        ("delete", ("svc",)),
    ]


async def test_tags_at_the_limits_are_accepted(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    many = [f"t{k}" for k in range(32)]
    longest = "x" * 64
    odd = "ünïcode/☃:#-=.+!"
    async with pool.session("alice", tags=many) as s:
        await Note.insert(s, Note(title="a"), tags=[longest, odd])
    (record,) = await pool.audit_log(table=table_of(Note))
    assert record.tags == [*many, longest, odd]


async def test_bad_session_tags_are_refused(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    for tags in BAD_TAGS:
        with pytest.raises(ValidationError):
            pool.session("alice", tags=tags)


async def test_bad_call_tags_are_refused_and_nothing_is_written(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    table = table_of(Note)
    async with pool.session("alice") as s:
        live, gone = await Note.insert_batch(s, [Note(title="live"), Note(title="gone")])
        await Note.delete(s, gone.id)
        before = await pool.audit_log(table=table)
        live.n = 5
        writes = [
            lambda t: Note.insert(s, Note(title="x"), tags=t),
            lambda t: Note.insert_batch(s, [Note(title="x")], tags=t),
            lambda t: Note.update(s, live, tags=t),
            lambda t: Note.update_batch(s, [live], tags=t),
            lambda t: Note.update_where(s, {}, {"n": 9}, tags=t),
            lambda t: Note.delete(s, live.id, tags=t),
            lambda t: Note.delete_where(s, {}, tags=t),
            lambda t: Note.restore(s, gone.id, tags=t),
            lambda t: Note.purge(s, gone.id, tags=t),
        ]
        for tags in BAD_TAGS:
            for call in writes:
                with pytest.raises(ValidationError):
                    await call(tags)
    assert await pool.audit_log(table=table) == before
    async with pool.session("alice") as s, s.transaction():
        rows = {
            n.title: (n.n, n.deleted_at is None)
            for n in await Note.find_all(s, include_deleted=True)
        }
    assert rows == {"live": (0, True), "gone": (0, False)}


async def test_bad_tags_on_reads_are_refused(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    async with pool.session("alice") as s:
        a = await Note.insert(s, Note(title="a"))
        reads = [
            lambda t: Note.find_by_id(s, a.id, tags=t),
            lambda t: Note.find_all(s, tags=t),
            lambda t: Note.count(s, tags=t),
            lambda t: Note.find_page(s, tags=t),
        ]
        for tags in BAD_TAGS:
            for call in reads:
                with pytest.raises(ValidationError):
                    await call(tags)


async def test_a_denied_attempt_is_audited_with_its_tags(make_pool, unique):
    Note = make_note(unique("notes"))
    table = table_of(Note)
    perms = Permissions.from_text(RBAC_MODEL, f"p, admin, {table}, read")
    pool = await make_pool(Note, permissions=perms)
    async with pool.session("bob", tags=["web"]) as s:
        with pytest.raises(PermissionDenied):
            await Note.insert(s, Note(title="x"), tags=["signup"])
    (record,) = await pool.audit_log(table=table)
    assert (record.user_id, record.action, record.outcome) == ("bob", "insert", "denied")
    assert record.tags == ["web", "signup"]
