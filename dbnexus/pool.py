"""``DbPool``: the engines and the services every session of an application shares."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from .audit import AuditRecord, audit_query, audit_table, to_record
from .cache import ResultCache
from .config import PoolSettings
from .database import Database
from .entity import EntityInfo, entity_info, metadata
from .errors import ConfigError
from .metrics import Metrics
from .progress import Progress
from .query import shard_key_values
from .routing import PoolShards, open_shards
from .session import DbSession
from .sharding import ShardManager
from .signals import DatabaseEvent, SignalConfig, Signals

if TYPE_CHECKING:
    from .permissions import Permissions

__all__ = ["DbPool"]

log = logging.getLogger(__name__)

_NO_PERMISSIONS = (
    "this pool has no permissions configured, so every operation is denied; pass "
    "permissions=Permissions.from_files('model.conf', 'policy.csv') (or Permissions.from_text "
    "/ Permissions.allow_all()) to DbPool.connect"
)


class DbPool:
    """One per application: database engines plus permissions, cache, audit and metrics.

    Open it with :meth:`connect`; take a :class:`~dbnexus.DbSession` per request
    with :meth:`session`; close it with :meth:`close` (or ``async with``).
    """

    def __init__(
        self,
        databases: dict[str, Database],
        *,
        permissions: Permissions | None,
        cache: ResultCache,
        metrics: Metrics,
        audit_reads: bool,
        signals: SignalConfig | None = None,
        cursor_secret: bytes | None = None,
    ) -> None:
        self._dbs = databases
        self._default = next(iter(databases.values()))
        self.shards: PoolShards
        self._permissions = permissions
        self._check = permissions.check if permissions is not None else _deny
        self.cache = cache
        self.metrics = metrics
        self.audit_reads = audit_reads
        # Metrics.op caches the counters per (table, action)
        self._metrics_op = metrics.op
        self._dependents: dict[str, list[str]] = {}
        for db in databases.values():
            db.shard_ops = metrics.shard(db.name)
        self._set_merge_rules(databases)
        self._closed = False
        callbacks = metrics.signal_callbacks
        self.signals = Signals(signals, lambda outcome: callbacks.labels(outcome).inc())
        self.cursor_key = cursor_secret or os.urandom(32)
        metrics.add_gauge(
            "dbnexus_pool_connections_in_use",
            "Connections currently borrowed by operations.",
            lambda: [((name,), db.in_use) for name, db in self._dbs.items()],
            ("database",),
        )
        metrics.add_gauge(
            "dbnexus_pool_connections_open",
            "Connections currently open.",
            lambda: [((name,), db.pool_size) for name, db in self._dbs.items()],
            ("database",),
        )
        metrics.add_gauge(
            "dbnexus_cache_entries", "Entries in the result cache.", lambda: [((), len(self.cache))]
        )

    @classmethod
    async def connect(
        cls,
        url: str | sa.URL | None = None,
        *,
        shards: ShardManager | None = None,
        permissions: Permissions | None = None,
        cache_ttl: float = 60,
        cache_maxsize: int = 10_000,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        acquire_timeout: float = 30.0,
        idle_timeout: float | None = 300.0,
        max_lifetime: float | None = 3600.0,
        audit_reads: bool = False,
        registry: CollectorRegistry | None = None,
        signals: SignalConfig | None = None,
        cursor_secret: bytes | str | None = None,
        echo: bool = False,
    ) -> DbPool:
        """Open a pool on ``url`` (``sqlite+aiosqlite:///app.db``, ``postgresql+asyncpg://...``,
        ``mysql+aiomysql://...``), or on the databases of a :class:`~dbnexus.ShardManager`.

        Args:
            shards: route rows over several databases instead of one ``url``.
            permissions: the policy; without one every operation is denied.
            cache_ttl, cache_maxsize: the result cache (``cache_ttl=0`` turns it off).
            min_connections ... max_lifetime: see :class:`~dbnexus.config.PoolSettings`.
            audit_reads: also write an audit row for every read.
            registry: a Prometheus registry to use instead of a fresh one.
            signals: limits of the signal system (``pool.signals``).
            cursor_secret: key that signs pagination cursors; give the same one to every
                process that must accept the others' cursors (default: random per pool).
            echo: log the SQL SQLAlchemy runs (DDL, audit queries).

        Raises:
            ConfigError: a bad setting, a malformed or unknown URL, a missing driver.
            DatabaseError: the database cannot be reached.
        """
        if (url is None) == (shards is None):
            raise ConfigError("DbPool.connect needs a database URL or shards=, and not both")
        settings = PoolSettings(
            min_connections=min_connections,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            acquire_timeout=acquire_timeout,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
        )
        cache = _make_cache(cache_ttl, cache_maxsize)
        if permissions is not None and not hasattr(permissions, "check"):
            raise ConfigError(
                f"permissions must be a dbnexus.Permissions, got {type(permissions).__name__}"
            )
        try:
            metrics = Metrics(registry)
        except ValueError as exc:
            raise ConfigError(
                f"the Prometheus registry already holds dbnexus metrics ({exc}); give each "
                "pool its own registry (the default)"
            ) from exc
        if shards is None:
            manager = ShardManager.hash({"default": url})  # type: ignore[dict-item]
            dbs = {"default": await Database.open("default", url, settings, echo=echo)}
        else:
            if not isinstance(shards, ShardManager):
                raise ConfigError(f"shards must be a ShardManager, got {type(shards).__name__}")
            manager = shards
            dbs = await open_shards(manager, settings, echo=echo)
        pool = cls(
            dbs,
            permissions=permissions,
            cache=cache,
            metrics=metrics,
            audit_reads=audit_reads,
            signals=signals,
            cursor_secret=_secret(cursor_secret),
        )
        pool.shards = PoolShards(pool, manager, settings, echo=echo)
        pool._default = dbs[manager.default_shard]
        return pool

    # --------------------------------------------------------------- services

    @property
    def permissions(self) -> Permissions:
        """The permission policy (``grant``/``revoke``/``add_role``/``remove_role`` at runtime)."""
        if self._permissions is None:
            raise ConfigError(_NO_PERMISSIONS)
        return self._permissions

    @property
    def dialect_name(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql`` (of the default database)."""
        return self._default.dialect.name

    @property
    def databases(self) -> dict[str, Database]:
        return dict(self._dbs)

    def session(
        self, user_id: str, *, domain: str | None = None, tags: Sequence[str] | None = None
    ) -> DbSession:
        """A session for ``user_id`` (and ``domain`` for domain-aware policies)."""
        if self._closed:
            raise ConfigError("this pool is closed")
        return DbSession(self, user_id, domain=domain, tags=tags)

    def _denial_reason(self) -> str | None:
        return _NO_PERMISSIONS if self._permissions is None else None

    def _set_merge_rules(self, dbs: dict[str, Database]) -> None:
        """How scatter-gather merges sort, so the result is what one database returns.

        Shards of one kind sort NULLs their way (last ascending on PostgreSQL,
        first on SQLite and MySQL) and the merge follows; shards of mixed kinds
        are told to sort NULLs first. MySQL's default collations compare text
        case-insensitively, so the merge compares casefolded text there.
        """
        dialects = {db.dialect.name for db in dbs.values()}
        self._nulls_first = dialects != {"postgresql"}
        self._scatter_nulls: bool | None = None if len(dialects) == 1 else True
        self._text_key: Callable[[str], str] | None = (
            str.casefold if dialects == {"mysql"} else None
        )

    def _cascade(self, info: EntityInfo) -> None:
        """Forget cached rows of tables whose foreign keys cascade from ``info``'s table.

        ``ON DELETE CASCADE`` / ``SET NULL`` change those rows inside the
        database, where no write through the pool sees them.
        """
        deps = self._dependents.get(info.table_name)
        if deps is None:
            deps = self._dependents[info.table_name] = [
                t.name
                for t in info.table.metadata.sorted_tables
                for fk in t.foreign_keys
                if fk.column.table is info.table and fk.ondelete
            ]
        for name in deps:
            for db in self._dbs.values():
                self.cache.invalidate((db.name, name))

    # ---------------------------------------------------------------- routing

    def _set_shards(self, manager: ShardManager, dbs: dict[str, Database]) -> None:
        """Switch to a new shard layout (after a completed rebalance)."""
        for db in dbs.values():
            if db.shard_ops is None:
                db.shard_ops = self.metrics.shard(db.name)
        self._dbs = dbs
        self._default = dbs[manager.default_shard]
        self._set_merge_rules(dbs)
        self.shards.manager = manager

    def _default_db(self) -> Database:
        return self._default

    def _db(self, name: str) -> Database:
        return self._dbs[name]

    def _route_key(self, info: EntityInfo, key: Any) -> Database:
        """The database of the row whose shard-key value is ``key``."""
        if info.shard_key is None:
            return self._default
        return self._dbs[self.shards.manager.shard_for(info.cls, key)]

    def _route_values(self, info: EntityInfo, values: Sequence[Any]) -> Database:
        """The database of a row given all its column values."""
        if info.shard_key is None:
            return self._default
        return self._route_key(info, values[info.names.index(info.shard_key)])

    def _dbs_for_pk(self, info: EntityInfo, pk: Any, hint: Any) -> list[Database]:
        """Where a row addressed by primary key may be: one database or all of them."""
        if info.shard_key is None:
            return [self._default]
        if hint is not None:
            return [self._route_key(info, hint)]
        if info.shard_key == info.pk.name:
            return [self._route_key(info, pk)]
        return list(self._dbs.values())

    def _dbs_for_where(self, info: EntityInfo, where: Any, values: Sequence[Any]) -> list[Database]:
        """The databases a query must ask: those its shard-key condition names, else all."""
        if info.shard_key is None:
            return [self._default]
        keys = shard_key_values(where, values, info.shard_key)
        if keys is None:
            return list(self._dbs.values())
        if not keys:
            return []
        names = self.shards.manager.shards_for_keys(keys)
        return [db for name, db in self._dbs.items() if name in names]

    # ----------------------------------------------------------------- events

    @property
    def _has_listeners(self) -> bool:
        return self.signals.active

    def _emit(self, events: list[DatabaseEvent]) -> None:
        self.signals.emit(events)

    # ------------------------------------------------------------------ admin

    async def migrate(
        self, entities: Iterable[type] | None = None, *, progress: bool | None = False
    ) -> None:
        """Create the tables of every declared entity and the audit table (idempotent).

        ``entities`` limits it to those classes (and the audit table). With
        ``progress=True`` (or None: when stderr is a terminal) a progress bar
        counts databases and tables.
        """
        if entities is None:
            tables = list(metadata.sorted_tables)
        else:
            chosen = {entity_info(e).table for e in entities} | {audit_table}
            # keep dependency order so foreign keys find their tables
            tables = [t for t in metadata.sorted_tables if t in chosen]
            tables += [t for t in chosen if t not in tables]
        bar = Progress("migrate", len(tables) * len(self._dbs), enabled=progress)
        try:
            for name, db in self._dbs.items():

                def create(conn: sa.Connection, name: str = name) -> None:
                    for t in tables:
                        t.create(conn, checkfirst=True)
                        bar.advance(1, f"{name}: {t.name}")

                await db.run_sync(create)
        finally:
            bar.close()

    async def audit_log(
        self,
        *,
        user_id: str | None = None,
        table: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        record_id: Any = None,
        since: dt.datetime | None = None,
        limit: int | None = 100,
    ) -> list[AuditRecord]:
        """Audit records matching the filters, newest first."""
        stmt = audit_query(
            user_id=user_id,
            table=table,
            action=action,
            outcome=outcome,
            record_id=record_id,
            since=since,
            limit=limit,
        )
        records: list[AuditRecord] = []
        for name, db in self._dbs.items():
            rows = await db.run_sync(lambda conn: conn.execute(stmt).fetchall())
            shard = name if len(self._dbs) > 1 else None
            records += [to_record(r, shard) for r in rows]
        if len(self._dbs) > 1:
            records.sort(key=lambda r: (r.ts, r.id), reverse=True)
            if limit is not None:
                records = records[:limit]
        return records

    async def serve_metrics(self, port: int = 9464, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP for Prometheus; returns the bound port."""
        return await self.metrics.serve(port, addr)

    async def close(self) -> None:
        """Close every connection and stop serving metrics."""
        if self._closed:
            return
        self._closed = True
        await self.signals.close()
        await self.metrics.close()
        for db in self._dbs.values():
            await db.close()

    async def __aenter__(self) -> DbPool:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _deny(user_id: str, domain: str | None, table: str, action: str) -> bool:
    return False


def _secret(value: bytes | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or len(value) < 16:
        raise ConfigError("cursor_secret must be at least 16 bytes")
    return value


def _make_cache(ttl: float, maxsize: int) -> ResultCache:
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl < 0:
        raise ConfigError(f"cache_ttl must be a non-negative number of seconds, got {ttl!r}")
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
        raise ConfigError(f"cache_maxsize must be a non-negative int, got {maxsize!r}")
    return ResultCache(ttl, maxsize)
