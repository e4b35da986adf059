"""Run the benchmark suite: ``python -m benchmarks`` or ``python benchmarks/run.py``.

For each backend: set up every implementation (each creates its own ``bench_`` table),
seed the tables, run the cases, tear down and drop the tables. Then the permission
case, which needs no database. Tables print as each backend finishes; the JSON file is
written at the end. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import json
import platform
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.backends import BACKENDS, Admin, Backend, ShardSet, backend_for
from benchmarks.cases import CASES, COLUMNS, PERMISSIONS_CASE, Case, Column
from benchmarks.common import (
    FIND_ALL_AGE,
    FIND_ALL_LIMIT,
    SHARDED_TABLE,
    Dataset,
    Implementation,
    NotApplicable,
    seed_rows,
)
from benchmarks.harness import Settings, Timer
from benchmarks.report import Cell, Table, ratios, render

__all__ = ["main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
AUDIT_TABLE = "dbnexus_audit"
UPDATED_AGE = 1000  # RowMaker.next_age() starts here; seeded ages are far below
MIN_SEED_ROWS = 2000  # Dataset splits the ids into disjoint sets per case


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


# ---------------------------------------------------------------- implementations


def load_implementations(
    columns: Sequence[Column], backend: Backend
) -> tuple[list[Implementation], dict[str, str]]:
    """Instantiate the selected columns; a module that fails to import gives n/a reasons."""
    impls: list[Implementation] = []
    failed: dict[str, str] = {}
    wanted = {c.key for c in columns}
    for module in dict.fromkeys(c.module for c in columns):
        try:
            made = importlib.import_module(module).implementations(backend)
        except Exception as exc:
            for c in columns:
                if c.module == module:
                    failed[c.key] = f"import failed: {describe(exc)}"
            continue
        impls += [impl for impl in made if impl.key in wanted]
    return impls, failed


# ------------------------------------------------------------------------- cases


async def run_case(
    case: Case,
    impls: Sequence[Implementation],
    datasets: dict[str, Dataset],
    admin: Admin,
    settings: Settings,
) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    timers: list[tuple[Implementation, Timer]] = []
    for impl in impls:
        try:
            op = await getattr(impl, case.key)(datasets[impl.table])
            timer = Timer(op, settings)
            await timer.warm_up()
        except NotApplicable as exc:
            cells[impl.key] = Cell(na=str(exc))
            continue
        except Exception as exc:
            log(f"    {impl.key}: {case.key} failed:\n{traceback.format_exc()}")
            cells[impl.key] = Cell(na=f"failed: {describe(exc)}", failed=True)
            continue
        timers.append((impl, timer))
    # Interleave the repetitions (A B C A B C ...) so drift touches every column alike.
    for _ in range(settings.repeat):
        for impl, timer in list(timers):
            try:
                await timer.repetition()
            except Exception as exc:
                log(f"    {impl.key}: {case.key} failed:\n{traceback.format_exc()}")
                cells[impl.key] = Cell(na=f"failed: {describe(exc)}", failed=True)
                timers.remove((impl, timer))
    for impl, timer in timers:
        cells[impl.key] = Cell(stats=timer.stats(), note=timer.op.note)
    if case.writes:
        await check_writes(timers, cells, datasets, admin)
    ratios(cells)
    return cells


async def check_writes(
    timers: list[tuple[Implementation, Timer]],
    cells: dict[str, Cell],
    datasets: dict[str, Dataset],
    admin: Admin,
) -> None:
    """From the admin connection, count what each table received, then reset the table.

    This proves the writes were committed (a write that did not commit is invisible
    here) and that every call did the work it claims.
    """
    by_table: dict[str, list[tuple[Implementation, Timer]]] = defaultdict(list)
    for impl, timer in timers:
        by_table[impl.table].append((impl, timer))
    for table, group in by_table.items():
        data = datasets[table]
        expected = sum(t.calls_done * t.op.rows_written for _, t in group)
        found = await admin.count_above(table, data.last_id)
        if expected:
            verdict = f"{found} of {expected} inserted rows found committed"
            ok = found == expected
        else:
            touched = max((t.calls_done for _, t in group if t.op.updated_ids), default=0)
            ages = await admin.ages(table, data.update_ids)
            updated = sum(1 for a in ages.values() if a is not None and a >= UPDATED_AGE)
            want = min(touched, len(data.update_ids))
            verdict = f"{updated} of {want} updated rows found committed"
            ok = updated >= want
        for impl, _ in group:
            cells[impl.key].checks.append(verdict if ok else f"FAILED commit check: {verdict}")
        if not ok:
            log(f"    commit check FAILED on {table}: {verdict}")
        if found:
            await admin.delete_above(table, data.last_id)


# ---------------------------------------------------------------------- backends


async def run_backend(
    name: str,
    cases: Sequence[Case],
    columns: Sequence[Column],
    settings: Settings,
    seed_count: int,
    workdir: Path,
) -> dict[str, Any]:
    started = time.perf_counter()
    backend = backend_for(name, workdir)
    admin = await locked_admin(backend)
    server = await admin.server_version()
    log(f"{name}: {server}")
    tables_before = await admin.table_names()
    impls, failed = load_implementations(columns, backend)
    live: list[Implementation] = []
    rows: dict[str, dict[str, Cell]] = {}
    shardset: ShardSet | None = None
    try:
        for table in dict.fromkeys(i.table for i in impls):
            if table.startswith("bench_"):
                await admin.drop_table(table)  # left over from an interrupted run
        if AUDIT_TABLE in tables_before:
            # dead rows left by earlier runs or tests would slow every audited write
            await admin.analyze(AUDIT_TABLE)
        for impl in impls:
            try:
                await impl.setup(backend)
            except Exception as exc:
                log(f"  {impl.key}: setup failed:\n{traceback.format_exc()}")
                failed[impl.key] = f"setup failed: {describe(exc)}"
                with contextlib.suppress(Exception):
                    await impl.teardown()
                continue
            live.append(impl)
        datasets: dict[str, Dataset] = {}
        for table in dict.fromkeys(i.table for i in live):
            datasets[table] = Dataset(await admin.seed(table, seed_rows(seed_count)))
        log(f"  set up {len(live)} implementations, seeded {len(datasets)} tables")
        for case in cases:
            t0 = time.perf_counter()
            if case.key == "sharded_find_all":
                shardset = await make_shards(backend, workdir, live, admin, seed_count)
                for data in datasets.values():
                    data.shards = shardset
            cells = await run_case(case, live, datasets, admin, settings)
            for key, reason in failed.items():
                cells[key] = Cell(na=reason, failed=True)
            rows[case.key] = cells
            log(f"  {case.key}: {time.perf_counter() - t0:.1f} s")
    finally:
        for impl in live:
            try:
                await impl.teardown()
            except Exception:
                log(f"  {impl.key}: teardown failed:\n{traceback.format_exc()}")
        await clean_up(admin, tables_before, [i.table for i in impls])
        if shardset is not None:
            await shardset.drop(admin)
        await admin.close()
    return {
        "server": server,
        "url": backend.url,
        "seed_rows": seed_count,
        "seconds": round(time.perf_counter() - started, 2),
        "cases": rows,
    }


async def locked_admin(backend: Backend) -> Admin:
    """An open :class:`Admin` holding the run lock; RuntimeError if another run has it."""
    admin = Admin(backend)
    await admin.open()
    if not await admin.try_lock():
        await admin.close()
        raise RuntimeError("another benchmark run is using this database; run one at a time")
    return admin


async def clean_up(admin: Admin, tables_before: set[str], tables: Sequence[str]) -> None:
    """Drop the ``bench_`` tables (and the audit table) a run created and ``tables``;
    from an audit table that was there before, delete only the rows about ``tables``."""
    created = (await admin.table_names()) - tables_before
    for table in sorted(created):
        if table.startswith("bench_") or table == AUDIT_TABLE:
            await admin.drop_table(table)
    ours = ", ".join(f"'{t}'" for t in dict.fromkeys(tables))
    if AUDIT_TABLE in tables_before and ours:  # not ours to drop: remove only our rows
        await admin.execute(f"DELETE FROM {AUDIT_TABLE} WHERE table_name IN ({ours})")
        await admin.analyze(AUDIT_TABLE)
    for table in dict.fromkeys(tables):
        await admin.drop_table(table)


async def make_shards(
    backend: Backend,
    workdir: Path,
    live: Sequence[Implementation],
    admin: Admin,
    seed_count: int,
) -> ShardSet | None:
    """Four seeded shard databases, routed as dbnexus routes; None if nothing shards."""
    shardset = ShardSet.plan(backend, workdir, SHARDED_TABLE)
    route = next((r for i in live if (r := i.shard_router(shardset.urls)) is not None), None)
    if route is None:
        return None
    rows = [(i + 1, *row) for i, row in enumerate(seed_rows(seed_count))]
    expected = sorted((r[0] for r in rows if r[3] == FIND_ALL_AGE), reverse=True)
    await shardset.create(admin, rows, route, expected[:FIND_ALL_LIMIT])
    return shardset


def backend_table(
    name: str, result: dict[str, Any], cases: Sequence[Case], columns: Sequence[Column]
) -> Table:
    title = (
        f"== {name}: {result['server']}, {result['seed_rows']:,} seeded rows per table, "
        f"{result['seconds']:.1f} s =="
    )
    table = Table(title, [(c.key, c.label) for c in columns])
    for case in cases:
        if case.key in result["cases"]:
            table.rows.append((f"{case.number}. {case.title}", result["cases"][case.key]))
    table.extra_notes.append(
        "each cell: median µs per operation, ops/s; min-max over the repetitions;"
        " dbnexus cells also: median as a multiple of raw's and of Core's"
    )
    return table


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="dbnexus against the raw drivers, SQLAlchemy Core/ORM and Tortoise ORM.",
    )
    p.add_argument("--quick", action="store_true", help="short run (well under 60 s)")
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, from {','.join(BACKENDS)} (default: all)",
    )
    p.add_argument(
        "--cases",
        default="all",
        help="comma-separated case names or numbers (1-10); 'all' (default)",
    )
    p.add_argument(
        "--columns",
        default="all",
        help=f"comma-separated, from {','.join(c.key for c in COLUMNS)} (default: all)",
    )
    p.add_argument("--repeat", type=int, help="repetitions per figure (default 15, quick 3)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    p.add_argument("--seed-rows", type=int, help="rows per table (default 20000, quick 4000)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if a backend or a column failed or a commit check did (n/a by design is fine)",
    )
    return p.parse_args(argv)


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def select_cases(spec: str) -> tuple[list[Case], bool]:
    """The database cases and whether the permission case runs."""
    if spec == "all":
        return list(CASES), True
    wanted = split(spec)
    known = {c.key for c in CASES} | {str(c.number) for c in CASES}
    known |= {PERMISSIONS_CASE.key, str(PERMISSIONS_CASE.number)}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {sorted(known)}")
    chosen = [
        c
        for c in CASES
        if c.key in wanted
        or str(c.number) in wanted
        or (c.key == "insert_batch_copy" and "insert_batch" in wanted)
    ]
    perms = PERMISSIONS_CASE.key in wanted or str(PERMISSIONS_CASE.number) in wanted
    return chosen, perms


def select(spec: str, known: Sequence[str], what: str) -> list[str]:
    if spec == "all":
        return list(known)
    wanted = split(spec)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {list(known)}")
    return wanted


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("sqlalchemy", "asyncpg", "aiomysql", "aiosqlite", "tortoise-orm", "casbin"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    try:
        import dbnexus

        out["dbnexus"] = getattr(dbnexus, "__version__", "unknown")
    except Exception as exc:
        out["dbnexus"] = f"import failed: {describe(exc)}"
    return out


def to_json(doc: dict[str, Any]) -> Any:
    if isinstance(doc, Cell):
        return doc.as_dict()
    if isinstance(doc, dict):
        return {k: to_json(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [to_json(v) for v in doc]
    return doc


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dbnexus-bench-") as d:
        yield Path(d)


async def amain(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = Settings.quick() if args.quick else Settings()
    if args.repeat:
        settings = Settings(
            repeat=args.repeat,
            target_s=settings.target_s,
            warmup_s=settings.warmup_s,
            max_calls_per_rep=settings.max_calls_per_rep,
        )
    seed_count = args.seed_rows or (4000 if args.quick else 20_000)
    if seed_count < MIN_SEED_ROWS:
        raise SystemExit(f"--seed-rows must be at least {MIN_SEED_ROWS}")
    backends = select(args.backends, BACKENDS, "backend(s)")
    column_keys = select(args.columns, [c.key for c in COLUMNS], "column(s)")
    columns = [c for c in COLUMNS if c.key in column_keys]
    cases, with_permissions = select_cases(args.cases)

    doc: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": _cpus()},
        "versions": versions(),
        "settings": {
            "quick": args.quick,
            "repeat": settings.repeat,
            "target_s_per_repetition": settings.target_s,
            "warmup_s": settings.warmup_s,
            "seed_rows": seed_count,
        },
        "columns": {c.key: c.label for c in columns},
        "cases": {c.key: f"{c.number}. {c.title}" for c in (*cases, PERMISSIONS_CASE)},
        "backends": {},
    }
    with workdir() as tmp:
        for name in backends if cases else ():
            try:
                result = await run_backend(name, cases, columns, settings, seed_count, tmp)
            except Exception as exc:
                log(f"{name}: failed:\n{traceback.format_exc()}")
                doc["backends"][name] = {"error": describe(exc)}
                print(f"== {name}: n/a: {describe(exc)} ==\n", flush=True)
                continue
            doc["backends"][name] = result
            print(render(backend_table(name, result, cases, columns)) + "\n", flush=True)
    if with_permissions:
        from benchmarks.bench_permissions import permissions_table, run_permissions

        perms = await run_permissions(settings)
        doc["permissions"] = perms
        print(render(permissions_table(perms)) + "\n", flush=True)
    doc["seconds"] = round(time.perf_counter() - started, 2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(to_json(doc), indent=2, ensure_ascii=False) + "\n")
    print(f"runtime: {doc['seconds']:.1f} s; JSON written to {args.json}")
    problems = failures(doc)
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if args.strict and problems else 0


def failures(doc: dict[str, Any]) -> list[str]:
    """What broke in a run: a backend that did not run, a cell with no figure because
    something failed (not one that is n/a by design), a failed commit check."""
    out = []
    for name, result in doc["backends"].items():
        if "error" in result:
            out.append(f"{name}: {result['error']}")
            continue
        for case, cells in result["cases"].items():
            for key, cell in cells.items():
                if cell.failed:
                    out.append(f"{name}, {case}, {key}: {cell.na}")
                failed_checks = [c for c in cell.checks if c.startswith("FAILED")]
                out += [f"{name}, {case}, {key}: {c}" for c in failed_checks]
    return out


def _cpus() -> int | None:
    import os

    return os.cpu_count()


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
