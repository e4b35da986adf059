"""Entities, policies and metric readers shared by the ``test_core_*`` backend suites.

This module holds no tests. Entities are built by factories taking the table
name, so every test declares its own table (``unique("users")``) and the
``make_pool`` fixture can drop it afterwards.
"""

import datetime as dt
import decimal
import uuid
from typing import Any

from dbnexus import DbPool, crud, entity, field
from dbnexus.permissions import RBAC_DOMAINS_MODEL, RBAC_MODEL  # noqa: F401 (re-exported to the tests)

DOMAIN_MODEL = RBAC_DOMAINS_MODEL

ACTIONS = ("read", "insert", "update", "delete")


def admin_policy(table: str, *extra: str) -> str:
    """Policy text giving ``admin`` every action on ``table``, plus ``extra`` lines."""
    lines = [f"p, admin, {table}, {a}" for a in ACTIONS]
    return "\n".join([*lines, *extra])


def make_user(table: str) -> type:
    @crud
    @entity(table=table)
    class User:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=100)
        email: str = field(max_length=200, unique=True)
        age: int | None = None

    return User


def make_everything(table: str) -> type:
    """An entity with one column of every supported type, nullable and not."""

    @crud
    @entity(table=table)
    class Everything:
        id: int | None = field(primary_key=True, default=None)
        i: int
        s: str
        f: float
        b: bool
        ts: dt.datetime
        day: dt.date
        clock: dt.time
        amount: decimal.Decimal
        key: uuid.UUID
        doc: dict[str, Any]
        items: list[Any]
        maybe_i: int | None = None
        maybe_s: str | None = None
        maybe_ts: dt.datetime | None = None
        maybe_doc: dict[str, Any] | None = None

    return Everything


def users(User: type, n: int, prefix: str = "u") -> list[Any]:
    """``n`` distinct users: names ``{prefix}0..``, ages 20, 21, ..."""
    return [
        User(name=f"{prefix}{k}", email=f"{prefix}{k}@example.com", age=20 + k) for k in range(n)
    ]


def sample(pool: DbPool, name: str, **labels: str) -> float:
    """The value of one sample of the pool's registry (0.0 when it was never set)."""
    value = pool.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def sample_sum(pool: DbPool, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels``."""
    total = 0.0
    for metric in pool.metrics.registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
