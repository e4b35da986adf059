"""The pool's view of its shards: opening them, routing, merging scatter-gather results.

:class:`~dbnexus.sharding.ShardManager` is pure configuration (names, URLs,
strategy). :class:`PoolShards` (``pool.shards``) binds one to the open
databases of a pool and adds what needs them: ``rebalance``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .config import PoolSettings
from .database import Database
from .sharding import ShardManager

if TYPE_CHECKING:
    from .pool import DbPool
    from .rebalance import RebalanceReport

__all__ = ["PoolShards", "merge_rows", "open_shards"]

log = logging.getLogger(__name__)


async def open_shards(
    manager: ShardManager, settings: PoolSettings, *, echo: bool = False
) -> dict[str, Database]:
    """Open every shard's database concurrently.

    A shard that cannot be reached is still opened (lazily): only the
    operations that need it fail, with a ShardError naming it.
    """
    opened = await asyncio.gather(
        *[
            Database.open(name, manager.urls[name], settings, echo=echo, shard=True)
            for name in manager.names
        ]
    )
    return dict(zip(manager.names, opened, strict=True))


class PoolShards:
    """``pool.shards``: the pool's ShardManager bound to its open databases."""

    def __init__(
        self, pool: DbPool, manager: ShardManager, settings: PoolSettings, *, echo: bool
    ) -> None:
        self._pool = pool
        self.manager = manager
        self._settings = settings
        self._echo = echo

    @property
    def names(self) -> tuple[str, ...]:
        """Shard names in declaration order."""
        return self.manager.names

    @property
    def sharded(self) -> bool:
        """True when the pool was opened with ``shards=``."""
        return self.manager.names != ("default",) or len(self._pool.databases) > 1

    def shard_for(self, entity_cls: type, key: Any) -> str:
        """The shard holding the ``entity_cls`` row whose shard-key value is ``key``."""
        return self.manager.shard_for(entity_cls, key)

    def shard_for_key(self, key: Any) -> str:
        """The shard a shard-key value routes to."""
        return self.manager.shard_for_key(key)

    async def rebalance(
        self,
        new_manager: ShardManager,
        *,
        entities: Sequence[type] | None = None,
        batch_size: int = 500,
        max_batches: int | None = None,
        progress: bool | None = None,
    ) -> RebalanceReport:
        """Move the rows whose shard changes under ``new_manager``; see :mod:`dbnexus.rebalance`."""
        from .rebalance import rebalance

        return await rebalance(
            self._pool,
            self,
            new_manager,
            entities=entities,
            batch_size=batch_size,
            max_batches=max_batches,
            progress=progress,
        )

    async def _open_missing(self, manager: ShardManager) -> dict[str, Database]:
        """Open the databases of shards that ``manager`` adds."""
        dbs = self._pool._dbs
        missing = [n for n in manager.names if n not in dbs]
        opened = await asyncio.gather(
            *[
                Database.open(n, manager.urls[n], self._settings, echo=self._echo, shard=True)
                for n in missing
            ]
        )
        return dict(zip(missing, opened, strict=True))

    def __repr__(self) -> str:
        return f"<PoolShards {self.manager!r}>"


def merge_rows(
    parts: Sequence[Sequence[tuple[Any, ...]]],
    order: Sequence[tuple[int, bool]],
    *,
    nulls_first: bool,
    text_key: Callable[[str], str] | None = None,
) -> list[tuple[Any, ...]]:
    """Merge per-shard results into one list sorted as one database would sort it.

    ``order`` holds (column index, descending) pairs; ``nulls_first`` says
    where NULLs go in ascending order (the reverse in descending order);
    ``text_key`` maps strings before comparing them (a collation stand-in).
    """
    rows = [r for part in parts for r in part]
    if not order:
        return rows

    def cmp(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
        for i, desc in order:
            x, y = a[i], b[i]
            if text_key is not None and isinstance(x, str) and isinstance(y, str):
                x, y = text_key(x), text_key(y)
            if x == y:
                continue
            if x is None or y is None:
                # None sorts first ascending when nulls_first, last otherwise
                first = nulls_first != desc
                c = -1 if (x is None) == first else 1
                return c
            c = -1 if x < y else 1
            return -c if desc else c
        return 0

    rows.sort(key=functools.cmp_to_key(cmp))
    return rows
