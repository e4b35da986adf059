"""Shared fixtures: one backend suite, run once per database.

``db_url`` is parametrised over sqlite, postgres and mysql. PostgreSQL and MySQL
URLs come from ``DBNEXUS_TEST_POSTGRES_URL`` / ``DBNEXUS_TEST_MYSQL_URL``
(default: the local servers). An unreachable server skips its tests with the
reason, except under ``CI``, where it fails them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

POSTGRES_URL = os.environ.get(
    "DBNEXUS_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("DBNEXUS_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgres", "mysql")

_reachable: dict[str, str | None] = {}


def _selected() -> tuple[str, ...]:
    only = os.environ.get("DBNEXUS_TEST_BACKENDS")
    if not only:
        return BACKENDS
    chosen = tuple(b.strip() for b in only.split(",") if b.strip())
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"DBNEXUS_TEST_BACKENDS names unknown backends {unknown}")
    return chosen


async def _probe(url: str) -> str | None:
    """None if the server answers, else the reason it does not."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        url, connect_args={"timeout": 5} if "asyncpg" in url else {"connect_timeout": 5}
    )
    try:
        async with engine.connect():
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()


def backend_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL for a backend, or skip/fail when its server cannot be reached."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        return f"sqlite+aiosqlite:///{path}"
    url = POSTGRES_URL if backend == "postgres" else MYSQL_URL
    if backend not in _reachable:
        _reachable[backend] = asyncio.run(_probe(url))
    reason = _reachable[backend]
    if reason is not None:
        msg = f"{backend} server at {url} is unreachable ({reason})"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; under CI every backend must run")
        pytest.skip(msg)
    return url


@pytest.fixture(params=_selected())
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: ``sqlite``, ``postgres`` or ``mysql``."""
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database URL for the backend under test (fresh SQLite file per test)."""
    return backend_url(backend, tmp_path_factory)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names for tables and values, so tests never collide."""
    token = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}_{token}"


@pytest.fixture
async def make_pool(db_url: str) -> AsyncIterator[Callable[..., object]]:
    """``await make_pool(User, Post, **connect_kwargs)``: a migrated pool on the backend.

    Permissions default to ``Permissions.allow_all()``. At teardown the entity
    tables are dropped, their audit rows deleted, the pool closed and the tables
    removed from ``dbnexus.metadata``, so the database is left as it was found.
    """
    import sqlalchemy as sa

    import dbnexus
    from dbnexus.audit import audit_table

    made: list[tuple[dbnexus.DbPool, tuple[type, ...]]] = []

    async def make(*entities: type, **kwargs: object) -> dbnexus.DbPool:
        kwargs.setdefault("permissions", dbnexus.Permissions.allow_all())
        pool = await dbnexus.DbPool.connect(kwargs.pop("url", db_url), **kwargs)
        made.append((pool, entities))
        await pool.migrate(entities=entities)
        return pool

    yield make
    for pool, entities in made:
        tables = [dbnexus.entity_info(e).table for e in entities]
        names = [t.name for t in tables]

        def cleanup(
            conn: sa.Connection, tables: list[sa.Table] = tables, names: list[str] = names
        ) -> None:
            for t in reversed(tables):
                t.drop(conn, checkfirst=True)
            if names:
                conn.execute(audit_table.delete().where(audit_table.c.table_name.in_(names)))

        for db in pool.databases.values():
            await db.run_sync(cleanup)
            # the cleanup may have reopened a connection on a pool the test closed
            await db.close()
        await pool.close()
        for t in tables:
            if t.name in dbnexus.metadata.tables:
                dbnexus.metadata.remove(t)
