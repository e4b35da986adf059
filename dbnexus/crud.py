"""``@crud``: CRUD classmethods on an entity class that call into a DbSession.

Each method is a thin forwarder (``User.find_by_id(s, 1)`` is
``s.find_by_id(User, 1)``); permission checks, cache, audit and metrics all
happen in the session. A method the class already defines is never replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .entity import entity_info

if TYPE_CHECKING:
    from .query import Q
    from .session import DbSession

__all__ = ["crud"]

T = TypeVar("T")


async def _find_by_id(cls: type[T], session: DbSession, id: Any, **kw: Any) -> T | None:
    """The row with this primary key, or None."""
    return await session.find_by_id(cls, id, **kw)


async def _find_all(
    cls: type[T],
    session: DbSession,
    *,
    where: Mapping[str, Any] | Q | None = None,
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
    offset: int | None = None,
    **kw: Any,
) -> list[T]:
    """Rows matching ``where`` in ``order_by`` order, windowed by ``limit``/``offset``."""
    return await session.find_all(
        cls, where=where, order_by=order_by, limit=limit, offset=offset, **kw
    )


async def _count(
    cls: type, session: DbSession, *, where: Mapping[str, Any] | Q | None = None, **kw: Any
) -> int:
    """How many rows match ``where``."""
    return await session.count(cls, where=where, **kw)


async def _insert(cls: type[T], session: DbSession, obj: T, **kw: Any) -> T:
    """Insert ``obj``; returns it with its generated primary key."""
    _check_type(cls, obj)
    return await session.insert(obj, **kw)


async def _insert_batch(cls: type[T], session: DbSession, objs: Sequence[T], **kw: Any) -> list[T]:
    """Insert many objects in one round trip."""
    _check_types(cls, objs)
    return await session.insert_batch(objs, **kw)


async def _update(cls: type[T], session: DbSession, obj: T, **kw: Any) -> T:
    """Write ``obj`` back; NotFound when its row is gone."""
    _check_type(cls, obj)
    return await session.update(obj, **kw)


async def _delete(cls: type, session: DbSession, id: Any, **kw: Any) -> None:
    """Delete the row with this primary key; NotFound when absent."""
    await session.delete(cls, id, **kw)


async def _find_page(cls: type[T], session: DbSession, **kw: Any) -> Any:
    """One page of a keyset walk: ``Page(items, next_cursor)``."""
    return await session.find_page(cls, **kw)


async def _update_batch(cls: type[T], session: DbSession, objs: Sequence[T], **kw: Any) -> list[T]:
    """Update many objects in one transaction."""
    _check_types(cls, objs)
    return await session.update_batch(objs, **kw)


async def _update_where(
    cls: type,
    session: DbSession,
    where: Mapping[str, Any] | Q,
    values: Mapping[str, Any],
    **kw: Any,
) -> int:
    """Set ``values`` on every matching row; returns the row count."""
    return await session.update_where(cls, where, values, **kw)


async def _delete_where(
    cls: type, session: DbSession, where: Mapping[str, Any] | Q, **kw: Any
) -> int:
    """Delete every matching row; returns the row count."""
    return await session.delete_where(cls, where, **kw)


async def _restore(cls: type[T], session: DbSession, id: Any, **kw: Any) -> T:
    """Bring back a soft-deleted row."""
    return await session.restore(cls, id, **kw)


async def _purge(cls: type, session: DbSession, id: Any, **kw: Any) -> None:
    """Remove a soft-deleted entity's row for good."""
    await session.purge(cls, id, **kw)


def _check_types(cls: type, objs: Sequence[Any]) -> None:
    if set(map(type, objs)) - {cls}:  # one C pass when every object is exactly a cls
        for obj in objs:
            _check_type(cls, obj)


def _check_type(cls: type, obj: Any) -> None:
    if not isinstance(obj, cls):
        from .errors import ValidationError

        raise ValidationError(f"expected a {cls.__name__} instance, got {type(obj).__name__}")


_METHODS: dict[str, Any] = {
    "find_by_id": _find_by_id,
    "find_all": _find_all,
    "count": _count,
    "insert": _insert,
    "insert_batch": _insert_batch,
    "update": _update,
    "delete": _delete,
    "find_page": _find_page,
    "update_batch": _update_batch,
    "update_where": _update_where,
    "delete_where": _delete_where,
    "restore": _restore,
    "purge": _purge,
}


def crud(cls: type[T]) -> type[T]:
    """Give an ``@entity`` class CRUD classmethods taking a session first.

    ``find_by_id, find_all, find_page, count, insert, insert_batch, update,
    update_batch, update_where, delete, delete_where`` and, for soft-delete
    entities, ``restore`` and ``purge``.
    Apply it above ``@entity``::

        @crud
        @entity(table="users")
        class User: ...
    """
    entity_info(cls)  # fails early, with a clear message, on a non-entity
    for name, fn in _METHODS.items():
        if name not in cls.__dict__:
            setattr(cls, name, classmethod(fn))
    return cls
