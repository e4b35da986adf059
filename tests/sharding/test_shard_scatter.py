"""Scatter-gather reads equal the same read on one database holding every row.

The same random rows go into a sharded pool and into a single-database pool
(``layout.reference``: the same kind of database; SQLite for the mixed
SQLite+PostgreSQL layout, whose merge places NULLs as SQLite does). Random queries (where, order_by
over unique and non-unique, nullable and not-null columns, limit, offset) are
run on both; dbnexus adds the primary key as the last tiebreak of a scatter
query, so the single database is asked for the same order plus ``id``.
A seeded ``random.Random`` keeps every run the same; a failure names the query.
"""

import datetime as dt
import random
from typing import Any

import pytest
from shard_support import make_event, ops_delta, shard_ops, shard_rows

from dbnexus import DbPool, Q

pytestmark = pytest.mark.backend

TENANTS = [f"t{i:02d}" for i in range(10)]
# non-unique, differing in case only: a database's collation decides their order
NAMES = ["alpha", "Alpha", "beta", "Beta", "gamma", "delta", "Delta", "omega"]
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ROWS = 200
QUERIES = 50


def _events(Event: type, rng: random.Random) -> list[Any]:
    ids = rng.sample(range(1, 100_000), ROWS)
    return [
        Event(
            id=i,
            tenant=rng.choice(TENANTS),
            grp=rng.randrange(6),
            name=rng.choice(NAMES),
            score=None if rng.random() < 0.25 else rng.randrange(-20, 20) / 4,
            at=None if rng.random() < 0.25 else T0 + dt.timedelta(minutes=rng.randrange(500)),
        )
        for i in ids
    ]


def _where(rng: random.Random, *, strings: bool) -> Any:
    choices = [
        lambda: None,
        lambda: {"grp": rng.randrange(6)},
        lambda: {"grp__gte": rng.randrange(6)},
        lambda: {"tenant": rng.choice(TENANTS)},
        lambda: {"tenant__in": rng.sample(TENANTS, rng.randrange(1, 5))},
        lambda: {"score__is_null": rng.random() < 0.5},
        lambda: {"at__lt": T0 + dt.timedelta(minutes=rng.randrange(500))},
        lambda: Q(grp__lt=2) | Q(score__gt=0),
        lambda: {"tenant__in": rng.sample(TENANTS, 3), "grp__lte": rng.randrange(6)},
    ]
    if strings:
        choices += [
            lambda: {"name__ilike": rng.choice("abdgo") + "%"},
            lambda: Q(name="beta") | Q(grp=rng.randrange(6)),
        ]
    return rng.choice(choices)()


def _order(rng: random.Random, columns: list[str]) -> list[str]:
    chosen = rng.sample(columns, rng.randrange(0, 4))
    return [c if rng.random() < 0.5 else f"-{c}" for c in chosen]


def _with_pk(order: list[str]) -> list[str]:
    return order if any(o.lstrip("-") == "id" for o in order) else [*order, "id"]


def _one_shard(pool: DbPool, Event: type, where: Any) -> bool:
    """True when ``where`` pins the shard key to values of a single shard."""
    if not isinstance(where, dict):
        return False
    keys = [where["tenant"]] if "tenant" in where else where.get("tenant__in")
    return bool(keys) and len({pool.shards.shard_for(Event, k) for k in keys}) == 1


async def _pools(make_sharded, layout, Event, rng) -> tuple[DbPool, DbPool]:
    sharded = await make_sharded(Event)
    single = await make_sharded(Event, url=layout.reference)
    events = _events(Event, rng)
    for pool in (sharded, single):
        async with pool.session("alice") as s:
            await Event.insert_batch(s, events)
    # the rows really are spread: every shard holds some
    assert all(rows for rows in (await shard_rows(sharded, Event)).values())
    return sharded, single


async def _compare_find_all(
    sharded, single, Event, rng, columns, *, strings, queries=QUERIES
) -> None:
    async with sharded.session("alice") as s, single.session("alice") as one:
        for n in range(queries):
            where = _where(rng, strings=strings)
            order = _order(rng, columns)
            limit = rng.choice([None, 0, 1, 5, 17, 40])
            offset = rng.choice([None, 0, 3, 25, 90])
            # A query on one shard is that database's own query: like any database it
            # breaks ties as it likes, so both sides get the primary key as last column.
            mine = _with_pk(order) if _one_shard(sharded, Event, where) else order
            got = await Event.find_all(s, where=where, order_by=mine, limit=limit, offset=offset)
            want = await Event.find_all(
                one, where=where, order_by=_with_pk(order), limit=limit, offset=offset
            )
            query = f"#{n} where={where!r} order_by={order} limit={limit} offset={offset}"
            assert [e.id for e in got] == [e.id for e in want], query
            assert got == want, query
            assert await Event.count(s, where=where) == await Event.count(one, where=where), query


async def test_scatter_find_all_and_count_equal_one_database(make_sharded, layout, unique):
    Event = make_event(unique("events"))
    rng = random.Random(f"scatter-{layout.name}")
    sharded, single = await _pools(make_sharded, layout, Event, rng)
    columns = ["tenant", "grp", "name", "score", "at", "id"]
    await _compare_find_all(sharded, single, Event, rng, columns, strings=True)


async def test_scatter_find_all_on_non_text_columns_equals_one_database(
    make_sharded, layout, unique
):
    """As above without ordering by or matching on the mixed-case ``name`` column."""
    Event = make_event(unique("events"))
    rng = random.Random(f"scatter-numbers-{layout.name}")
    sharded, single = await _pools(make_sharded, layout, Event, rng)
    columns = ["tenant", "grp", "score", "at", "id"]
    await _compare_find_all(
        sharded, single, Event, rng, columns, strings=False, queries=QUERIES // 2
    )


async def test_scatter_on_not_null_columns_equals_one_database(make_sharded, layout, unique):
    """Ordering only by NOT NULL non-text columns (no NULL placement, no collation)."""
    Event = make_event(unique("events"))
    rng = random.Random(f"scatter-not-null-{layout.name}")
    sharded, single = await _pools(make_sharded, layout, Event, rng)
    await _compare_find_all(
        sharded, single, Event, rng, ["tenant", "grp", "id"], strings=False, queries=QUERIES // 2
    )


async def test_find_page_walks_every_shard_in_one_global_order(make_sharded, layout, unique):
    Event = make_event(unique("events"))
    rng = random.Random(f"pages-{layout.name}")
    sharded, single = await _pools(make_sharded, layout, Event, rng)
    async with sharded.session("alice") as s, single.session("alice") as one:
        for n in range(10):
            order = [c if rng.random() < 0.5 else f"-{c}" for c in rng.sample(["tenant", "grp"], 2)]
            order = order[: rng.randrange(1, 3)]
            where = rng.choice([None, {"grp__gte": 2}, {"tenant__in": TENANTS[:4]}])
            size = rng.choice([3, 11, 40])
            reverse = rng.random() < 0.3
            want = await Event.find_all(one, where=where, order_by=_with_pk(order))
            if reverse:
                want.reverse()
            seen: list[Any] = []
            cursor = None
            while True:
                page = await Event.find_page(
                    s, where=where, order_by=order, limit=size, cursor=cursor, reverse=reverse
                )
                assert len(page.items) <= size
                seen += page.items
                cursor = page.next_cursor
                if cursor is None:
                    break
            query = f"#{n} where={where!r} order_by={order} size={size} reverse={reverse}"
            assert [e.id for e in seen] == [e.id for e in want], query


async def test_scatter_query_asks_every_shard_once_and_a_pinned_one_asks_one(
    make_sharded, layout, unique
):
    Event = make_event(unique("events"))
    sharded = await make_sharded(Event, cache_ttl=0)
    rng = random.Random(f"ops-{layout.name}")
    async with sharded.session("alice") as s:
        await Event.insert_batch(s, _events(Event, rng))
        before = shard_ops(sharded)
        await Event.find_all(s, order_by=["-score", "name"], limit=10, offset=5)
        assert ops_delta(before, shard_ops(sharded)) == dict.fromkeys(sharded.shards.names, 1)
        shard = sharded.shards.shard_for(Event, "t03")
        before = shard_ops(sharded)
        got = await Event.find_all(s, where={"tenant": "t03"}, order_by="-grp", limit=3)
        assert ops_delta(before, shard_ops(sharded)) == {shard: 1}
        assert all(e.tenant == "t03" for e in got)
