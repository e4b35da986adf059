"""``DbSession``: one user's view of the pool.

This is the one place where permissions, cache, audit, metrics and routing
meet. Every operation runs in the same order:

1. permission check (before the cache and before any SQL; a denial is counted,
   audited and raised);
2. input validation (nothing is sent for bad input);
3. cache (reads outside a transaction);
4. SQL on the routed database, a write together with its audit row in one
   transaction;
5. cache invalidation for the written table, metrics, events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from .audit import (
    AUDIT_COLUMNS,
    audit_table,
    batch_values,
    insert_plan,
    json_rows,
    record_id_text,
)
from .entity import EntityInfo, entity_info
from .errors import (
    ConfigError,
    DbNexusError,
    NotFound,
    PermissionDenied,
    PoolTimeout,
    ShardError,
    TransactionError,
    ValidationError,
)
from .pagination import Page, decode_cursor, encode_cursor, page_order, seek_shape
from .query import Q, check_window, parse_order, parse_where, select_statement
from .routing import merge_rows
from .signals import DatabaseEvent
from .statements import PG_INSERT_AUDIT_PARAMS

if TYPE_CHECKING:
    from .database import Connection, Database
    from .metrics import OpMetrics
    from .pool import DbPool

__all__ = ["DbSession"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

READ, INSERT, UPDATE, DELETE = "read", "insert", "update", "delete"
_MAX_TAGS = 32
_MAX_TAG_LEN = 64


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_tags(tags: Sequence[str] | None) -> tuple[str, ...]:
    """Validate operation tags: short printable strings without spaces."""
    if not tags:
        return ()
    if isinstance(tags, str):
        raise ValidationError(f"tags must be a list of strings, got the string {tags!r}")
    out = tuple(tags)
    if len(out) > _MAX_TAGS:
        raise ValidationError(f"at most {_MAX_TAGS} tags, got {len(out)}")
    for tag in out:
        if (
            not isinstance(tag, str)
            or not tag
            or len(tag) > _MAX_TAG_LEN
            or not tag.isprintable()
            or any(c.isspace() for c in tag)
        ):
            raise ValidationError(
                f"bad tag {tag!r}: tags are 1-{_MAX_TAG_LEN} printable characters without spaces"
            )
    return out


class _Tx:
    """The state of a session's open transaction."""

    __slots__ = ("aborted", "conn", "db", "deferred", "events", "lock", "savepoints", "touched")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.db: Database | None = None
        self.lock = asyncio.Lock()
        # cache key -> written pks (None: any row); invalidated when the transaction ends
        self.touched: dict[Hashable, list[Any] | None] = {}
        self.savepoints = 0
        self.aborted: str | None = None
        self.events: list[Any] = []
        # audit rows of denied/failed attempts, written once the transaction ends
        self.deferred: list[tuple[Database, list[Any]]] = []


class DbSession:
    """Operations of one user (and domain) through a :class:`~dbnexus.DbPool`.

    Get one with ``pool.session(user_id)``; use it as ``async with``. Outside a
    transaction each operation borrows a connection for itself, so a session
    can be used from concurrent tasks; inside one, operations run one after
    another on the transaction's connection.
    """

    __slots__ = ("_check", "_closed", "_pool", "_tx", "domain", "tags", "user_id")

    def __init__(
        self,
        pool: DbPool,
        user_id: str,
        *,
        domain: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(user_id, str) or not user_id:
            raise ValidationError(f"user_id must be a non-empty string, got {user_id!r}")
        if domain is not None and (not isinstance(domain, str) or not domain):
            raise ValidationError(f"domain must be a non-empty string, got {domain!r}")
        self._pool = pool
        self._check = pool._check
        self.user_id = user_id
        self.domain = domain
        self.tags = check_tags(tags)
        self._tx: _Tx | None = None
        self._closed = False

    def __repr__(self) -> str:
        dom = f", domain={self.domain!r}" if self.domain else ""
        return f"<DbSession user={self.user_id!r}{dom}{' in transaction' if self._tx else ''}>"

    @property
    def pool(self) -> DbPool:
        return self._pool

    async def __aenter__(self) -> DbSession:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """End the session; an open transaction is rolled back."""
        if self._tx is not None:
            await self.rollback()
        self._closed = True

    # ------------------------------------------------------------ transactions

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    async def begin(self) -> None:
        """Open a transaction; every operation until commit/rollback joins it."""
        self._check_open()
        if self._tx is not None:
            raise TransactionError(
                "a transaction is already open on this session; commit or roll it back first "
                "(use 'async with session.transaction()' for a nested savepoint)"
            )
        self._tx = _Tx()

    async def commit(self) -> None:
        """Commit the open transaction."""
        await self._end(self._need_tx("commit"), commit=True)

    async def rollback(self) -> None:
        """Roll back the open transaction."""
        await self._end(self._need_tx("rollback"), commit=False)

    async def _end(self, tx: _Tx, *, commit: bool) -> None:
        if commit and tx.aborted is not None:
            await self._end(tx, commit=False)
            raise TransactionError(f"nothing was committed: {tx.aborted}")
        try:
            async with tx.lock:
                self._tx = None
                try:
                    if tx.conn is not None:
                        await self._finish(tx, commit=commit)
                finally:
                    self._end_tx(tx)
            if commit and tx.events:
                self._pool._emit(tx.events)
        finally:
            if tx.deferred:
                await self._flush_deferred(tx)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DbSession]:
        """Commit on exit, roll back on an exception. Nested use makes a savepoint."""
        if self._tx is None:
            await self.begin()
            try:
                yield self
            except BaseException:
                if self._tx is not None:
                    await self.rollback()
                raise
            else:
                if self._tx is not None:
                    await self.commit()
            return
        tx = self._tx
        sp = await self._savepoint(tx)
        try:
            yield self
        except BaseException:
            await self._release_savepoint(tx, sp, rollback=True)
            raise
        else:
            await self._release_savepoint(tx, sp, rollback=False)

    async def _savepoint(self, tx: _Tx) -> tuple[str | None, int]:
        async with tx.lock:
            mark = len(tx.events)
            if tx.conn is None:
                # nothing has run yet: everything in the block is the block's own
                return None, mark
            tx.savepoints += 1
            name = f"dbnexus_sp{tx.savepoints}"
            await self._script(tx.conn, tx.conn.db.driver.savepoint_sql.format(name))
            return name, mark

    async def _release_savepoint(
        self, tx: _Tx, sp: tuple[str | None, int], *, rollback: bool
    ) -> None:
        if self._tx is not tx:
            return
        name, mark = sp
        async with tx.lock:
            if rollback:
                del tx.events[mark:]
            if tx.conn is None:
                return
            if name is None:
                if rollback:
                    await self._finish(tx, commit=False)
                return
            driver = tx.conn.db.driver
            sql = (driver.rollback_to_sql if rollback else driver.release_sql).format(name)
            await self._script(tx.conn, sql)

    async def _script(self, conn: Connection, sql: str) -> None:
        try:
            await conn.script(sql)
        except Exception as exc:
            raise conn.db.translate(exc) from exc

    def _need_tx(self, what: str) -> _Tx:
        if self._tx is None:
            raise TransactionError(f"{what}() without an open transaction; call begin() first")
        return self._tx

    def _check_open(self) -> None:
        if self._pool._closed:
            raise ConfigError("the pool of this session is closed")
        if self._closed:
            raise TransactionError("this session is closed; take a new one with pool.session()")

    async def _finish(self, tx: _Tx, *, commit: bool) -> None:
        conn = tx.conn
        assert conn is not None
        discard = False
        try:
            if commit:
                await conn.commit()
            else:
                await conn.rollback()
        except BaseException as exc:
            discard = True
            if commit and isinstance(exc, Exception):
                with contextlib.suppress(Exception):
                    await conn.rollback()
                tx.events.clear()
                raise conn.db.translate(exc) from exc
            raise
        finally:
            tx.conn = tx.db = None
            await conn.db.release(conn, discard=discard)

    def _end_tx(self, tx: _Tx) -> None:
        cache = self._pool.cache
        for key, pks in tx.touched.items():
            cache.end_write(key, pks)
        tx.touched.clear()

    async def _tx_conn(self, tx: _Tx, db: Database) -> Connection:
        if tx.aborted is not None:
            raise TransactionError(f"the transaction was rolled back: {tx.aborted}")
        if tx.conn is None:
            conn = await db.acquire()
            try:
                await conn.begin()
            except BaseException as exc:
                await db.release(conn, discard=True)
                if isinstance(exc, Exception):
                    raise db.translate(exc) from exc
                raise
            tx.conn, tx.db = conn, db
            return conn
        if tx.db is not db:
            err = ShardError(
                f"this transaction is bound to shard {tx.db.name!r} (its first operation) "  # type: ignore[union-attr]
                f"but the operation routes to shard {db.name!r}; a transaction cannot span "
                "shards, so it was rolled back",
                shard=db.name,
            )
            # nothing partial may be committed: end it now, and refuse what follows
            await self._finish(tx, commit=False)
            tx.aborted = str(err)
            tx.events.clear()
            raise err
        return tx.conn

    # ---------------------------------------------------------------- running

    async def _read(self, db: Database, fn: Callable[[Connection], Awaitable[R]]) -> R:
        db.shard_ops.inc()
        tx = self._tx
        if tx is not None:
            async with tx.lock:
                conn = await self._tx_conn(tx, db)
                try:
                    return await fn(conn)
                except DbNexusError:
                    raise
                except Exception as exc:
                    raise db.translate(exc) from exc
        conn = await db.acquire()
        discard = True
        try:
            result = await fn(conn)
            discard = False
            return result
        except DbNexusError:
            discard = False
            raise
        except Exception as exc:
            err = db.translate(exc)
            discard = type(err).__name__ == "DatabaseError"
            raise err from exc
        finally:
            await db.release(conn, discard=discard)

    async def _write(
        self,
        db: Database,
        ckey: Hashable,
        pks: list[Any] | None,
        fn: Callable[[Connection], Awaitable[R]],
        *,
        single: bool = False,
    ) -> R:
        """Run ``fn`` in the open transaction, or in one of its own that commits.

        ``single``: ``fn`` runs one statement, atomic by itself; outside a
        transaction it needs no BEGIN/COMMIT.
        """
        db.shard_ops.inc()
        tx = self._tx
        cache = self._pool.cache
        if tx is not None:
            async with tx.lock:
                conn = await self._tx_conn(tx, db)
                if ckey not in tx.touched:
                    cache.begin_write(ckey)
                    tx.touched[ckey] = []
                written = tx.touched[ckey]
                if pks is None:
                    tx.touched[ckey] = None
                elif written is not None:
                    written.extend(pks)
                try:
                    return await fn(conn)
                except DbNexusError:
                    raise
                except Exception as exc:
                    raise db.translate(exc) from exc
        cache.begin_write(ckey)
        try:
            conn = await db.acquire()
            discard = True
            try:
                if single:
                    result = await fn(conn)
                else:
                    await conn.begin(hold=True)
                    result = await fn(conn)
                    await conn.commit()
                discard = False
                return result
            except BaseException as exc:
                try:
                    if not single:
                        await conn.rollback()
                    discard = not isinstance(exc, Exception)
                except BaseException:
                    discard = True
                if isinstance(exc, DbNexusError) or not isinstance(exc, Exception):
                    raise
                raise db.translate(exc) from exc
            finally:
                await db.release(conn, discard=discard)
        finally:
            cache.end_write(ckey, pks)

    async def _write_shards(
        self,
        table: str,
        jobs: Sequence[tuple[Database, list[Any] | None, Callable[..., Awaitable[Any]]]],
        *,
        single: bool = False,
    ) -> None:
        """Writes on several shards that stand or fall together.

        Each shard's work runs in a transaction of its own, concurrently; they
        commit only after every one succeeded, and all roll back otherwise. (A
        commit that fails after others committed cannot be undone: that is the
        limit of doing this without two-phase commit; it is logged.)
        """
        if len(jobs) == 1 or self._tx is not None:
            for db, pks, fn in jobs:
                await self._write(db, (db.name, table), pks, fn, single=single)
            return
        cache = self._pool.cache
        for db, _, _ in jobs:
            db.shard_ops.inc()
            cache.begin_write((db.name, table))
        conns: list[Connection] = []
        discard = True
        try:
            for db, _, _ in jobs:
                conns.append(await db.acquire())
                await conns[-1].begin(hold=True)

            async def run(fn: Callable[..., Awaitable[Any]], conn: Connection) -> None:
                await fn(conn)
                # every statement has run before the first shard commits
                await conn.flush()

            results = await asyncio.gather(
                *[run(fn, conn) for (_, _, fn), conn in zip(jobs, conns, strict=True)],
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
            for i, conn in enumerate(conns):
                try:
                    await conn.commit()
                except BaseException:
                    if i:
                        log.error(
                            "shard %s failed to commit after %s committed; the write is partial",
                            conn.db.name,
                            ", ".join(c.db.name for c in conns[:i]),
                        )
                    raise
            discard = False
        except BaseException as exc:
            for conn in conns:
                with contextlib.suppress(BaseException):
                    await conn.rollback()
            discard = not isinstance(exc, Exception)
            if isinstance(exc, DbNexusError) or not isinstance(exc, Exception):
                raise
            db = conns[-1].db if conns else jobs[0][0]
            raise db.translate(exc) from exc
        finally:
            for conn in conns:
                await conn.db.release(conn, discard=discard)
            for db, pks, _ in jobs:
                cache.end_write((db.name, table), pks)

    # ------------------------------------------------------------- permissions

    async def _start(
        self,
        info: EntityInfo,
        action: str,
        record_id: Any,
        tags: Sequence[str] | None,
        *,
        perm: str | None = None,
    ) -> OpMetrics:
        """Every operation's first step: its counters, the permission check, tag checks."""
        if self._closed or self._pool._closed:
            self._check_open()
        table = info.table_name
        om = self._pool._metrics_op(table, action)
        if not self._check(self.user_id, self.domain, table, perm or action):
            await self._denied(info, perm or action, om, record_id, tags)
        if tags:
            check_tags(tags)
        return om

    async def _denied(
        self,
        info: EntityInfo,
        action: str,
        om: OpMetrics,
        record_id: Any,
        tags: Sequence[str] | None,
    ) -> None:
        om.denied.inc()
        om.outcome_denied.inc()
        await self._audit_alone(
            self._pool._default_db(),
            action,
            info.table_name,
            record_id,
            "denied",
            None,
            self._tags(tags),
        )
        raise PermissionDenied(
            self.user_id, info.table_name, action, self.domain, self._pool._denial_reason()
        )

    # ------------------------------------------------------------------ audit

    def _tags(self, tags: Sequence[str] | None) -> tuple[str, ...]:
        if not tags:
            return self.tags
        return self.tags + tuple(t for t in check_tags(tags) if t not in self.tags)

    def _audit_values(
        self,
        action: str,
        table: str,
        record_id: Any,
        outcome: str,
        changes: Any,
        tags: Sequence[str],
    ) -> list[Any]:
        return [
            utcnow(),
            self.user_id,
            self.domain,
            action,
            table,
            record_id_text(record_id),
            outcome,
            changes,
            list(tags),
        ]

    def _audit_params(
        self,
        db: Database,
        positions: Sequence[int],
        action: str,
        table: str,
        record_id: Any,
        changes: Any,
        tags: Sequence[str],
    ) -> list[Any]:
        """The processed audit-row values a PostgreSQL statement takes, at ``positions``."""
        audit = insert_plan(db.compiler).params(
            self._audit_values(action, table, record_id, "ok", changes, tags)
        )
        return [audit[i] for i in positions]

    async def _audit_in(
        self,
        conn: Connection,
        action: str,
        table: str,
        record_id: Any,
        changes: Any,
        tags: Sequence[str],
    ) -> None:
        await conn.execute(*self._audit_statement(conn.db, action, table, record_id, changes, tags))

    def _audit_statement(
        self,
        db: Database,
        action: str,
        table: str,
        record_id: Any,
        changes: Any,
        tags: Sequence[str],
    ) -> tuple[str, Sequence[Any]]:
        """The INSERT of one ``ok`` audit row on ``db``, and its parameters."""
        plan = insert_plan(db.compiler)
        return plan.sql, plan.params(
            self._audit_values(action, table, record_id, "ok", changes, tags)
        )

    async def _audit_many(
        self,
        conn: Connection,
        action: str,
        table: str,
        records: Sequence[tuple[Any, Any]],
        tags: Sequence[str],
    ) -> None:
        db = conn.db
        template = self._audit_values(action, table, None, "ok", None, tags)
        rows = json_rows(db.compiler)
        if rows is not None:
            for chunk in _chunks(records, rows.CHUNK):
                await conn.execute(rows.sql, rows.params(template, chunk))
            return
        for chunk in _chunks(records, db.max_rows(len(AUDIT_COLUMNS))):
            plan = db.compiler.insert_many(audit_table, AUDIT_COLUMNS, len(chunk), None)
            values = batch_values(db.compiler, template, chunk)
            await conn.execute(plan.sql, plan.ordered(values))

    async def _audit_alone(
        self,
        db: Database,
        action: str,
        table: str,
        record_id: Any,
        outcome: str,
        changes: Any,
        tags: Sequence[str],
    ) -> None:
        """Record a denied or failed attempt in a transaction of its own.

        Inside an open transaction the row waits until it ends: written through
        the transaction it would vanish on rollback, and a second connection
        could wait forever (one-connection pools, SQLite's file lock).
        """
        values = self._audit_values(action, table, record_id, outcome, changes, tags)
        tx = self._tx
        if tx is not None and tx.conn is not None:
            tx.deferred.append((db, values))
            return
        await self._write_audit_alone(db, values)

    async def _write_audit_alone(self, db: Database, values: list[Any]) -> None:
        plan = insert_plan(db.compiler)
        try:
            conn = await db.acquire()
            discard = True
            try:
                # its own transaction: SQLite's driver would otherwise leave one open
                await conn.begin(hold=True)
                await conn.execute(plan.sql, plan.params(values))
                await conn.commit()
                discard = False
            finally:
                await db.release(conn, discard=discard)
        except Exception:
            log.warning(
                "could not write the audit row of a %s %s on %s",
                values[6],
                values[3],
                values[4],
                exc_info=True,
            )

    async def _flush_deferred(self, tx: _Tx) -> None:
        rows, tx.deferred = tx.deferred, []
        for db, values in rows:
            await self._write_audit_alone(db, values)

    async def _failed(
        self,
        db: Database,
        om: OpMetrics,
        action: str,
        table: str,
        record_id: Any,
        tags: Sequence[str],
        exc: BaseException,
    ) -> None:
        om.error.inc()
        if isinstance(exc, ValidationError | PermissionDenied | PoolTimeout) or not isinstance(
            exc, Exception
        ):
            # bad input wrote nothing; without a free connection no audit row can be written
            return
        await self._audit_alone(
            db,
            action,
            table,
            record_id,
            "error",
            {"error": type(exc).__name__, "message": str(exc)[:500]},
            tags,
        )

    # ------------------------------------------------------------------ reads

    async def find_by_id(
        self,
        cls: type[T],
        id: Any,
        *,
        include_deleted: bool = False,
        include: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        shard_key: Any = None,
    ) -> T | None:
        """The row with primary key ``id``, or None.

        On a sharded entity whose primary key is not its shard key, pass
        ``shard_key=`` to ask one shard instead of all of them.
        """
        t0 = perf_counter()
        info = entity_info(cls)
        table = info.table_name
        pool = self._pool
        om = await self._start(info, READ, id, tags)
        info.pk.check(id)
        if id is None:
            raise ValidationError(f"find_by_id needs a primary key value for {table}")
        if include:
            await self._check_includes(info, include, om, tags)
        dbs = pool._dbs_for_pk(info, id, shard_key)
        try:
            if len(dbs) == 1:
                db = dbs[0]
                values = await self._get_row(db, info, id)
            else:
                found = [
                    (db, v)
                    for db, v in zip(
                        dbs,
                        await asyncio.gather(*[self._get_row(db, info, id) for db in dbs]),
                        strict=True,
                    )
                    if v is not None
                ]
                db, values = _only_one(found, table, id, pool._default_db())
        except BaseException as exc:
            await self._failed(dbs[0], om, READ, table, id, self._tags(tags), exc)
            raise
        obj = None
        if values is not None and (
            include_deleted or not info.soft_delete or values[info.deleted_index] is None
        ):
            obj = info.build(values)
        if pool.audit_reads:
            await self._audit_read(db, table, id, tags)
        if obj is not None and include:
            await self._load_includes(info, [obj], include)
        _done(om, t0)
        return obj

    async def _get_row(self, db: Database, info: EntityInfo, id: Any) -> tuple[Any, ...] | None:
        """The column values of row ``id`` on ``db``, through the cache."""
        pool = self._pool
        cache = pool.cache
        ckey = (db.name, info.table_name)
        use_cache = cache.enabled and self._tx is None
        token = None
        if use_cache:
            values = cache.get_row(ckey, id)
            if values is not None:
                pool.metrics.cache_hit(info.table_name).inc()
                return values
            pool.metrics.cache_miss(info.table_name).inc()
            token = cache.token(ckey)
        plan = db.compiler.entity(info)
        by_pk = plan.by_pk

        async def fetch(conn: Connection) -> Any:
            return await conn.fetch_one(by_pk.sql, by_pk.params((id,)))

        row = await self._read(db, fetch)
        if row is None:
            return None
        values = plan.decode(row)
        if use_cache:
            cache.put_row(ckey, id, values, token)
        return values

    async def _locate(self, info: EntityInfo, id: Any, hint: Any) -> Database:
        """The database holding row ``id`` (asking every shard when it must)."""
        pool = self._pool
        dbs = pool._dbs_for_pk(info, id, hint)
        if len(dbs) == 1:
            return dbs[0]
        plan_rows = await asyncio.gather(*[self._get_row(db, info, id) for db in dbs])
        found = [(db, v) for db, v in zip(dbs, plan_rows, strict=True) if v is not None]
        db, values = _only_one(found, info.table_name, id, pool._default_db())
        if values is None:
            raise NotFound(info.table_name, id)
        return db

    async def find_all(
        self,
        cls: type[T],
        *,
        where: Mapping[str, Any] | Q | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_deleted: bool = False,
        include: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[T]:
        """Rows matching ``where``, in ``order_by`` order, windowed by limit/offset."""
        t0 = perf_counter()
        info = entity_info(cls)
        table = info.table_name
        pool = self._pool
        om = await self._start(info, READ, None, tags)
        values: list[Any] = []
        wshape = parse_where(info, where, values)
        oshape = parse_order(info, order_by)
        check_window(limit, offset)
        if include:
            await self._check_includes(info, include, om, tags)
        if limit is not None:
            values.append(limit)
        if offset is not None:
            values.append(offset)
        rows = await self._select(
            info,
            om,
            wshape,
            oshape,
            values,
            limit is not None,
            offset is not None,
            include_deleted,
            tags,
        )
        objs = [info.build(v) for v in rows]
        if pool.audit_reads:
            await self._audit_read(pool._default_db(), table, None, tags)
        if include and objs:
            await self._load_includes(info, objs, include)
        _done(om, t0)
        return objs

    async def _select(
        self,
        info: EntityInfo,
        om: OpMetrics,
        wshape: Any,
        oshape: Any,
        values: list[Any],
        limit: bool,
        offset: bool,
        include_deleted: bool,
        tags: Sequence[str] | None,
    ) -> list[tuple[Any, ...]]:
        """Rows of a query; on several shards, scatter-gather with a global order and window.

        ``values`` ends with the limit and offset values when those flags are set.
        """
        pool = self._pool
        nwindow = int(limit) + int(offset)
        base = values[: len(values) - nwindow]
        dbs = pool._dbs_for_where(info, wshape, base)
        try:
            if len(dbs) == 1:
                # in a pool of mixed databases one shard sorts NULLs like the others do
                return await self._select_on(
                    dbs[0],
                    info,
                    wshape,
                    oshape,
                    values,
                    limit,
                    offset,
                    include_deleted,
                    pool._scatter_nulls,
                )
            # every shard returns its first offset+limit rows in the full order (primary
            # key last, so ties break the same everywhere); merged, they are the answer
            order = tuple(oshape)
            if info.pk.name not in [name for name, _ in order]:
                order += ((info.pk.name, False),)
            window = values[len(base) :]
            lim: int = window[0] if limit else 0
            off: int = window[-1] if offset else 0
            shard_values = [*base, lim + off] if limit else base
            parts = await asyncio.gather(
                *[
                    self._select_on(
                        db,
                        info,
                        wshape,
                        order,
                        shard_values,
                        limit,
                        False,
                        include_deleted,
                        pool._scatter_nulls,
                    )
                    for db in dbs
                ]
            )
            merged = merge_rows(
                parts,
                [(info.names.index(name), desc) for name, desc in order],
                nulls_first=pool._nulls_first,
                text_key=pool._text_key,
            )
            return merged[off : off + lim] if limit else merged[off:]
        except BaseException as exc:
            await self._failed(
                pool._default_db(), om, READ, info.table_name, None, self._tags(tags), exc
            )
            raise

    async def _select_on(
        self,
        db: Database,
        info: EntityInfo,
        wshape: Any,
        oshape: Any,
        values: list[Any],
        limit: bool,
        offset: bool,
        include_deleted: bool,
        nulls_first: bool | None = None,
    ) -> list[tuple[Any, ...]]:
        pool = self._pool
        table = info.table_name
        cache = pool.cache
        ckey = (db.name, table)
        use_cache = cache.enabled and self._tx is None
        qkey = None
        token = None
        if use_cache:
            qkey = (
                "all",
                wshape,
                oshape,
                limit,
                offset,
                include_deleted,
                nulls_first,
                tuple(values),
            )
            cached = cache.get_query(ckey, qkey)
            if cached is not None:
                pool.metrics.cache_hit(table).inc()
                return list(cached)
            pool.metrics.cache_miss(table).inc()
            token = cache.token(ckey)
        plan = db.compiler.select(
            info,
            wshape,
            oshape,
            limit=limit,
            offset=offset,
            include_deleted=include_deleted,
            nulls_first=nulls_first,
        )
        decode = db.compiler.entity(info).decode

        async def fetch(conn: Connection) -> list[tuple[Any, ...]]:
            raw = await conn.fetch_all(plan.sql, plan.params(values))
            return [decode(r) for r in raw]

        rows = await self._read(db, fetch)
        if use_cache:
            cache.put_query(ckey, qkey, tuple(rows), token)
        return rows

    async def count(
        self,
        cls: type,
        *,
        where: Mapping[str, Any] | Q | None = None,
        include_deleted: bool = False,
        tags: Sequence[str] | None = None,
    ) -> int:
        """How many rows match ``where``."""
        t0 = perf_counter()
        info = entity_info(cls)
        table = info.table_name
        pool = self._pool
        om = await self._start(info, READ, None, tags)
        values: list[Any] = []
        wshape = parse_where(info, where, values)
        dbs = pool._dbs_for_where(info, wshape, values)
        # no shard at all when the shard key must be in an empty list
        db = dbs[0] if dbs else pool._default_db()
        try:
            if len(dbs) == 1:
                n = await self._count_on(db, info, wshape, values, include_deleted)
            else:
                n = sum(
                    await asyncio.gather(
                        *[self._count_on(d, info, wshape, values, include_deleted) for d in dbs]
                    )
                )
        except BaseException as exc:
            await self._failed(db, om, READ, table, None, self._tags(tags), exc)
            raise
        if pool.audit_reads:
            await self._audit_read(db, table, None, tags)
        _done(om, t0)
        return n

    async def _count_on(
        self,
        db: Database,
        info: EntityInfo,
        wshape: Any,
        values: list[Any],
        include_deleted: bool,
    ) -> int:
        pool = self._pool
        table = info.table_name
        cache = pool.cache
        ckey = (db.name, table)
        use_cache = cache.enabled and self._tx is None
        qkey = ("count", wshape, include_deleted, tuple(values))
        token = None
        if use_cache:
            n = cache.get_query(ckey, qkey)
            if n is not None:
                pool.metrics.cache_hit(table).inc()
                return n
            pool.metrics.cache_miss(table).inc()
            token = cache.token(ckey)
        plan = db.compiler.count(info, wshape, include_deleted=include_deleted)

        async def fetch(conn: Connection) -> int:
            row = await conn.fetch_one(plan.sql, plan.params(values))
            return int(row[0]) if row is not None else 0

        n = await self._read(db, fetch)
        if use_cache:
            cache.put_query(ckey, qkey, n, token)
        return n

    async def _audit_read(
        self, db: Database, table: str, record_id: Any, tags: Sequence[str] | None
    ) -> None:
        tags = self._tags(tags)
        tx = self._tx
        if tx is not None:
            async with tx.lock:
                conn = await self._tx_conn(tx, db)
                await self._audit_in(conn, READ, table, record_id, None, tags)
        else:
            await self._audit_alone(db, READ, table, record_id, "ok", None, tags)

    # ----------------------------------------------------------------- writes

    async def insert(self, obj: T, *, tags: Sequence[str] | None = None) -> T:
        """Insert ``obj``; returns it with its generated primary key set."""
        t0 = perf_counter()
        info = entity_info(type(obj))
        table = info.table_name
        pool = self._pool
        om = await self._start(info, INSERT, getattr(obj, info.pk.name, None), tags)
        values = self._new_row(info, obj, utcnow())
        all_tags = self._tags(tags)
        db = pool._route_values(info, values)
        plan = db.compiler.entity(info)
        pk = values[plan.pk_index]
        stmt = plan.insert_auto if pk is None else plan.insert_full
        returning = plan.insert_returning
        audited = plan.audited_auto if pk is None else plan.audited_full

        if audited is not None:
            # the row and its audit row in one atomic statement (PostgreSQL)
            audit = self._audit_params(
                db, PG_INSERT_AUDIT_PARAMS, INSERT, table, None, info.audit_row(values), all_tags
            )

            async def work(conn: Connection) -> Any:
                row = await conn.fetch_one(audited, stmt.params(values) + audit)
                values[plan.pk_index] = pk if pk is not None else int(row[0])  # type: ignore[index]
        else:

            async def work(conn: Connection) -> Any:
                new_pk = await conn.insert(stmt.sql, stmt.params(values), returning)
                if pk is not None:
                    new_pk = pk
                values[plan.pk_index] = new_pk
                changes = info.audit_row(values)
                await self._audit_in(conn, INSERT, table, new_pk, changes, all_tags)

        try:
            await self._write(db, (db.name, table), [], work, single=audited is not None)
        except BaseException as exc:
            await self._failed(db, om, INSERT, table, pk, all_tags, exc)
            raise
        self._set_generated(info, [obj], [values])
        if pool._has_listeners:
            self._event(
                "create",
                table,
                values[plan.pk_index],
                all_tags,
                dict(zip(info.names, values, strict=True)),
            )
        _done(om, t0)
        return obj

    async def update(self, obj: T, *, tags: Sequence[str] | None = None) -> T:
        """Write every field of ``obj`` to its row; NotFound if the row is gone."""
        await self._update_objects([obj], tags, batch=False)
        return obj

    async def update_batch(
        self, objs: Sequence[T], *, tags: Sequence[str] | None = None
    ) -> list[T]:
        """Update many objects in one transaction (one permission check).

        NotFound (and nothing written) if any of their rows is gone.
        """
        objs = list(objs)
        if objs:
            await self._update_objects(objs, tags, batch=True)
        return objs

    async def _update_objects(
        self, objs: list[Any], tags: Sequence[str] | None, *, batch: bool
    ) -> None:
        t0 = perf_counter()
        info = entity_info(type(objs[0]))
        table = info.table_name
        pool = self._pool
        pk_name = info.pk.name
        om = await self._start(
            info, UPDATE, None if batch else getattr(objs[0], pk_name, None), tags
        )
        rows = info.checked_rows(objs)
        pks = [values[info.pk_index] for values in rows]
        if None in pks:
            obj = objs[pks.index(None)]
            raise ValidationError(f"update needs {type(obj).__name__}.{pk_name} to be set")
        all_tags = self._tags(tags)
        olds: dict[int, tuple[Any, ...]] = {}
        try:
            groups = self._by_shard(info, rows)
            jobs = []
            for db, members in groups.items():
                plan = db.compiler.entity(info)

                async def work(conn: Connection, plan: Any = plan, members: list[int] = members):
                    for i in members:
                        old_to = functools.partial(olds.__setitem__, i)
                        await self._update_row(conn, info, plan, pks[i], rows[i], all_tags, old_to)

                jobs.append((db, [pks[i] for i in members], work))
            single = len(objs) == 1 and db.compiler.entity(info).audited_update is not None
            await self._write_shards(table, jobs, single=single)
        except BaseException as exc:
            await self._failed(
                pool._default_db(), om, UPDATE, table, None if batch else pks[0], all_tags, exc
            )
            raise
        for obj, values in zip(objs, rows, strict=True):
            self._set_values(info, obj, values)
        if pool._has_listeners:
            for i, (pk, values) in enumerate(zip(pks, rows, strict=True)):
                self._event("update", table, pk, all_tags, _diff(info, olds[i], values))
        _done(om, t0)

    async def _update_row(
        self,
        conn: Connection,
        info: EntityInfo,
        plan: Any,
        pk: Any,
        values: list[Any],
        tags: tuple[str, ...],
        on_old: Callable[[tuple[Any, ...]], None],
    ) -> None:
        """Lock the row, write ``values`` (system fields kept), audit; ``on_old`` gets
        the old row. NotFound if there is no row (or it is soft-deleted)."""
        pg = plan.audited_update
        if pg is not None:
            on_old(await self._update_row_pg(conn, info, plan, pg, pk, values, tags))
            return
        db = conn.db

        def then(row: Sequence[Any] | None) -> list[tuple[str, Sequence[Any]]]:
            old = _existing(info, plan, row, pk, deleted=False if info.soft_delete else None)
            on_old(old)
            return self._update_statements(db, info, plan, pk, old, values, tags, UPDATE)

        lock = plan.by_pk_for_update
        await conn.fetch_then(lock.sql, lock.params((pk,)), then)

    def _update_statements(
        self,
        db: Database,
        info: EntityInfo,
        plan: Any,
        pk: Any,
        old: Sequence[Any],
        values: list[Any],
        tags: tuple[str, ...],
        action: str,
    ) -> list[tuple[str, Sequence[Any]]]:
        """The UPDATE that writes ``values`` over ``old`` (system fields kept; a restore
        clears ``deleted_at``) and its audit row's INSERT."""
        self._keep_system_values(info, old, values, keep_deleted=action == UPDATE)
        changes = {
            n: [info.audit_value(n, a), info.audit_value(n, b)]
            for n, (a, b) in _diff(info, old, values).items()
        }
        upd = plan.update_by_pk
        return [
            (upd.sql, upd.params([*values, pk])),
            self._audit_statement(db, action, info.table_name, pk, changes, tags),
        ]

    async def delete(
        self, cls: type, id: Any, *, tags: Sequence[str] | None = None, shard_key: Any = None
    ) -> None:
        """Delete the row with primary key ``id`` (mark it, for soft-delete entities).

        Raises NotFound when there is no such row. ``shard_key=`` names the
        row's shard-key value so only its shard is asked.
        """
        await self._delete_one(cls, id, tags, purge=False, hint=shard_key)

    async def _delete_one(
        self, cls: type, id: Any, tags: Sequence[str] | None, *, purge: bool, hint: Any = None
    ) -> None:
        t0 = perf_counter()
        info = entity_info(cls)
        table = info.table_name
        pool = self._pool
        action = "purge" if purge else DELETE
        om = await self._start(info, action, id, tags, perm=DELETE)
        info.pk.check(id)
        if id is None:
            raise ValidationError(f"delete needs a primary key value for {table}")
        all_tags = self._tags(tags)
        try:
            db = await self._locate(info, id, hint)
        except BaseException as exc:
            await self._failed(pool._default_db(), om, action, table, id, all_tags, exc)
            raise
        plan = db.compiler.entity(info)
        old_values: list[Any] = []

        soft = info.soft_delete and not purge
        # the row comes back from the DELETE where the dialect allows; else it is locked first
        query = plan.delete_by_pk if plan.delete_returning and not soft else plan.by_pk_for_update

        def then(row: Sequence[Any] | None) -> list[tuple[str, Sequence[Any]]]:
            old = _existing(info, plan, row, id, deleted=False if soft else None)
            old_values.extend(old)
            audit = self._audit_statement(db, action, table, id, info.audit_row(old), all_tags)
            if soft:
                new = list(old)
                new[info.deleted_index] = utcnow()
                return [(plan.update_by_pk.sql, plan.update_by_pk.params([*new, id])), audit]
            if query is plan.delete_by_pk:
                return [audit]
            return [(plan.delete_by_pk.sql, plan.delete_by_pk.params((id,))), audit]

        async def work(conn: Connection) -> None:
            await conn.fetch_then(query.sql, query.params((id,)), then)

        try:
            await self._write(db, (db.name, table), [id], work)
        except BaseException as exc:
            await self._failed(db, om, action, table, id, all_tags, exc)
            raise
        if not info.soft_delete or purge:
            pool._cascade(info)
        if pool._has_listeners:
            self._event(
                "delete", table, id, all_tags, dict(zip(info.names, old_values, strict=True))
            )
        _done(om, t0)

    async def insert_batch(
        self, objs: Sequence[T], *, tags: Sequence[str] | None = None
    ) -> list[T]:
        """Insert many objects: one multi-row INSERT (and one for their audit rows)."""
        t0 = perf_counter()
        objs = list(objs)
        if not objs:
            return objs
        info = entity_info(type(objs[0]))
        table = info.table_name
        pool = self._pool
        om = await self._start(info, INSERT, None, tags)
        rows = self._stamp_new(info, info.checked_rows(objs), utcnow())
        all_tags = self._tags(tags)
        try:
            groups = self._by_shard(info, rows)
            pk_i = info.pk_index
            # on PostgreSQL rows of one kind (all with keys or all without) are one statement
            single = (
                len(groups) == 1
                and next(iter(groups)).dialect.name == "postgresql"
                and len({r[pk_i] is None for r in rows}) == 1
            )
            await self._write_shards(
                info.table_name,
                [
                    (db, [], self._insert_work(db, info, [rows[i] for i in members], all_tags))
                    for db, members in groups.items()
                ],
                single=single and len(rows) <= 5000,
            )
        except BaseException as exc:
            await self._failed(pool._default_db(), om, INSERT, info.table_name, None, all_tags, exc)
            raise
        self._set_generated(info, objs, rows)
        if pool._has_listeners:
            pk_index = info.pk_index
            for values in rows:
                self._event(
                    "create",
                    table,
                    values[pk_index],
                    all_tags,
                    dict(zip(info.names, values, strict=True)),
                )
        _done(om, t0)
        return objs

    def _insert_work(
        self, db: Database, info: EntityInfo, rows: list[list[Any]], tags: tuple[str, ...]
    ) -> Callable[[Connection], Awaitable[None]]:
        """The work of inserting ``rows`` (and their audit rows) on ``db``; fills in ids
        (on MySQL/MariaDB with consecutive keys, once the write has gone out)."""
        table = info.table_name
        plan = db.compiler.entity(info)
        pk_i = plan.pk_index
        auto = [r for r in rows if r[pk_i] is None]
        given = [r for r in rows if r[pk_i] is not None]
        pk = info.pk.name
        auto_names = tuple(n for n in info.names if n != pk)
        pk_col = info.table.c[pk]
        returning = plan.insert_returning
        pg = db.dialect.name == "postgresql"

        async def work(conn: Connection) -> None:
            step = 0  # keys `step` apart; 0: not consecutive (or not MySQL's)
            if auto and db.dialect.name == "mysql":
                lock_mode, increment = await db.autoinc(conn)
                # InnoDB gives the rows of one multi-row INSERT keys `increment` apart in
                # lock modes 0 and 1; MariaDB returns them otherwise (MySQL cannot: see docs)
                if lock_mode <= 1 or not returning:
                    step = increment
            for group, names in ((auto, auto_names), (given, info.names)):
                if not group:
                    continue
                if pg:
                    await self._insert_rows_pg(conn, info, group, names, tags, pk_i, group is auto)
                    continue
                idx = [info.names.index(n) for n in names]
                keys = group is auto and not step
                # consecutive keys: the audit rows take them in SQL, so a chunk's INSERT
                # and its audit rows are held and go out together (one trip in all)
                keyed = json_rows(db.compiler, pk) if group is auto and step else None
                if keyed is not None:
                    template = self._audit_values(INSERT, table, None, "ok", None, tags)
                for chunk in _chunks(group, db.max_rows(len(names))):
                    stmt = db.compiler.insert_many(
                        info.table, names, len(chunk), pk_col if keys else None
                    )
                    flat = [r[i] for r in chunk for i in idx]
                    if group is not auto:
                        await conn.execute(stmt.sql, stmt.params(flat))
                    elif keys:
                        got = await conn.fetch_all(stmt.sql, stmt.params(flat))
                        # one statement assigns ascending ids in VALUES order
                        for r, key in zip(chunk, sorted(g[0] for g in got), strict=True):
                            r[pk_i] = key
                    elif keyed is not None:
                        number = functools.partial(_number, chunk, pk_i, step=step)
                        await conn.insert_held(stmt.sql, stmt.params(flat), number)
                        changes = [info.audit_row(r) for r in chunk]
                        for c in changes:
                            del c[pk]
                        await conn.execute(keyed.sql, keyed.keyed_params(template, step, changes))
                    else:
                        first = await conn.insert(stmt.sql, stmt.params(flat), False)
                        _number(chunk, pk_i, first, step)
                if keyed is not None:
                    continue
                await self._audit_many(
                    conn,
                    INSERT,
                    table,
                    [(r[pk_i], info.audit_row(r)) for r in group],
                    tags,
                )

        return work

    async def _insert_rows_pg(
        self,
        conn: Connection,
        info: EntityInfo,
        group: list[list[Any]],
        names: tuple[str, ...],
        tags: tuple[str, ...],
        pk_i: int,
        auto: bool,
    ) -> None:
        """Rows and their audit rows in one statement per chunk (PostgreSQL, unnest)."""
        db = conn.db
        stmt = db.compiler.pg_batch_insert(info, names)
        # the same for every row of the batch; the database renders each row's changes
        audit = self._audit_params(db, stmt.AUDIT_PARAMS, INSERT, info.table_name, None, None, tags)
        for chunk in _chunks(group, 5000):
            got = await conn.fetch_one(*stmt.bind(chunk, audit))
            if auto:
                # one statement assigns ascending ids in row order
                for r, pk in zip(chunk, got[0], strict=True):  # type: ignore[index]
                    r[pk_i] = pk

    # ----------------------------------------------------- soft delete, bulk

    async def restore(
        self, cls: type[T], id: Any, *, tags: Sequence[str] | None = None, shard_key: Any = None
    ) -> T:
        """Bring back a soft-deleted row (needs ``update``); NotFound if it is not deleted."""
        info = self._soft(cls, "restore")
        t0 = perf_counter()
        table = info.table_name
        pool = self._pool
        om = await self._start(info, "restore", id, tags, perm=UPDATE)
        info.pk.check(id)
        all_tags = self._tags(tags)
        try:
            db = await self._locate(info, id, shard_key)
        except BaseException as exc:
            await self._failed(pool._default_db(), om, "restore", table, id, all_tags, exc)
            raise
        plan = db.compiler.entity(info)
        result: list[Any] = []

        def then(row: Sequence[Any] | None) -> list[tuple[str, Sequence[Any]]]:
            old = _existing(info, plan, row, id, deleted=True)
            values = list(old)
            values[info.deleted_index] = None
            result[:] = [old, values]
            return self._update_statements(db, info, plan, id, old, values, all_tags, "restore")

        async def work(conn: Connection) -> None:
            lock = plan.by_pk_for_update
            await conn.fetch_then(lock.sql, lock.params((id,)), then)

        try:
            await self._write(db, (db.name, table), [id], work)
        except BaseException as exc:
            await self._failed(db, om, "restore", table, id, all_tags, exc)
            raise
        old, values = result
        if pool._has_listeners:
            self._event("update", table, id, all_tags, _diff(info, old, values))
        _done(om, t0)
        return info.build(values)

    async def purge(
        self, cls: type, id: Any, *, tags: Sequence[str] | None = None, shard_key: Any = None
    ) -> None:
        """Remove a soft-delete entity's row for good (needs ``delete``)."""
        self._soft(cls, "purge")
        await self._delete_one(cls, id, tags, purge=True, hint=shard_key)

    def _soft(self, cls: type, what: str) -> EntityInfo:
        info = entity_info(cls)
        if not info.soft_delete:
            raise ValidationError(
                f"{what} applies to soft-delete entities; declare "
                f"{cls.__name__} with @entity(..., soft_delete=True)"
            )
        return info

    async def update_where(
        self,
        cls: type,
        where: Mapping[str, Any] | Q,
        values: Mapping[str, Any],
        *,
        tags: Sequence[str] | None = None,
    ) -> int:
        """Set ``values`` on every row matching ``where``; returns how many rows changed.

        One permission check (``update``); every affected row gets an audit record.
        """
        info = entity_info(cls)
        if not isinstance(values, Mapping) or not values:
            raise ValidationError("update_where needs a non-empty dict of field values")
        for name, value in values.items():
            f = info.field(name)
            if name == info.shard_key:
                raise ValidationError(
                    f"update_where cannot set the shard key {name!r}: the rows would stay on "
                    "their old shard; insert them anew instead"
                )
            if f.primary_key or f.system:
                raise ValidationError(
                    f"update_where cannot set {name!r}: it is "
                    f"{'the primary key' if f.primary_key else 'a system field'}"
                )
            f.check(value)

        positions = [(info.names.index(name), value) for name, value in values.items()]

        def change(old: tuple[Any, ...]) -> list[Any]:
            new = list(old)
            for i, value in positions:
                new[i] = value
            return new

        return await self._bulk(info, UPDATE, where, tags, change)

    async def delete_where(
        self, cls: type, where: Mapping[str, Any] | Q, *, tags: Sequence[str] | None = None
    ) -> int:
        """Delete (or, for soft-delete entities, mark) every row matching ``where``.

        Returns how many rows; one permission check, one audit record per row.
        """
        return await self._bulk(entity_info(cls), DELETE, where, tags, None)

    async def _bulk(
        self,
        info: EntityInfo,
        action: str,
        where: Mapping[str, Any] | Q,
        tags: Sequence[str] | None,
        change: Callable[[tuple[Any, ...]], list[Any]] | None,
    ) -> int:
        t0 = perf_counter()
        table = info.table_name
        pool = self._pool
        om = await self._start(info, action, None, tags)
        if where is None:
            raise ValidationError(
                f"{action}_where needs a where condition; pass {{}} explicitly to touch every row"
            )
        wvalues: list[Any] = []
        wshape = parse_where(info, where, wvalues)
        all_tags = self._tags(tags)
        soft = info.soft_delete and action == DELETE
        if soft:

            def change(old: tuple[Any, ...]) -> list[Any]:
                new = list(old)
                new[info.deleted_index] = now
                return new

        now = utcnow()
        done: list[tuple[Any, tuple[Any, ...], list[Any] | None]] = []

        async def work(conn: Connection) -> None:
            db = conn.db
            compiler = db.compiler
            plan = compiler.entity(info)
            select = compiler.cached(
                ("bulk_select", info, wshape),
                lambda: select_statement(info, wshape, (), for_update=True),
            )
            rows = [
                plan.decode(r) for r in await conn.fetch_all(select.sql, select.params(wvalues))
            ]
            pk_i = plan.pk_index
            records = []
            if change is None:
                for chunk in _chunks(rows, db.max_rows(1)):
                    n = len(chunk)
                    stmt = compiler.cached(
                        ("delete_in", info, n), functools.partial(_delete_in, info, n)
                    )
                    await conn.execute(stmt.sql, stmt.params([r[pk_i] for r in chunk]))
                for old in rows:
                    records.append((old[pk_i], info.audit_row(old)))
                    done.append((old[pk_i], old, None))
            else:
                upd = plan.update_by_pk
                for old in rows:
                    new = change(old)
                    if info.timestamps and not soft:
                        new[info.updated_index] = now
                    await conn.execute(upd.sql, upd.params([*new, old[pk_i]]))
                    if soft:
                        # a soft delete is audited like delete(): the old values
                        changes: Any = info.audit_row(old)
                    else:
                        changes = {
                            n: [info.audit_value(n, a), info.audit_value(n, b)]
                            for n, (a, b) in _diff(info, old, new).items()
                        }
                    records.append((old[pk_i], changes))
                    done.append((old[pk_i], old, None if soft else new))
            if records:
                await self._audit_many(conn, action, table, records, all_tags)

        dbs = pool._dbs_for_where(info, wshape, wvalues)
        try:
            # one transaction per shard: a transaction cannot span shards
            for db in dbs:
                await self._write(db, (db.name, table), None, work)
            if action == DELETE and not soft:
                pool._cascade(info)
        except BaseException as exc:
            await self._failed(pool._default_db(), om, action, table, None, all_tags, exc)
            raise
        if pool._has_listeners:
            for pk, old, new in done:
                if new is None:
                    self._event(
                        "delete", table, pk, all_tags, dict(zip(info.names, old, strict=True))
                    )
                else:
                    self._event("update", table, pk, all_tags, _diff(info, old, new))
        _done(om, t0)
        return len(done)

    # ------------------------------------------------------------- pagination

    async def find_page(
        self,
        cls: type[T],
        *,
        where: Mapping[str, Any] | Q | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int = 20,
        cursor: str | None = None,
        reverse: bool = False,
        include_deleted: bool = False,
        include: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Page[T]:
        """One page of a keyset walk: ``Page(items, next_cursor)``.

        Pass ``next_cursor`` back as ``cursor`` for the next page; ``reverse=True``
        walks the same ordering backwards. Rows inserted between calls never make
        a row be skipped or repeated. Ordering fields must be NOT NULL; the
        primary key is added as the final tiebreak.
        """
        t0 = perf_counter()
        info = entity_info(cls)
        table = info.table_name
        pool = self._pool
        om = await self._start(info, READ, None, tags)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise ValidationError(f"limit must be an int from 1 to 10000, got {limit!r}")
        values: list[Any] = []
        wshape = parse_where(info, where, values)
        order = page_order(info, parse_order(info, order_by), bool(reverse))
        if include:
            await self._check_includes(info, include, om, tags)
        if cursor is not None:
            after = decode_cursor(pool.cursor_key, info, cursor, order, bool(reverse))
            seek = seek_shape(order, values, after)
            wshape = ("and", (wshape, seek)) if wshape else seek
        values.append(limit + 1)
        rows = await self._select(
            info, om, wshape, order, values, True, False, include_deleted, tags
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            idx = [info.names.index(name) for name, _ in order]
            next_cursor = encode_cursor(
                pool.cursor_key, order, bool(reverse), [rows[-1][i] for i in idx]
            )
        objs = [info.build(v) for v in rows]
        if pool.audit_reads:
            await self._audit_read(pool._default_db(), table, None, tags)
        if include and objs:
            await self._load_includes(info, objs, include)
        _done(om, t0)
        return Page(objs, next_cursor)

    # ---------------------------------------------------------- relationships

    async def _check_includes(
        self, info: EntityInfo, include: Sequence[str], om: OpMetrics, tags: Sequence[str] | None
    ) -> None:
        """Validate relation names and check ``read`` on each related table first."""
        if isinstance(include, str):
            include = [include]
        for name in include:
            target = _relation_target(info, name)
            tinfo = entity_info(target)
            await self._start(tinfo, READ, None, tags)

    async def _load_includes(
        self, info: EntityInfo, objs: list[Any], include: Sequence[str]
    ) -> None:
        """Fill each relation with one query per relation (no N+1)."""
        if isinstance(include, str):
            include = [include]
        for name in include:
            t0 = perf_counter()
            tinfo = entity_info(_relation_target(info, name))
            om = self._pool._metrics_op(tinfo.table_name, READ)
            if name in info.references:
                fk = info.references[name]
                keys = list(
                    dict.fromkeys(getattr(o, fk) for o in objs if getattr(o, fk) is not None)
                )
                found = await self._fetch_in(tinfo, om, tinfo.pk.name, keys)
                by_pk = {getattr(r, tinfo.pk.name): r for r in found}
                for o in objs:
                    object.__setattr__(o, name, by_pk.get(getattr(o, fk)))
            else:
                fk = info.relations[name].foreign_key
                keys = list(dict.fromkeys(getattr(o, info.pk.name) for o in objs))
                found = await self._fetch_in(tinfo, om, fk, keys)
                groups: dict[Any, list[Any]] = {}
                for r in found:
                    groups.setdefault(getattr(r, fk), []).append(r)
                for o in objs:
                    object.__setattr__(o, name, groups.get(getattr(o, info.pk.name), []))
            # a relation load is one read of the related table
            om.ok.inc()
            om.duration.observe(perf_counter() - t0)

    async def _fetch_in(
        self, info: EntityInfo, om: OpMetrics, field: str, keys: list[Any]
    ) -> list[Any]:
        out: list[Any] = []
        order = ((info.pk.name, False),)
        for chunk in _chunks(keys, 1000):
            values = list(chunk)
            shape = ("and", ((field, "in", len(values)),))
            rows = await self._select(info, om, shape, order, values, False, False, False, None)
            out += [info.build(v) for v in rows]
        return out

    # ---------------------------------------------------------------- helpers

    def _by_shard(self, info: EntityInfo, rows: list[list[Any]]) -> dict[Database, list[int]]:
        """Row positions grouped by the database each row routes to (ShardError if any can't)."""
        if info.shard_key is None:
            return {self._pool._default_db(): list(range(len(rows)))}
        route = self._pool._route_values
        groups: dict[Database, list[int]] = {}
        for i, values in enumerate(rows):
            groups.setdefault(route(info, values), []).append(i)
        return groups

    @staticmethod
    def _new_row(info: EntityInfo, obj: Any, now: dt.datetime) -> list[Any]:
        """Checked column values of a new row."""
        return DbSession._stamp_new(info, [info.checked_values(obj)], now)[0]

    @staticmethod
    def _stamp_new(info: EntityInfo, rows: list[list[Any]], now: dt.datetime) -> list[list[Any]]:
        """Set the system fields of new rows: they are dbnexus's, never the caller's."""
        if info.timestamps:
            created, updated = info.created_index, info.updated_index
            for values in rows:
                values[created] = values[updated] = now
        if info.soft_delete:
            deleted = info.deleted_index
            for values in rows:
                values[deleted] = None
        return rows

    @staticmethod
    def _set_generated(info: EntityInfo, objs: Sequence[Any], rows: Sequence[Any]) -> None:
        """Give inserted objects what the insert decided: their keys and system fields."""
        for i in info.generated:
            name = info.names[i]
            if info.has_dict:
                for obj, values in zip(objs, rows, strict=True):
                    obj.__dict__[name] = values[i]
            else:
                for obj, values in zip(objs, rows, strict=True):
                    object.__setattr__(obj, name, values[i])

    @staticmethod
    def _set_values(info: EntityInfo, obj: Any, values: Sequence[Any]) -> None:
        if info.has_dict:
            obj.__dict__.update(zip(info.names, values, strict=True))
        else:
            for n, v in zip(info.names, values, strict=True):
                object.__setattr__(obj, n, v)

    async def _update_row_pg(
        self,
        conn: Connection,
        info: EntityInfo,
        plan: Any,
        pg: Any,
        pk: Any,
        values: list[Any],
        tags: tuple[str, ...],
    ) -> tuple[Any, ...]:
        """:meth:`_update_row` in one statement (PostgreSQL): lock, update, audit."""
        if info.timestamps:
            values[info.updated_index] = utcnow()
        new_json = json.dumps(
            {n: info.audit_value(n, values[i]) for n, i in zip(pg.names, pg.idx, strict=True)}
        )
        audit = self._audit_params(
            conn.db, pg.AUDIT_PARAMS, UPDATE, info.table_name, pk, None, tags
        )
        row = await conn.fetch_one(pg.sql, pg.params(values, pk, new_json, audit))
        if row is None:
            raise NotFound(info.table_name, pk)
        old = plan.decode(row)
        for i in (info.created_index, info.deleted_index):
            if i >= 0:
                values[i] = old[i]
        return old

    @staticmethod
    def _keep_system_values(
        info: EntityInfo, old: Sequence[Any], values: list[Any], *, keep_deleted: bool = True
    ) -> None:
        if info.timestamps:
            values[info.created_index] = old[info.created_index]
            values[info.updated_index] = utcnow()
        if info.soft_delete and keep_deleted:
            values[info.deleted_index] = old[info.deleted_index]

    def _event(
        self, kind: str, table: str, record_id: Any, tags: tuple[str, ...], payload: dict[str, Any]
    ) -> None:
        pool = self._pool
        if not pool._has_listeners:
            return
        event = DatabaseEvent(kind, table, record_id, self.user_id, tags, payload, utcnow())
        if self._tx is not None:
            self._tx.events.append(event)
        else:
            pool._emit([event])


def _done(om: OpMetrics, t0: float) -> None:
    om.ok.inc()
    om.duration.observe(perf_counter() - t0)


def _only_one(
    found: list[tuple[Database, Any]], table: str, id: Any, default: Database
) -> tuple[Database, Any]:
    """The one shard that answered for a primary key (or the default and None)."""
    if len(found) > 1:
        names = ", ".join(db.name for db, _ in found)
        raise ShardError(
            f"row {id!r} of {table!r} exists on several shards ({names}); primary keys of "
            "sharded entities must be unique across shards"
        )
    return found[0] if found else (default, None)


def _relation_target(info: EntityInfo, name: str) -> type:
    if name in info.references:
        return info.by_name[info.references[name]].references  # type: ignore[return-value]
    if name in info.relations:
        return info.relations[name].target_class()
    known = sorted([*info.references, *info.relations])
    raise ValidationError(
        f"{info.cls.__name__} has no relation {name!r}; "
        f"its relations are: {', '.join(known) or 'none'}"
    )


def _delete_in(info: EntityInfo, n: int) -> Any:
    pk = info.table.c[info.pk.name]
    return sa.delete(info.table).where(
        pk.in_([sa.bindparam(f"p{i}", type_=pk.type) for i in range(n)])
    )


def _existing(
    info: EntityInfo, plan: Any, row: Sequence[Any] | None, pk: Any, *, deleted: bool | None
) -> tuple[Any, ...]:
    """The decoded row a write needs, or NotFound: also when ``deleted`` (True: it must
    be soft-deleted, False: it must not be; None: either) does not hold."""
    old = None if row is None else plan.decode(row)
    if old is None or (deleted is not None and (old[info.deleted_index] is not None) != deleted):
        raise NotFound(info.table_name, pk)
    return old


def _diff(info: EntityInfo, old: Sequence[Any], new: Sequence[Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (old, new)}`` of the fields that changed."""
    return {n: (a, b) for n, a, b in zip(info.names, old, new, strict=True) if a != b}


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _number(rows: Sequence[list[Any]], pk_i: int, first: int, step: int) -> None:
    """Keys of the rows of one multi-row INSERT: ``first``, then ``step`` apart."""
    for k, r in enumerate(rows):
        r[pk_i] = first + k * step
