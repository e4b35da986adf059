"""Entities and direct-read helpers shared by the sharding suites (no tests here).

Entities are built by factories taking the table name, so every test declares
its own tables (``unique("orders")``) and ``make_sharded`` can drop them.
The read helpers go around sessions (no permission check, no cache): they
show what each shard's database really holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from dbnexus import DbPool, crud, entity, entity_info, field
from dbnexus.audit import audit_table
from dbnexus.permissions import RBAC_MODEL  # noqa: F401 (re-exported to the tests)


def make_order(table: str, *, soft_delete: bool = False) -> type:
    """Sharded by ``tenant_id``; the primary key is a UUID (unique across shards)."""

    @crud
    @entity(table=table, shard_key="tenant_id", soft_delete=soft_delete)
    class Order:
        id: uuid.UUID = field(primary_key=True, default_factory=uuid.uuid4)
        tenant_id: str = field(max_length=40)
        item: str = field(max_length=60)
        qty: int = 1
        note: str | None = None

    return Order


def make_tenant(table: str) -> type:
    """Sharded by its primary key ``code``."""

    @crud
    @entity(table=table, shard_key="code")
    class Tenant:
        code: str = field(primary_key=True, max_length=40)
        name: str = field(max_length=60)

    return Tenant


def make_account(table: str) -> type:
    """Sharded by an int ``number`` (for range sharding); explicit int primary keys.

    ``number`` is nullable so that a missing shard-key value reaches routing.
    """

    @crud
    @entity(table=table, shard_key="number")
    class Account:
        id: int | None = field(primary_key=True, default=None)
        number: int | None
        owner: str = field(max_length=60)

    return Account


def make_setting(table: str) -> type:
    """Not sharded: lives on the default shard."""

    @crud
    @entity(table=table)
    class Setting:
        id: int | None = field(primary_key=True, default=None)
        key: str = field(max_length=60)
        value: str = field(max_length=200)

    return Setting


def make_event(table: str) -> type:
    """Sharded by ``tenant``; columns of several types, some nullable, for ordering tests."""

    @crud
    @entity(table=table, shard_key="tenant")
    class Event:
        id: int = field(primary_key=True, autoincrement=False)
        tenant: str = field(max_length=20)
        grp: int
        name: str = field(max_length=20)
        score: float | None = None
        at: dt.datetime | None = None

    return Event


# ------------------------------------------------------------------ direct reads


def _select_all(table: sa.Table) -> Any:
    pk = next(iter(table.primary_key.columns))
    return sa.select(*table.c).order_by(pk)


async def shard_rows(
    pool: DbPool, cls: type, names: Iterable[str] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``cls``'s table on each shard of the pool (or of ``names``), read directly."""
    stmt = _select_all(entity_info(cls).table)
    out = {}
    for name in pool.databases if names is None else names:
        db = pool.databases[name]
        out[name] = await db.run_sync(lambda c: [tuple(r) for r in c.execute(stmt)])
    return out


async def url_rows(url: str, cls: type) -> list[tuple[Any, ...]]:
    """Every row of ``cls``'s table in the database at ``url`` (empty if no table)."""
    table = entity_info(cls).table
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:

            def read(c: sa.Connection) -> list[tuple[Any, ...]]:
                if not sa.inspect(c).has_table(table.name):
                    return []
                return [tuple(r) for r in c.execute(_select_all(table))]

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def shard_audit(pool: DbPool, *classes: type) -> dict[str, list[tuple[Any, ...]]]:
    """(id, action, table, record_id, outcome) of the audit rows of ``classes``, per shard."""
    names = [entity_info(c).table_name for c in classes]
    t = audit_table
    stmt = (
        sa.select(t.c.id, t.c.action, t.c.table_name, t.c.record_id, t.c.outcome)
        .where(t.c.table_name.in_(names))
        .order_by(t.c.id)
    )
    out = {}
    for name, db in pool.databases.items():
        out[name] = await db.run_sync(lambda c: [tuple(r) for r in c.execute(stmt)])
    return out


async def url_audit_count(url: str, *classes: type) -> int:
    """How many audit rows of ``classes`` the database at ``url`` holds."""
    names = [entity_info(c).table_name for c in classes]
    stmt = (
        sa.select(sa.func.count())
        .select_from(audit_table)
        .where(audit_table.c.table_name.in_(names))
    )
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(stmt)).scalar_one()
    finally:
        await engine.dispose()


def shard_ops(pool: DbPool) -> dict[str, float]:
    """``dbnexus_shard_operations_total`` per shard label."""
    out = {}
    for metric in pool.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "dbnexus_shard_operations_total":
                out[s.labels["shard"]] = s.value
    return out


def ops_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Shards whose operation count changed, and by how much."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def keys_for_each_shard(pool: DbPool, prefix: str = "t") -> dict[str, str]:
    """One shard-key value (``{prefix}-<n>``) routing to each shard of the pool."""
    found: dict[str, str] = {}
    n = 0
    while len(found) < len(pool.shards.names):
        key = f"{prefix}-{n}"
        found.setdefault(pool.shards.shard_for_key(key), key)
        n += 1
    return found
