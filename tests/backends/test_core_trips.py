"""Writes in few trips: held statements, several statements per query, batch keys.

On aiomysql and aiosqlite, statements whose result nobody reads wait and go to
the database with the next one (see ``dbnexus.database.Connection``). These
tests check that an error in a held statement still undoes the whole write,
that the connection is clean afterwards, and that values stay values.
"""

import itertools
import json

import pytest
from test_core_support import make_user, users
from test_query_support import make_note

from dbnexus import DatabaseError, IntegrityError, NotFound, entity_info

pytestmark = pytest.mark.backend


def only_database(pool):
    (db,) = pool.databases.values()
    return db


@pytest.fixture(params=["pipelined", "one trip per statement"])
def trips(request):
    """Run a test with statements held where the driver can, and with every one sent alone
    (what a driver without several statements per trip does)."""
    return request.param


async def one_connection(make_pool, unique, trips):
    """A ``User`` entity, its table name and a pool of one connection sending ``trips``."""
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=1)
    set_trips(pool, trips)
    return User, entity_info(User).table_name, pool


def set_trips(pool, trips):
    db = only_database(pool)
    if trips != "pipelined":
        db.driver.pipelines = False


async def test_a_failing_held_update_undoes_the_write_and_the_connection_stays_usable(
    make_pool, unique, trips
):
    User, table, pool = await one_connection(make_pool, unique, trips)
    async with pool.session("alice") as s:
        a, b = await User.insert_batch(s, users(User, 2))
        b.email, b.age = a.email, 99
        with pytest.raises(IntegrityError):
            await User.update(s, b)
        # the same (only) connection runs the next statements, and they see no leftovers
        got = await User.find_by_id(s, b.id)
        assert (got.email, got.age) == ("u1@example.com", 21)
        b.email = "fresh@example.com"
        await User.update(s, b)
        assert (await User.find_by_id(s, b.id)).email == "fresh@example.com"
    records = await pool.audit_log(table=table, action="update")
    assert [(r.outcome, r.record_id) for r in records] == [("ok", str(b.id)), ("error", str(b.id))]
    assert records[0].changes == {"email": ["u1@example.com", "fresh@example.com"], "age": [21, 99]}


async def test_a_failing_bulk_update_writes_nothing(make_pool, unique, trips):
    User, table, pool = await one_connection(make_pool, unique, trips)
    async with pool.session("alice") as s:
        await User.insert_batch(s, users(User, 3))
        # the second row's UPDATE breaks the unique email: the first must not stay
        with pytest.raises(IntegrityError):
            await User.update_where(s, {"age__gte": 21}, {"email": "same@example.com"})
        assert sorted(u.email for u in await User.find_all(s)) == [
            f"u{k}@example.com" for k in range(3)
        ]
        assert await User.update_where(s, {"age": 22}, {"name": "changed"}) == 1
    assert [r.outcome for r in await pool.audit_log(table=table, action="update")] == [
        "ok",
        "error",
    ]


async def test_sql_in_values_of_held_statements_stays_data(make_pool, unique, trips):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    set_trips(pool, trips)
    nasty = [
        "a'; DELETE FROM users; --",
        'b"); DROP TABLE x; #',
        "c\\'; SELECT 1; -- %s %% ?",
        "d;\nCOMMIT;\nROLLBACK",
    ]
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, len(nasty)))
        for u, name in zip(made, nasty, strict=True):
            u.name = name
        await User.update_batch(s, made)
        assert await User.update_where(s, {"name": nasty[0]}, {"age": 7}) == 1
        got = {u.id: (u.name, u.age) for u in await User.find_all(s)}
    assert len(got) == len(nasty)
    assert sorted(name for name, _ in got.values()) == sorted(nasty)
    assert got[made[0].id] == (nasty[0], 7)


async def test_both_forms_of_batch_audit_rows_record_the_same(make_pool, unique):
    """MySQL 8, MariaDB 10.6+ and SQLite 3.38+ send a batch's audit rows as one JSON
    document (JSON_TABLE, json_each); older servers and PostgreSQL send VALUES: both
    record the same rows."""
    User = make_user(unique("users"))
    table = entity_info(User).table_name
    pool = await make_pool(User)
    compiler = only_database(pool).compiler
    seen = []
    for json_source in sorted({compiler.json_source, False}):
        compiler.json_source = json_source
        prefix = f"j{int(json_source)}"
        async with pool.session("alice", tags=["bulk"]) as s:
            made = await User.insert_batch(s, users(User, 3, prefix))
            await User.update_where(s, {"name": f"{prefix}1"}, {"age": 70})
        records = [
            r for r in await pool.audit_log(table=table) if r.record_id in {str(u.id) for u in made}
        ]
        by_id = {u.id: u for u in made}
        for r in records:
            u = by_id[int(r.record_id)]
            assert (r.user_id, r.outcome, r.tags) == ("alice", "ok", ["bulk"])
            if r.action == "insert":
                assert r.changes == {"id": u.id, "name": u.name, "email": u.email, "age": u.age}
            else:
                assert r.changes == {"age": [21, 70]} and u.name == f"{prefix}1"
        seen.append(sorted(r.action for r in records))
    assert all(actions == ["insert", "insert", "insert", "update"] for actions in seen)


async def test_batch_keys_follow_the_servers_auto_increment(make_pool, unique, backend):
    if backend != "mysql":
        pytest.skip("auto_increment_increment and innodb_autoinc_lock_mode are MySQL's")
    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=1)
    db = only_database(pool)
    conn = await db.acquire()
    try:
        await conn.execute("SET SESSION auto_increment_increment = 3", ())
    finally:
        await db.release(conn)
    db._autoinc = None  # read the settings again, from the one connection just changed

    async def check(prefix):
        async with pool.session("alice") as s:
            made = await User.insert_batch(s, users(User, 5, prefix))
            for u in made:
                assert (await User.find_by_id(s, u.id)).email == u.email
        return [u.id for u in made]

    ids = await check("step")
    assert [b - a for a, b in itertools.pairwise(ids)] == [3] * 4
    if db.compiler.entity(entity_info(User)).insert_returning:
        # innodb_autoinc_lock_mode is read-only while the server runs: lock mode 2
        # ("interleaved") is taken as read, so that MariaDB's RETURNING path runs
        db._autoinc = (2, 3)
        ids = await check("returned")
        assert ids == sorted(ids) and len(set(ids)) == 5


async def test_held_statements_go_out_in_bounded_trips_within_one_transaction(
    make_pool, unique, monkeypatch
):
    """Held statements go out once they hold ``HOLD_LIMIT`` parameters; what went out
    early is still undone when a later statement of the same write fails."""
    from dbnexus.database import Connection

    User = make_user(unique("users"))
    table = entity_info(User).table_name
    pool = await make_pool(User, max_connections=1)
    async with pool.session("alice") as s:
        await User.insert_batch(s, users(User, 30))
        monkeypatch.setattr(Connection, "HOLD_LIMIT", 8)
        assert await User.update_where(s, {"age__gte": 20}, {"name": "renamed"}) == 30
        assert {u.name for u in await User.find_all(s)} == {"renamed"}
        # every held statement goes out at once: the first row's UPDATE has run when
        # the second one breaks the unique email
        monkeypatch.setattr(Connection, "HOLD_LIMIT", 1)
        with pytest.raises(IntegrityError):
            await User.update_where(s, {"age__gte": 20}, {"email": "same@example.com"})
        assert sorted(u.email for u in await User.find_all(s)) == sorted(
            f"u{k}@example.com" for k in range(30)
        )
    updates = await pool.audit_log(table=table, action="update", limit=None)
    assert sorted(r.outcome for r in updates) == ["error"] + ["ok"] * 30


async def test_mysql_parameters_render_as_pymysql_renders_them(make_pool, unique, backend):
    """dbnexus renders aiomysql parameters itself (shortcuts for plain strings, ints and
    None; a LongText as a hex literal): the text must be PyMySQL's, in both escaping
    modes, and the database must read the values back unchanged."""
    import datetime as dt
    import decimal

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dbnexus.backends import LongText

    if backend != "mysql":
        pytest.skip("aiomysql renders parameters in Python; the other drivers bind them")
    # only the mysql extra installs PyMySQL
    from pymysql.constants.SERVER_STATUS import SERVER_STATUS_NO_BACKSLASH_ESCAPES

    User = make_user(unique("users"))
    pool = await make_pool(User, max_connections=1)
    db = only_database(pool)
    fixed = [
        "",
        "plain",
        "it's",
        'say "hi"',
        "back\\slash",
        "nul\0byte",
        "lines\r\n",
        "ctrl-z\x1a",
        "żółw 🐢",
        "%s %% ?",
        "a'; DELETE FROM users; --",
        0,
        -5,
        2**70,
        None,
        True,
        1.5,
        decimal.Decimal("-12.50"),
        dt.datetime(2026, 11, 22, 5, 39, 1, 30332),
        dt.date(2026, 11, 22),
        b"\x00\xff'",
    ]
    conn = await db.acquire()
    try:
        cur = await conn.raw.cursor()

        def check(values):
            sql = "SELECT " + ", ".join(["%s"] * len(values))
            assert db.driver.render(conn.raw, sql, values) == cur.mogrify(sql, tuple(values))

        check(fixed)
        values = st.lists(st.text() | st.integers() | st.none(), min_size=1, max_size=8)
        given(values)(settings(max_examples=300, deadline=None)(check))()
        doc = json.dumps({"name": 'it\'s "quoted"\\ \0 ż 🐢', "n": [1, None]})
        sql = "SELECT CONVERT(%s USING utf8mb4), %s"
        assert db.driver.render(conn.raw, sql, [LongText(doc), "x"]).startswith("SELECT CONVERT(X'")
        assert await conn.fetch_one(sql, [LongText(doc), doc]) == (doc, doc)
        for mode in ("NO_BACKSLASH_ESCAPES", ""):
            await conn.execute(f"SET SESSION sql_mode = '{mode}'", ())
            no_backslash = bool(conn.raw.server_status & SERVER_STATUS_NO_BACKSLASH_ESCAPES)
            assert no_backslash == bool(mode)
            check(fixed)
            strings = [v for v in fixed if isinstance(v, str)]
            sql = "SELECT " + ", ".join(["%s"] * len(strings))
            assert list(await conn.fetch_one(sql, strings)) == strings
        await cur.close()
    finally:
        await db.release(conn, discard=True)


async def test_a_mysql_batch_and_its_audit_rows_go_out_in_one_trip(
    make_pool, unique, backend, monkeypatch
):
    """MariaDB/MySQL with consecutive keys: BEGIN, the rows, their audit rows (keys from
    LAST_INSERT_ID()) and COMMIT are one query; the keys and audit rows are right, in
    chunks too, and inside a transaction the objects have their keys at once."""
    if backend != "mysql":
        pytest.skip("LAST_INSERT_ID() and held INSERTs are MySQL's")
    User = make_user(unique("users"))
    table = entity_info(User).table_name
    pool = await make_pool(User, max_connections=1)
    db = only_database(pool)
    if (await _autoinc(db))[0] > 1 and db.compiler.entity(entity_info(User)).insert_returning:
        pytest.skip("lock mode 2 on MariaDB: the keys come back with RETURNING")
    trips = []
    run = type(db.driver).run

    async def counted(self, conn, before, last, sql, params):
        trips.append([s for s, _, _ in before] + [sql or last])
        return await run(self, conn, before, last, sql, params)

    monkeypatch.setattr(type(db.driver), "run", counted)
    async with pool.session("alice", tags=["bulk"]) as s:
        made = await User.insert_batch(s, users(User, 5, "one"))
        assert len(trips) == 1 and trips[0][0] == "BEGIN" and trips[0][-1] == "commit"
        assert len(trips[0]) == 4
        # several chunks: each chunk's rows, then its audit rows
        monkeypatch.setattr(db, "max_rows", lambda width: 2)
        trips.clear()
        more = await User.insert_batch(s, users(User, 5, "chunks"))
        assert len(trips) == 1 and len(trips[0]) == 2 + 2 * 3
        async with s.transaction():
            inside = await User.insert_batch(s, users(User, 3, "tx"))
            assert all(u.id is not None for u in inside)
            assert [(await User.find_by_id(s, u.id)).email for u in inside] == [
                u.email for u in inside
            ]
    made += more + inside
    assert len({u.id for u in made}) == len(made)
    records = {r.record_id: r for r in await pool.audit_log(table=table, limit=None)}
    assert set(records) == {str(u.id) for u in made}
    for u in made:
        r = records[str(u.id)]
        assert (r.action, r.outcome, r.user_id, r.tags) == ("insert", "ok", "alice", ["bulk"])
        assert r.changes == {"id": u.id, "name": u.name, "email": u.email, "age": u.age}
        assert list(r.changes) == ["id", "name", "email", "age"]


async def test_a_failing_row_of_a_one_trip_batch_writes_nothing(make_pool, unique, trips):
    User, table, pool = await one_connection(make_pool, unique, trips)
    async with pool.session("alice") as s:
        (first,) = await User.insert_batch(s, users(User, 1, "first"))
        batch = users(User, 3, "second")
        batch[2].email = first.email
        with pytest.raises(IntegrityError):
            await User.insert_batch(s, batch)
        assert [u.email for u in await User.find_all(s)] == [first.email]
        assert all(u.id is None for u in batch)
        again = await User.insert_batch(s, users(User, 2, "third"))
        assert [(await User.find_by_id(s, u.id)).email for u in again] == [u.email for u in again]
    inserts = await pool.audit_log(table=table, action="insert", limit=None)
    assert sorted(r.record_id for r in inserts if r.outcome == "ok") == sorted(
        str(u.id) for u in [first, *again]
    )


async def test_sqlite_single_row_writes_read_the_old_row_and_commit_in_one_trip(
    make_pool, unique, backend, monkeypatch
):
    """On aiosqlite an update, a (soft) delete and a restore need the old row for their
    audit rows, and still go to aiosqlite's thread once: BEGIN, the read, the write,
    the audit row and COMMIT run there in one call."""
    if backend != "sqlite":
        pytest.skip("running Python between statements in one trip is aiosqlite's")
    import aiosqlite

    User, Note = make_user(unique("users")), make_note(unique("notes"))
    pool = await make_pool(User, Note, max_connections=1)
    calls = []
    execute = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        calls.append(getattr(fn, "__name__", fn))
        return await execute(self, fn, *args, **kwargs)

    async def trips(op):
        calls.clear()
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        try:
            await op
        finally:
            monkeypatch.setattr(aiosqlite.Connection, "_execute", execute)
        return len(calls)

    async with pool.session("alice") as s:
        u, v = await User.insert_batch(s, users(User, 2))
        (n,) = await Note.insert_batch(s, [Note(title="a")])
        u.age = 40
        assert await trips(User.update(s, u)) == 1
        assert await trips(User.delete(s, v.id)) == 1
        assert await trips(Note.delete(s, n.id)) == 1
        assert await trips(Note.restore(s, n.id)) == 1
        assert await trips(Note.purge(s, n.id)) == 1
        v.age = 41
        with pytest.raises(NotFound):  # raised in aiosqlite's thread, before COMMIT
            await User.update(s, v)
        assert (await User.find_by_id(s, u.id)).age == 40
        assert await User.find_by_id(s, v.id) is None
        assert await Note.count(s, include_deleted=True) == 0
    audit = [(r.table_name, r.action, r.outcome) for r in await pool.audit_log(limit=None)]
    user_t, note_t = entity_info(User).table_name, entity_info(Note).table_name
    assert audit[:6] == [
        (user_t, "update", "error"),
        (note_t, "purge", "ok"),
        (note_t, "restore", "ok"),
        (note_t, "delete", "ok"),
        (user_t, "delete", "ok"),
        (user_t, "update", "ok"),
    ]


async def test_reads_that_writes_depend_on_run_in_order_and_fail_whole(make_pool, unique, trips):
    """An update_batch reads each old row before writing it (in one trip on aiosqlite):
    the audit rows carry each row's own diff, and a missing row fails the whole batch
    with nothing written; in a transaction NotFound comes at the call itself."""
    User, table, pool = await one_connection(make_pool, unique, trips)
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, users(User, 4))
        for k, u in enumerate(made):
            u.age = 50 + k
        made[3].name = "renamed"
        await User.update_batch(s, made)
        changes = {
            r.record_id: r.changes for r in await pool.audit_log(table=table, action="update")
        }
        assert changes == {
            str(u.id): {"age": [20 + k, 50 + k]} | ({"name": ["u3", "renamed"]} if k == 3 else {})
            for k, u in enumerate(made)
        }
        await User.delete(s, made[2].id)
        for u in made:
            u.age += 1
        with pytest.raises(NotFound) as err:
            await User.update_batch(s, made)
        assert err.value.record_id == made[2].id
        assert [u.age for u in await User.find_all(s, order_by="id")] == [50, 51, 53]
        async with s.transaction():
            with pytest.raises(NotFound):
                await User.update(s, made[2])
            await User.update(s, made[0])
        assert (await User.find_by_id(s, made[0].id)).age == 51


async def _autoinc(db):
    conn = await db.acquire()
    try:
        return await db.autoinc(conn)
    finally:
        await db.release(conn)


#: str values a batch must carry as they are: PostgreSQL sends a batch's str and int
#: columns as one text each (split by the database), or as arrays when they cannot go so
AWKWARD = [
    "",
    "1,2",
    '{x,"y"}',
    "NULL",
    "\\N",
    "tab\there\nnewline",
    "żółw 🐢",
    "x" * 100,
]
SEPARATORS = ["\x1f", "a\x1eb", "\x1e"]


@pytest.mark.parametrize(
    "names, ages",
    [
        (AWKWARD, [None, 0, -5, 2**62, -(2**63), 2**63 - 1, None, 7]),
        (AWKWARD[:5] + SEPARATORS, [1, None, 3, 4, 5, 6, 7, 8]),
        ([""], [None]),
        (["", ""], [None, None]),
    ],
    ids=["text form", "separators in values", "one row", "all empty or None"],
)
async def test_batch_values_come_back_as_they_went_in(make_pool, unique, names, ages):
    User = make_user(unique("users"))
    table = entity_info(User).table_name
    pool = await make_pool(User)
    sent = [
        User(name=n, email=f"e{k}@example.com", age=a)
        for k, (n, a) in enumerate(zip(names, ages, strict=True))
    ]
    async with pool.session("alice") as s:
        made = await User.insert_batch(s, sent)
        got = {u.id: (u.name, u.email, u.age) for u in await User.find_all(s)}
    assert got == {u.id: (u.name, u.email, u.age) for u in made}
    assert sorted(got.values(), key=repr) == sorted(
        [(n, f"e{k}@example.com", a) for k, (n, a) in enumerate(zip(names, ages, strict=True))],
        key=repr,
    )
    changes = {int(r.record_id): r.changes for r in await pool.audit_log(table=table)}
    assert changes == {
        u.id: {"id": u.id, "name": u.name, "email": u.email, "age": u.age} for u in made
    }


async def test_an_int_out_of_range_in_a_batch_writes_nothing(make_pool, unique):
    User = make_user(unique("users"))
    table = entity_info(User).table_name
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        with pytest.raises(DatabaseError):
            await User.insert_batch(
                s, [User(name="a", email="a@x.org", age=2**63), User(name="b", email="b@x.org")]
            )
        assert await User.count(s) == 0
    assert [r.outcome for r in await pool.audit_log(table=table)] == ["error"]
