"""``where`` / ``order_by`` / pagination -> SQLAlchemy Core statements.

A query is handled in two steps so that the expensive one runs once per shape:

1. :func:`parse_where` and :func:`parse_order` validate the caller's input
   against the entity and split it into a hashable *shape* (fields, operators,
   arities) and a flat list of *values*. This runs on every call and is cheap.
2. ``*_statement`` functions turn a shape into a Core statement whose bind
   parameters are named ``p0, p1, ...`` in the order of the values. The
   statement layer compiles it once per dialect and caches it by shape.

Values are always bound parameters; column names come only from the entity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .entity import EntityInfo
from .errors import ValidationError

__all__ = [
    "OPERATORS",
    "Q",
    "count_statement",
    "parse_order",
    "parse_where",
    "select_statement",
    "shard_key_values",
]

OPERATORS = frozenset(
    {
        "eq",
        "ne",
        "gt",
        "gte",
        "lt",
        "lte",
        "in",
        "not_in",
        "like",
        "ilike",
        "startswith",
        "contains",
        "is_null",
        "between",
    }
)
_STRING_OPS = frozenset({"like", "ilike", "startswith", "contains"})

Shape = tuple[Any, ...]


class Q:
    """A condition that combines with ``&`` (and), ``|`` (or) and ``~`` (not).

    ``Q(age__gte=18, name__startswith="A")`` is the AND of its keyword conditions,
    using the same operators as ``where`` dicts::

        where = Q(status="active") | (Q(age__gte=65) & ~Q(country="NL"))
    """

    __slots__ = ("children", "conds", "op")

    def __init__(self, **conds: Any) -> None:
        self.op = "and"
        self.conds: dict[str, Any] = conds
        self.children: tuple[Q, ...] = ()

    @classmethod
    def _node(cls, op: str, children: tuple[Q, ...]) -> Q:
        q = cls()
        q.op = op
        q.children = children
        return q

    def __and__(self, other: Q) -> Q:
        return Q._node("and", (self, _as_q(other)))

    def __or__(self, other: Q) -> Q:
        return Q._node("or", (self, _as_q(other)))

    def __invert__(self) -> Q:
        return Q._node("not", (self,))

    def __repr__(self) -> str:
        if self.op == "not":
            return f"~{self.children[0]!r}"
        if self.children:
            return (
                "(" + f" {'&' if self.op == 'and' else '|'} ".join(map(repr, self.children)) + ")"
            )
        return "Q(" + ", ".join(f"{k}={v!r}" for k, v in self.conds.items()) + ")"


def _as_q(value: Any) -> Q:
    if isinstance(value, Q):
        return value
    if isinstance(value, Mapping):
        return Q(**value)
    raise ValidationError(f"cannot combine Q with {type(value).__name__}")


def _split_key(key: str) -> tuple[str, str]:
    name, sep, op = key.rpartition("__")
    if sep and op in OPERATORS:
        return name, op
    return key, "eq"


def parse_where(info: EntityInfo, where: Mapping[str, Any] | Q | None, values: list[Any]) -> Shape:
    """Validate ``where`` and return its shape; append its values to ``values``.

    Raises ValidationError for unknown fields, operators or badly typed values.
    """
    if where is None:
        return ()
    if isinstance(where, Q):
        return _parse_q(info, where, values)
    if not isinstance(where, Mapping):
        raise ValidationError(f"where must be a dict or Q, got {type(where).__name__}")
    return ("and", tuple(_parse_term(info, k, v, values) for k, v in where.items()))


def _parse_q(info: EntityInfo, q: Q, values: list[Any]) -> Shape:
    if q.children:
        return (q.op, tuple(_parse_q(info, c, values) for c in q.children))
    return ("and", tuple(_parse_term(info, k, v, values) for k, v in q.conds.items()))


def _parse_term(info: EntityInfo, key: Any, value: Any, values: list[Any]) -> Shape:
    if not isinstance(key, str):
        raise ValidationError(f"where keys must be field names, got {key!r}")
    name, op = _split_key(key)
    f = info.field(name)
    if op in ("eq", "ne") and value is None:
        # "= NULL" is never true in SQL; what the caller means is IS [NOT] NULL
        return (name, "is_null", op == "eq")
    if op == "is_null":
        if not isinstance(value, bool):
            raise ValidationError(f"{key}: expects True or False, got {value!r}")
        return (name, op, value)
    if op in ("in", "not_in"):
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ValidationError(f"{key}: expects a list of values, got {value!r:.80}")
        items = list(value)
        for item in items:
            f.check(item)
            if item is None:
                raise ValidationError(f"{key}: None is not allowed in a list; use __is_null")
        values.extend(items)
        return (name, op, len(items))
    if op == "between":
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
            raise ValidationError(f"{key}: expects a (low, high) pair, got {value!r:.80}")
        for item in value:
            if item is None:
                raise ValidationError(f"{key}: bounds may not be None")
            f.check(item)
        values.extend(value)
        return (name, op, 2)
    if op in _STRING_OPS:
        if f.pytype is not str:
            raise ValidationError(
                f"{key}: {op} applies to str fields, {name!r} is {f.pytype.__name__}"
            )
        if not isinstance(value, str):
            raise ValidationError(f"{key}: expects a str, got {value!r:.80}")
        if op in ("startswith", "contains"):
            value = _escape_like(value)
            value = value + "%" if op == "startswith" else f"%{value}%"
        values.append(value)
        return (name, op, 1)
    if f.pytype in (dict, list):
        raise ValidationError(f"{key}: JSON fields cannot be compared")
    f.check(value)
    values.append(value)
    return (name, op, 1)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def parse_order(info: EntityInfo, order_by: str | Sequence[str] | None) -> Shape:
    """Validate ``order_by`` ("name", "-age" or a list of them) and return its shape."""
    if order_by is None:
        return ()
    items = [order_by] if isinstance(order_by, str) else order_by
    if not isinstance(items, Sequence):
        raise ValidationError(f"order_by must be a str or list of str, got {order_by!r}")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationError(f"order_by entries must be str, got {item!r}")
        desc = item.startswith("-")
        name = item[1:] if desc or item.startswith("+") else item
        info.field(name)
        out.append((name, desc))
    return tuple(out)


def check_window(limit: int | None, offset: int | None) -> None:
    """Raise ValidationError unless limit/offset are None or non-negative ints."""
    for what, v in (("limit", limit), ("offset", offset)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ValidationError(f"{what} must be a non-negative int, got {v!r}")


class _Binds:
    """Hands out bind parameters p0, p1, ... in value order."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, column: sa.ColumnElement[Any]) -> sa.BindParameter[Any]:
        p = sa.bindparam(f"p{self.n}", type_=column.type)
        self.n += 1
        return p


def shard_key_values(shape: Shape, values: Sequence[Any], field: str) -> list[Any] | None:
    """The values an AND-ed ``field = x`` / ``field__in`` condition allows, or None.

    Used to ask only the shards those values route to. Conditions inside
    nested ANDs (``Q(tenant_id=k) & Q(...)``) count; anything under OR or NOT
    does not. None means the query does not pin the field, so every shard
    must be asked; an empty list means no row can match.
    """
    found, _ = _pinned(shape, values, 0, field) if shape else (None, 0)
    return found


def _pinned(
    shape: Shape, values: Sequence[Any], pos: int, field: str
) -> tuple[list[Any] | None, int]:
    """(values pinned under an AND node, position after it)."""
    if len(shape) == 3:
        width = _arity(shape)
        name, op, _ = shape
        if name == field and op in ("eq", "in"):
            return list(values[pos : pos + width]), pos + width
        return None, pos + width
    op, children = shape
    if op != "and":
        return None, pos + _arity(shape)
    found: list[Any] | None = None
    for child in children:
        keys, pos = _pinned(child, values, pos, field)
        if keys is not None:
            found = keys if found is None else [k for k in found if k in keys]
    return found, pos


def _arity(shape: Shape) -> int:
    if len(shape) == 2:
        return sum(_arity(s) for s in shape[1])
    _, op, arity = shape
    return 0 if op == "is_null" else arity


def where_clause(info: EntityInfo, shape: Shape, binds: _Binds) -> sa.ColumnElement[bool]:
    """The Core expression for a where shape, with binds in parse order."""
    if len(shape) == 2:  # (op, children); leaves are (field, op, arity)
        op = shape[0]
        parts = [where_clause(info, s, binds) for s in shape[1]]
        if op == "not":
            # two-valued logic: NOT keeps the rows where the condition is false or NULL
            return sa.not_(sa.func.coalesce(parts[0], sa.false()))
        if not parts:
            return sa.true()
        return sa.and_(*parts) if op == "and" else sa.or_(*parts)
    name, op, arity = shape
    col = info.table.c[name]
    if op == "is_null":
        return col.is_(None) if arity else col.is_not(None)
    if op in ("in", "not_in"):
        if arity == 0:
            return sa.false() if op == "in" else sa.true()
        params = [binds(col) for _ in range(arity)]
        if op == "in":
            return col.in_(params)
        return _or_null(info, name, col.not_in(params))
    if op == "between":
        return col.between(binds(col), binds(col))
    p = binds(col)
    if op == "eq":
        return col == p
    if op == "ne":
        return _or_null(info, name, col != p)
    if op == "gt":
        return col > p
    if op == "gte":
        return col >= p
    if op == "lt":
        return col < p
    if op == "lte":
        return col <= p
    if op == "like":
        return col.like(p)
    if op == "ilike":
        return col.ilike(p)
    # startswith / contains: the pattern was built and escaped at parse time
    return col.like(p, escape="\\")


def _or_null(info: EntityInfo, name: str, cond: sa.ColumnElement[bool]) -> Any:
    # "differs from x" includes rows where the field is NULL, as it would in Python
    if info.by_name[name].nullable:
        return sa.or_(cond, info.table.c[name].is_(None))
    return cond


def _filtered(
    info: EntityInfo, stmt: Any, shape: Shape, binds: _Binds, include_deleted: bool
) -> Any:
    if shape:
        stmt = stmt.where(where_clause(info, shape, binds))
    if info.soft_delete and not include_deleted:
        stmt = stmt.where(info.table.c.deleted_at.is_(None))
    return stmt


def select_statement(
    info: EntityInfo,
    where: Shape,
    order: Shape,
    *,
    limit: bool = False,
    offset: bool = False,
    include_deleted: bool = False,
    for_update: bool = False,
    nulls_first: bool | None = None,
) -> sa.Select[Any]:
    """SELECT every column of the entity; limit/offset are the last binds when set.

    ``nulls_first`` pins where NULLs sort (first in ascending order, or last),
    instead of leaving it to the database: shards of different databases must agree.
    """
    binds = _Binds()
    stmt = _filtered(info, sa.select(*info.table.c), where, binds, include_deleted)
    if order:
        clauses: list[Any] = []
        for name, desc in order:
            col = info.table.c[name]
            if nulls_first is not None and col.nullable:
                # portable NULLS FIRST/LAST: MySQL has no such syntax
                first = nulls_first != desc
                clauses.append(col.is_(None).desc() if first else col.is_(None).asc())
            clauses.append(col.desc() if desc else col.asc())
        stmt = stmt.order_by(*clauses)
    if limit:
        stmt = stmt.limit(sa.bindparam(f"p{binds.n}", type_=sa.Integer()))
        binds.n += 1
    if offset:
        stmt = stmt.offset(sa.bindparam(f"p{binds.n}", type_=sa.Integer()))
        binds.n += 1
    if for_update:
        stmt = stmt.with_for_update()
    return stmt


def count_statement(
    info: EntityInfo, where: Shape, *, include_deleted: bool = False
) -> sa.Select[Any]:
    """SELECT count(*) under a where shape."""
    binds = _Binds()
    return _filtered(
        info, sa.select(sa.func.count()).select_from(info.table), where, binds, include_deleted
    )
