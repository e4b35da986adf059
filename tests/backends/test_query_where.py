"""``where`` operators, ``Q`` trees and ``order_by`` lists against a Python reference."""

import datetime as dt
import decimal
import uuid

import pytest
from hypothesis import strategies as st
from test_query_support import (
    ORDERABLE,
    as_dict,
    check_examples,
    condition_trees,
    dict_holds,
    make_thing,
    make_typed,
    order_lists,
    reference_order,
    sort_key,
    thing_rows,
    tree_holds,
    tree_q,
    where_dicts,
)

from dbnexus import Q, ValidationError

pytestmark = pytest.mark.backend


async def seeded(make_pool, unique):
    """A pool (cache off: every query reaches the database) and 40 random rows."""
    Thing = make_thing(unique("things"))
    pool = await make_pool(Thing, cache_ttl=0)
    async with pool.session("alice") as s:
        made = await Thing.insert_batch(s, thing_rows(Thing))
    rows = [as_dict(t) for t in made]
    # the data must exercise NULLs and ties, or the comparison proves little
    assert any(r["age"] is None for r in rows) and any(r["nick"] is None for r in rows)
    assert len({r["name"] for r in rows}) < len(rows)
    return pool, Thing, rows


def ids(objs):
    return sorted(o.id for o in objs)


def id_set(objs):
    return {o.id for o in objs}


async def test_where_dicts_match_the_reference(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)

    async def check(where):
        ctx = f"where={where!r}"
        expected = [r["id"] for r in rows if dict_holds(r, where)]
        async with pool.session("alice") as s:
            got = await Thing.find_all(s, where=where)
            n = await Thing.count(s, where=where)
        assert ids(got) == sorted(expected), ctx
        assert n == len(expected), ctx

    await check_examples(check, where_dicts)


async def test_q_trees_match_the_reference(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)

    async def check(tree):
        q = tree_q(tree)
        ctx = f"q={q!r}"
        expected = [r["id"] for r in rows if tree_holds(r, tree)]
        async with pool.session("alice") as s:
            got = await Thing.find_all(s, where=q)
            n = await Thing.count(s, where=q)
        assert ids(got) == sorted(expected), ctx
        assert n == len(expected), ctx

    await check_examples(check, condition_trees, max_examples=100)


async def test_order_by_lists_limit_and_offset_match_the_reference(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)
    nulls_high = pool.dialect_name == "postgresql"
    windows = st.tuples(st.none() | st.integers(0, 12), st.none() | st.integers(0, 45))

    async def check(where, order, window):
        limit, offset = window
        ctx = f"where={where!r} order_by={order!r} limit={limit} offset={offset}"
        matching = [r for r in rows if dict_holds(r, where)]
        expected = reference_order(matching, order, nulls_high=nulls_high)
        start = offset or 0
        stop = None if limit is None else start + limit
        async with pool.session("alice") as s:
            got = await Thing.find_all(s, where=where, order_by=order, limit=limit, offset=offset)
        got_rows = [as_dict(t) for t in got]
        # ties may come in any order: compare the sort keys, then the rows themselves
        assert [sort_key(r, order) for r in got_rows] == [
            sort_key(r, order) for r in expected[start:stop]
        ], ctx
        assert len({r["id"] for r in got_rows}) == len(got_rows)
        by_id = {r["id"]: r for r in rows}
        for r in got_rows:
            assert r == by_id[r["id"]]
            assert dict_holds(r, where), ctx
        if limit is None and offset is None:
            assert sorted(r["id"] for r in got_rows) == sorted(r["id"] for r in matching)

    await check_examples(check, where_dicts, order_lists(ORDERABLE), windows)


async def test_a_total_order_gives_exactly_the_reference_window(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)
    nulls_high = pool.dialect_name == "postgresql"

    async def check(tree, order, limit, offset):
        order = [*order, "-id"]
        ctx = f"q={tree_q(tree)!r} order_by={order!r} limit={limit} offset={offset}"
        expected = reference_order(
            [r for r in rows if tree_holds(r, tree)], order, nulls_high=nulls_high
        )
        async with pool.session("alice") as s:
            got = await Thing.find_all(
                s, where=tree_q(tree), order_by=order, limit=limit, offset=offset
            )
        assert [t.id for t in got] == [r["id"] for r in expected[offset : offset + limit]], ctx

    await check_examples(
        check,
        condition_trees,
        order_lists(tuple(f for f in ORDERABLE if f != "id")),
        st.integers(1, 15),
        st.integers(0, 40),
        max_examples=30,
    )


async def test_none_means_is_null_and_ne_keeps_nulls(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)
    null_age = {r["id"] for r in rows if r["age"] is None}
    age_3 = {r["id"] for r in rows if r["age"] == 3}
    assert null_age and age_3
    async with pool.session("alice") as s:
        assert id_set(await Thing.find_all(s, where={"age": None})) == null_age
        assert id_set(await Thing.find_all(s, where={"age__is_null": True})) == null_age
        not_null = {r["id"] for r in rows} - null_age
        assert id_set(await Thing.find_all(s, where={"age__ne": None})) == not_null
        # "differs from 3" includes the rows without an age, as it would in Python
        ne3 = await Thing.find_all(s, where={"age__ne": 3})
        assert id_set(ne3) == {r["id"] for r in rows} - age_3
        not_in = await Thing.find_all(s, where={"age__not_in": [3]})
        assert id_set(not_in) == {r["id"] for r in rows} - age_3
        # a comparison with a NULL field is false, and ~ keeps those rows
        gt = id_set(await Thing.find_all(s, where={"age__gt": 1}))
        assert not gt & null_age
        inverted = id_set(await Thing.find_all(s, where=~Q(age__gt=1)))
        assert inverted == {r["id"] for r in rows} - gt
        assert null_age <= inverted


async def test_q_combines_with_dicts_and_nests(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)
    want = {
        r["id"]
        for r in rows
        if r["active"] or (r["score"] >= 0.5 and not (r["age"] is not None and r["age"] < 2))
    }
    where = Q(active=True) | (Q(score__gte=0.5) & ~Q(age__lt=2))
    async with pool.session("alice") as s:
        assert id_set(await Thing.find_all(s, where=where)) == want
        both = await Thing.find_all(s, where=Q(active=True) & {"score__gte": 0.5})
        # Q() is true for every row, ~Q() for none
        assert len(await Thing.find_all(s, where=Q())) == len(rows)
        assert await Thing.find_all(s, where=~Q()) == []
        assert await Thing.count(s, where=Q() & ~Q()) == 0
    assert {t.id for t in both} == {r["id"] for r in rows if r["active"] and r["score"] >= 0.5}


async def test_like_operators_escape_and_fold_case(make_pool, unique):
    pool, Thing, rows = await seeded(make_pool, unique)
    async with pool.session("alice") as s:
        nicks = {r["nick"] for r in rows}
        assert {"a_b", "ab", "aab", "a%", "%b", "a\\b"} <= nicks
        # startswith/contains take their argument literally: % and _ are not wildcards
        got = await Thing.find_all(s, where={"nick__startswith": "a_"})
        assert {t.nick for t in got} == {"a_b"}
        got = await Thing.find_all(s, where={"nick__contains": "%"})
        assert {t.nick for t in got} == {"a%", "%b"}
        got = await Thing.find_all(s, where={"nick__contains": "\\"})
        assert {t.nick for t in got} == {"a\\b"}
        # ...while like/ilike patterns use them
        got = await Thing.find_all(s, where={"nick__like": "a_b"})
        assert {t.nick for t in got} == {"a_b", "aab", "a\\b"}
        # ilike folds case on every backend
        upper = await Thing.find_all(s, where={"name__ilike": "AB%"})
        lower = await Thing.find_all(s, where={"name__like": "ab%"})
        assert (
            ids(upper) == ids(lower) == sorted(r["id"] for r in rows if r["name"].startswith("ab"))
        )


BAD_WHERES = [
    {"nope": 1},
    {"age__nope": 1},
    {"age": "three"},
    {"age__in": "123"},
    {"age__in": 3},
    {"age__in": [1, None]},
    {"age__between": [1]},
    {"age__between": [1, None]},
    {"age__is_null": "yes"},
    {"age__like": "1%"},
    {"name__startswith": 3},
    {"born__gt": "2020-01-01"},
    {"active": 1},
    {"score": "high"},
]


async def test_bad_where_is_a_validation_error(make_pool, unique):
    Thing = make_thing(unique("things"))
    pool = await make_pool(Thing)
    async with pool.session("alice") as s:
        await Thing.insert(s, Thing(name="a"))
        for where in BAD_WHERES:
            with pytest.raises(ValidationError):
                await Thing.find_all(s, where=where)
            with pytest.raises(ValidationError):
                await Thing.count(s, where=Q(**where))
            with pytest.raises(ValidationError):
                await Thing.find_all(s, where=Q(name="a") | Q(**where))
        with pytest.raises(ValidationError):
            await Thing.find_all(s, where="name = 'a'")
        with pytest.raises(ValidationError):
            await Thing.find_all(s, where=Q(name="a") & 3)


async def test_bad_order_by_and_window_are_validation_errors(make_pool, unique):
    Thing = make_thing(unique("things"))
    pool = await make_pool(Thing)
    async with pool.session("alice") as s:
        for order_by in (["nope"], "-nope", [1], ["name", None]):
            with pytest.raises(ValidationError):
                await Thing.find_all(s, order_by=order_by)
        for window in ({"limit": -1}, {"offset": -1}, {"limit": "5"}, {"limit": True}):
            with pytest.raises(ValidationError):
                await Thing.find_all(s, **window)
        await Thing.insert(s, Thing(name="a", born=dt.date(2020, 1, 1)))
        assert len(await Thing.find_all(s, order_by=["+name", "-born"])) == 1


async def test_temporal_values_are_stored_and_compared_to_the_microsecond(make_pool, unique):
    Typed = make_typed(unique("typed"))
    pool = await make_pool(Typed)
    base = dict(
        day=dt.date(2024, 2, 29),
        when=dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC),
        amount=decimal.Decimal("1.5"),
        key=uuid.UUID(int=1),
        ratio=0.5,
        flag=True,
        word="a",
    )
    whole = dt.time(1, 2, 3)
    fine = dt.time(1, 2, 3, 250_000)
    later = base["when"] + dt.timedelta(microseconds=1)
    async with pool.session("alice") as s:
        a = await Typed.insert(s, Typed(clock=whole, **base))
        b = await Typed.insert(s, Typed(clock=fine, **{**base, "when": later}))
        async with s.transaction():  # read what the database holds, not the cache
            back = {t.id: (t.clock, t.when) for t in await Typed.find_all(s)}
        assert back == {a.id: (whole, base["when"]), b.id: (fine, later)}
        assert [t.id for t in await Typed.find_all(s, where={"clock__gt": whole})] == [b.id]
        assert [t.id for t in await Typed.find_all(s, where={"clock": fine})] == [b.id]
        assert [t.id for t in await Typed.find_all(s, where={"when__gt": base["when"]})] == [b.id]
        # an aware datetime in another zone means the same instant
        plus5 = dt.timezone(dt.timedelta(hours=5))
        same = await Typed.find_all(s, where={"when": later.astimezone(plus5)})
        assert [t.id for t in same] == [b.id]
