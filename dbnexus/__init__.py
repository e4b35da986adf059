"""dbnexus: async data access for web backends.

One :class:`DbPool` per application; one :class:`DbSession` per request, bound to
the user making it. Every operation is checked against a Casbin policy, served
from a TTL cache when it can be, written to an audit log and counted in
Prometheus metrics. Importing this package does no I/O and imports no driver.
"""

from .audit import AuditRecord
from .config import PoolSettings
from .crud import crud
from .entity import entity, entity_info, field, index, metadata, related
from .errors import (
    ConfigError,
    DatabaseError,
    DbNexusError,
    IntegrityError,
    MissingDependencyError,
    NotFound,
    PermissionDenied,
    PoolTimeout,
    ShardError,
    TransactionError,
    ValidationError,
)
from .pagination import Page
from .permissions import Permissions
from .pool import DbPool
from .query import Q
from .session import DbSession
from .sharding import ShardManager
from .signals import DatabaseEvent, SignalConfig

__version__ = "0.1.0"

__all__ = [
    "AuditRecord",
    "ConfigError",
    "DatabaseError",
    "DatabaseEvent",
    "DbNexusError",
    "DbPool",
    "DbSession",
    "IntegrityError",
    "MissingDependencyError",
    "NotFound",
    "Page",
    "PermissionDenied",
    "Permissions",
    "PoolSettings",
    "PoolTimeout",
    "Q",
    "ShardError",
    "ShardManager",
    "SignalConfig",
    "TransactionError",
    "ValidationError",
    "__version__",
    "crud",
    "entity",
    "entity_info",
    "field",
    "index",
    "metadata",
    "related",
]
