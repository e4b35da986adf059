"""``dbnexus demo``: a short tour on an embedded SQLite file; needs no server."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TextIO

from . import DbPool, PermissionDenied, Permissions, crud, entity, field
from .entity import entity_info, metadata
from .permissions import RBAC_MODEL

POLICY = """
p, editor, demo_authors, read
p, editor, demo_authors, insert
p, editor, demo_authors, update
p, editor, demo_books, read
p, editor, demo_books, insert
p, reader, demo_authors, read
p, reader, demo_books, read
g, alice, editor
g, bob, reader
"""


def _declare() -> tuple[Any, Any]:
    @crud
    @entity(table="demo_authors")
    class Author:
        id: int | None = field(primary_key=True, default=None)
        name: str = field(max_length=100)
        email: str = field(max_length=200, unique=True)

    @crud
    @entity(table="demo_books")
    class Book:
        id: int | None = field(primary_key=True, default=None)
        title: str = field(max_length=200)
        author_id: int = field(references=Author)
        year: int | None = None

    return Author, Book


async def run(url: str | None = None, out: TextIO | None = None) -> int:
    """Run the tour and print what happens; returns the exit status."""
    import sys

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    tmp = None
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="dbnexus-demo-")
        url = f"sqlite+aiosqlite:///{Path(tmp.name) / 'demo.db'}"
    Author, Book = _declare()
    try:
        say(f"dbnexus demo on {url}\n")
        perms = Permissions.from_text(RBAC_MODEL, POLICY)
        pool = await DbPool.connect(url, permissions=perms, cache_ttl=60)
        try:
            await pool.migrate(entities=[Author, Book])
            say("1. migrate: created demo_authors, demo_books and dbnexus_audit")

            async with pool.session("alice") as alice:
                ursula = await Author.insert(
                    alice, Author(name="Ursula K. Le Guin", email="ursula@example.com")
                )
                await Book.insert_batch(
                    alice,
                    [
                        Book(title="A Wizard of Earthsea", author_id=ursula.id, year=1968),
                        Book(title="The Dispossessed", author_id=ursula.id, year=1974),
                    ],
                )
                say(f"2. alice (editor) inserted {ursula.name!r} (id={ursula.id}) and two books")

            async with pool.session("bob") as bob:
                try:
                    await Author.insert(bob, Author(name="Bob", email="bob@example.com"))
                except PermissionDenied as exc:
                    say(f"3. bob (reader) tried to insert: PermissionDenied: {exc}")
                denied = await pool.audit_log(user_id="bob", outcome="denied", limit=1)
                say(
                    f"   audit row of the attempt: action={denied[0].action} "
                    f"table={denied[0].table_name} outcome={denied[0].outcome}"
                )

                first = await Author.find_by_id(bob, ursula.id)
                again = await Author.find_by_id(bob, ursula.id)
                stats = pool.cache.stats()
                say(
                    f"4. bob read author {ursula.id} twice: {again == first}; cache "
                    f"hits={stats['hits']} misses={stats['misses']} size={stats['size']}"
                )
                books = await Book.find_all(bob, where={"year__gte": 1970}, order_by="-year")
                say(f"   books since 1970: {[b.title for b in books]}")

            await pool.permissions.grant("reader", "demo_authors", "insert")
            async with pool.session("bob") as bob:
                await Author.insert(bob, Author(name="Bob", email="bob@example.com"))
                say("5. after permissions.grant('reader', 'demo_authors', 'insert') bob may insert")

            say("\n6. audit log, newest first:")
            for rec in await pool.audit_log(limit=10):
                say(
                    f"   {rec.ts:%H:%M:%S} {rec.user_id:<6} {rec.action:<7} {rec.table_name:<13} "
                    f"id={rec.record_id} {rec.outcome}"
                )

            say("\n7. metrics (Prometheus text format, dbnexus_operations_total):")
            for line in pool.metrics.render().decode().splitlines():
                if line.startswith("dbnexus_operations_total") and not line.endswith(" 0.0"):
                    say(f"   {line}")
        finally:
            await pool.close()
        say("\ndone.")
        return 0
    finally:
        for cls in (Book, Author):
            table = entity_info(cls).table
            if table.name in metadata.tables and metadata.tables[table.name] is table:
                metadata.remove(table)
        if tmp is not None:
            tmp.cleanup()
