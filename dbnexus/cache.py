"""The in-process TTL cache of rows and query results, and its invalidation.

Entries are keyed by table. A write to a table invalidates, before it returns:
the cached row of the written primary key, and every cached query result of
the table (queries are keyed with the table's version, which the write bumps).

A read that raced a write must not put a stale row back: readers take a
:meth:`ResultCache.token` before their SQL and :meth:`ResultCache.put` only
stores if no write on the table began or ended since.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from cachetools import TTLCache

__all__ = ["CacheStats", "ResultCache"]


class CacheStats(dict[str, int]):
    """``hits``, ``misses``, ``size`` (and ``maxsize``) of a cache."""


class _TableState:
    __slots__ = ("rowgen", "version", "writers")

    def __init__(self) -> None:
        self.version = 0  # bumped by every write: keys query results
        self.rowgen = 0  # bumped by writes that may touch any row: keys rows
        self.writers = 0


class ResultCache:
    """A TTL cache shared by the sessions of one pool; ``ttl=0`` turns it off."""

    def __init__(self, ttl: float, maxsize: int) -> None:
        self.enabled = ttl > 0 and maxsize > 0
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: TTLCache[Hashable, Any] | None = (
            TTLCache(maxsize=maxsize, ttl=ttl) if self.enabled else None
        )
        self._tables: dict[Hashable, _TableState] = {}
        self.hits = 0
        self.misses = 0

    def _state(self, table: Hashable) -> _TableState:
        st = self._tables.get(table)
        if st is None:
            st = self._tables[table] = _TableState()
        return st

    def _count(self, value: Any) -> Any:
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def get_row(self, table: Hashable, pk: Hashable) -> Any:
        """The cached row of ``pk`` or None; counts a hit or a miss."""
        st = self._tables.get(table)
        try:
            # one TTLCache lookup (get() would make two)
            value = self._data[(table, st.rowgen if st else 0, pk)]  # type: ignore[index]
        except KeyError:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def get_query(self, table: Hashable, key: Hashable) -> Any:
        """The cached result of a query on ``table`` or None; counts a hit or a miss."""
        st = self._tables.get(table)
        return self._count(self._data.get((table, "q", st.version if st else 0, key)))  # type: ignore[union-attr]

    def token(self, table: Hashable) -> tuple[int, int] | None:
        """A token to pass to ``put_*``; None when nothing may be stored now."""
        if self._data is None:
            return None
        st = self._state(table)
        return None if st.writers else (st.version, st.rowgen)

    def _valid(self, table: Hashable, token: tuple[int, int] | None) -> _TableState | None:
        if self._data is None or token is None:
            return None
        st = self._tables.get(table)
        if st is None or st.writers or st.version != token[0]:
            return None
        return st

    def put_row(
        self, table: Hashable, pk: Hashable, row: Any, token: tuple[int, int] | None
    ) -> None:
        """Store a row unless a write touched ``table`` since ``token`` was taken."""
        st = self._valid(table, token)
        if st is not None and row is not None:
            self._data[(table, st.rowgen, pk)] = row  # type: ignore[index]

    def put_query(
        self, table: Hashable, key: Hashable, result: Any, token: tuple[int, int] | None
    ) -> None:
        """Store a query result unless a write touched ``table`` since ``token``."""
        st = self._valid(table, token)
        if st is not None and result is not None:
            self._data[(table, "q", st.version, key)] = result  # type: ignore[index]

    def begin_write(self, table: Hashable) -> None:
        """A write on ``table`` is starting: stop storing reads of it."""
        st = self._state(table)
        st.writers += 1
        st.version += 1

    def end_write(self, table: Hashable, pks: list[Hashable] | None = None) -> None:
        """A write on ``table`` finished (committed or not): drop what may be stale.

        ``pks`` are the primary keys written; None means any row may have changed.
        """
        st = self._state(table)
        st.writers -= 1
        st.version += 1
        data = self._data
        if data is None:
            return
        if pks is None:
            st.rowgen += 1
        else:
            for pk in pks:
                data.pop((table, st.rowgen, pk), None)

    def invalidate(self, table: Hashable) -> None:
        """Forget everything cached for ``table`` (rows and query results)."""
        self.begin_write(table)
        self.end_write(table, None)

    def clear(self) -> None:
        """Drop every entry."""
        if self._data is not None:
            self._data.clear()
        for st in self._tables.values():
            st.version += 1
            st.rowgen += 1

    def stats(self) -> CacheStats:
        """Hits, misses and current size."""
        size = len(self._data) if self._data is not None else 0
        return CacheStats(hits=self.hits, misses=self.misses, size=size, maxsize=self.maxsize)

    def __len__(self) -> int:
        return len(self._data) if self._data is not None else 0
