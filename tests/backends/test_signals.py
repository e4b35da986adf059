"""The signal system on real writes: committed events only, in commit order, in the background."""

import asyncio
import datetime as dt
import logging
import threading

import pytest
from test_core_support import RBAC_MODEL, sample
from test_query_support import make_note

from dbnexus import (
    ConfigError,
    DatabaseError,
    IntegrityError,
    PermissionDenied,
    Permissions,
    ValidationError,
    crud,
    entity,
    field,
)
from dbnexus.signals import DatabaseEvent, SignalConfig

pytestmark = pytest.mark.backend


def table_of(Entity):
    return Entity.__dbnexus__.table_name


def make_keyed(table: str) -> type:
    @crud
    @entity(table=table)
    class Keyed:
        id: int | None = field(primary_key=True, default=None)
        key: str = field(max_length=20, unique=True)

    return Keyed


def outcomes(pool):
    return {
        o: sample(pool, "dbnexus_signal_callbacks_total", outcome=o)
        for o in ("ok", "error", "timeout", "removed")
    }


def brief(events):
    return [(e.event_type, e.record_id) for e in events]


async def test_events_describe_each_committed_write(make_pool, unique):
    Note = make_note(unique("notes"), soft_delete=False)
    pool = await make_pool(Note)
    table = table_of(Note)
    events: list[DatabaseEvent] = []

    async def record(event):
        events.append(event)

    pool.signals.connect(record)
    t0 = dt.datetime.now(dt.UTC)
    async with pool.session("alice", tags=["t"]) as s:
        a = await Note.insert(s, Note(title="a"))
        created_at = a.created_at
        a.n = 5
        await Note.update(s, a)
        await Note.delete(s, a.id)
    await pool.signals.drain()
    t1 = dt.datetime.now(dt.UTC)
    assert brief(events) == [("create", a.id), ("update", a.id), ("delete", a.id)]
    for e in events:
        assert isinstance(e, DatabaseEvent)
        assert (e.table_name, e.user_id, e.tags) == (table, "alice", ("t",))
        assert t0 <= e.timestamp <= t1
    create, update, delete = events
    assert create.payload == {
        "id": a.id,
        "title": "a",
        "n": 0,
        "created_at": created_at,
        "updated_at": created_at,
    }
    assert update.payload["n"] == (0, 5)
    assert set(update.payload) == {"n", "updated_at"}
    assert delete.payload == {
        "id": a.id,
        "title": "a",
        "n": 5,
        "created_at": created_at,
        "updated_at": a.updated_at,
    }


async def test_bulk_and_soft_delete_writes_send_one_event_per_row(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    events: list[DatabaseEvent] = []
    pool.signals.connect(events.append)
    async with pool.session("alice") as s:
        made = await Note.insert_batch(s, [Note(title=f"t{k}", n=k) for k in range(4)])
        ids = [m.id for m in made]
        assert await Note.update_where(s, {"n__lt": 2}, {"title": "low"}) == 2
        made[3].n = 30
        await Note.update_batch(s, [made[3]])
        await Note.delete(s, ids[0])
        await Note.restore(s, ids[0])
        assert await Note.delete_where(s, {"n__gte": 2}) == 2
        await Note.purge(s, ids[2])
    await pool.signals.drain()
    got = brief(events)
    assert got[:4] == [("create", i) for i in ids]
    assert sorted(got[4:6]) == [("update", ids[0]), ("update", ids[1])]
    assert got[6:9] == [("update", ids[3]), ("delete", ids[0]), ("update", ids[0])]
    assert sorted(got[9:11]) == [("delete", ids[2]), ("delete", ids[3])]
    assert got[11:] == [("delete", ids[2])]
    assert {e.record_id: e.payload["title"] for e in events[4:6]} == {
        ids[0]: ("t0", "low"),
        ids[1]: ("t1", "low"),
    }


async def test_sync_callbacks_run_off_the_event_loop(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    seen = []

    def record(event):
        seen.append((event.event_type, threading.current_thread() is threading.main_thread()))

    pool.signals.connect(record)
    async with pool.session("alice") as s:
        await Note.insert(s, Note(title="a"))
    await pool.signals.drain()
    assert seen == [("create", False)]


async def test_nothing_is_delivered_before_commit_nor_for_rolled_back_work(make_pool, unique):
    Note = make_note(unique("notes"))
    Keyed = make_keyed(unique("keyed"))
    pool = await make_pool(Note, Keyed)
    events: list[DatabaseEvent] = []
    pool.signals.connect(events.append)
    async with pool.session("alice") as s:
        async with s.transaction():
            a = await Note.insert(s, Note(title="a"))
            a.n = 1
            await Note.update(s, a)
            await pool.signals.drain()
            for _ in range(5):
                await asyncio.sleep(0)
            assert events == []
        await pool.signals.drain()
        assert brief(events) == [("create", a.id), ("update", a.id)]

        events.clear()
        with pytest.raises(RuntimeError):
            async with s.transaction():
                await Note.insert(s, Note(title="gone"))
                raise RuntimeError("roll back")
        await s.begin()
        await Note.insert(s, Note(title="gone too"))
        await s.rollback()
        # a savepoint rolled back drops its own events only
        async with s.transaction():
            kept = await Note.insert(s, Note(title="kept"))
            with pytest.raises(RuntimeError):
                async with s.transaction():
                    await Note.insert(s, Note(title="inner"))
                    raise RuntimeError("inner")
        # failed, refused and invalid writes send nothing
        await Keyed.insert(s, Keyed(key="k"))
        with pytest.raises(IntegrityError):
            await Keyed.insert(s, Keyed(key="k"))
        with pytest.raises(ValidationError):
            await Note.insert(s, Note(title=None))
    await pool.signals.drain()
    assert [(e.table_name, e.payload.get("title") or e.payload.get("key")) for e in events] == [
        (table_of(Note), "kept"),
        (table_of(Keyed), "k"),
    ]
    assert events[0].record_id == kept.id


async def test_a_denied_write_sends_no_event(make_pool, unique):
    Note = make_note(unique("notes"))
    table = table_of(Note)
    perms = Permissions.from_text(RBAC_MODEL, f"p, admin, {table}, insert")
    pool = await make_pool(Note, permissions=perms)
    events: list[DatabaseEvent] = []
    pool.signals.connect(events.append)
    async with pool.session("bob") as s:
        with pytest.raises(PermissionDenied):
            await Note.insert(s, Note(title="x"))
    async with pool.session("admin") as s:
        await Note.insert(s, Note(title="y"))
    await pool.signals.drain()
    assert [(e.user_id, e.payload["title"]) for e in events] == [("admin", "y")]


async def test_events_arrive_in_commit_order(make_pool, unique):
    Note = make_note(unique("notes"))
    # a short lock wait: a database with one writer refuses the second transaction quickly
    pool = await make_pool(Note, acquire_timeout=0.25)
    events: list[DatabaseEvent] = []
    pool.signals.connect(events.append)
    async with pool.session("alice") as s:
        made = [await Note.insert(s, Note(title=f"t{k}")) for k in range(10)]
    await pool.signals.drain()
    assert [e.record_id for e in events] == [m.id for m in made]
    events.clear()
    async with pool.session("a") as a, pool.session("b") as b:
        await a.begin()
        first = await Note.insert(a, Note(title="first executed"))
        await b.begin()
        try:
            second = await Note.insert(b, Note(title="second executed"))
        except DatabaseError as exc:
            if "locked" not in str(exc):
                raise
            pytest.skip("needs two write transactions open at once (this database has one writer)")
        await b.commit()
        await a.commit()
    await pool.signals.drain()
    assert [e.record_id for e in events] == [second.id, first.id]


async def test_a_blocked_callback_delays_neither_the_operation_nor_other_callbacks(
    make_pool, unique
):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    started, release = asyncio.Event(), asyncio.Event()
    slow_seen, fast_seen = [], []

    async def slow(event):
        started.set()
        await release.wait()
        slow_seen.append(event.record_id)

    pool.signals.connect(slow)
    pool.signals.connect(lambda e: fast_seen.append(e.record_id))
    thread_started, thread_release = threading.Event(), threading.Event()

    def blocking(event):
        thread_started.set()
        thread_release.wait(10)

    pool.signals.connect(blocking)
    async with pool.session("alice") as s:
        a = await Note.insert(s, Note(title="a"))
        await asyncio.wait_for(started.wait(), 5)
        assert await asyncio.to_thread(thread_started.wait, 5)
        # both slow callbacks are stuck in the first event: the writes still return
        b = await Note.insert(s, Note(title="b"))
        b.n = 1
        await Note.update(s, b)
        assert await Note.count(s) == 2
        for _ in range(500):
            if len(fast_seen) == 3:
                break
            await asyncio.sleep(0.01)
        assert fast_seen == [a.id, b.id, b.id]
        assert slow_seen == []
    release.set()
    thread_release.set()
    await pool.signals.drain()
    assert slow_seen == [a.id, b.id, b.id]


async def test_a_failing_callback_never_fails_the_operation(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    calls = []

    async def boom(event):
        calls.append(event.record_id)
        raise RuntimeError("callback bug")

    def sync_boom(event):
        raise ValueError("sync callback bug")

    pool.signals.connect(boom)
    pool.signals.connect(sync_boom)
    async with pool.session("alice") as s:
        a = await Note.insert(s, Note(title="a"))
        await pool.signals.drain()
        b = await Note.insert(s, Note(title="b"))
    await pool.signals.drain()
    assert calls == [a.id, b.id]
    assert outcomes(pool) == {"ok": 0, "error": 4, "timeout": 0, "removed": 0}


async def test_callbacks_failing_too_often_in_a_row_are_removed_with_a_warning(
    make_pool, unique, caplog
):
    Note = make_note(unique("notes"))
    config = SignalConfig(callback_timeout=0.2, max_consecutive_failures=3)
    pool = await make_pool(Note, signals=config)
    never = asyncio.Event()
    hung, flaky = [], []

    async def hangs(event):
        hung.append(event.record_id)
        await never.wait()

    script = iter(["fail", "fail", "ok", "fail", "fail", "ok", "fail", "fail", "fail", "ok"])

    def sometimes(event):
        flaky.append(event.record_id)
        if next(script) == "fail":
            raise RuntimeError("flaky")

    h1 = pool.signals.connect(hangs)
    h2 = pool.signals.connect(sometimes)
    with caplog.at_level(logging.WARNING, logger="dbnexus.signals"):
        async with pool.session("alice") as s:
            for k in range(10):
                await Note.insert(s, Note(title=f"t{k}"))
                await pool.signals.drain()
    assert len(hung) == 3, "the hanging callback was not removed after 3 timeouts"
    # failures separated by a success do not add up: removed only after 3 in a row
    assert len(flaky) == 9
    assert h1 not in pool.signals.handles and h2 not in pool.signals.handles
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("removed" in r.getMessage() for r in warnings)
    assert outcomes(pool) == {"ok": 2, "error": 7, "timeout": 3, "removed": 2}
    assert not pool.signals.disconnect(h1)


async def test_failing_callbacks_stay_when_removal_is_off(make_pool, unique, caplog):
    Note = make_note(unique("notes"))
    config = SignalConfig(remove_failing_callbacks=False, max_consecutive_failures=1)
    pool = await make_pool(Note, signals=config)
    calls = []

    def boom(event):
        calls.append(event.record_id)
        raise RuntimeError("always")

    handle = pool.signals.connect(boom)
    with caplog.at_level(logging.WARNING, logger="dbnexus.signals"):
        async with pool.session("alice") as s:
            for k in range(4):
                await Note.insert(s, Note(title=f"t{k}"))
        await pool.signals.drain()
    assert len(calls) == 4
    assert handle in pool.signals.handles
    assert outcomes(pool)["removed"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_drain_and_close_wait_for_callbacks_in_flight(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note)
    release = asyncio.Event()
    done = []

    async def slow(event):
        await release.wait()
        done.append(event.record_id)

    pool.signals.connect(slow)
    async with pool.session("alice") as s:
        a = await Note.insert(s, Note(title="a"))
    drain = asyncio.create_task(pool.signals.drain())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not drain.done()
    release.set()
    await asyncio.wait_for(drain, 5)
    assert done == [a.id]

    gate = asyncio.Event()

    async def later(event):
        await gate.wait()
        done.append(("later", event.record_id))

    pool.signals.connect(later)
    async with pool.session("alice") as s:
        b = await Note.insert(s, Note(title="b"))
    asyncio.get_running_loop().call_soon(gate.set)
    await pool.close()
    assert ("later", b.id) in done and b.id in done


async def test_callbacks_can_filter_by_table_and_event_type(make_pool, unique):
    Note = make_note(unique("notes"), soft_delete=False)
    Keyed = make_keyed(unique("keyed"))
    pool = await make_pool(Note, Keyed)
    got: dict[str, list] = {k: [] for k in ("notes", "class", "deletes", "note_creates", "all")}
    pool.signals.connect(lambda e: got["notes"].append(e), table=table_of(Note))
    pool.signals.connect(lambda e: got["class"].append(e), table=Note)
    pool.signals.connect(lambda e: got["deletes"].append(e), events=["delete"])
    pool.signals.connect(lambda e: got["note_creates"].append(e), table=Note, events="create")
    pool.signals.connect(lambda e: got["all"].append(e))
    async with pool.session("alice") as s:
        n = await Note.insert(s, Note(title="n"))
        k = await Keyed.insert(s, Keyed(key="k"))
        await Note.delete(s, n.id)
        await Keyed.delete(s, k.id)
    await pool.signals.drain()
    kinds = {name: [(e.table_name, e.event_type) for e in evs] for name, evs in got.items()}
    nt, kt = table_of(Note), table_of(Keyed)
    assert kinds == {
        "notes": [(nt, "create"), (nt, "delete")],
        "class": [(nt, "create"), (nt, "delete")],
        "deletes": [(nt, "delete"), (kt, "delete")],
        "note_creates": [(nt, "create")],
        "all": [(nt, "create"), (kt, "create"), (nt, "delete"), (kt, "delete")],
    }
    with pytest.raises(ValidationError):
        pool.signals.connect(print, events=["created"])
    with pytest.raises(ValidationError):
        pool.signals.connect("not callable")


async def test_connect_beyond_max_callbacks_is_a_config_error(make_pool, unique):
    Note = make_note(unique("notes"))
    pool = await make_pool(Note, signals=SignalConfig(max_callbacks=2))
    first, second = [], []
    h1 = pool.signals.connect(first.append)
    pool.signals.connect(second.append)
    with pytest.raises(ConfigError, match="max_callbacks"):
        pool.signals.connect(print)
    assert pool.signals.disconnect(h1)
    assert not pool.signals.disconnect(h1)
    third = []
    pool.signals.connect(third.append)
    async with pool.session("alice") as s:
        await Note.insert(s, Note(title="a"))
    await pool.signals.drain()
    assert (len(first), len(second), len(third)) == (0, 1, 1)
