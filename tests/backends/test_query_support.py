"""Entities, a Python reference of ``where``/``order_by`` and a hypothesis runner.

This module holds no tests; the ``test_query_*``, ``test_system_fields``,
``test_tags``, ``test_relations`` and ``test_signals`` suites import it.
Entities are built by factories taking the table name, like ``test_core_support``.

The reference model follows dbnexus's documented semantics: ``x=None`` and
``x__ne=None`` mean IS [NOT] NULL, ``__ne`` and ``__not_in`` include rows whose
field is NULL, every other comparison with a NULL field is false, and ``~Q``
is plain (two-valued) negation.
"""

import asyncio
import datetime as dt
import decimal
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbnexus import Q, crud, entity, field, related

# --------------------------------------------------------------------- entities


def make_thing(table: str) -> type:
    """Every comparable kind of column, nullable and not."""

    @crud
    @entity(table=table)
    class Thing:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=10)
        nick: str | None = field(default=None, max_length=10)
        age: int | None = None
        score: float = 0.0
        born: dt.date | None = None
        active: bool = False

    return Thing


def make_ranked(table: str, *, timestamps: bool = False) -> type:
    """A row with a NOT NULL ``rank`` to page by."""

    @crud
    @entity(table=table, timestamps=timestamps)
    class Ranked:
        id: int | None = field(primary_key=True, default=None)
        rank: int
        label: str = field(max_length=20, default="")

    return Ranked


def make_typed(table: str) -> type:
    """One NOT NULL column of each orderable type."""

    @crud
    @entity(table=table)
    class Typed:
        id: int | None = field(primary_key=True, default=None)
        day: dt.date
        clock: dt.time
        when: dt.datetime
        amount: decimal.Decimal
        key: uuid.UUID
        ratio: float
        flag: bool
        word: str = field(max_length=10)

    return Typed


def make_note(table: str, *, timestamps: bool = True, soft_delete: bool = True) -> type:
    """A small entity with the system fields switched on."""

    @crud
    @entity(table=table, timestamps=timestamps, soft_delete=soft_delete)
    class Note:
        id: int | None = field(primary_key=True, default=None)
        title: str = field(max_length=50)
        n: int = 0

    return Note


def make_library(authors: str, books: str, *, soft_delete: bool = False) -> tuple[type, type]:
    """``Author`` (one-to-many ``books``) and ``Book`` (many-to-one ``author``)."""

    @crud
    @entity(table=authors, soft_delete=soft_delete)
    class Author:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=50)
        books = related(lambda: Book, "author_id")

    @crud
    @entity(table=books, soft_delete=soft_delete)
    class Book:
        id: int | None = field(primary_key=True, default=None)
        title: str = field(max_length=50)
        author_id: int | None = field(default=None, references=Author)

    return Author, Book


# ------------------------------------------------------------------ the data

# Small value domains so that every test sees NULLs and ties. Strings use only
# lowercase ASCII letters where they are ordered or compared with = / <, so the
# databases' collations (case-insensitive on MariaDB, C on PostgreSQL) agree
# with Python; ``nick`` also holds LIKE's wildcard characters but is never ordered.
NAMES = ["", "a", "b", "c", "ab", "ba", "abc", "cab", "bb"]
NICKS = [None, "", "a", "ab", "a_b", "a%", "%b", "b_", "_", "ba", "aab", "a\\b"]
AGES = [None, 0, 1, 2, 3, 5]
SCORES = [-1.5, 0.0, 0.5, 2.25]
DATES = [None, dt.date(2020, 1, 1), dt.date(2021, 6, 15), dt.date(2024, 2, 29)]
FIELDS = ("id", "name", "nick", "age", "score", "born", "active")
ORDERABLE = ("id", "name", "age", "score", "born", "active")  # not nick: see above
NOT_NULL_ORDERABLE = ("id", "name", "score", "active")


def thing_rows(Thing: type, n: int = 40, seed: int = 20240229) -> list[Any]:
    """``n`` random rows (fixed seed: a failure reproduces) with NULLs and ties."""
    rnd = random.Random(seed)
    return [
        Thing(
            name=rnd.choice(NAMES),
            nick=rnd.choice(NICKS),
            age=rnd.choice(AGES),
            score=rnd.choice(SCORES),
            born=rnd.choice(DATES),
            active=rnd.random() < 0.5,
        )
        for _ in range(n)
    ]


def as_dict(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in FIELDS}


# -------------------------------------------------------- the reference model


def like_regex(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """SQL LIKE (no escape character) as a regular expression."""
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def term_holds(row: dict[str, Any], key: str, value: Any) -> bool:
    """Whether one ``where`` term holds for a row, in dbnexus's semantics."""
    name, _, op = key.partition("__")
    op = op or "eq"
    x = row[name]
    if op == "eq":
        return x is None if value is None else x is not None and x == value
    if op == "ne":
        return x is not None if value is None else x is None or x != value
    if op == "is_null":
        return (x is None) == value
    if op == "not_in":
        return x is None or x not in value
    if x is None:
        return False
    if op == "gt":
        return x > value
    if op == "gte":
        return x >= value
    if op == "lt":
        return x < value
    if op == "lte":
        return x <= value
    if op == "in":
        return x in value
    if op == "between":
        return value[0] <= x <= value[1]
    if op == "like":
        return like_regex(value, ignore_case=False).fullmatch(x) is not None
    if op == "ilike":
        return like_regex(value, ignore_case=True).fullmatch(x) is not None
    if op == "startswith":
        return x.startswith(value)
    if op == "contains":
        return value in x
    raise AssertionError(f"unknown operator in {key}")


def dict_holds(row: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(term_holds(row, k, v) for k, v in where.items())


# A condition tree: ("leaf", dict) | ("and"|"or", a, b) | ("not", a)
def tree_q(tree: tuple[Any, ...]) -> Q:
    kind = tree[0]
    if kind == "leaf":
        return Q(**tree[1])
    if kind == "not":
        return ~tree_q(tree[1])
    a, b = tree_q(tree[1]), tree_q(tree[2])
    return a & b if kind == "and" else a | b


def tree_holds(row: dict[str, Any], tree: tuple[Any, ...]) -> bool:
    kind = tree[0]
    if kind == "leaf":
        return dict_holds(row, tree[1])
    if kind == "not":
        return not tree_holds(row, tree[1])
    if kind == "and":
        return tree_holds(row, tree[1]) and tree_holds(row, tree[2])
    return tree_holds(row, tree[1]) or tree_holds(row, tree[2])


def sort_key(row: dict[str, Any], order: list[str]) -> tuple[Any, ...]:
    return tuple(row[o.lstrip("-")] for o in order)


def reference_order(
    rows: list[dict[str, Any]], order: list[str], *, nulls_high: bool
) -> list[dict[str, Any]]:
    """``rows`` sorted by ``order`` ("-f" descending); ties keep their input order.

    dbnexus adds no NULLS FIRST/LAST, so NULLs sort where the database puts them:
    above every value on PostgreSQL (``nulls_high``), below on SQLite and MariaDB.
    """
    out = list(rows)
    for item in reversed(order):
        name = item.lstrip("-")

        def key(r: dict[str, Any], name: str = name) -> tuple[int, Any]:
            v = r[name]
            if v is None:
                return (1 if nulls_high else -1, 0)
            return (0, v)

        out.sort(key=key, reverse=item.startswith("-"))
    return out


# ---------------------------------------------------------------- strategies

_TEXT = "ab_%"


def _values(name: str) -> st.SearchStrategy[Any]:
    return {
        "id": st.integers(0, 45),
        "name": st.sampled_from(NAMES),
        "nick": st.sampled_from([n for n in NICKS if n is not None] + ["zz", "b"]),
        "age": st.sampled_from([a for a in AGES if a is not None] + [4, -1]),
        "score": st.sampled_from([*SCORES, 1.0]),
        "born": st.sampled_from([d for d in DATES if d is not None] + [dt.date(2019, 1, 1)]),
        "active": st.booleans(),
    }[name]


@st.composite
def where_term(draw: st.DrawFn) -> tuple[str, Any]:
    """One ``(key, value)`` term of a where dict over ``Thing``."""
    name = draw(st.sampled_from(FIELDS))
    ops = ["", "ne", "in", "not_in", "is_null"]
    if name != "nick":
        # nick holds punctuation, which MariaDB's collation orders unlike Python
        ops += ["gt", "gte", "lt", "lte", "between"]
    if name in ("name", "nick"):
        ops += ["like", "ilike", "startswith", "contains"]
    op = draw(st.sampled_from(ops))
    vals = _values(name)
    nullable = name in ("nick", "age", "born")
    if op in ("", "ne") and nullable:
        value = draw(st.one_of(st.none(), vals))
    elif op in ("in", "not_in"):
        value = draw(st.lists(vals, max_size=4))
    elif op == "between":
        value = (draw(vals), draw(vals))
    elif op == "is_null":
        value = draw(st.booleans())
    elif op == "like":
        value = draw(st.text(_TEXT, max_size=4))
    elif op == "ilike":
        value = draw(st.text("aAbB_%", max_size=4))
    elif op in ("startswith", "contains"):
        value = draw(st.text(_TEXT + "\\", max_size=3))
    else:
        value = draw(vals)
    return (f"{name}__{op}" if op else name, value)


where_dicts = st.lists(where_term(), max_size=3).map(dict)

condition_trees = st.recursive(
    st.lists(where_term(), min_size=1, max_size=2).map(lambda ts: ("leaf", dict(ts))),
    lambda sub: st.one_of(
        st.tuples(st.just("and"), sub, sub),
        st.tuples(st.just("or"), sub, sub),
        st.tuples(st.just("not"), sub),
    ),
    max_leaves=6,
)


def order_lists(fields: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.lists(
        st.tuples(st.sampled_from(fields), st.booleans()).map(
            lambda t: f"-{t[0]}" if t[1] else t[0]
        ),
        max_size=3,
        unique_by=lambda s: s.lstrip("-"),
    )


# ------------------------------------------------------------ running examples


async def check_examples(
    check: Callable[..., Awaitable[None]],
    *strategies: st.SearchStrategy[Any],
    max_examples: int = 50,
) -> None:
    """Run ``await check(*drawn)`` on hypothesis examples against this event loop.

    Hypothesis drives (and shrinks) from a worker thread while the checks run
    on the test's loop, so the table is set up once per test, not per example.
    """
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.tuples(*strategies))
    def run(drawn: tuple[Any, ...]) -> None:
        asyncio.run_coroutine_threadsafe(check(*drawn), loop).result(timeout=60)

    await asyncio.to_thread(run)
