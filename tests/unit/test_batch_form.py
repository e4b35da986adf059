"""The form a PostgreSQL batch's columns take (``PgBatchInsert.bind``), without a database.

The values' round trip in each form is checked against the server in
``tests/backends/test_core_trips.py``.
"""

import datetime as dt
import decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from dbnexus import entity, entity_info, field
from dbnexus.statements import Compiler

_md = sa.MetaData()


@entity(table="unit_batch_rows", metadata=_md)
class Row:
    id: int | None = field(primary_key=True, default=None)
    name: str = field(max_length=50)
    n: int | None = None
    when: dt.datetime | None = None
    amount: decimal.Decimal | None = None


NAMES = ("name", "n", "when", "amount")
AUDIT = ["ts", "alice", None, "unit_batch_rows", "[]"]


@pytest.fixture(scope="module")
def stmt():
    return Compiler(postgresql.asyncpg.dialect()).pg_batch_insert(entity_info(Row), NAMES)


def rows(*pairs):
    when = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    return [(None, name, n, when, decimal.Decimal("1.5")) for name, n in pairs]


def test_str_and_int_columns_go_as_one_text_each(stmt):
    sql, params = stmt.bind(rows(("a", 1), ("", None), ("c,d", -7)), AUDIT)
    assert sql == stmt.text_sql
    assert params[:2] == ["a\x1f\x1fc,d", "1,,-7"]
    # a column with a bind processor (or no text form) still goes as an array
    assert len(params[2]) == len(params[3]) == 3
    assert params[4:] == AUDIT
    assert "string_to_array($1::TEXT" in sql and "string_to_array($2::TEXT" in sql
    assert "$3::TIMESTAMP WITH TIME ZONE[]" in sql and "$4::NUMERIC" in sql


def test_none_has_its_own_marker(stmt):
    _, params = stmt.bind(rows((None, 1), ("", 2)), AUDIT)
    assert params[0] == "\x1e\x1f"


@pytest.mark.parametrize(
    "batch",
    [
        rows(("a\x1fb", 1), ("c", 2)),  # a value holding the separator
        rows(("\x1e", 1), ("c", 2)),  # a value that reads as None
        rows(("a", True), ("c", 2)),  # not an int
        rows(("a", 10**5000), ("c", 2)),  # too long for str()
        rows(("", None)),  # one row: an empty text would split into no elements
    ],
    ids=["separator", "None marker", "bool", "huge int", "one row"],
)
def test_values_that_cannot_go_as_text_send_arrays(stmt, batch):
    sql, params = stmt.bind(batch, AUDIT)
    assert sql == stmt.sql
    assert [list(p) for p in params[:2]] == [[r[1] for r in batch], [r[2] for r in batch]]


def test_an_entity_without_str_or_int_columns_has_one_form():
    md = sa.MetaData()

    @entity(table="unit_batch_floats", metadata=md)
    class Floats:
        id: int | None = field(primary_key=True, default=None)
        x: float = 0.0

    stmt = Compiler(postgresql.asyncpg.dialect()).pg_batch_insert(entity_info(Floats), ("x",))
    assert stmt.text_sql is None
    assert stmt.bind([(None, 1.0), (None, 2.0)], AUDIT)[0] == stmt.sql
