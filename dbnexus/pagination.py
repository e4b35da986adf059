"""Keyset (cursor) pagination: the page type, signed cursors and the seek condition.

A cursor holds the sort values of the last row of a page, the ordering it was
made for and the direction, signed with HMAC-SHA256 under the pool's key. A
forged, corrupted or foreign cursor is a ValidationError. Because the next page
starts *after* those values (not at an offset), rows inserted between calls
never make a row of the original set be skipped or shown twice.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from .entity import EntityInfo
from .errors import ValidationError
from .fieldtypes import jsonable
from .query import Shape

__all__ = ["Page", "decode_cursor", "encode_cursor", "page_order", "seek_shape"]

T = TypeVar("T")
_SIG = 16  # bytes of HMAC kept: forging needs 2**128 tries


@dataclasses.dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of :meth:`find_page`; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def page_order(info: EntityInfo, order: Shape, reverse: bool) -> Shape:
    """The full ordering of a page walk: the caller's, then the primary key as tiebreak.

    Ordering fields must be NOT NULL (keyset comparison cannot place NULLs portably).
    """
    names = [name for name, _ in order]
    for name in names:
        if info.table.c[name].nullable:
            raise ValidationError(
                f"find_page cannot order by nullable field {name!r}; order by NOT NULL fields "
                "(the primary key and created_at/updated_at are)"
            )
    full = list(order)
    if info.pk.name not in names:
        full.append((info.pk.name, False))
    if reverse:
        full = [(name, not desc) for name, desc in full]
    return tuple(full)


def seek_shape(order: Shape, values: list[Any], after: Sequence[Any]) -> Shape:
    """The where shape of rows strictly after ``after`` in ``order``.

    (a, b) after (x, y) with a ascending, b descending is
    ``a > x OR (a = x AND b < y)``; values are appended in shape order.
    """
    branches = []
    for i, (name, desc) in enumerate(order):
        terms = []
        for j in range(i):
            terms.append((order[j][0], "eq", 1))
            values.append(after[j])
        terms.append((name, "lt" if desc else "gt", 1))
        values.append(after[i])
        branches.append(("and", tuple(terms)))
    return ("or", tuple(branches))


def encode_cursor(key: bytes, order: Shape, reverse: bool, after: Sequence[Any]) -> str:
    """A signed, URL-safe cursor for the row whose sort values are ``after``."""
    body = json.dumps(
        [1, [list(o) for o in order], reverse, [jsonable(v) for v in after]], separators=(",", ":")
    ).encode()
    sig = hmac.new(key, body, hashlib.sha256).digest()[:_SIG]
    return base64.urlsafe_b64encode(sig + body).decode().rstrip("=")


def decode_cursor(
    key: bytes, info: EntityInfo, token: str, order: Shape, reverse: bool
) -> list[Any]:
    """The sort values in a cursor made by :func:`encode_cursor` for the same walk."""
    bad = ValidationError(
        "invalid pagination cursor: it was altered, or made by another "
        "pool or query; start again without a cursor"
    )
    if not isinstance(token, str) or len(token) > 8192:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    sig, body = raw[:_SIG], raw[_SIG:]
    if not hmac.compare_digest(sig, hmac.new(key, body, hashlib.sha256).digest()[:_SIG]):
        raise bad
    try:
        version, got_order, got_reverse, after = json.loads(body)
    except (ValueError, TypeError):
        raise bad from None
    if (
        version != 1
        or [tuple(o) for o in got_order] != list(order)
        or got_reverse != reverse
        or len(after) != len(order)
    ):
        raise ValidationError(
            "this cursor belongs to a different ordering or direction; "
            "use the same order_by and reverse as the page that made it"
        )
    return [
        _revive(info.by_name[name].pytype, v) for (name, _), v in zip(order, after, strict=True)
    ]


def _revive(pytype: type, value: Any) -> Any:
    if value is None:
        return None
    if pytype is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if pytype is dt.date:
        return dt.date.fromisoformat(value)
    if pytype is dt.time:
        return dt.time.fromisoformat(value)
    if pytype is decimal.Decimal:
        return decimal.Decimal(value)
    if pytype is uuid.UUID:
        return uuid.UUID(value)
    if pytype is bytes:
        return base64.b64decode(value)
    return value
