"""Pool settings and database URLs, validated up front.

Everything here raises :class:`~dbnexus.errors.ConfigError` with a message that
says what is wrong, before any connection is attempted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from .backends import DEFAULT_DRIVERS, require_driver
from .errors import ConfigError

__all__ = ["PoolSettings", "parse_url"]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool settings of one database (seconds for times; None = no limit).

    Args:
        min_connections: connections opened at start-up and kept warm.
        max_connections: most connections open at once; more callers wait.
        connect_timeout: how long opening one connection may take.
        acquire_timeout: how long an operation waits for a free connection before
            :class:`~dbnexus.errors.PoolTimeout`.
        idle_timeout: a connection idle for longer is replaced on its next use.
        max_lifetime: a connection older than this is replaced on its next use.
    """

    min_connections: int = 1
    max_connections: int = 10
    connect_timeout: float = 10.0
    acquire_timeout: float = 30.0
    idle_timeout: float | None = 300.0
    max_lifetime: float | None = 3600.0

    def __post_init__(self) -> None:
        for name in ("min_connections", "max_connections"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {v!r}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {self.max_connections}")
        if self.min_connections > self.max_connections:
            raise ConfigError(
                f"min_connections ({self.min_connections}) is larger than "
                f"max_connections ({self.max_connections})"
            )
        for name in ("connect_timeout", "acquire_timeout", "idle_timeout", "max_lifetime"):
            v = getattr(self, name)
            if v is None and name in ("idle_timeout", "max_lifetime"):
                continue
            if (
                not isinstance(v, int | float)
                or isinstance(v, bool)
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ConfigError(f"{name} must be a positive number of seconds, got {v!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PoolSettings:
        """Settings from a mapping (a TOML table, say); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown pool settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def from_env(cls, prefix: str = "DBNEXUS_") -> PoolSettings:
        """Settings from environment variables such as ``DBNEXUS_MAX_CONNECTIONS``."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.name.endswith("connections") else float(raw)
            except ValueError:
                raise ConfigError(f"{prefix}{f.name.upper()}={raw!r} is not a number") from None
        return cls(**values)


def parse_url(url: str | URL) -> URL:
    """Parse a database URL and pick dbnexus's async driver for its scheme.

    ``postgresql://``, ``mysql://``, ``sqlite:///`` (and their ``+driver`` forms
    with asyncpg, aiomysql, aiosqlite) are accepted. The driver must be
    installed: a missing one raises MissingDependencyError naming the extra.
    """
    if not isinstance(url, str | URL):
        raise ConfigError(f"database URL must be a string, got {type(url).__name__}")
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"malformed database URL {str(url)!r}: {exc}") from None
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name() if "+" in parsed.drivername else None
    default = DEFAULT_DRIVERS.get(backend)
    if default is None:
        raise ConfigError(
            f"unknown database {backend!r} in URL; use sqlite+aiosqlite://, "
            "postgresql+asyncpg:// or mysql+aiomysql://"
        )
    if driver is None:
        driver = default
    if driver != default:
        raise ConfigError(
            f"driver {driver!r} is not supported for {backend}; use {backend}+{default}://"
        )
    if backend in ("postgresql", "postgres"):
        backend = "postgresql"
    if backend == "mariadb":
        backend = "mysql"
    require_driver(driver)
    if backend != "sqlite" and not parsed.host:
        raise ConfigError(f"database URL {parsed.render_as_string()!r} has no host")
    return parsed.set(drivername=f"{backend}+{driver}")
