"""What the audit rows cost a PostgreSQL ``insert_batch(100)``, by the audit table's
indexes and by the rows' layout: ``python -m benchmarks.audit_indexes``.

dbnexus's own batch statement for ``BenchUser`` (the rows and their audit rows in one
statement, as ``insert_batch`` sends it) is sent from a bare asyncpg connection, in
autocommit, against copies of the audit table that differ only in their indexes;
once with one audit row for the whole batch (every record's id and changes in one
JSON array: a layout dbnexus does not use, measured to show what per-record rows
cost); and once with no audit rows at all. The suite's raw column (asyncpg
``executemany`` in a transaction, into a table of its own) runs in the same rounds as
the reference. Each round runs every variant once in a shuffled order; the figures
are medians with their 95% confidence interval. Each variant has its own tables
(``bench_audix_*``), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.backends import COLUMNS, backend_for
from benchmarks.batch_profile import interleaved, median_ci
from benchmarks.common import BATCH_SIZE, RowMaker
from benchmarks.impl_dbnexus import BenchUser
from benchmarks.report import fmt_rate, fmt_us
from dbnexus.audit import audit_table
from dbnexus.entity import entity_info
from dbnexus.statements import Compiler

__all__ = ["main"]

#: the audit table's indexes per variant (dbnexus's are the first)
VARIANTS: dict[str, list[str]] = {
    "dbnexus's: key, (table_name, ts), (user_id, ts)": [
        "CREATE INDEX ON {t} (table_name, ts)",
        "CREATE INDEX ON {t} (user_id, ts)",
    ],
    # the same two without b-tree deduplication (a batch's rows share their ts) ...
    "the same, deduplicate_items = off": [
        "CREATE INDEX ON {t} (table_name, ts) WITH (deduplicate_items = off)",
        "CREATE INDEX ON {t} (user_id, ts) WITH (deduplicate_items = off)",
    ],
    # ... and with the key as a tie-breaker (audit_log orders by ts, then id)
    "(table_name, ts, id), (user_id, ts, id)": [
        "CREATE INDEX ON {t} (table_name, ts, id)",
        "CREATE INDEX ON {t} (user_id, ts, id)",
    ],
    "key and (table_name, ts)": ["CREATE INDEX ON {t} (table_name, ts)"],
    "key and BRIN (ts)": ["CREATE INDEX ON {t} USING brin (ts)"],
    "key only": [],
}
ONE_ROW = "one audit row per batch (a JSON array of records), dbnexus's indexes"
NO_AUDIT = "no audit rows (the rows' INSERT alone, in the same form)"
RAW = "raw: asyncpg executemany in a transaction, no audit"
#: the per-record audit values in the statement, and what ONE_ROW puts there instead
PER_RECORD = "CAST(ins.id AS TEXT), 'ok', CAST(row_to_json(ins) AS JSON)"
PER_BATCH = "NULL, 'ok', json_agg(json_build_array(CAST(ins.id AS TEXT), row_to_json(ins)))"


async def measure(rounds: int) -> str:
    import asyncpg
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    backend = backend_for("postgres", Path(tempfile.gettempdir()))
    conn = await asyncpg.connect(**backend.asyncpg_kwargs)
    dialect = postgresql.asyncpg.dialect()
    info = entity_info(BenchUser)
    stmt = Compiler(dialect).pg_batch_insert(info, COLUMNS)
    maker = RowMaker("audix")
    audit = [dt.datetime.now(dt.UTC), "alice", None, "bench_users", "[]"]
    # the form the suite's rows go in (see PgBatchInsert.bind)
    form = stmt.bind([(None, *r) for r in maker.rows(2)], audit)[0]
    rows_ddl = str(CreateTable(info.table).compile(dialect=dialect))
    audit_ddl = str(CreateTable(audit_table).compile(dialect=dialect))
    sqls: dict[str, str] = {}
    made: list[str] = []
    try:
        dbnexus_indexes = next(iter(VARIANTS.values()))
        layouts = [*VARIANTS.items(), (ONE_ROW, dbnexus_indexes), (NO_AUDIT, [])]
        for k, (name, indexes) in enumerate(layouts):
            rows_t, audit_t = f"bench_audix_rows_{k}", f"bench_audix_audit_{k}"
            made += [rows_t, audit_t]
            for t in (rows_t, audit_t):
                await conn.execute(f"DROP TABLE IF EXISTS {t}")
            await conn.execute(rows_ddl.replace(info.table_name, rows_t, 1))
            await conn.execute(audit_ddl.replace(audit_table.name, audit_t, 1))
            for ddl in indexes:
                await conn.execute(ddl.format(t=audit_t))
            sql = form.replace(info.table_name, rows_t).replace(audit_table.name, audit_t)
            if name == ONE_ROW:
                if PER_RECORD not in sql:
                    raise RuntimeError(f"the batch statement changed: {sql}")
                sql = sql.replace(PER_RECORD, PER_BATCH)
            elif name == NO_AUDIT:
                # the same rows' CTE and result; the audit values are still sent
                head = sql[: sql.index("), aud AS (")]
                sql = f"{head}) SELECT array_agg(ins.id ORDER BY ins.id), $4::TIMESTAMPTZ, "
                sql += "$5::VARCHAR, $6::VARCHAR, $7::VARCHAR, $8::JSON FROM ins"
            sqls[name] = sql

        def send(sql: str) -> Callable[[], Awaitable[float]]:
            async def timed() -> float:
                form_sent, args = stmt.bind([(None, *r) for r in maker.rows(BATCH_SIZE)], audit)
                if form_sent != form:
                    raise RuntimeError("the rows went in another form")
                t0 = time.perf_counter()
                await conn.fetchval(sql, *args)
                return time.perf_counter() - t0

            return timed

        raw_t = "bench_audix_raw"
        made.append(raw_t)
        await conn.execute(f"DROP TABLE IF EXISTS {raw_t}")
        await conn.execute(rows_ddl.replace(info.table_name, raw_t, 1))
        raw_sql = f"INSERT INTO {raw_t} ({', '.join(COLUMNS)}) VALUES ($1, $2, $3)"

        async def raw() -> float:
            rows = maker.rows(BATCH_SIZE)
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.executemany(raw_sql, rows)
            return time.perf_counter() - t0

        parts = {name: send(sql) for name, sql in sqls.items()}
        times = await interleaved({**parts, RAW: raw}, rounds)
        server = await conn.fetchval("SHOW server_version")
    finally:
        for t in made:
            await conn.execute(f"DROP TABLE IF EXISTS {t}")
        await conn.close()
    base = median_ci(times[next(iter(VARIANTS))])[0]
    raw_us = median_ci(times[RAW])[0]
    out = [
        f"== insert_batch({BATCH_SIZE})'s statement on PostgreSQL {server}, by the audit "
        f"rows' indexes and layout: {rounds} rounds, shuffled; medians with their 95% CI ==",
        "",
        f"{'audit rows':72}{'µs/batch':>9}{'95% CI':>16}{'batches/s':>11}"
        f"{'x dbnexus':>11}{'x raw':>8}",
    ]
    for name, values in times.items():
        med, lo, hi = median_ci(values)
        ci = f"{fmt_us(lo)}-{fmt_us(hi)}"
        out.append(
            f"{name:72}{fmt_us(med):>9}{ci:>16}{fmt_rate(1e6 / med):>11}{med / base:>10.2f}x"
            f"{med / raw_us:>7.2f}x"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.audit_indexes",
        description="The PostgreSQL batch statement against other audit indexes and layouts.",
    )
    p.add_argument("--rounds", type=int, default=300, help="rounds of every variant (300)")
    args = p.parse_args(argv)
    print(asyncio.run(measure(args.rounds)))


if __name__ == "__main__":
    main()
