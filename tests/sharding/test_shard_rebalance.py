"""Rebalancing moves rows whose shard changes; stopped at any point and rerun, it loses nothing.

Every run is checked against what the shards' databases really hold: each row
exactly once, on the shard the new layout names, with its values unchanged;
the audit rows written before the rebalance all still there, shard by shard.
Runs are stopped by ``max_batches``, by an exception injected just before a
batch is deleted from its old shard (so the batch is on both shards), and by
cancelling the task while it runs.
"""

import asyncio
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from shard_support import (
    make_account,
    make_order,
    shard_audit,
    shard_rows,
    url_audit_count,
    url_rows,
)

from dbnexus import DbPool, ShardError, ShardManager, entity_info
from dbnexus.rebalance import RebalanceReport

pytestmark = pytest.mark.backend

BATCH = 12
NEW = "new"


def _two(layout) -> dict[str, str]:
    return dict(list(layout.urls.items())[:2])


async def _seed(pool: DbPool, Order: type, Account: type) -> None:
    """Orders and accounts on every shard, some updated, so audit rows exist everywhere."""
    orders = [Order(tenant_id=f"tenant-{i % 37}", item=f"item-{i}", qty=i) for i in range(60)]
    accounts = [Account(id=1000 + i, number=i * 7, owner=f"o{i}") for i in range(24)]
    async with pool.session("seeder") as s:
        await Order.insert_batch(s, orders)
        await Account.insert_batch(s, accounts)
        for o in orders[::10]:
            o.qty += 1000
            await Order.update(s, o)


async def _everything(pool: DbPool, urls: dict[str, str], cls: type) -> dict[str, list[tuple]]:
    """Rows of ``cls`` in every database of ``urls``: through the pool where it has the
    shard open, else directly by URL (a shard the pool does not know yet or any more)."""
    out = await shard_rows(pool, cls, [n for n in urls if n in pool.databases])
    for name, url in urls.items():
        if name not in out:
            out[name] = await url_rows(url, cls)
    return out


def _key(cls: type) -> int:
    info = entity_info(cls)
    return info.names.index(info.shard_key)


def _check_nothing_lost(before: dict, now: dict) -> None:
    """Mid-rebalance: every row is still somewhere, and any second copy is identical."""
    original = Counter(r for rows in before.values() for r in rows)
    seen: dict[Any, set] = {}
    for rows in now.values():
        for r in rows:
            seen.setdefault(r[0], set()).add(r)
    assert set(seen) == {r[0] for r in original}
    assert all(len(copies) == 1 for copies in seen.values()), "a row differs between shards"
    assert {next(iter(c)) for c in seen.values()} == set(original)


def _check_placed(before: dict, now: dict, manager: ShardManager, cls: type) -> None:
    """Every row exactly once, on the shard ``manager`` names for it, values unchanged."""
    placed = Counter(r for rows in now.values() for r in rows)
    assert placed == Counter(r for rows in before.values() for r in rows)
    assert max(placed.values()) == 1
    k = _key(cls)
    for name, rows in now.items():
        for r in rows:
            assert manager.shard_for(cls, r[k]) == name, (r, name)


async def _audit_by_shard(pool: DbPool, *classes: type) -> dict[str, list]:
    return {n: rows for n, rows in (await shard_audit(pool, *classes)).items() if rows}


def _stop_at_first_delete(pool: DbPool, exc: BaseException | None, task=None):
    """Make the first DELETE on any of the pool's shards raise ``exc`` (or cancel ``task``).

    Rebalancing deletes a batch from its old shard only after copying and verifying
    it, so this stops the walk with the batch on both shards. Returns a function
    removing the listeners.
    """
    engines = [db.engine.sync_engine for db in pool.databases.values()]
    fired = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE") and not fired:
            fired.append(statement)
            if task is not None:
                task.cancel()
            else:
                raise exc

    for e in engines:
        sa.event.listen(e, "before_cursor_execute", before)

    def remove() -> None:
        for e in engines:
            sa.event.remove(e, "before_cursor_execute", before)
        assert fired, "the run ended before it deleted anything"

    return remove


async def test_hash_rebalance_two_to_three_stopped_three_ways_then_rerun(
    make_sharded, layout, unique
):
    Order = make_order(unique("orders"))
    Account = make_account(unique("accounts"))
    two = _two(layout)
    pool = await make_sharded(Order, Account, shards=ShardManager.hash(two))
    await _seed(pool, Order, Account)
    urls = {**two, NEW: layout.spare}
    before = {c: await _everything(pool, urls, c) for c in (Order, Account)}
    audit_before = await _audit_by_shard(pool, Order, Account)
    assert set(audit_before) == set(two)
    old = pool.shards.manager
    new = old.with_shard(NEW, layout.spare)
    moving = sum(
        1
        for c in (Order, Account)
        for name, rows in before[c].items()
        for r in rows
        if new.shard_for(c, r[_key(c)]) != name
    )
    assert moving > BATCH

    # 1. stopped halfway by max_batches: a clean stop between batches
    batches = sum(-(-len(rows) // BATCH) for c in before.values() for rows in c.values())
    report = await pool.shards.rebalance(
        new,
        entities=[Order, Account],
        batch_size=BATCH,
        max_batches=batches // 2,
        progress=False,
    )
    assert isinstance(report, RebalanceReport)
    assert not report.complete and report.batches == batches // 2
    assert 0 < sum(report.values()) < moving
    assert pool.shards.manager is old and NEW not in pool.databases
    for c in (Order, Account):
        _check_nothing_lost(before[c], await _everything(pool, urls, c))

    # 2. the task cancelled while it runs
    task = asyncio.ensure_future(
        pool.shards.rebalance(new, entities=[Order, Account], batch_size=BATCH)
    )
    remove = _stop_at_first_delete(pool, None, task)
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        remove()
    assert pool.shards.manager is old
    for c in (Order, Account):
        _check_nothing_lost(before[c], await _everything(pool, urls, c))

    # 3. an exception after a batch was copied and verified, before it was deleted
    remove = _stop_at_first_delete(pool, RuntimeError("injected"))
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await pool.shards.rebalance(new, entities=[Order, Account], batch_size=BATCH)
    finally:
        remove()
    assert pool.shards.manager is old
    copies: Counter = Counter()
    for c in (Order, Account):
        now = await _everything(pool, urls, c)
        _check_nothing_lost(before[c], now)
        copies.update(r[0] for rows in now.values() for r in rows)
    assert max(copies.values()) == 2, "the interrupted batch should be on both shards"

    # 4. run to the end
    report = await pool.shards.rebalance(
        new, entities=[Order, Account], batch_size=BATCH, progress=False
    )
    assert report.complete
    assert set(report) == {entity_info(c).table_name for c in (Order, Account)}
    assert pool.shards.manager is new
    assert set(pool.databases) == set(urls)
    for c in (Order, Account):
        _check_placed(before[c], await shard_rows(pool, c), new, c)
    # moving rows writes no audit rows and removes none
    assert await _audit_by_shard(pool, Order, Account) == audit_before

    # 5. a second complete run has nothing left to move
    again = await pool.shards.rebalance(new, entities=[Order, Account], batch_size=BATCH)
    assert again.complete and sum(again.values()) == 0

    # the pool routes with the new layout
    async with pool.session("alice") as s:
        assert await Order.count(s) == sum(len(r) for r in before[Order].values())
        for rows in (await shard_rows(pool, Order)).values():
            for r in rows[:3]:
                got = await Order.find_by_id(s, r[0], shard_key=r[1])
                assert got is not None and got.item == r[2]
        key = next(f"k{i}" for i in range(1000) if new.shard_for(Order, f"k{i}") == NEW)
        o = await Order.insert(s, Order(tenant_id=key, item="after"))
    assert o.id in [r[0] for r in (await shard_rows(pool, Order))[NEW]]


@pytest.mark.parametrize("stop", ["max_batches", "exception"])
async def test_range_rebalance_moves_rows_both_ways_and_adds_a_shard(
    make_sharded, layout, unique, stop, capsys
):
    Account = make_account(unique("accounts"))
    two = _two(layout)
    low, high = two
    shards = ShardManager.range(two, bounds=[(100, low), (None, high)])
    pool = await make_sharded(Account, shards=shards)
    async with pool.session("seeder") as s:
        await Account.insert_batch(
            s, [Account(id=5000 + n, number=n, owner=f"o{n}") for n in range(0, 200, 2)]
        )
    urls = {**two, NEW: layout.spare}
    before = await _everything(pool, urls, Account)
    audit_before = await _audit_by_shard(pool, Account)
    # 50..99 move down->up, 150.. move to the new shard
    new = pool.shards.manager.with_shard(
        NEW, layout.spare, bounds=[(50, low), (150, high), (None, NEW)]
    )
    if stop == "max_batches":
        first = await pool.shards.rebalance(new, batch_size=7, max_batches=3, progress=False)
        assert not first.complete
    else:
        remove = _stop_at_first_delete(pool, KeyError("boom"))
        try:
            with pytest.raises(KeyError):
                await pool.shards.rebalance(new, batch_size=7, progress=False)
        finally:
            remove()
        first = RebalanceReport()
    _check_nothing_lost(before, await _everything(pool, urls, Account))
    capsys.readouterr()
    report = await pool.shards.rebalance(new, batch_size=7, progress=True)
    err = capsys.readouterr().err
    assert report.complete
    table = entity_info(Account).table_name
    # a clean stop counts each row once; after the exception the copied batch was
    # not deleted, so it moves (is deleted from its old shard) in the rerun
    assert first.get(table, 0) + report[table] == 50
    assert "rebalance [" in err and table in err
    after = await shard_rows(pool, Account)
    _check_placed(before, after, new, Account)
    assert {n: len(r) for n, r in after.items()} == {low: 25, high: 50, NEW: 25}
    assert await _audit_by_shard(pool, Account) == audit_before


async def test_rebalance_removing_a_shard_moves_only_its_rows(make_sharded, layout, unique):
    Order = make_order(unique("orders"))
    Account = make_account(unique("accounts"))
    urls = {**_two(layout), "gone": layout.spare}
    pool = await make_sharded(Order, Account, shards=ShardManager.hash(urls))
    await _seed(pool, Order, Account)
    before = {c: await _everything(pool, urls, c) for c in (Order, Account)}
    audit_before = await _audit_by_shard(pool, Order, Account)
    assert before[Order]["gone"] and before[Account]["gone"]
    new = pool.shards.manager.without_shard("gone")
    stopped = await pool.shards.rebalance(
        new, entities=[Order, Account], batch_size=BATCH, max_batches=2
    )
    assert not stopped.complete and "gone" in pool.databases
    report = await pool.shards.rebalance(new, entities=[Order, Account], batch_size=BATCH)
    assert report.complete
    assert set(pool.databases) == set(new.names)
    moved = sum(stopped.values()) + sum(report.values())
    assert moved == len(before[Order]["gone"]) + len(before[Account]["gone"])
    for c in (Order, Account):
        now = await _everything(pool, urls, c)
        assert now["gone"] == []
        _check_placed(before[c], {n: r for n, r in now.items() if n != "gone"}, new, c)
        # rows of the shards that stay did not move
        for name in new.names:
            assert set(before[c][name]) <= set(now[name])
    # audit rows stay where they were written, the removed shard's too
    assert await _audit_by_shard(pool, Order, Account) == {
        n: a for n, a in audit_before.items() if n != "gone"
    }
    gone_audit = await url_audit_count(urls["gone"], Order, Account)
    assert gone_audit == len(audit_before["gone"])


@pytest.mark.layouts("sqlite4", "postgres2")
async def test_rebalance_refuses_a_different_row_with_the_same_key(make_sharded, layout, unique):
    Order = make_order(unique("orders"))
    two = _two(layout)
    pool = await make_sharded(Order, shards=ShardManager.hash(two))
    new = pool.shards.manager.with_shard(NEW, layout.spare)
    key = next(f"k{i}" for i in range(1000) if new.shard_for(Order, f"k{i}") == NEW)
    async with pool.session("alice") as s:
        o = await Order.insert(s, Order(tenant_id=key, item="original"))
    # a row with the same primary key but other values is already on the new shard
    other = await make_sharded(Order, shards=ShardManager.hash({NEW: layout.spare}))
    async with other.session("alice") as s:
        await Order.insert(s, Order(id=o.id, tenant_id=key, item="impostor"))
    with pytest.raises(ShardError, match="unique across shards"):
        await pool.shards.rebalance(new, batch_size=BATCH)
    # nothing was deleted from the old shard
    rows = await shard_rows(pool, Order)
    assert [r[2] for r in rows[pool.shards.shard_for(Order, key)]] == ["original"]
    assert pool.shards.manager is not new
