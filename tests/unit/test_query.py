"""``where`` / ``order_by`` parsing and the statements built from them, without a database."""

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from dbnexus import Q, ValidationError, entity, entity_info, field
from dbnexus.query import (
    check_window,
    count_statement,
    parse_order,
    parse_where,
    select_statement,
)

_md = sa.MetaData()


@entity(table="unit_q_people", metadata=_md)
class Person:
    id: int | None = field(primary_key=True, default=None)
    name: str = field(max_length=50)
    age: int | None = None
    score: float = 0.0
    born: dt.date | None = None
    doc: dict | None = None


INFO = entity_info(Person)
DIALECTS = [sqlite.dialect(), postgresql.dialect(), mysql.dialect()]


def parse(where):
    values: list = []
    shape = parse_where(INFO, where, values)
    return shape, values


def sql(stmt, dialect=None):
    return str(stmt.compile(dialect=dialect or sqlite.dialect()))


def test_a_dict_is_the_and_of_its_terms():
    shape, values = parse({"name": "Ann", "age__gte": 18})
    assert shape == ("and", (("name", "eq", 1), ("age", "gte", 1)))
    assert values == ["Ann", 18]
    assert parse(None) == ((), [])
    assert parse({}) == (("and", ()), [])


@pytest.mark.parametrize(
    ("where", "term", "values"),
    [
        ({"age__ne": 3}, ("age", "ne", 1), [3]),
        ({"age__in": (1, 2, 3)}, ("age", "in", 3), [1, 2, 3]),
        ({"age__not_in": []}, ("age", "not_in", 0), []),
        ({"age__between": [1, 9]}, ("age", "between", 2), [1, 9]),
        ({"age__is_null": False}, ("age", "is_null", False), []),
        ({"age": None}, ("age", "is_null", True), []),
        ({"age__ne": None}, ("age", "is_null", False), []),
        ({"name__like": "A_%"}, ("name", "like", 1), ["A_%"]),
        ({"name__ilike": "a%"}, ("name", "ilike", 1), ["a%"]),
        ({"name__startswith": "50%_"}, ("name", "startswith", 1), ["50\\%\\_%"]),
        ({"name__contains": "a\\b"}, ("name", "contains", 1), ["%a\\\\b%"]),
        ({"born__lt": dt.date(2000, 1, 1)}, ("born", "lt", 1), [dt.date(2000, 1, 1)]),
        ({"score__gt": 1}, ("score", "gt", 1), [1]),
    ],
)
def test_operators_parse_to_shapes_and_values(where, term, values):
    assert parse(where) == (("and", (term,)), values)


def test_the_shape_does_not_depend_on_the_values():
    assert parse({"age__in": [1, 2]})[0] == parse({"age__in": [7, 8]})[0]
    assert parse({"age__in": [1, 2]})[0] != parse({"age__in": [1, 2, 3]})[0]
    assert parse({"name": "a"})[0] == parse({"name": "'; DROP TABLE x; --"})[0]


def test_q_objects_combine():
    q = Q(name="Ann") | (Q(age__gte=65) & ~Q(score=0))
    shape, values = parse(q)
    assert shape == (
        "or",
        (
            ("and", (("name", "eq", 1),)),
            ("and", (("and", (("age", "gte", 1),)), ("not", (("and", (("score", "eq", 1),)),)))),
        ),
    )
    assert values == ["Ann", 65, 0]
    assert "Ann" in repr(q) and "|" in repr(q) and "~" in repr(q)
    # a dict combines with a Q like a Q
    assert parse(Q(age=1) & {"name": "x"})[1] == [1, "x"]
    with pytest.raises(ValidationError):
        Q(age=1) & 5


@pytest.mark.parametrize(
    "where",
    [
        {"nope": 1},
        {"age__nope": 1},
        {"": 1},
        {5: 1},
        {"age": "1"},
        {"age": 1.5},
        {"age": True},
        {"name": 5},
        {"name": "x" * 51},
        {"born": dt.datetime(2020, 1, 1)},
        {"age__in": "123"},
        {"age__in": 5},
        {"age__in": [1, "2"]},
        {"age__in": [None]},
        {"age__between": (1, 2, 3)},
        {"age__between": (1, None)},
        {"age__between": "ab"},
        {"age__like": "1%"},
        {"name__contains": 5},
        {"age__is_null": 1},
        {"doc": {"a": 1}},
        {"doc__gt": {}},
        ["name", "Ann"],
        "name = 'Ann'",
        Q(nope=1),
        Q(age=1) | Q(age="x"),
    ],
)
def test_bad_where_raises_validation_error(where):
    with pytest.raises(ValidationError):
        parse(where)


def test_unknown_field_message_lists_the_fields():
    with pytest.raises(ValidationError) as err:
        parse({"nmae": "Ann"})
    assert "nmae" in str(err.value) and "name" in str(err.value)


def test_parse_order():
    assert parse_order(INFO, None) == ()
    assert parse_order(INFO, "name") == (("name", False),)
    assert parse_order(INFO, "-age") == (("age", True),)
    assert parse_order(INFO, "+age") == (("age", False),)
    assert parse_order(INFO, ["-age", "name"]) == (("age", True), ("name", False))
    for bad in ("nope", "-nope", ["age", "nope"], [5], 5, ["--age"]):
        with pytest.raises(ValidationError):
            parse_order(INFO, bad)


def test_check_window():
    check_window(None, None)
    check_window(0, 0)
    check_window(10, 5)
    for limit, offset in ((-1, None), (None, -1), (True, None), ("5", None), (1.0, None)):
        with pytest.raises(ValidationError):
            check_window(limit, offset)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_values_are_bound_parameters(dialect):
    nasty = "x'); DROP TABLE unit_q_people; --"
    shape, values = parse(Q(name=nasty) | Q(name__startswith=nasty))
    stmt = select_statement(INFO, shape, parse_order(INFO, "-age"), limit=True, offset=True)
    text = sql(stmt, dialect)
    assert "DROP" not in text and "x'" not in text
    assert values[0] == nasty  # the value travels beside the SQL, unchanged
    compiled = stmt.compile(dialect=dialect)
    assert set(compiled.params) == {"p0", "p1", "p2", "p3"}
    assert "ORDER BY unit_q_people.age DESC" in text


def test_select_statement_shape():
    shape, _ = parse({"age__in": [1, 2], "name__ne": "x"})
    text = sql(select_statement(INFO, shape, (), limit=False, offset=False))
    assert "FROM unit_q_people" in text
    assert "unit_q_people.age IN (" in text
    # "differs from" a non-nullable field needs no IS NULL arm ...
    assert "unit_q_people.name != " in text and "name IS NULL" not in text
    # ... a nullable one keeps its NULL rows
    shape, _ = parse({"age__ne": 3})
    assert "age IS NULL" in sql(select_statement(INFO, shape, (), limit=False, offset=False))
    empty_in, _ = parse({"age__in": []})
    assert "IN (" not in sql(select_statement(INFO, empty_in, (), limit=False, offset=False))


def test_count_statement():
    shape, values = parse({"age__gt": 3})
    text = sql(count_statement(INFO, shape))
    assert text.startswith("SELECT count(*)")
    assert "unit_q_people.age > " in text
    assert values == [3]
