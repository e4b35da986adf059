"""Keyset pagination without a database: signed cursors, the page ordering, the seek condition."""

import base64
import dataclasses
import datetime as dt
import decimal
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from dbnexus import ValidationError, entity, entity_info, field
from dbnexus.pagination import Page, decode_cursor, encode_cursor, page_order, seek_shape
from dbnexus.query import parse_order

_md = sa.MetaData()


@entity(table="unit_pg_rows", metadata=_md)
class Row:
    id: int | None = field(primary_key=True, default=None)
    name: str = field(max_length=20)
    when: dt.datetime
    day: dt.date
    clock: dt.time
    amount: decimal.Decimal
    key: uuid.UUID
    blob: bytes
    ratio: float
    flag: bool
    maybe: int | None = None


INFO = entity_info(Row)
KEY = b"k" * 32
ALL = ("name", "when", "day", "clock", "amount", "key", "blob", "ratio", "flag", "id")


def order_of(*items, reverse=False):
    return page_order(INFO, parse_order(INFO, list(items)), reverse)


value_of = {
    "id": st.integers(-(2**62), 2**62),
    "name": st.text(max_size=20),
    "when": st.datetimes(timezones=st.just(dt.UTC)),
    "day": st.dates(),
    "clock": st.times(),
    "amount": st.decimals(allow_nan=False, allow_infinity=False, places=6),
    "key": st.uuids(),
    "blob": st.binary(max_size=30),
    "ratio": st.floats(allow_nan=False, allow_infinity=False),
    "flag": st.booleans(),
}


@st.composite
def cursors(draw):
    names = draw(st.lists(st.sampled_from(ALL), min_size=1, max_size=4, unique=True))
    desc = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    reverse = draw(st.booleans())
    order = order_of(
        *[("-" if d else "") + n for n, d in zip(names, desc, strict=True)], reverse=reverse
    )
    after = [draw(value_of[name]) for name, _ in order]
    return order, reverse, after


@settings(max_examples=100, deadline=None)
@given(cursors())
def test_cursor_values_survive_the_round_trip(case):
    order, reverse, after = case
    token = encode_cursor(KEY, order, reverse, after)
    assert isinstance(token, str)
    assert base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))  # URL-safe base64
    assert "=" not in token and "+" not in token and "/" not in token
    back = decode_cursor(KEY, INFO, token, order, reverse)
    assert back == after
    assert [type(v) for v in back] == [type(v) for v in after]


@settings(max_examples=100, deadline=None)
@given(cursors(), st.integers(min_value=0), st.integers(0, 7))
def test_any_flipped_bit_is_detected(case, at, bit):
    order, reverse, after = case
    token = encode_cursor(KEY, order, reverse, after)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[at % len(raw)] ^= 1 << bit
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(ValidationError):
        decode_cursor(KEY, INFO, forged, order, reverse)


@settings(max_examples=50, deadline=None)
@given(cursors(), st.text(max_size=40))
def test_junk_is_a_validation_error_never_another_exception(case, junk):
    order, reverse, _ = case
    with pytest.raises(ValidationError):
        decode_cursor(KEY, INFO, junk, order, reverse)


def test_a_cursor_is_bound_to_its_key_ordering_and_direction():
    order = order_of("name", "-when")
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    token = encode_cursor(KEY, order, False, ["a", when, 3])
    assert decode_cursor(KEY, INFO, token, order, False) == ["a", when, 3]
    with pytest.raises(ValidationError, match="altered"):
        decode_cursor(b"x" * 32, INFO, token, order, False)
    with pytest.raises(ValidationError, match="ordering or direction"):
        decode_cursor(KEY, INFO, token, order_of("name", "when"), False)
    with pytest.raises(ValidationError, match="ordering or direction"):
        decode_cursor(KEY, INFO, token, order, True)
    for bad in (None, 42, b"bytes", "A" * 9000, "", "!!!!"):
        with pytest.raises(ValidationError):
            decode_cursor(KEY, INFO, bad, order, False)


def test_page_order_adds_the_primary_key_and_reverse_flips_everything():
    assert order_of("-when") == (("when", True), ("id", False))
    assert order_of("-id", "name") == (("id", True), ("name", False))
    assert order_of("name", "-when", reverse=True) == (
        ("name", True),
        ("when", False),
        ("id", True),
    )
    assert page_order(INFO, (), False) == (("id", False),)
    with pytest.raises(ValidationError, match="nullable"):
        order_of("maybe")
    with pytest.raises(ValidationError, match="nullable"):
        order_of("name", "-maybe")


def holds(shape, row, values):
    """Evaluate a seek shape on a row (dict) with its values, in bind order."""
    it = iter(values)

    def ev(s):
        if len(s) == 2:
            parts = [ev(c) for c in s[1]]  # evaluate all: values are consumed in order
            return all(parts) if s[0] == "and" else any(parts)
        name, op, _ = s
        v, x = next(it), row[name]
        return {"eq": x == v, "lt": x < v, "gt": x > v}[op]

    return ev(shape)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=4),
    st.lists(st.integers(0, 2), min_size=4, max_size=4),
    st.lists(st.integers(0, 2), min_size=4, max_size=4),
)
def test_seek_shape_keeps_exactly_the_rows_after_the_cursor(desc, row, cursor):
    names = ["a", "b", "c", "d"][: len(desc)]
    order = tuple(zip(names, desc, strict=True))
    values: list = []
    shape = seek_shape(order, values, cursor[: len(names)])

    # the same order as a Python sort key: descending fields negated
    def key(v):
        return tuple(-x if d else x for x, d in zip(v, desc, strict=False))

    expected = key(row[: len(names)]) > key(cursor[: len(names)])
    assert holds(shape, dict(zip(names, row, strict=False)), values) == expected


def test_page_is_a_frozen_sized_iterable():
    page = Page([1, 2, 3], "next")
    assert list(page) == [1, 2, 3] and len(page) == 3
    assert page.next_cursor == "next"
    with pytest.raises(dataclasses.FrozenInstanceError):
        page.next_cursor = None
