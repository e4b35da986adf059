"""``@entity``, ``field()`` and ``@crud`` without a database: declaration, tables, checks."""

import dataclasses
import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import dbnexus
from dbnexus import ValidationError, crud, entity, entity_info, field
from dbnexus.entity import is_entity


@pytest.fixture(autouse=True)
def forget_tables():
    """Remove the tables these tests declare from ``dbnexus.metadata`` afterwards."""
    before = set(dbnexus.metadata.tables)
    yield
    for name in set(dbnexus.metadata.tables) - before:
        dbnexus.metadata.remove(dbnexus.metadata.tables[name])


def test_entity_makes_a_keyword_only_dataclass_with_a_table():
    @entity(table="unit_people")
    class Person:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=50)
        nickname: str | None = None

    assert dataclasses.is_dataclass(Person)
    p = Person(name="Ann")
    assert (p.id, p.name, p.nickname) == (None, "Ann", None)
    with pytest.raises(TypeError):
        Person(None, "Ann")  # keyword-only
    assert p == Person(name="Ann") and p != Person(name="Bob")
    assert "Ann" in repr(p)

    info = entity_info(Person)
    assert entity_info(p) is info
    assert info.table_name == "unit_people"
    assert info.names == ("id", "name", "nickname")
    assert info.pk.name == "id" and info.pk.autoincrement
    assert dbnexus.metadata.tables["unit_people"] is info.table
    cols = info.table.c
    assert cols.id.primary_key
    assert not cols.name.nullable and cols.nickname.nullable
    assert isinstance(cols.name.type, sa.String) and cols.name.type.length == 50
    assert is_entity(Person) and not is_entity(p) and not is_entity(int)


def test_bare_entity_names_the_table_after_the_class():
    @entity
    class UnitWidget:
        code: str = field(primary_key=True, max_length=20)

    assert entity_info(UnitWidget).table_name == "unitwidget"
    assert not entity_info(UnitWidget).pk.autoincrement


def test_every_supported_type_maps_to_a_column():
    @entity(table="unit_types")
    class T:
        id: int = field(primary_key=True)
        i: int
        s: str
        f: float
        b: bool
        raw: bytes
        ts: dt.datetime
        day: dt.date
        clock: dt.time
        amount: decimal.Decimal = field(precision=10, scale=2)
        key: uuid.UUID
        doc: dict[str, Any]
        items: list[int]
        maybe: float | None = None

    info = entity_info(T)
    types = {f.name: f.pytype for f in info.fields}
    assert types == {
        "id": int,
        "i": int,
        "s": str,
        "f": float,
        "b": bool,
        "raw": bytes,
        "ts": dt.datetime,
        "day": dt.date,
        "clock": dt.time,
        "amount": decimal.Decimal,
        "key": uuid.UUID,
        "doc": dict,
        "items": list,
        "maybe": float,
    }
    assert info.by_name["maybe"].nullable and not info.by_name["f"].nullable
    c = info.table.c
    assert isinstance(c["doc"].type, sa.JSON) and isinstance(c["items"].type, sa.JSON)
    assert isinstance(c.amount.type, sa.Numeric)
    assert (c.amount.type.precision, c.amount.type.scale) == (10, 2)
    assert isinstance(c["key"].type, sa.Uuid)
    assert isinstance(c.b.type, sa.Boolean)


def test_unique_and_index_options_reach_the_table():
    @entity(table="unit_accounts", indexes=[dbnexus.index("ix_unit_acc_ab", "a", "b", unique=True)])
    class Account:
        id: int | None = field(primary_key=True, default=None)
        email: str = field(unique=True)
        a: int = field(index=True)
        b: int

    table = entity_info(Account).table
    assert table.c.email.unique
    # a keyed string without max_length still gets a length (MySQL cannot index TEXT)
    assert table.c.email.type.length is not None
    assert table.c.a.index
    (composite,) = [ix for ix in table.indexes if ix.name == "ix_unit_acc_ab"]
    assert composite.unique and [c.name for c in composite.columns] == ["a", "b"]


def test_user_methods_and_dataclasses_are_kept():
    @entity(table="unit_kept")
    class Kept:
        id: int = field(primary_key=True)

        def __repr__(self) -> str:
            return "mine"

        def label(self) -> str:
            return f"#{self.id}"

    assert repr(Kept(id=1)) == "mine"
    assert Kept(id=4).label() == "#4"

    @entity(table="unit_dc")
    @dataclasses.dataclass
    class Plain:
        id: int = field(primary_key=True)
        x: int = 0

    assert Plain(1, 2).x == 2  # an existing dataclass keeps its own __init__
    assert entity_info(Plain).names == ("id", "x")


def test_crud_adds_classmethods_but_never_replaces_the_users():
    @crud
    @entity(table="unit_crud")
    class Thing:
        id: int = field(primary_key=True)

        @classmethod
        async def count(cls, session, **kw):
            return -1

    for name in ("find_by_id", "find_all", "insert", "insert_batch", "update", "delete"):
        assert callable(getattr(Thing, name)), name
    assert Thing.count.__func__.__qualname__.endswith("Thing.count")

    class NotAnEntity:
        pass

    with pytest.raises(ValidationError, match="not an entity"):
        crud(NotAnEntity)
    with pytest.raises(ValidationError):
        entity_info(NotAnEntity)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: entity(table="unit_nopk")(type("NoPk", (), {"__annotations__": {"name": str}})),
            id="no-primary-key",
        ),
        pytest.param(
            lambda: entity(table="unit_twopk")(
                type(
                    "TwoPk",
                    (),
                    {
                        "__annotations__": {"a": int, "b": int},
                        "a": field(primary_key=True),
                        "b": field(primary_key=True),
                    },
                )
            ),
            id="two-primary-keys",
        ),
        pytest.param(
            lambda: entity(table="unit_set")(
                type(
                    "Bad",
                    (),
                    {"__annotations__": {"id": int, "tags": set}, "id": field(primary_key=True)},
                )
            ),
            id="set-type",
        ),
        pytest.param(
            lambda: entity(table="unit_union")(
                type(
                    "Bad",
                    (),
                    {"__annotations__": {"id": int, "v": int | str}, "id": field(primary_key=True)},
                )
            ),
            id="union-type",
        ),
        pytest.param(
            lambda: entity(table="unit_obj")(
                type(
                    "Bad",
                    (),
                    {"__annotations__": {"id": int, "v": object}, "id": field(primary_key=True)},
                )
            ),
            id="object-type",
        ),
        pytest.param(
            lambda: entity(table="users; DROP TABLE users")(
                type("Bad", (), {"__annotations__": {"id": int}, "id": field(primary_key=True)})
            ),
            id="bad-table-name",
        ),
        pytest.param(
            lambda: entity(table="9lives")(
                type("Bad", (), {"__annotations__": {"id": int}, "id": field(primary_key=True)})
            ),
            id="digit-first",
        ),
        pytest.param(
            lambda: entity(table="t" * 64)(
                type("Bad", (), {"__annotations__": {"id": int}, "id": field(primary_key=True)})
            ),
            id="long-table-name",
        ),
        pytest.param(
            lambda: entity(table="dbnexus_audit")(
                type("Bad", (), {"__annotations__": {"id": int}, "id": field(primary_key=True)})
            ),
            id="reserved-table",
        ),
        pytest.param(
            lambda: entity(table="unit_col")(
                type(
                    "Bad",
                    (),
                    {"__annotations__": {"id": int, "c" * 64: int}, "id": field(primary_key=True)},
                )
            ),
            id="long-column-name",
        ),
        pytest.param(
            lambda: entity(table="unit_maxlen")(
                type(
                    "Bad",
                    (),
                    {
                        "__annotations__": {"id": int, "n": int},
                        "id": field(primary_key=True),
                        "n": field(max_length=5),
                    },
                )
            ),
            id="max-length-on-int",
        ),
        pytest.param(
            lambda: entity(table="unit_idx", indexes=[dbnexus.index("ix_u", "nope")])(
                type("Bad", (), {"__annotations__": {"id": int}, "id": field(primary_key=True)})
            ),
            id="index-on-unknown-field",
        ),
        pytest.param(lambda: field(max_length=0), id="zero-max-length"),
        pytest.param(lambda: field(references=None, on_delete="EXPLODE"), id="bad-on-delete"),
        pytest.param(lambda: dbnexus.index("bad name", "a"), id="bad-index-name"),
    ],
)
def test_bad_declarations_raise_validation_error(make):
    with pytest.raises(ValidationError):
        make()


def test_unresolvable_annotation_is_a_validation_error():
    with pytest.raises(ValidationError):

        @entity(table="unit_fwd")
        class Fwd:
            id: int = field(primary_key=True)
            other: "NotDefinedAnywhere"  # noqa: F821


def test_validate_checks_values_against_fields():
    @entity(table="unit_checked")
    class Checked:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=3)
        score: float = 0.0
        when: dt.date | None = None
        blob: bytes | None = field(default=None, max_length=2)

    info = entity_info(Checked)
    info.validate(Checked(name="abc", score=1))  # an int is a fine float
    info.validate(Checked(name="", when=dt.date(2020, 1, 1), blob=b"ab"))
    for bad in (
        Checked(name="abcd"),
        Checked(name=None),
        Checked(name=3),
        Checked(name="a", score="1"),
        Checked(name="a", score=True),
        Checked(name="a", when=dt.datetime(2020, 1, 1)),  # a datetime is not a date
        Checked(name="a", blob=b"abc"),
        Checked(name="a", blob="ab"),
        Checked(id=1.0, name="a"),
    ):
        with pytest.raises(ValidationError):
            info.validate(bad)
    with pytest.raises(ValidationError):
        info.validate("not a Checked")
    with pytest.raises(ValidationError, match="score"):
        info.field("nope")


def test_redeclaring_a_table_replaces_it():
    def declare(extra: bool):
        ns: dict[str, Any] = {"__annotations__": {"id": int}, "id": field(primary_key=True)}
        if extra:
            ns["__annotations__"]["x"] = int | None
            ns["x"] = None
        return entity(table="unit_redeclared")(type("R", (), ns))

    declare(False)
    second = declare(True)
    assert dbnexus.metadata.tables["unit_redeclared"] is entity_info(second).table
    assert "x" in dbnexus.metadata.tables["unit_redeclared"].c


def test_custom_metadata_keeps_the_table_off_the_shared_one():
    md = sa.MetaData()

    @entity(table="unit_private", metadata=md)
    class Private:
        id: int = field(primary_key=True)

    assert "unit_private" in md.tables
    assert "unit_private" not in dbnexus.metadata.tables


def test_a_rejected_declaration_leaves_no_table_behind():
    # pool.migrate() creates every table on dbnexus.metadata: a half-declared
    # entity must not be among them
    with pytest.raises(ValidationError):

        @entity(table="unit_half", indexes=[dbnexus.index("ix_unit_half", "nope")])
        class Half:
            id: int = field(primary_key=True)

    with pytest.raises(ValidationError):

        @entity(
            table="unit_half_where",
            indexes=[dbnexus.index("ix_unit_half_w", "id", where={"nope": 1})],
        )
        class HalfWhere:
            id: int = field(primary_key=True)

    assert "unit_half" not in dbnexus.metadata.tables
    assert "unit_half_where" not in dbnexus.metadata.tables


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=5),
    st.binary(max_size=4),
    st.dates(),
    st.datetimes(),
    st.decimals(allow_nan=False, places=2, min_value=-10, max_value=10),
)


_VALID = (
    st.one_of(st.none(), st.integers(1, 10**6)),
    st.text(max_size=4),
    st.one_of(st.floats(allow_nan=False), st.integers(-5, 5)),
    st.one_of(st.none(), st.dates()),
    st.one_of(st.none(), st.binary(max_size=2)),
    st.one_of(st.none(), st.decimals(allow_nan=False, places=2, min_value=-9, max_value=9)),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(*_VALID), min_size=1, max_size=6),
    st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 5), _ANY_VALUE)),
)
def test_batch_checks_agree_with_checking_each_object(valid, corrupt):
    """``checked_rows`` (column by column) rejects a batch exactly when an object fails."""
    values = [list(v) for v in valid]
    if corrupt is not None:  # one cell replaced by anything: valid or not
        row, col, value = corrupt
        values[row % len(values)][col] = value
    info = entity_info(_Mixed)
    objs = [_Mixed(**dict(zip(_MIXED_FIELDS, v, strict=True))) for v in values]
    failures = []
    for obj in objs:
        try:
            info.validate(obj)
        except ValidationError:
            failures.append(obj)
    try:
        rows = info.checked_rows(objs)
    except ValidationError:
        assert failures, "the batch was refused though every object is valid"
    else:
        assert not failures, f"the batch let {failures[0]} through"
        assert rows == [list(info.values_of(o)) for o in objs]


def test_batch_checks_name_the_offending_value_and_reject_other_classes():
    info = entity_info(_Mixed)
    good = _Mixed(name="ok", score=1.5)
    with pytest.raises(ValidationError, match="max_length=4"):
        info.checked_rows([good, _Mixed(name="toolong")])
    with pytest.raises(ValidationError, match="expected a _Mixed instance"):
        info.checked_rows([good, "not a _Mixed"])


_MIXED_FIELDS = ("id", "name", "score", "when", "blob", "amount")


@entity(table="unit_mixed_batch", metadata=sa.MetaData())
class _Mixed:
    id: int | None = field(primary_key=True, default=None)
    name: str = field(max_length=4, default="a")
    score: float = 0.0
    when: dt.date | None = None
    blob: bytes | None = field(default=None, max_length=2)
    amount: decimal.Decimal | None = None
