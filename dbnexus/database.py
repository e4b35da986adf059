"""One database: its SQLAlchemy engine, pool, driver adapter and statement compiler.

SQLAlchemy owns connections (pooling, recycling, dialect initialisation, DDL);
operations borrow the raw driver connection from its pool and run compiled SQL
on it through :mod:`dbnexus.backends`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from .backends import (
    ALL,
    COMMIT,
    EXEC,
    FLUSH,
    INSERT,
    ONE,
    RETURNING,
    Driver,
    Held,
    Row,
    Then,
    driver_for,
)
from .config import PoolSettings, parse_url
from .errors import DatabaseError, DbNexusError, PoolTimeout, ShardError
from .statements import Compiler

__all__ = ["Connection", "Database"]

log = logging.getLogger(__name__)

_READY = "dbnexus_ready"
_CHECKIN = "dbnexus_checkin"
_BORN = "dbnexus_born"


class Connection:
    """A connection borrowed from a :class:`Database`'s pool; statements go through it.

    On drivers that can send several statements in one trip (aiomysql,
    aiosqlite), BEGIN waits for the transaction's first statement, and in a
    transaction begun with ``hold=True`` so do statements whose result nobody
    reads (an UPDATE, audit rows, an INSERT whose key is read only once it has
    run: :meth:`insert_held`): they travel with the next statement that returns
    something, or with COMMIT. The database runs them in the same
    order; an error in one surfaces there, before the transaction commits.
    On aiosqlite a read whose row the next statements need can be held too
    (:meth:`fetch_then`): those statements are made from it in aiosqlite's thread.
    Held statements go out once they hold ``HOLD_LIMIT`` parameters, so one
    query stays far below the server's packet limit (``update_where`` over many
    rows holds an UPDATE per row).
    """

    __slots__ = ("_held", "_holding", "_weight", "db", "driver", "fairy", "raw")

    #: held parameters (plus one per statement) that make the held statements go out
    HOLD_LIMIT = 2000

    def __init__(self, db: Database, fairy: Any) -> None:
        self.db = db
        self.fairy = fairy
        self.raw = fairy.driver_connection
        self.driver = db.driver
        self._held: list[Held] = []
        self._holding = False
        self._weight = 0

    def _take(self) -> list[Held]:
        held, self._held, self._weight = self._held, [], 0
        return held

    async def _send(self, last: str, sql: str, params: Sequence[Any]) -> Any:
        return await self.driver.run(self.raw, self._take(), last, sql, params)

    async def fetch_one(self, sql: str, params: Sequence[Any]) -> Row | None:
        if self._held:
            return await self._send(ONE, sql, params)
        return await self.driver.fetch_one(self.raw, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        if self._held:
            return list(await self._send(ALL, sql, params))
        return await self.driver.fetch_all(self.raw, sql, params)

    async def insert(self, sql: str, params: Sequence[Any], returning: bool) -> Any:
        """Run an INSERT of one row; return the new primary key."""
        if self._held:
            return await self._send(RETURNING if returning else INSERT, sql, params)
        return await self.driver.insert(self.raw, sql, params, returning)

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        """Run a statement that returns no rows (held until needed, see the class)."""
        if self._holding:
            await self._hold(sql, params, None)
        elif self._held:
            await self._send(EXEC, sql, params)
        else:
            await self.driver.execute(self.raw, sql, params)

    async def insert_held(
        self, sql: str, params: Sequence[Any], on_key: Callable[[Any], None]
    ) -> None:
        """Run an INSERT whose generated key is needed only once the write is done:
        held like :meth:`execute`; ``on_key(key)`` gets its (first) key once it has run.
        """
        if self._holding:
            await self._hold(sql, params, on_key)
        else:
            on_key(await self.insert(sql, params, False))

    async def fetch_then(
        self,
        sql: str,
        params: Sequence[Any],
        then: Callable[[Row | None], Iterable[tuple[str, Sequence[Any]]]],
    ) -> None:
        """Run a query, then the statements ``then(row)`` makes of its first row
        (None if it has none).

        Held, query and all, in a transaction begun with ``hold=True`` on a driver
        that runs Python within a trip (aiosqlite: ``then`` runs in its thread, and
        what ``then`` raises surfaces where the held statements go out). Elsewhere the
        query runs now and its statements are held like :meth:`execute`.
        """
        if self._holding and self.driver.runs_python:
            await self._hold(sql, params, Then(then))
            return
        row = await self.fetch_one(sql, params)
        for s, p in then(row):
            await self.execute(s, p)

    async def _hold(self, sql: str, params: Sequence[Any], on_key: Any) -> None:
        self._held.append((sql, params, on_key))
        self._weight += len(params) + 1
        if self._weight >= self.HOLD_LIMIT:
            await self.flush()

    async def script(self, sql: str) -> None:
        """Run a parameterless statement (SAVEPOINT ...) now."""
        if self._held:
            await self._send(EXEC, sql, ())
        else:
            await self.driver.execute_script(self.raw, sql)

    async def begin(self, *, hold: bool = False) -> None:
        """Open a transaction; ``hold``: statements without results may wait for COMMIT."""
        if self.driver.pipelines:
            self._held = [(self.driver.begin_sql, (), None)]
            self._holding = hold
        else:
            await self.driver.begin(self.raw)

    async def flush(self) -> None:
        """Send what is held, without committing."""
        if self._held:
            await self.driver.run(self.raw, self._take(), FLUSH, "", ())

    async def commit(self) -> None:
        self._holding = False
        if self._held:
            await self._send(COMMIT, "", ())
        else:
            await self.driver.commit(self.raw)

    async def rollback(self) -> None:
        """Roll back (and forget what is held: the database never saw it)."""
        self._take()
        self._holding = False
        await self.driver.rollback(self.raw)


class Database:
    """An engine plus what dbnexus needs to run SQL on it fast."""

    def __init__(
        self,
        name: str,
        engine: AsyncEngine,
        driver: Driver,
        settings: PoolSettings,
        memory: bool,
        shard: bool = False,
    ) -> None:
        self.name = name
        self.engine = engine
        self.driver = driver
        self.settings = settings
        self.dialect = engine.dialect
        self.compiler = Compiler(engine.dialect)
        self._pool = engine.sync_engine.pool
        # one in-memory SQLite connection is shared by everyone: take turns
        self._serial = asyncio.Lock() if memory else None
        self._in_use = 0
        self.max_params = _max_params(engine.dialect)
        # a shard's connection failures are ShardErrors naming it
        self.shard = shard
        self.ready = False
        self.shard_ops: Any = None  # the pool's dbnexus_shard_operations_total child
        self._idle: list[tuple[Connection, float]] = []  # LIFO: the warmest first
        self._autoinc: tuple[int, int] | None = None
        self._waiting = 0
        self._closing = False

    def max_rows(self, width: int) -> int:
        """How many rows of ``width`` values one multi-row statement may carry."""
        return max(1, min(1000, self.max_params // max(1, width)))

    @classmethod
    async def open(
        cls,
        name: str,
        url: Any,
        settings: PoolSettings,
        *,
        echo: bool = False,
        shard: bool = False,
    ) -> Database:
        """Create the engine, check the server answers, and warm up the pool.

        A ``shard`` that cannot be reached is opened anyway (with a warning): its
        operations fail with a ShardError until it answers.
        """
        parsed = parse_url(url)
        backend = parsed.get_backend_name()
        memory = backend == "sqlite" and parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"echo": echo, "pool_reset_on_return": None}
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            connect_args["timeout"] = settings.connect_timeout
        elif backend == "mysql":
            connect_args["connect_timeout"] = int(max(1, settings.connect_timeout))
        elif backend == "sqlite":
            # sqlite3's timeout is how long a writer waits for the file lock
            connect_args["timeout"] = settings.acquire_timeout
        if not memory:
            kwargs.update(
                pool_size=settings.max_connections,
                max_overflow=0,
                pool_timeout=settings.acquire_timeout,
                pool_recycle=settings.max_lifetime or -1,
            )
        engine = create_async_engine(parsed, connect_args=connect_args, **kwargs)
        _install_pool_events(engine, settings, wal=backend == "sqlite" and not memory)
        db = cls(name, engine, driver_for(parsed.get_driver_name()), settings, memory, shard)
        try:
            # the first connect initialises the dialect (server version, RETURNING support)
            async with engine.connect():
                pass
            db._initialised()
            await db._prefill(settings.min_connections)
        except BaseException as exc:
            if shard and isinstance(exc, Exception):
                log.warning(
                    "shard %r is unreachable; its operations will fail until it answers: %s",
                    name,
                    exc,
                )
                return db
            await engine.dispose()
            if isinstance(exc, DbNexusError):
                raise
            if isinstance(exc, Exception):
                raise DatabaseError(
                    f"cannot connect to database {name!r} "
                    f"({parsed.render_as_string(hide_password=True)}): {exc}",
                    exc,
                ) from exc
            raise
        return db

    def _initialised(self) -> None:
        if not self.ready:
            self.ready = True
            # statements compiled before the dialect knew the server may differ
            self.compiler = Compiler(self.dialect)

    async def _prefill(self, n: int) -> None:
        conns = [await self.acquire() for _ in range(min(n, 1 if self._serial else n))]
        for c in conns:
            await self.release(c)

    @property
    def in_use(self) -> int:
        """Connections currently borrowed by operations."""
        return self._in_use

    @property
    def pool_size(self) -> int:
        """Connections currently open (idle or in use)."""
        pool: Any = self._pool  # QueuePool (StaticPool for in-memory SQLite has no counts)
        if not hasattr(pool, "checkedin"):
            return self._in_use
        return int(pool.checkedin() + pool.checkedout())

    async def acquire(self) -> Connection:
        """Borrow a connection, waiting at most ``acquire_timeout`` seconds."""
        if self._serial is not None:
            try:
                async with asyncio.timeout(self.settings.acquire_timeout):
                    await self._serial.acquire()
            except TimeoutError:
                raise self._timeout() from None
        idle = self._idle
        while idle:
            conn, since = idle.pop()
            if self._fresh(conn, since):
                self._in_use += 1
                return conn
            # too old or idle too long: close it, SQLAlchemy's pool opens a new one
            await self._give_back(conn, discard=True)
        self._waiting += 1
        try:
            fairy = await greenlet_spawn(self._pool.connect)
        except sa_exc.TimeoutError as exc:
            self._unserial()
            raise self._timeout() from exc
        except BaseException as exc:
            self._unserial()
            if isinstance(exc, Exception):
                if self.shard:
                    raise ShardError(
                        f"shard {self.name!r} is unavailable: {exc}", shard=self.name
                    ) from exc
                raise self.translate(exc, "cannot connect") from exc
            raise
        finally:
            self._waiting -= 1
        if not self.ready:
            self._initialised()
        conn = Connection(self, fairy)
        self._in_use += 1
        if not fairy.info.get(_READY):
            try:
                await self.driver.setup(conn.raw)
            except BaseException:
                await self.release(conn, discard=True)
                raise
            fairy.info[_READY] = True
            fairy.info[_BORN] = time.monotonic()
        return conn

    async def autoinc(self, conn: Connection) -> tuple[int, int]:
        """MySQL/MariaDB: ``innodb_autoinc_lock_mode`` and ``auto_increment_increment``
        (read once)."""
        if self._autoinc is None:
            row = await conn.fetch_one(
                "SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment", ()
            )
            assert row is not None
            self._autoinc = (int(row[0]), int(row[1]))
        return self._autoinc

    def _fresh(self, conn: Connection, since: float) -> bool:
        now = time.monotonic()
        s = self.settings
        if s.idle_timeout is not None and now - since > s.idle_timeout:
            return False
        born = conn.fairy.info.get(_BORN, now)
        return s.max_lifetime is None or now - born <= s.max_lifetime

    async def release(self, conn: Connection, *, discard: bool = False) -> None:
        """Return a connection; ``discard`` closes it instead (its state is unknown).

        Connections stay checked out of SQLAlchemy's pool between operations
        (a checkout costs two greenlet switches); one goes back to it only when
        a caller is waiting there, or to be replaced.
        """
        self._in_use -= 1
        if conn._take():
            # statements left behind mean an operation was cut short: the state is unknown
            discard = True
        conn._holding = False
        try:
            if discard or self._waiting or self._closing:
                await self._give_back(conn, discard=discard)
            else:
                self._idle.append((conn, time.monotonic()))
        finally:
            self._unserial()

    async def _give_back(self, conn: Connection, *, discard: bool) -> None:
        try:
            await greenlet_spawn(conn.fairy.invalidate if discard else conn.fairy.close)
        except Exception:
            log.warning("error returning a connection of %s", self.name, exc_info=True)

    async def _return_idle(self) -> None:
        """Hand every idle connection back to SQLAlchemy's pool."""
        while self._idle:
            conn, _ = self._idle.pop()
            await self._give_back(conn, discard=False)

    def _unserial(self) -> None:
        if self._serial is not None and self._serial.locked():
            self._serial.release()

    def _timeout(self) -> PoolTimeout:
        return PoolTimeout(
            f"no connection to {self.name!r} became free within "
            f"{self.settings.acquire_timeout}s (max_connections="
            f"{self.settings.max_connections}); raise max_connections or acquire_timeout, "
            "or hold connections for less time"
        )

    def translate(self, exc: BaseException, what: str = "error") -> DbNexusError:
        """The dbnexus error for any exception raised while talking to this database."""
        if isinstance(exc, DbNexusError):
            return exc
        err = self.driver.translate(exc)
        if err is not None:
            return err
        return DatabaseError(f"{what} on database {self.name!r}: {exc!r}", exc)

    async def run_sync(self, fn: Callable[[sa.Connection], Any]) -> Any:
        """Run ``fn(sync_connection)`` in a transaction (DDL, reflection)."""
        # idle connections are checked out of SQLAlchemy's pool: let it have them
        await self._return_idle()
        try:
            async with self.engine.begin() as conn:
                result = await conn.run_sync(fn)
        except DbNexusError:
            raise
        except Exception as exc:
            # the database's failures are translated; the caller's own exceptions pass
            from_db = isinstance(exc, sa_exc.SQLAlchemyError | OSError) or (
                self.driver.translate(exc) is not None
            )
            if not from_db:
                raise
            if self.shard and not isinstance(exc, sa_exc.IntegrityError):
                raise ShardError(f"shard {self.name!r} failed: {exc}", shard=self.name) from exc
            raise DatabaseError(f"operation on {self.name!r} failed: {exc}", exc) from exc
        if not self.ready:
            self._initialised()
        return result

    async def close(self) -> None:
        self._closing = True
        await self._return_idle()
        await self.engine.dispose()
        self._closing = False


def _install_pool_events(engine: AsyncEngine, settings: PoolSettings, *, wal: bool) -> None:
    pool = engine.sync_engine.pool
    idle = settings.idle_timeout

    if wal:

        @event.listens_for(engine.sync_engine, "connect")
        def _wal(dbapi_conn: Any, record: Any) -> None:
            # readers do not block the writer (and vice versa) in WAL mode
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    if idle is None:
        return

    @event.listens_for(pool, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKIN] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        last = record.info.get(_CHECKIN)
        if last is not None and time.monotonic() - last > idle:
            # the pool replaces a connection whose checkout raises DisconnectionError
            raise sa_exc.DisconnectionError("idle for longer than idle_timeout")


def _max_params(dialect: sa.Dialect) -> int:
    if dialect.name == "sqlite":
        import sqlite3

        return 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
    if dialect.name == "postgresql":
        return 32767
    return 65535
