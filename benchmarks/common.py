"""What every implementation shares: the interface, the data set and the rows it writes.

Every implementation (raw driver, SQLAlchemy Core, SQLAlchemy ORM, Tortoise, dbnexus)
subclasses :class:`Implementation`. For each case the runner calls the method of the
case's name once, untimed; it returns an :class:`Operation` whose ``fn`` the harness
then awaits many times, timed. A method that cannot do its case raises
:class:`NotApplicable` with the reason, which the table prints.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.backends import Backend, ShardSet

__all__ = [
    "BATCH_SIZE",
    "CONCURRENT_TASKS",
    "FIND_ALL_AGE",
    "FIND_ALL_LIMIT",
    "LOOKUPS_PER_TASK",
    "POOL_SIZE",
    "SHARDED_TABLE",
    "Dataset",
    "Implementation",
    "NotApplicable",
    "Operation",
    "RowMaker",
    "concurrent_lookups",
    "require_shards",
    "seed_rows",
    "top_rows",
]

BATCH_SIZE = 100
FIND_ALL_AGE = 31
FIND_ALL_LIMIT = 20
CONCURRENT_TASKS = 50
LOOKUPS_PER_TASK = 1
POOL_SIZE = 10
SHARDED_TABLE = "bench_users_sharded"

Row = tuple[str, str, int | None]


class NotApplicable(Exception):
    """This implementation cannot do this case; the message says why."""


@dataclass
class Operation:
    """One timed unit of work: ``await fn()`` (or ``fn()`` for a plain function, used by
    the CPU-only permission case) does ``ops_per_call`` operations.

    ``rows_written`` is how many rows one call commits; the runner counts them
    afterwards from a separate connection. ``note`` is printed under the table.
    """

    fn: Callable[[], Awaitable[object]] | Callable[[], object]
    ops_per_call: int = 1
    rows_written: int = 0
    note: str | None = None
    max_calls: int | None = None  # e.g. the number of never-read ids for a cache miss
    updated_ids: list[int] | None = None  # rows an update call may change (checked afterwards)


def seed_rows(count: int) -> list[Row]:
    """The rows every table starts with; one in ten non-null ages is ``FIND_ALL_AGE``."""
    return [
        (f"seed {i}", f"seed{i}@bench.example", None if i % 13 == 0 else 25 + i % 10)
        for i in range(count)
    ]


@dataclass
class Dataset:
    """Which seeded ids each case may touch, so that cases do not disturb each other.

    The cache-miss case reads ``miss_ids`` (shuffled) and no case before it reads any
    of them, so a dbnexus pool with its cache on has never seen them. (``find_all``,
    later, returns the highest ids, which are among them.)
    """

    ids: list[int]
    shards: ShardSet | None = None  # set by the runner for the scatter-gather case
    hit_id: int = 0
    update_ids: list[int] = field(default_factory=list)
    concurrent_ids: list[int] = field(default_factory=list)
    miss_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.ids) < 2000:
            raise ValueError("the data set needs at least 2000 seeded rows")
        self.hit_id = self.ids[0]
        self.update_ids = self.ids[1:201]
        self.concurrent_ids = self.ids[201:1201]
        self.miss_ids = self.ids[1201:]
        random.Random(42).shuffle(self.miss_ids)

    @property
    def last_id(self) -> int:
        return self.ids[-1]


class RowMaker:
    """Fresh rows with emails unique across implementations, repetitions and cases."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._n = itertools.count()
        self._age = itertools.count(1000)

    def row(self) -> Row:
        n = next(self._n)
        return (f"{self.tag} {n}", f"{self.tag}.{n}@bench.example", 40)

    def rows(self, count: int) -> list[Row]:
        return [self.row() for _ in range(count)]

    def next_age(self) -> int:
        """A new age for an update, never equal to the old one (so an ORM really flushes)."""
        return next(self._age)


class Implementation:
    """Base of every column. Override ``setup``/``teardown`` and the cases you can do.

    ``table`` is the implementation's own ``bench_`` table; several implementations may
    share one (both dbnexus columns do), and the runner seeds and drops each table once.
    """

    key = "base"
    label = "base"
    table = "bench_users"

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.rows = RowMaker(self.key)

    async def setup(self, backend: Backend) -> None:
        """Connect and create ``self.table`` (empty) with the implementation's own DDL."""
        self.backend = backend

    async def teardown(self) -> None:
        """Close every connection; the runner drops the tables afterwards."""

    # ---------------------------------------------------------------- cases

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def insert(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def update(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def insert_batch(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def insert_batch_copy(self, data: Dataset) -> Operation:
        raise NotApplicable("COPY: raw asyncpg only")

    async def find_all(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def concurrent_find(self, data: Dataset) -> Operation:
        raise NotApplicable("not implemented")

    async def session_create(self, data: Dataset) -> Operation:
        raise NotApplicable("dbnexus only")

    async def sharded_find_all(self, data: Dataset) -> Operation:
        require_shards(data)
        raise NotApplicable("no sharding (raw and Core show a hand-made scatter-gather)")

    def shard_router(self, urls: dict[str, str]) -> Callable[[str], str] | None:
        """How the implementation routes an email to a shard, if it shards (dbnexus)."""
        return None


def concurrent_lookups(
    lookup: Callable[[int], Awaitable[object]], ids: list[int], note: str | None = None
) -> Operation:
    """One call = ``CONCURRENT_TASKS`` tasks at once, each doing ``LOOKUPS_PER_TASK``
    ``lookup(id)`` one after another; the figure is per lookup."""
    next_id = itertools.cycle(ids).__next__

    async def task() -> None:
        for _ in range(LOOKUPS_PER_TASK):
            if await lookup(next_id()) is None:
                raise AssertionError("a seeded row was not found")

    async def run() -> None:
        await asyncio.gather(*(task() for _ in range(CONCURRENT_TASKS)))

    return Operation(run, ops_per_call=CONCURRENT_TASKS * LOOKUPS_PER_TASK, note=note)


def require_shards(data: Dataset) -> ShardSet:
    if data.shards is None:
        raise NotApplicable("sharding not implemented yet")
    return data.shards


def top_rows(parts: Sequence[Sequence[Any]], expected_ids: list[int] | None = None) -> list[Any]:
    """Merge per-shard results (each ``ORDER BY id DESC LIMIT n``) into the global first n.

    With ``expected_ids``, check the merged ids (done once, untimed, before timing).
    """
    rows = heapq.nlargest(FIND_ALL_LIMIT, itertools.chain.from_iterable(parts), key=_first)
    if expected_ids is not None and [r[0] for r in rows] != expected_ids:
        raise AssertionError(f"scatter-gather returned {[r[0] for r in rows]}")
    return rows


def _first(row: Any) -> Any:
    return row[0]
