"""Moving rows between shards when the shard layout changes.

``await pool.shards.rebalance(new_manager)`` walks every sharded entity on
every current shard in primary-key order, in batches. For each row whose shard
changes under ``new_manager`` it:

1. copies the row to its new shard (rows already there with the same values
   are left alone; the same primary key with other values is a ShardError),
2. verifies that every row of the batch is on the new shard, value for value,
3. deletes the batch from the old shard.

Each step commits on its own, so the walk can be stopped at any point (an
exception, a cancelled task, ``max_batches``) and run again: a rerun finds the
rows copied before, skips copying them, verifies and deletes. No row is lost
or duplicated. The pool switches to ``new_manager`` when a walk completes.

Audit rows stay where they were written; moving rows writes no audit rows.
Sharded entities need primary keys that are unique across shards (UUIDs, or
keys from one generator); on PostgreSQL, sequences of the new shards are moved
past the copied keys.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .audit import audit_table
from .database import Database
from .entity import EntityInfo, declared_entities, entity_info
from .errors import ShardError, ValidationError
from .progress import Progress
from .sharding import ShardManager

if TYPE_CHECKING:
    from .pool import DbPool
    from .routing import PoolShards

__all__ = ["RebalanceReport", "rebalance"]

log = logging.getLogger(__name__)


class RebalanceReport(dict[str, int]):
    """Rows moved per table; ``complete`` is False when ``max_batches`` stopped the walk."""

    complete: bool = True
    batches: int = 0

    def __repr__(self) -> str:
        return f"RebalanceReport({dict(self)!r}, complete={self.complete}, batches={self.batches})"


class _Stop(Exception):
    pass


async def rebalance(
    pool: DbPool,
    shards: PoolShards,
    new: ShardManager,
    *,
    entities: Sequence[type] | None,
    batch_size: int,
    max_batches: int | None,
    progress: bool | None,
) -> RebalanceReport:
    """Move rows to their shards under ``new``; see the module docstring."""
    if not isinstance(new, ShardManager):
        raise ValidationError(f"rebalance needs a ShardManager, got {type(new).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be a positive int, got {batch_size!r}")
    infos = [entity_info(e) for e in (entities if entities is not None else declared_entities())]
    infos = [i for i in infos if i.shard_key is not None]
    added = await shards._open_missing(new)
    dbs: dict[str, Database] = {**pool._dbs, **added}
    report = RebalanceReport()
    try:
        tables = [i.table for i in infos] + [audit_table]
        for db in added.values():
            await db.run_sync(functools.partial(_create, tables))
        total = 0
        for info in infos:
            for name in pool._dbs:
                total += await dbs[name].run_sync(functools.partial(_count, info.table))
        bar = Progress("rebalance", total, enabled=progress)
        try:
            for info in infos:
                report[info.table_name] = 0
                for name in list(pool._dbs):
                    await _walk(info, name, dbs, new, batch_size, max_batches, report, bar)
        finally:
            bar.close()
    except _Stop:
        report.complete = False
    except BaseException:
        for db in added.values():
            await db.close()
        raise
    finally:
        # rows moved: what the cache holds for their old shards is stale
        pool.cache.clear()
    if not report.complete:
        for db in added.values():
            await db.close()
        return report
    removed = [n for n in pool._dbs if n not in new.names]
    for n in removed:
        await dbs.pop(n).close()
    pool._set_shards(new, {n: dbs[n] for n in new.names})
    log.info("rebalance complete: %s", dict(report))
    return report


async def _walk(
    info: EntityInfo,
    name: str,
    dbs: dict[str, Database],
    new: ShardManager,
    batch_size: int,
    max_batches: int | None,
    report: RebalanceReport,
    bar: Progress,
) -> None:
    t = info.table
    pk = t.c[info.pk.name]
    key_i = info.names.index(info.shard_key)
    src = dbs[name]
    last = None
    while True:
        if max_batches is not None and report.batches >= max_batches:
            raise _Stop
        stmt = sa.select(*t.c).order_by(pk).limit(batch_size)
        if last is not None:
            stmt = stmt.where(pk > last)
        rows = await src.run_sync(functools.partial(_fetch, stmt))
        if not rows:
            return
        last = rows[-1][0 if info.names[0] == info.pk.name else info.names.index(info.pk.name)]
        moves: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            target = new.shard_for_key(row[key_i])
            if target != name:
                moves.setdefault(target, []).append(row)
        for target, group in moves.items():
            await _move(info, src, dbs[target], group)
            report[info.table_name] += len(group)
        report.batches += 1
        bar.advance(len(rows), f"{info.table_name} on {name}")


async def _move(
    info: EntityInfo, src: Database, dst: Database, rows: list[tuple[Any, ...]]
) -> None:
    t = info.table
    pk_name = info.pk.name
    pk_i = info.names.index(pk_name)
    pk = t.c[pk_name]
    keys = [r[pk_i] for r in rows]
    wanted = {r[pk_i]: r for r in rows}

    def present(conn: sa.Connection) -> dict[Any, tuple[Any, ...]]:
        return {r[pk_i]: tuple(r) for r in conn.execute(sa.select(*t.c).where(pk.in_(keys)))}

    def copy(conn: sa.Connection) -> None:
        there = present(conn)
        for k, row in there.items():
            if row != wanted[k]:
                raise ShardError(
                    f"cannot move {info.table_name} row {k!r} to shard {dst.name!r}: a different "
                    "row with that primary key is there; sharded primary keys must be unique "
                    "across shards",
                    shard=dst.name,
                )
        missing = [dict(zip(info.names, wanted[k], strict=True)) for k in keys if k not in there]
        if missing:
            conn.execute(sa.insert(t), missing)
            if conn.dialect.name == "postgresql" and info.pk.autoincrement:
                _advance_sequence(conn, info)

    await dst.run_sync(copy)
    # verify before deleting anything from the source
    there = await dst.run_sync(present)
    lost = [k for k in keys if there.get(k) != wanted[k]]
    if lost:
        raise ShardError(
            f"verification failed moving {info.table_name} rows {lost[:5]!r} to {dst.name!r}",
            shard=dst.name,
        )
    await src.run_sync(lambda c: c.execute(sa.delete(t).where(pk.in_(keys))))


def _create(tables: list[sa.Table], conn: sa.Connection) -> None:
    for t in tables:
        t.create(conn, checkfirst=True)


def _count(table: sa.Table, conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _fetch(stmt: sa.Select[Any], conn: sa.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(stmt)]


def _advance_sequence(conn: sa.Connection, info: EntityInfo) -> None:
    """Move a PostgreSQL serial sequence past the largest copied key (never backwards)."""
    from sqlalchemy.dialects.postgresql import REGCLASS

    col = info.table.c[info.pk.name]
    seq = conn.execute(
        sa.select(sa.func.pg_get_serial_sequence(info.table_name, info.pk.name))
    ).scalar_one()
    if seq is None:
        return
    regclass = sa.cast(sa.literal(seq), REGCLASS)
    top = sa.select(sa.func.max(col)).scalar_subquery()
    last = sa.func.coalesce(sa.func.pg_sequence_last_value(regclass), 1)
    conn.execute(sa.select(sa.func.setval(regclass, sa.func.greatest(last, top))))
