"""Relationships: foreign keys made by migrate, include= loading both ways, permissions."""

import pytest
import sqlalchemy as sa
from test_core_support import RBAC_MODEL, sample
from test_query_support import make_library

from dbnexus import IntegrityError, PermissionDenied, Permissions, ValidationError

pytestmark = pytest.mark.backend


def table_of(Entity):
    return Entity.__dbnexus__.table_name


async def library(make_pool, unique, **kwargs):
    """Three authors (the last without books) and seven books, one without an author."""
    Author, Book = make_library(unique("authors"), unique("books"))
    pool = await make_pool(Author, Book, **kwargs)
    async with pool.session("admin") as s:
        authors = await Author.insert_batch(s, [Author(name=n) for n in ("ann", "bob", "cy")])
        ann, bob, _ = authors
        books = await Book.insert_batch(
            s,
            [Book(title=f"ann{k}", author_id=ann.id) for k in range(4)]
            + [Book(title=f"bob{k}", author_id=bob.id) for k in range(2)]
            + [Book(title="anon")],
        )
    return pool, Author, Book, authors, books


def reads_of(pool, table):
    """Queries that went to ``table`` for a read: cache misses plus hits."""
    return sample(pool, "dbnexus_cache_misses_total", table=table) + sample(
        pool, "dbnexus_cache_hits_total", table=table
    )


async def test_migrate_creates_the_foreign_key_and_the_database_enforces_it(make_pool, unique):
    pool, Author, Book, authors, _ = await library(make_pool, unique)
    books, people = table_of(Book), table_of(Author)

    def fks(conn):
        return sa.inspect(conn).get_foreign_keys(books)

    (fk,) = await pool.databases["default"].run_sync(fks)
    assert fk["constrained_columns"] == ["author_id"]
    assert (fk["referred_table"], fk["referred_columns"]) == (people, ["id"])
    async with pool.session("admin") as s:
        with pytest.raises(IntegrityError):
            await Book.insert(s, Book(title="orphan", author_id=max(a.id for a in authors) + 100))
        assert await Book.count(s, where={"title": "orphan"}) == 0
    ok = await pool.audit_log(table=books, action="insert", outcome="ok", limit=None)
    assert len(ok) == 7 and all(r.changes["title"] != "orphan" for r in ok)


async def test_find_by_id_includes_many_to_one_and_one_to_many(make_pool, unique):
    pool, Author, Book, authors, books = await library(make_pool, unique)
    ann, _, cy = authors
    async with pool.session("admin") as s:
        book = await Book.find_by_id(s, books[0].id, include=["author"])
        assert isinstance(book.author, Author)
        assert book.author == await Author.find_by_id(s, ann.id)
        anon = await Book.find_by_id(s, books[-1].id, include=["author"])
        assert anon.author is None
        a = await Author.find_by_id(s, ann.id, include=["books"])
        assert [b.title for b in a.books] == ["ann0", "ann1", "ann2", "ann3"]
        assert all(isinstance(b, Book) and b.author_id == ann.id for b in a.books)
        assert (await Author.find_by_id(s, cy.id, include=["books"])).books == []
        assert await Author.find_by_id(s, 10_000, include=["books"]) is None


async def test_find_all_and_find_page_load_each_relation_with_one_query(make_pool, unique):
    pool, Author, Book, authors, books = await library(make_pool, unique)
    by_id = {a.id: a for a in authors}
    people, titles = table_of(Author), table_of(Book)
    async with pool.session("admin") as s:
        before = reads_of(pool, people)
        got = await Book.find_all(s, include=["author"], order_by="id")
        assert reads_of(pool, people) == before + 1
        assert [b.title for b in got] == [b.title for b in books]
        for b in got:
            assert b.author == (by_id[b.author_id] if b.author_id else None)

        before = reads_of(pool, titles)
        got = await Author.find_all(s, include=["books"], order_by="name")
        # one query for all their books, not one per author
        assert reads_of(pool, titles) == before + 1
        assert {a.name: len(a.books) for a in got} == {"ann": 4, "bob": 2, "cy": 0}

        before = reads_of(pool, people)
        page = await Book.find_page(s, include=["author"], order_by="title", limit=5)
        assert reads_of(pool, people) == before + 1
        assert [(b.title, b.author and b.author.name) for b in page] == [
            ("ann0", "ann"),
            ("ann1", "ann"),
            ("ann2", "ann"),
            ("ann3", "ann"),
            ("anon", None),
        ]


async def test_a_relation_load_counts_as_one_read_of_the_related_table(make_pool, unique):
    pool, Author, Book, _, _ = await library(make_pool, unique, cache_ttl=0)
    people = table_of(Author)

    def reads():
        return sample(pool, "dbnexus_operations_total", table=people, action="read", outcome="ok")

    async with pool.session("admin") as s:
        before = reads()
        assert len(await Book.find_all(s, include=["author"])) == 7
        assert reads() == before + 1


async def test_loading_a_relation_needs_read_on_the_related_table(make_pool, unique):
    Author, Book = make_library(unique("authors"), unique("books"))
    people, titles = table_of(Author), table_of(Book)
    policy = "\n".join(
        [
            *(f"p, admin, {t}, {a}" for t in (people, titles) for a in ("read", "insert")),
            f"p, reader, {titles}, read",
            f"p, authorfan, {people}, read",
        ]
    )
    pool = await make_pool(Author, Book, permissions=Permissions.from_text(RBAC_MODEL, policy))
    async with pool.session("admin") as s:
        ann = await Author.insert(s, Author(name="ann"))
        book = await Book.insert(s, Book(title="t", author_id=ann.id))
    async with pool.session("reader") as s:
        assert (await Book.find_by_id(s, book.id)).title == "t"
        calls = [
            lambda: Book.find_by_id(s, book.id, include=["author"]),
            lambda: Book.find_all(s, include=["author"]),
            lambda: Book.find_page(s, include=["author"]),
        ]
        for call in calls:
            with pytest.raises(PermissionDenied) as err:
                await call()
            assert (err.value.table, err.value.action) == (people, "read")
    async with pool.session("authorfan") as s:
        with pytest.raises(PermissionDenied) as err:
            await Author.find_by_id(s, ann.id, include=["books"])
        assert (err.value.table, err.value.action) == (titles, "read")
    denied = await pool.audit_log(table=people, outcome="denied")
    assert [(r.user_id, r.action) for r in denied] == [("reader", "read")] * 3
    assert sample(pool, "dbnexus_permission_denied_total", table=people, action="read") == 3


async def test_unknown_relations_are_validation_errors(make_pool, unique):
    pool, Author, Book, _, books = await library(make_pool, unique)
    async with pool.session("admin") as s:
        for call in (
            lambda: Book.find_by_id(s, books[0].id, include=["writer"]),
            lambda: Book.find_all(s, include=["author_id"]),
            lambda: Author.find_all(s, include=["books", "nope"]),
            lambda: Author.find_page(s, include=["title"]),
        ):
            with pytest.raises(ValidationError, match="relation"):
                await call()
