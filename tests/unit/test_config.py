"""Settings, URLs and optional drivers, checked before any connection is attempted."""

import dataclasses
import sys

import pytest

from dbnexus import (
    ConfigError,
    DbPool,
    MissingDependencyError,
    Permissions,
    PoolSettings,
)
from dbnexus.config import parse_url

# nothing listens here: reaching the network would fail differently (DatabaseError)
UNREACHABLE = "postgresql+asyncpg://root@127.0.0.1:1/test"


def test_pool_settings_defaults_and_frozenness():
    s = PoolSettings()
    assert (s.min_connections, s.max_connections) == (1, 10)
    assert s.acquire_timeout > 0 and s.connect_timeout > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_connections = 3  # type: ignore[misc]
    relaxed = PoolSettings(
        min_connections=0,
        max_connections=1,
        idle_timeout=None,
        max_lifetime=None,
        acquire_timeout=0.01,
    )
    assert relaxed.idle_timeout is None and relaxed.max_lifetime is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"max_connections": -3},
        {"max_connections": 2.0},
        {"max_connections": "10"},
        {"max_connections": True},
        {"min_connections": -1},
        {"min_connections": 11},
        {"min_connections": 3, "max_connections": 2},
        {"connect_timeout": 0},
        {"connect_timeout": None},
        {"acquire_timeout": -0.5},
        {"acquire_timeout": float("nan")},
        {"acquire_timeout": float("inf")},
        {"acquire_timeout": "30"},
        {"idle_timeout": 0},
        {"idle_timeout": -1},
        {"max_lifetime": False},
    ],
)
def test_bad_pool_settings(kwargs):
    with pytest.raises(ConfigError) as err:
        PoolSettings(**kwargs)
    assert next(iter(kwargs)) in str(err.value) or "max_connections" in str(err.value)


def test_pool_settings_from_mapping():
    s = PoolSettings.from_mapping({"max_connections": 3, "acquire_timeout": 1.5})
    assert (s.max_connections, s.acquire_timeout) == (3, 1.5)
    with pytest.raises(ConfigError, match="max_conections"):
        PoolSettings.from_mapping({"max_conections": 3})
    with pytest.raises(ConfigError):
        PoolSettings.from_mapping({"max_connections": 0})


def test_pool_settings_from_env(monkeypatch):
    monkeypatch.setenv("APP_MAX_CONNECTIONS", "4")
    monkeypatch.setenv("APP_ACQUIRE_TIMEOUT", "2.5")
    s = PoolSettings.from_env("APP_")
    assert (s.max_connections, s.acquire_timeout) == (4, 2.5)
    assert s.min_connections == PoolSettings().min_connections
    monkeypatch.setenv("APP_MAX_CONNECTIONS", "many")
    with pytest.raises(ConfigError, match="APP_MAX_CONNECTIONS"):
        PoolSettings.from_env("APP_")
    monkeypatch.setenv("APP_MAX_CONNECTIONS", "0")
    with pytest.raises(ConfigError):
        PoolSettings.from_env("APP_")


@pytest.mark.parametrize(
    ("url", "drivername"),
    [
        ("postgresql://u@db.example/app", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u:pw@db.example:5433/app", "postgresql+asyncpg"),
        ("postgres://u@db.example/app", "postgresql+asyncpg"),
        ("mysql://u@db.example/app", "mysql+aiomysql"),
        ("mysql+aiomysql://u@db.example/app", "mysql+aiomysql"),
        ("mariadb://u@db.example/app", "mysql+aiomysql"),
        ("sqlite:///app.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite"),
    ],
)
def test_parse_url_picks_the_async_driver(url, drivername):
    pytest.importorskip(drivername.partition("+")[2])  # each tox env installs one driver
    parsed = parse_url(url)
    assert parsed.drivername == drivername


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "://nothing",
        "oracle://u@db.example/app",
        "mssql+aioodbc://u@db.example/app",
        "postgresql+psycopg2://u@db.example/app",
        "mysql+pymysql://u@db.example/app",
        "sqlite+pysqlite:///app.db",
        "postgresql:///app",  # no host
        "mysql+aiomysql:///app",
        "postgresql://u@db.example:notaport/app",
        42,
        None,
    ],
)
def test_bad_urls_raise_config_error(url):
    with pytest.raises(ConfigError):
        parse_url(url)


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("asyncpg", "postgresql://u@db.example/app", "postgres"),
        ("aiomysql", "mysql://u@db.example/app", "mysql"),
        ("aiosqlite", "sqlite:///app.db", "sqlite"),
    ],
)
def test_missing_driver_names_the_extra(monkeypatch, module, url, extra):
    monkeypatch.setitem(sys.modules, module, None)  # the driver is not installed
    with pytest.raises(MissingDependencyError) as err:
        parse_url(url)
    e = err.value
    assert isinstance(e, ConfigError) and isinstance(e, ImportError)
    assert (e.package, e.extra) == (module, extra)
    assert f"dbnexus[{extra}]" in str(e)


async def test_connect_with_a_missing_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingDependencyError, match=r"dbnexus\[postgres\]"):
        await DbPool.connect(UNREACHABLE, permissions=Permissions.allow_all())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"min_connections": 2, "max_connections": 1},
        {"acquire_timeout": 0},
        {"cache_ttl": -1},
        {"cache_ttl": "60"},
        {"cache_maxsize": -1},
        {"permissions": "allow everyone"},
    ],
)
async def test_connect_rejects_bad_arguments_before_connecting(kwargs):
    kwargs.setdefault("permissions", Permissions.allow_all())
    with pytest.raises(ConfigError):
        await DbPool.connect(UNREACHABLE, **kwargs)


async def test_connect_needs_a_url():
    with pytest.raises(ConfigError, match="URL"):
        await DbPool.connect(None, permissions=Permissions.allow_all())
    with pytest.raises(ConfigError):
        await DbPool.connect("oracle://u@db.example/app", permissions=Permissions.allow_all())


def test_permissions_construction_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Permissions.from_files(tmp_path / "missing.conf", tmp_path / "missing.csv")
    with pytest.raises(ConfigError):
        Permissions.from_text("this is not a casbin model")
    two_tokens = """
[request_definition]
r = sub, obj
[policy_definition]
p = sub, obj
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = r.sub == p.sub && r.obj == p.obj
"""
    with pytest.raises(ConfigError, match="3 tokens"):
        Permissions.from_text(two_tokens)
    model = two_tokens.replace("sub, obj\n", "sub, obj, act\n").replace(
        "r.obj == p.obj", "r.obj == p.obj && r.act == p.act"
    )
    Permissions.from_text(model, "p, alice, users, read")
    with pytest.raises(ConfigError, match="fields"):
        Permissions.from_text(model, "p, alice, users")
    with pytest.raises(ConfigError):
        Permissions(object())
