"""The cases, in the order they run and print, and the columns they are run on."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CASES", "COLUMNS", "PERMISSIONS_CASE", "Case", "Column"]


@dataclass(frozen=True)
class Case:
    """One database case; ``key`` is also the :class:`Implementation` method's name."""

    number: int
    key: str
    title: str
    writes: bool = False


CASES = (
    Case(1, "find_by_id_hit", "find_by_id, cache hit"),
    Case(2, "find_by_id_miss", "find_by_id, cache miss"),
    Case(3, "insert", "insert + commit", writes=True),
    Case(4, "update", "update by pk + commit", writes=True),
    Case(5, "insert_batch", "insert_batch 100 + commit", writes=True),
    Case(5, "insert_batch_copy", "insert_batch 100, COPY", writes=True),
    Case(6, "find_all", "find_all, 20 rows"),
    Case(7, "concurrent_find", "find_by_id, 50 tasks/10 conns"),
    Case(8, "session_create", "session enter/exit"),
    Case(10, "sharded_find_all", "find_all over 4 shards"),
)

#: Case 9 runs once, not per backend: it needs no database.
PERMISSIONS_CASE = Case(9, "permissions", "permission decision")


@dataclass(frozen=True)
class Column:
    """One implementation column; ``module`` provides ``implementations(backend)``."""

    key: str
    label: str
    module: str


COLUMNS = (
    Column("raw", "raw driver", "benchmarks.impl_raw"),
    Column("core", "SQLAlchemy Core", "benchmarks.impl_core"),
    Column("orm", "SQLAlchemy ORM", "benchmarks.impl_orm"),
    Column("tortoise", "Tortoise ORM", "benchmarks.impl_tortoise"),
    Column("dbnexus", "dbnexus cache on", "benchmarks.impl_dbnexus"),
    Column("dbnexus_nocache", "dbnexus cache off", "benchmarks.impl_dbnexus"),
)
