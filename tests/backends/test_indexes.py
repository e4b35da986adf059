"""Indexes declared with index(): single, composite and conditional, made by migrate."""

import datetime as dt

import pytest
import sqlalchemy as sa

import dbnexus
from dbnexus import IntegrityError, ValidationError, crud, entity, field, index

pytestmark = pytest.mark.backend


def make_article(table: str, names: dict[str, str]) -> type:
    @crud
    @entity(
        table=table,
        indexes=[
            index(names["email"], "email", unique=True),
            index(names["cat_date"], "category", "published_at"),
            index(names["active"], "status", where={"status": "active"}),
        ],
    )
    class Article:
        id: int | None = field(primary_key=True, default=None)
        email: str = field(max_length=100)
        category: str = field(max_length=20)
        status: str = field(max_length=20, default="draft")
        published_at: dt.datetime | None = None
        slug: str = field(max_length=50, index=True, default="")

    return Article


def make_membership(table: str, name: str) -> type:
    """One active membership per email; inactive ones may repeat."""

    @crud
    @entity(table=table, indexes=[index(name, "email", unique=True, where={"active": True})])
    class Membership:
        id: int | None = field(primary_key=True, default=None)
        email: str = field(max_length=100)
        active: bool = True

    return Membership


def table_of(Entity):
    return Entity.__dbnexus__.table_name


async def partial_predicate(pool, table: str, name: str) -> str | None:
    """The WHERE clause the database keeps for index ``name``; None if it keeps none.

    PostgreSQL and SQLite have partial indexes; MySQL/MariaDB do not, and dbnexus
    documents that the full index is created there.
    """
    dialect = pool.dialect_name

    def read(conn: sa.Connection) -> str | None:
        if dialect == "postgresql":
            sql = "SELECT indexdef FROM pg_indexes WHERE tablename = :t AND indexname = :n"
        elif dialect == "sqlite":
            sql = (
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND name = :n"
            )
        else:
            return None
        text = conn.execute(sa.text(sql), {"t": table, "n": name}).scalar_one()
        _, sep, where = text.partition(" WHERE ")
        return where if sep else None

    return await pool.databases["default"].run_sync(read)


async def test_migrate_creates_single_composite_and_conditional_indexes(make_pool, unique):
    names = {k: unique(k) for k in ("email", "cat_date", "active")}
    Article = make_article(unique("articles"), names)
    pool = await make_pool(Article)
    await pool.migrate(entities=[Article])  # idempotent
    table = table_of(Article)

    def indexes(conn):
        return {i["name"]: i for i in sa.inspect(conn).get_indexes(table)}

    found = await pool.databases["default"].run_sync(indexes)
    assert found[names["email"]]["column_names"] == ["email"]
    assert found[names["email"]]["unique"]
    assert found[names["cat_date"]]["column_names"] == ["category", "published_at"]
    assert not found[names["cat_date"]]["unique"]
    assert found[names["active"]]["column_names"] == ["status"]
    assert any(i["column_names"] == ["slug"] for i in found.values())

    predicate = await partial_predicate(pool, table, names["active"])
    if pool.dialect_name == "mysql":
        assert predicate is None  # documented: the full index
    else:
        assert predicate is not None
        assert "status" in predicate and "'active'" in predicate
    assert await partial_predicate(pool, table, names["cat_date"]) is None


async def test_a_unique_index_is_enforced(make_pool, unique):
    names = {k: unique(k) for k in ("email", "cat_date", "active")}
    Article = make_article(unique("articles"), names)
    pool = await make_pool(Article)
    async with pool.session("alice") as s:
        await Article.insert(s, Article(email="a@x.org", category="news"))
        with pytest.raises(IntegrityError):
            await Article.insert(s, Article(email="a@x.org", category="tech"))
        other = await Article.insert(s, Article(email="b@x.org", category="news"))
        other.email = "a@x.org"
        with pytest.raises(IntegrityError):
            await Article.update(s, other)
        async with s.transaction():
            rows = await Article.find_all(s, order_by="id")
    assert [(r.email, r.category) for r in rows] == [("a@x.org", "news"), ("b@x.org", "news")]
    inserts = await pool.audit_log(table=table_of(Article), action="insert", outcome="ok")
    assert len(inserts) == 2


async def test_a_conditional_unique_index_applies_only_where_its_condition_holds(make_pool, unique):
    Membership = make_membership(unique("members"), unique("one_active"))
    pool = await make_pool(Membership)
    table = table_of(Membership)
    partial = await partial_predicate(pool, table, Membership.__dbnexus__.indexes[0].name)
    async with pool.session("alice") as s:
        await Membership.insert(s, Membership(email="a@x.org", active=True))
        with pytest.raises(IntegrityError):
            await Membership.insert(s, Membership(email="a@x.org", active=True))
        if partial is not None:
            # outside the condition the index does not apply
            await Membership.insert(s, Membership(email="a@x.org", active=False))
            await Membership.insert(s, Membership(email="a@x.org", active=False))
            assert await Membership.count(s, where={"email": "a@x.org"}) == 3
        else:
            # MySQL: the full unique index (documented)
            with pytest.raises(IntegrityError):
                await Membership.insert(s, Membership(email="a@x.org", active=False))
            assert await Membership.count(s, where={"email": "a@x.org"}) == 1


def test_bad_index_declarations_are_refused_and_leave_no_table():
    def declare(*indexes):
        @entity(table="idx_bad_decl", indexes=list(indexes))
        class Bad:
            id: int | None = field(primary_key=True, default=None)
            email: str = field(max_length=20)

        return Bad

    for make in (
        lambda: index("no_columns"),
        lambda: index("bad name", "email"),
        lambda: index("1starts_with_digit", "email"),
        lambda: declare(index("idx_unknown", "nope")),
        lambda: declare(index("idx_cond", "email", where={"nope": 1})),
        lambda: declare(index("idx_ok", "email"), index("idx_mixed", "email", "nope")),
    ):
        with pytest.raises(ValidationError):
            make()
        assert "idx_bad_decl" not in dbnexus.metadata.tables
