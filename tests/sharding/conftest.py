"""Fixtures for the sharding suite: shard layouts on real databases and pools over them.

A *layout* is a set of shard URLs on one or more backends:

- ``sqlite4``: four SQLite files;
- ``postgres2``: databases ``dbnexus_shard_a`` and ``dbnexus_shard_b`` on PostgreSQL;
- ``mysql2``: the same two databases on MariaDB/MySQL;
- ``mixed``: one SQLite file and ``dbnexus_shard_a`` on PostgreSQL.

Each layout also has a *spare* URL (a shard that rebalancing tests add) and a
*reference* URL: one database of the same kind where a test can keep all rows
in one place, to compare scatter-gather results with. The shard databases are
created once per run (``CREATE DATABASE`` if missing) and left existing;
every test drops its tables and deletes its audit rows on every database of its
layout. The audit table itself stays (as in the ``test`` database): another run
may be using it at the same moment. Server reachability follows ``backend_url``
of ``tests/conftest.py``: an unreachable server skips its layouts, except under
``CI``, where it fails them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import dbnexus
from dbnexus.audit import audit_table

SHARD_DATABASES = ("dbnexus_shard_a", "dbnexus_shard_b", "dbnexus_shard_c")

# layout -> the backends it needs
LAYOUTS = {
    "sqlite4": ("sqlite",),
    "postgres2": ("postgres",),
    "mysql2": ("mysql",),
    "mixed": ("sqlite", "postgres"),
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Shard URLs of one layout, plus a spare shard and a single reference database."""

    name: str
    urls: dict[str, str]
    spare: str
    reference: str

    @property
    def all_urls(self) -> list[str]:
        return [*self.urls.values(), self.spare, self.reference]

    def hash(self, **kwargs: Any) -> dbnexus.ShardManager:
        """A hash-sharded manager over the layout's shards."""
        return dbnexus.ShardManager.hash(self.urls, **kwargs)


def _root_conftest(config: pytest.Config) -> ModuleType:
    # tests/conftest.py is registered as a plugin under its path; its module is
    # not importable as "conftest" from here (this file has that name too)
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    module = config.pluginmanager.get_plugin(str(path))
    assert module is not None, f"{path} is not loaded"
    return module


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "layouts(*names): run only on these shard layouts (default: all of them)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``layout`` over the layouts whose backends are selected."""
    if "layout" in metafunc.fixturenames:
        selected = set(_root_conftest(metafunc.config)._selected())
        marker = metafunc.definition.get_closest_marker("layouts")
        wanted = marker.args if marker else tuple(LAYOUTS)
        names = [name for name in wanted if set(LAYOUTS[name]) <= selected]
        metafunc.parametrize("layout", names, indirect=True)


def _with_database(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


async def _create_databases(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for name in SHARD_DATABASES:
                if engine.dialect.name == "postgresql":
                    exists = sa.text("SELECT 1 FROM pg_database WHERE datname = :n")
                    if not await conn.scalar(exists, {"n": name}):
                        try:
                            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                        except sa.exc.DBAPIError:
                            # fine if another run created it in between
                            if not await conn.scalar(exists, {"n": name}):
                                raise
                else:
                    await conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
    finally:
        await engine.dispose()


def _server_databases(
    backend: str, pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    base = _root_conftest(pytestconfig).backend_url(backend, tmp_path_factory)
    asyncio.run(_create_databases(base))
    urls = [_with_database(base, name) for name in SHARD_DATABASES]
    return base, urls


@pytest.fixture(scope="session")
def postgres_databases(pytestconfig, tmp_path_factory):
    """(the test database URL, URLs of the shard databases) on PostgreSQL."""
    return _server_databases("postgres", pytestconfig, tmp_path_factory)


@pytest.fixture(scope="session")
def mysql_databases(pytestconfig, tmp_path_factory):
    """(the test database URL, URLs of the shard databases) on MariaDB/MySQL."""
    return _server_databases("mysql", pytestconfig, tmp_path_factory)


@pytest.fixture
def sqlite_files(tmp_path: Path) -> Callable[[str], str]:
    """``sqlite_files("s0")``: the URL of a fresh SQLite file for this test."""
    return lambda name: f"sqlite+aiosqlite:///{tmp_path / name}.db"


@pytest.fixture
def layout(request: pytest.FixtureRequest, sqlite_files: Callable[[str], str]) -> Layout:
    """The shard layout under test (parametrised by ``pytest_generate_tests``)."""
    name = request.param
    if name == "sqlite4":
        return Layout(
            name,
            {f"s{i}": sqlite_files(f"s{i}") for i in range(4)},
            sqlite_files("spare"),
            sqlite_files("reference"),
        )
    if name == "mixed":
        _, pg = request.getfixturevalue("postgres_databases")
        return Layout(
            name, {"lite": sqlite_files("lite"), "pg": pg[0]}, pg[1], sqlite_files("reference")
        )
    base, urls = request.getfixturevalue(
        "postgres_databases" if name == "postgres2" else "mysql_databases"
    )
    return Layout(name, {"a": urls[0], "b": urls[1]}, urls[2], base)


def _cleaner(entities: list[type]) -> Callable[[sa.Connection], None]:
    """Drops the entities' tables and deletes their audit rows on one connection."""
    tables = [dbnexus.entity_info(e).table for e in entities]
    names = [t.name for t in tables]

    def clean(conn: sa.Connection) -> None:
        for t in reversed(tables):
            t.drop(conn, checkfirst=True)
        if names and sa.inspect(conn).has_table(audit_table.name):
            conn.execute(audit_table.delete().where(audit_table.c.table_name.in_(names)))

    return clean


async def _clean_url(url: str, clean: Callable[[sa.Connection], None]) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(clean)
    finally:
        await engine.dispose()


async def cleanup(
    layout: Layout, pools: list[dbnexus.DbPool], entities: list[type], *, reference: bool
) -> None:
    """Drop the entities' tables and delete their audit rows wherever a test may have
    made them: through the pools' open databases where they can, else by URL."""
    clean = _cleaner(entities)
    known = {sa.make_url(u): u for u in layout.all_urls}
    done: set[str] = set()
    for pool in pools:
        # only real shards (a test may add one that is down)
        dbs = [db for db in pool.databases.values() if db.engine.url in known]
        await asyncio.gather(*[db.run_sync(clean) for db in dbs])
        done.update(known[db.engine.url] for db in dbs)
        await pool.close()
    rest = [*layout.urls.values(), layout.spare] + ([layout.reference] if reference else [])
    await asyncio.gather(*[_clean_url(u, clean) for u in dict.fromkeys(rest) if u not in done])


@pytest.fixture
async def make_sharded(layout: Layout) -> AsyncIterator[Callable[..., Any]]:
    """``await make_sharded(Order, ..., shards=manager)`` (or ``url=``): a migrated pool.

    Without ``shards=`` or ``url=`` the pool is hash-sharded over the layout.
    Permissions default to ``allow_all()``; ``migrate=False`` skips migrating.
    At teardown every pool is closed, and on every database of the layout the
    entities' tables are dropped and their audit rows deleted.
    """
    pools: list[dbnexus.DbPool] = []
    entities: list[type] = []
    reference = False

    async def make(*classes: type, migrate: bool = True, **kwargs: Any) -> dbnexus.DbPool:
        nonlocal reference
        kwargs.setdefault("permissions", dbnexus.Permissions.allow_all())
        if "url" in kwargs:
            reference = reference or kwargs["url"] == layout.reference
        else:
            kwargs.setdefault("shards", layout.hash())
        entities.extend(c for c in classes if c not in entities)
        pool = await dbnexus.DbPool.connect(**kwargs)
        pools.append(pool)
        if migrate:
            await pool.migrate(entities=classes)
        return pool

    yield make
    await cleanup(layout, pools, entities, reference=reference)
    for e in entities:
        table = dbnexus.entity_info(e).table
        if dbnexus.metadata.tables.get(table.name) is table:
            dbnexus.metadata.remove(table)
