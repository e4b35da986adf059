"""Where a PostgreSQL ``insert_batch(100)`` spends its time: ``python -m benchmarks.batch_profile``.

Case 5 of the suite gives the totals; this splits dbnexus's figure. Every part is
measured in the same run, once per round in an order shuffled each round, so that a
slow spell of the machine touches each alike and no part always follows the same
one (what ran just before moves the next call's time on this VM). Differences are
taken per round. Each figure is a median with its 95% confidence interval:

- ``raw``: the suite's raw column, asyncpg ``executemany`` in a transaction;
- ``dbnexus``: the suite's dbnexus column (permissions, audit and metrics on);
- ``statement``: the one statement dbnexus sends for the batch (the rows and their
  audit rows), built by dbnexus's own compiler and sent from a bare asyncpg
  connection with the same kind of parameters. ``dbnexus - statement`` is what
  dbnexus does in Python around it, building the benchmark's 100 objects included;
- ``raw`` and ``statement`` again on a connection with ``synchronous_commit=off``: the
  difference is the time spent waiting for the commit's WAL flush (a setting of that
  profiling connection only; dbnexus never changes it);
- ``floor``: the least any Python around that statement can do. It builds the 100
  objects, reads their values, sends the statement through dbnexus's own connection
  layer and gives each object its key. ``dbnexus - floor`` is what the session,
  the permission check, validation, the audit values and metrics add;
- the 100 objects the dbnexus column builds per call, alone (CPU only);
- a ``SELECT 1``: the round trip every statement pays.

Then ``EXPLAIN (ANALYZE, WAL)`` of the statement, repeated, splits the server's
executor time and WAL between the rows' INSERT and the audit rows' INSERT.

It uses the suite's server (``DBNEXUS_TEST_POSTGRES_URL``), tables and lock, seeds the
tables the same way and drops them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import operator
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.backends import COLUMNS, backend_for
from benchmarks.common import BATCH_SIZE, Dataset, RowMaker, seed_rows
from benchmarks.impl_dbnexus import TABLE, USER, BenchUser, DbnexusImpl
from benchmarks.impl_raw import RawPostgres
from benchmarks.report import fmt_rate, fmt_us
from benchmarks.run import AUDIT_TABLE, clean_up, locked_admin, log
from dbnexus.audit import AUDIT_COLUMNS, insert_plan
from dbnexus.entity import entity_info

__all__ = ["main"]

SETTINGS = ("synchronous_commit", "wal_sync_method", "full_page_writes", "shared_buffers")


class Statement:
    """dbnexus's batch statement for ``BenchUser``, sent from a bare asyncpg connection."""

    def __init__(self, pool: Any) -> None:
        db = next(iter(pool.databases.values()))
        info = entity_info(BenchUser)
        pk = info.pk.name
        if info.names != (pk, *COLUMNS):
            raise RuntimeError(f"BenchUser's columns are {info.names}, expected id + {COLUMNS}")
        self.plan = db.compiler.pg_batch_insert(info, COLUMNS)
        values = {
            "ts": dt.datetime.now(dt.UTC),
            "user_id": USER,
            "domain": None,
            "action": "insert",
            "table_name": TABLE,
            "record_id": None,
            "outcome": "ok",
            "changes": None,
            "tags": [],
        }
        processed = insert_plan(db.compiler).params([values[c] for c in AUDIT_COLUMNS])
        self.audit = [processed[i] for i in self.plan.AUDIT_PARAMS]
        #: the form the suite's rows go in (see PgBatchInsert.bind)
        self.sql = self.bind(RowMaker("form").rows(2))[0]

    def bind(self, rows: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
        return self.plan.bind([(None, *r) for r in rows], self.audit)


def timed(fn: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        t0 = time.perf_counter()
        await fn()
        return time.perf_counter() - t0

    return run


async def interleaved(
    parts: dict[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, list[float]]:
    """Each part's times: every part once per round, in an order shuffled every round
    (no part always follows the same one), after five warm-up calls of each."""
    times: dict[str, list[float]] = {k: [] for k in parts}
    for fn in parts.values():  # warm up: prepare statements, fill caches
        for _ in range(5):
            await fn()
    order = list(parts.items())
    shuffle = random.Random(42).shuffle
    for i in range(rounds):
        shuffle(order)
        for key, fn in order:
            times[key].append(await fn())
        if (i + 1) % 50 == 0 or i + 1 == rounds:
            log(f"  {i + 1}/{rounds} rounds")
    return times


async def explain(conn: Any, stmt: Statement, rows: RowMaker, times: int) -> dict[str, Any]:
    """Medians over ``times`` runs of EXPLAIN ANALYZE: executor µs and WAL per INSERT."""
    per_table: dict[str, dict[str, list[float]]] = {}
    total: list[float] = []
    for _ in range(times):
        sql, args = stmt.bind(rows.rows(BATCH_SIZE))
        doc = await conn.fetchval("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + sql, *args)
        plan = json.loads(doc)[0]
        total.append(plan["Execution Time"] * 1e3)
        stack = [plan["Plan"]]
        while stack:
            node = stack.pop()
            stack += node.get("Plans", [])
            if node["Node Type"] == "ModifyTable" and node.get("Operation") == "Insert":
                got = per_table.setdefault(node["Relation Name"], {})
                for key, value in (
                    ("us", node["Actual Total Time"] * 1e3),
                    ("wal_records", node["WAL Records"]),
                    ("wal_bytes", node["WAL Bytes"]),
                ):
                    got.setdefault(key, []).append(value)
    return {
        "total_us": statistics.median(total),
        "inserts": {
            t: {k: statistics.median(v) for k, v in d.items()} for t, d in per_table.items()
        },
    }


async def profile(batches: int, explains: int, seed_count: int) -> str:
    import asyncpg

    backend = backend_for("postgres", Path(tempfile.gettempdir()))  # the path is SQLite's
    admin = await locked_admin(backend)
    tables_before = await admin.table_names()
    if AUDIT_TABLE in tables_before:
        await admin.analyze(AUDIT_TABLE)  # as the suite does: dead rows slow audited writes
    raw, dbn = RawPostgres(), DbnexusImpl(cache=True)
    impls = [raw, dbn]
    conns: list[Any] = []
    try:
        for impl in impls:
            await admin.drop_table(impl.table)
        for impl in impls:
            await impl.setup(backend)
        data = {}
        for impl in impls:
            data[impl.table] = Dataset(await admin.seed(impl.table, seed_rows(seed_count)))
        server = await admin.server_version()
        settings = {s: (await admin.fetch(f"SHOW {s}"))[0][0] for s in SETTINGS}
        stmt = Statement(dbn.pool)
        on = await asyncpg.connect(**backend.asyncpg_kwargs)
        off = await asyncpg.connect(
            **backend.asyncpg_kwargs, server_settings={"synchronous_commit": "off"}
        )
        conns += [on, off]
        rows = RowMaker("profile")

        def send(conn: Any) -> Callable[[], Awaitable[object]]:
            prepared: dict[str, Any] = {}

            async def op() -> object:
                sql, args = stmt.bind(rows.rows(BATCH_SIZE))
                if sql not in prepared:
                    prepared[sql] = await conn.prepare(sql)
                return await prepared[sql].fetchval(*args)

            return op

        async def raw_off() -> object:
            async with off.transaction():
                return await off.executemany(raw.INSERT, rows.rows(BATCH_SIZE))

        async def select_1() -> object:
            return await on.fetchval("SELECT 1")

        db = next(iter(dbn.pool.databases.values()))
        read = operator.attrgetter(*entity_info(BenchUser).names)

        async def floor() -> object:
            objs = [BenchUser(name=n, email=e, age=a) for n, e, a in rows.rows(BATCH_SIZE)]
            conn = await db.acquire()
            try:
                got = await conn.fetch_one(*stmt.plan.bind(list(map(read, objs)), stmt.audit))
            finally:
                await db.release(conn)
            for obj, key in zip(objs, got[0], strict=True):  # type: ignore[index]
                obj.id = key
            return objs

        async def objects() -> object:
            return [BenchUser(name=n, email=e, age=a) for n, e, a in rows.rows(BATCH_SIZE)]

        variants = {
            "raw": timed((await raw.insert_batch(data[raw.table])).fn),  # type: ignore[arg-type]
            "dbnexus": timed((await dbn.insert_batch(data[dbn.table])).fn),  # type: ignore[arg-type]
            "statement": timed(send(on)),
            "floor": timed(floor),
            "raw, sync off": timed(raw_off),
            "statement, sync off": timed(send(off)),
            "objects": timed(objects),
            "select 1": timed(select_1),
        }
        times = await interleaved(variants, batches)
        plan = await explain(on, stmt, rows, explains)
    finally:
        for conn in conns:
            await conn.close()
        for impl in impls:
            await impl.teardown()
        await clean_up(admin, tables_before, [i.table for i in impls])
        await admin.close()
    return report(server, settings, batches, times, plan, stmt.sql)


def median_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Median and the ends of its 95% confidence interval, in µs (order statistics:
    no assumption about the distribution)."""
    data = sorted(values)
    n = len(data)
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = data[max(0, math.floor(n / 2 - half))], data[min(n - 1, math.ceil(n / 2 + half))]
    return statistics.median(data) * 1e6, lo * 1e6, hi * 1e6


def report(
    server: str,
    settings: dict[str, str],
    batches: int,
    times: dict[str, list[float]],
    plan: dict[str, Any],
    sql: str,
) -> str:
    raw = median_ci(times["raw"])[0]

    def minus(a: str, b: str) -> list[float]:
        """Per round: ``a``'s time less ``b``'s (both ran in the same round)."""
        return [x - y for x, y in zip(times[a], times[b], strict=True)]

    lines = [
        f"== insert_batch({BATCH_SIZE}) on {server}: {batches} rounds, each part once per "
        "round in a shuffled order; medians with their 95% confidence interval ==",
        "   " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        f"{'':56}{'µs/batch':>9}{'95% CI':>14}{'batches/s':>11}{'x raw':>7}",
    ]

    def row(label: str, values: list[float], part: bool = False) -> None:
        """A whole batch gets its rate and its multiple of raw; a part (``part``) neither."""
        mid, lo, hi = median_ci(values)
        lines.append(
            f"{label:56}{fmt_us(mid):>9}{f'{fmt_us(lo)}-{fmt_us(hi)}':>14}"
            f"{'' if part else fmt_rate(1e6 / mid):>11}{'' if part else f'{mid / raw:.2f}x':>7}"
        )

    row("raw: asyncpg executemany in a transaction", times["raw"])
    row("dbnexus insert_batch (permissions, audit, metrics)", times["dbnexus"])
    row("  its statement alone, from bare asyncpg", times["statement"])
    row("  the floor: objects, statement, keys and nothing else", times["floor"])
    row("  dbnexus - statement: Python around the statement", minus("dbnexus", "statement"), True)
    row("    building the 100 objects (in both dbnexus and floor)", times["objects"], True)
    row(
        "    dbnexus - floor: session, permissions, checks, metrics",
        minus("dbnexus", "floor"),
        True,
    )
    row("raw, synchronous_commit=off", times["raw, sync off"])
    row("statement, synchronous_commit=off", times["statement, sync off"])
    row("  commit's WAL flush: raw - raw off", minus("raw", "raw, sync off"), True)
    row(
        "  commit's WAL flush: statement - statement off",
        minus("statement", "statement, sync off"),
        True,
    )
    row("a round trip: SELECT 1", times["select 1"], True)
    lines += [
        "",
        f"server, EXPLAIN (ANALYZE, WAL) of the statement: executor "
        f"{fmt_us(plan['total_us'])} µs in all",
        f"{'  INSERT into':40}{'µs':>8}{'WAL records':>13}{'WAL bytes':>11}",
    ]
    for table, got in plan["inserts"].items():
        lines.append(
            f"  {table:38}{fmt_us(got['us']):>8}{got['wal_records']:>13,.0f}"
            f"{got['wal_bytes']:>11,.0f}"
        )
    lines += ["", "statement:", f"  {sql}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_profile",
        description="Split a PostgreSQL insert_batch(100) into its parts, measured in one run.",
    )
    p.add_argument("--batches", type=int, default=500, help="rounds of every part (500)")
    p.add_argument("--explain", type=int, default=30, help="EXPLAIN ANALYZE runs (30)")
    p.add_argument("--seed-rows", type=int, default=20_000, help="rows seeded per table")
    args = p.parse_args(argv)
    print(asyncio.run(profile(args.batches, args.explain, args.seed_rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
