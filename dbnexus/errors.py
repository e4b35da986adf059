"""The dbnexus error tree.

Every error dbnexus raises derives from :class:`DbNexusError`::

    DbNexusError
    ├── ConfigError                 bad settings, URL or missing optional driver
    │   └── MissingDependencyError  (also ImportError) names the extra to install
    ├── ValidationError             bad input (also ValueError); nothing was sent
    ├── PermissionDenied            the policy refused (user, table, action)
    ├── NotFound                    the row addressed by primary key is not there
    ├── TransactionError            begin twice, commit without begin, ...
    ├── ShardError                  routing failed or a shard is unreachable
    └── DatabaseError               the database or driver failed; ``.orig`` holds its error
        ├── IntegrityError          a constraint refused the write (unique, foreign key, ...)
        └── PoolTimeout             no connection became free within the timeout

Driver errors are translated in one place (``dbnexus.backends``); the original
exception is kept as ``__cause__`` and ``.orig``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "DbNexusError",
    "IntegrityError",
    "MissingDependencyError",
    "NotFound",
    "PermissionDenied",
    "PoolTimeout",
    "ShardError",
    "TransactionError",
    "ValidationError",
]


class DbNexusError(Exception):
    """Root of every error raised by dbnexus."""


class ConfigError(DbNexusError):
    """A setting, URL or declaration cannot be used as given."""


class MissingDependencyError(ConfigError, ImportError):
    """An optional driver is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"the {package!r} driver is not installed; install it with "
            f"pip install 'dbnexus[{extra}]'"
        )


class ValidationError(DbNexusError, ValueError):
    """Input was rejected before anything was sent to the database."""


class PermissionDenied(DbNexusError):
    """The permission policy refused an operation."""

    def __init__(
        self,
        user_id: str,
        table: str,
        action: str,
        domain: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.table = table
        self.action = action
        self.domain = domain
        where = f" in domain {domain!r}" if domain is not None else ""
        msg = f"user {user_id!r}{where} may not {action} on table {table!r}"
        if reason:
            msg = f"{msg}: {reason}"
        super().__init__(msg)


class NotFound(DbNexusError):
    """No row has the given primary key."""

    def __init__(self, table: str, record_id: object) -> None:
        self.table = table
        self.record_id = record_id
        super().__init__(f"no row in {table!r} with primary key {record_id!r}")


class TransactionError(DbNexusError):
    """A transaction method was used in the wrong state."""


class ShardError(DbNexusError):
    """An operation could not be routed, or its shard failed."""

    def __init__(self, message: str, shard: str | None = None) -> None:
        self.shard = shard
        super().__init__(message)


class DatabaseError(DbNexusError):
    """The database or its driver reported an error; ``orig`` is the driver's exception."""

    def __init__(self, message: str, orig: BaseException | None = None) -> None:
        self.orig = orig
        super().__init__(message)


class IntegrityError(DatabaseError):
    """A constraint (unique, not null, foreign key) refused a write."""


class PoolTimeout(DatabaseError):
    """Every connection stayed busy for longer than the acquire timeout."""
