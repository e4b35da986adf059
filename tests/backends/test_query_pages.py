"""Keyset pagination: complete walks both ways, signed cursors, concurrent inserts."""

import asyncio
import base64
import datetime as dt
import decimal
import random
import uuid

import pytest
from hypothesis import strategies as st
from test_query_support import (
    NOT_NULL_ORDERABLE,
    as_dict,
    check_examples,
    condition_trees,
    make_ranked,
    make_thing,
    make_typed,
    order_lists,
    reference_order,
    thing_rows,
    tree_holds,
    tree_q,
)

from dbnexus import ValidationError
from dbnexus.pagination import Page, encode_cursor

pytestmark = pytest.mark.backend


async def walk(s, Entity, **kw):
    """Every page of a walk: a list of the pages' id lists."""
    pages, cursor = [], None
    while True:
        page = await Entity.find_page(s, cursor=cursor, **kw)
        assert isinstance(page, Page)
        pages.append([o.id for o in page.items])
        if page.next_cursor is None:
            return pages
        assert isinstance(page.next_cursor, str)
        cursor = page.next_cursor


async def test_walks_visit_every_matching_row_once_in_order(make_pool, unique):
    Thing = make_thing(unique("things"))
    pool = await make_pool(Thing, cache_ttl=0)
    async with pool.session("alice") as s:
        rows = [as_dict(t) for t in await Thing.insert_batch(s, thing_rows(Thing))]

    async def check(tree, order, limit):
        where = tree_q(tree)
        ctx = f"where={where!r} order_by={order!r} limit={limit}"
        # the primary key (ascending) breaks ties after the caller's ordering
        full = order if "id" in [o.lstrip("-") for o in order] else [*order, "id"]
        expected = [
            r["id"]
            for r in reference_order(
                [r for r in rows if tree_holds(r, tree)], full, nulls_high=False
            )
        ]
        async with pool.session("alice") as s:
            forward = await walk(s, Thing, where=where, order_by=order, limit=limit)
            backward = await walk(s, Thing, where=where, order_by=order, limit=limit, reverse=True)
        assert [i for p in forward for i in p] == expected, ctx
        assert [i for p in backward for i in p] == expected[::-1], ctx
        for pages in (forward, backward):
            # full pages until the last, which is not empty unless nothing matches
            assert all(len(p) == limit for p in pages[:-1]), ctx
            assert 0 < len(pages[-1]) <= limit or expected == [], ctx

    await check_examples(
        check, condition_trees, order_lists(NOT_NULL_ORDERABLE), st.integers(1, 12), max_examples=25
    )


async def test_last_page_has_no_cursor_even_when_rows_fill_it_exactly(make_pool, unique):
    Ranked = make_ranked(unique("ranked"))
    pool = await make_pool(Ranked)
    async with pool.session("alice") as s:
        await Ranked.insert_batch(s, [Ranked(rank=k) for k in range(6)])
        assert [len(p) for p in await walk(s, Ranked, order_by="rank", limit=3)] == [3, 3]
        assert [len(p) for p in await walk(s, Ranked, order_by="rank", limit=6)] == [6]
        empty = await Ranked.find_page(s, where={"rank__gt": 99}, order_by="rank")
        assert (empty.items, empty.next_cursor) == ([], None)
        assert len(empty) == 0 and list(empty) == []


async def test_timestamp_order_with_ties_breaks_them_by_primary_key(make_pool, unique):
    Ranked = make_ranked(unique("ranked"), timestamps=True)
    pool = await make_pool(Ranked, cache_ttl=0)
    async with pool.session("alice") as s:
        # one batch: every row gets the same created_at
        first = await Ranked.insert_batch(s, [Ranked(rank=k) for k in range(5)])
        second = await Ranked.insert_batch(s, [Ranked(rank=k) for k in range(5)])
        assert len({r.created_at for r in first}) == 1
        pages = await walk(s, Ranked, order_by="-created_at", limit=3)
        seen = [i for p in pages for i in p]
        assert seen == sorted(r.id for r in second) + sorted(r.id for r in first)
        back = await walk(s, Ranked, order_by="-created_at", limit=4, reverse=True)
        assert [i for p in back for i in p] == seen[::-1]


async def test_a_row_deleted_at_the_cursor_does_not_break_the_walk(make_pool, unique):
    Ranked = make_ranked(unique("ranked"))
    pool = await make_pool(Ranked)
    async with pool.session("alice") as s:
        made = await Ranked.insert_batch(s, [Ranked(rank=k) for k in range(7)])
        page = await Ranked.find_page(s, order_by="-rank", limit=3)
        assert [r.rank for r in page] == [6, 5, 4]
        await Ranked.delete(s, page.items[-1].id)
        nxt = await Ranked.find_page(s, order_by="-rank", limit=3, cursor=page.next_cursor)
        assert [r.rank for r in nxt] == [3, 2, 1]
        assert {r.id for r in made} >= {r.id for r in nxt}


async def test_pages_stay_exact_while_rows_are_inserted_between_fetches(make_pool, unique):
    Ranked = make_ranked(unique("ranked"))
    pool = await make_pool(Ranked, cache_ttl=0)
    async with pool.session("alice") as s:
        original = await Ranked.insert_batch(s, [Ranked(rank=10 * k) for k in range(30)])
    original_ids = {r.id for r in original}
    inserted: list[int] = []

    async def insert_around(rank):
        # rows before the cursor, tied with it, and after it, each in its own transaction
        async with pool.session("bob") as w:
            for r in (rank - 15, rank - 1, rank, rank + 1, rank + 5, rank + 45, rank + 95):
                row = await Ranked.insert(w, Ranked(rank=r, label="new"))
                inserted.append(row.id)
                await asyncio.sleep(0)

    seen: list[tuple[int, int]] = []
    fetches = 0
    async with pool.session("alice") as s:
        page = await Ranked.find_page(s, order_by="rank", limit=4)
        while True:
            seen += [(r.rank, r.id) for r in page]
            if page.next_cursor is None:
                break
            fetches += 1
            # the next page is fetched while another task inserts around the cursor
            page, _ = await asyncio.gather(
                Ranked.find_page(s, order_by="rank", limit=4, cursor=page.next_cursor),
                insert_around(seen[-1][0]),
            )
    ids = [i for _, i in seen]
    assert len(ids) == len(set(ids)), "a row was shown twice"
    assert original_ids <= set(ids), "a row that existed at the first call was skipped"
    assert seen == sorted(seen), "pages left the (rank, id) order"
    assert set(ids) - original_ids <= set(inserted)
    assert len(inserted) == 7 * fetches
    # rows inserted beyond the next page are walked into later
    assert set(ids) - original_ids


async def test_newest_first_walk_ignores_rows_inserted_meanwhile(make_pool, unique):
    Ranked = make_ranked(unique("ranked"), timestamps=True)
    pool = await make_pool(Ranked)
    async with pool.session("alice") as s:
        original = [await Ranked.insert(s, Ranked(rank=k)) for k in range(12)]

    async def insert_some():
        async with pool.session("bob") as w:
            for _ in range(3):
                await Ranked.insert(w, Ranked(rank=-1, label="new"))

    seen = []
    async with pool.session("alice") as s:
        page = await Ranked.find_page(s, order_by="-created_at", limit=5)
        while True:
            seen += [r.id for r in page]
            if page.next_cursor is None:
                break
            page, _ = await asyncio.gather(
                Ranked.find_page(s, order_by="-created_at", limit=5, cursor=page.next_cursor),
                insert_some(),
            )
    # new rows are newer than the cursor, so they sort before it and never show up
    assert seen == [r.id for r in reversed(original)]


def flip(token: str, i: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[i % len(raw)] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


async def test_cursors_are_tamper_evident_and_bound_to_their_walk(make_pool, unique, db_url):
    Ranked = make_ranked(unique("ranked"))
    pool = await make_pool(Ranked, cursor_secret="s" * 32)
    async with pool.session("alice") as s:
        await Ranked.insert_batch(s, [Ranked(rank=k) for k in range(10)])
        page = await Ranked.find_page(s, order_by="rank", limit=3)
        good = page.next_cursor
        bad = [
            flip(good, 0),  # signature
            flip(good, 20),  # body
            flip(good, len(good)),  # last byte
            good[:-2],
            good + "AA",
            "",
            "not a cursor!",
            "A" * 9000,
            encode_cursor(b"k" * 32, (("rank", False), ("id", False)), False, [2, 3]),
        ]
        for cursor in bad:
            with pytest.raises(ValidationError):
                await Ranked.find_page(s, order_by="rank", limit=3, cursor=cursor)
        with pytest.raises(ValidationError):
            await Ranked.find_page(s, order_by="rank", limit=3, cursor=12345)
        # a cursor is valid only for the ordering and direction that made it
        for kw in ({"order_by": "-rank"}, {"order_by": ["rank", "label"]}, {"order_by": "id"}):
            with pytest.raises(ValidationError, match="ordering"):
                await Ranked.find_page(s, limit=3, cursor=good, **kw)
        with pytest.raises(ValidationError, match="direction"):
            await Ranked.find_page(s, order_by="rank", limit=3, cursor=good, reverse=True)
        nxt = await Ranked.find_page(s, order_by="rank", limit=3, cursor=good)
        assert [r.rank for r in nxt] == [3, 4, 5]

    # another pool signs with another key, unless both are given the same secret
    other = await make_pool(Ranked)
    same = await make_pool(Ranked, cursor_secret="s" * 32)
    async with other.session("alice") as s:
        with pytest.raises(ValidationError):
            await Ranked.find_page(s, order_by="rank", limit=3, cursor=good)
    async with same.session("alice") as s:
        nxt = await Ranked.find_page(s, order_by="rank", limit=3, cursor=good)
        assert [r.rank for r in nxt] == [3, 4, 5]


async def test_ordering_by_a_nullable_field_or_bad_limits_are_validation_errors(make_pool, unique):
    Thing = make_thing(unique("things"))
    pool = await make_pool(Thing)
    async with pool.session("alice") as s:
        await Thing.insert(s, Thing(name="a"))
        for order_by in ("age", ["name", "-born"], "nick"):
            with pytest.raises(ValidationError, match="nullable"):
                await Thing.find_page(s, order_by=order_by)
        for limit in (0, -1, 10_001, "5", True, None):
            with pytest.raises(ValidationError):
                await Thing.find_page(s, order_by="name", limit=limit)
        with pytest.raises(ValidationError):
            await Thing.find_page(s, order_by="nope")
        with pytest.raises(ValidationError):
            await Thing.find_page(s, where={"nope": 1})
        # without order_by the walk is by primary key
        page = await Thing.find_page(s)
        assert [t.name for t in page] == ["a"] and page.next_cursor is None


async def test_cursors_carry_every_column_type_back_to_the_database(make_pool, unique):
    Typed = make_typed(unique("typed"))
    pool = await make_pool(Typed, cache_ttl=0)
    rnd = random.Random(7)
    base = dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC)
    rows = [
        Typed(
            day=dt.date(2024, 1, 1) + dt.timedelta(days=rnd.randrange(4)),
            clock=dt.time(rnd.randrange(3), rnd.choice([0, 30]), 15),
            when=base + dt.timedelta(microseconds=rnd.randrange(4)),
            amount=decimal.Decimal(rnd.choice(["-1.5", "0", "2.000001", "10"])),
            key=uuid.UUID(int=rnd.randrange(4) << 100),
            ratio=rnd.choice([-0.5, 0.0, 1e-9, 3.25]),
            flag=rnd.random() < 0.5,
            word=rnd.choice(["a", "b", "ab"]),
        )
        for _ in range(25)
    ]
    async with pool.session("alice") as s:
        made = await Typed.insert_batch(s, rows)
        for name in ("day", "clock", "when", "amount", "key", "ratio", "flag", "word"):
            for order in (name, f"-{name}"):
                expected = sorted(made, key=lambda r, n=name: (getattr(r, n), r.id))
                if order.startswith("-"):
                    # descending on the field; the primary key tiebreak stays ascending
                    expected = sorted(expected, key=lambda r, n=name: getattr(r, n), reverse=True)
                pages = await walk(s, Typed, order_by=order, limit=4)
                assert [i for p in pages for i in p] == [r.id for r in expected], order
