"""Python annotation -> SQLAlchemy column type, and value checks per field type.

Knows nothing of sessions or dialect execution; `entity` uses it to build tables
and to validate values before anything is sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

from .errors import ValidationError

__all__ = ["UTCDateTime", "jsonable", "python_type_of", "sql_type_for", "value_checker"]

NoneType = type(None)
SUPPORTED = (
    int,
    str,
    float,
    bool,
    bytes,
    dt.datetime,
    dt.date,
    dt.time,
    decimal.Decimal,
    uuid.UUID,
    dict,
    list,
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware datetimes stored as UTC on every backend.

    Aware values are converted to UTC; naive values are taken to be UTC already.
    Values read back are always aware (``tzinfo=UTC``), whatever the backend keeps.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            # plain DATETIME drops microseconds on MySQL/MariaDB
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        if dialect.name == "postgresql":
            return value.replace(tzinfo=dt.UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def python_type_of(annotation: Any) -> tuple[type, bool]:
    """Return ``(base_type, nullable)`` for an annotation such as ``int | None``.

    Raises ValidationError for annotations dbnexus cannot store.
    """
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not NoneType]
        nullable = len(args) != len(typing.get_args(annotation))
        if len(args) != 1:
            raise ValidationError(f"unsupported union type {annotation!r}: use 'X | None'")
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin in (dict, list):
        annotation = origin
    if annotation not in SUPPORTED:
        names = ", ".join(t.__name__ for t in SUPPORTED)
        raise ValidationError(f"unsupported field type {annotation!r}; supported: {names}")
    return annotation, nullable


def sql_type_for(
    pytype: type,
    *,
    max_length: int | None,
    keyed: bool,
    precision: int,
    scale: int,
) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy type for a supported Python type.

    ``keyed`` (primary key, unique or indexed) strings get a VARCHAR even without
    max_length, because MySQL cannot index TEXT.
    """
    if pytype is bool:
        return sa.Boolean()
    if pytype is int:
        # INTEGER on SQLite so an integer primary key is the rowid (autoincrement)
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    if pytype is str:
        if max_length is not None:
            return sa.String(max_length)
        return sa.String(255) if keyed else sa.Text()
    if pytype is float:
        return sa.Double()
    if pytype is bytes:
        return sa.LargeBinary(max_length) if max_length else sa.LargeBinary()
    if pytype is dt.datetime:
        return UTCDateTime()
    if pytype is dt.date:
        return sa.Date()
    if pytype is dt.time:
        # plain TIME drops microseconds on MySQL/MariaDB
        return sa.Time().with_variant(mysql.TIME(fsp=6), "mysql", "mariadb")
    if pytype is decimal.Decimal:
        return sa.Numeric(precision, scale, asdecimal=True)
    if pytype is uuid.UUID:
        return sa.Uuid()
    return sa.JSON()


def value_checker(
    name: str, pytype: type, nullable: bool, max_length: int | None
) -> Callable[[Any], None]:
    """A function that raises ValidationError when a value does not fit the field."""

    def fail(value: Any, why: str) -> typing.NoReturn:
        raise ValidationError(f"field {name!r}: {why} (got {type(value).__name__} {value!r:.80})")

    if pytype is int:

        def ok_type(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)
    elif pytype is float:

        def ok_type(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)
    elif pytype is dt.date:

        def ok_type(v: Any) -> bool:
            return isinstance(v, dt.date) and not isinstance(v, dt.datetime)
    elif pytype is decimal.Decimal:

        def ok_type(v: Any) -> bool:
            return isinstance(v, decimal.Decimal | int) and not isinstance(v, bool)
    else:

        def ok_type(v: Any) -> bool:
            return isinstance(v, pytype)

    type_name = pytype.__name__

    def check(value: Any) -> None:
        # the common case first: exactly the declared type, short enough
        if type(value) is pytype and (max_length is None or len(value) <= max_length):  # type: ignore[arg-type]
            return
        if value is None:
            if not nullable:
                fail(value, "may not be None")
            return
        if not ok_type(value):
            fail(value, f"expected {type_name}")
        if max_length is not None and len(value) > max_length:
            fail(value, f"longer than max_length={max_length}")

    return check


def column_fits(
    values: Sequence[Any], pytype: type, nullable: bool, max_length: int | None
) -> bool:
    """True when every value passes :func:`value_checker`'s fast path (C loops only).

    False says only "check the values one by one", which finds the bad one.
    """
    kinds = set(map(type, values))
    has_none = type(None) in kinds
    if has_none:
        if not nullable:
            return False
        kinds.discard(type(None))
    if not kinds:
        return True
    if len(kinds) > 1 or pytype not in kinds:
        return False
    if max_length is not None:
        sized = [v for v in values if v is not None] if has_none else values
        return max(map(len, sized)) <= max_length
    return True


def jsonable(value: Any) -> Any:
    """A JSON-friendly form of a column value for the ``changes`` column."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return repr(value)
