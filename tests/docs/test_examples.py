"""Every Python example in ``docs/*.md`` runs, so the documentation cannot rot.

The convention (stated at the top of ``docs/index.md``): every block fenced as
```` ```python ```` is run, unless the line just before its fence is an HTML
comment starting with ``<!-- no-run``. Such a block (it needs a PostgreSQL or
MySQL server, say) is still compiled, so it stays valid Python.

A block is run as one module would be, with top-level ``await`` allowed (as in
``python -m asyncio``), on a fresh event loop, with a fresh empty directory as
the current directory: ``sqlite+aiosqlite:///app.db`` in an example is a new
SQLite file there. Each block has its own namespace; the tables it declares are
taken off ``dbnexus.metadata`` afterwards, and the entity tables declared
before it (by other tests) are kept off while it runs, so a block's
``pool.migrate()`` creates exactly the tables of that block. A pool a block
leaves open is closed.

A ``print(...)`` call followed by a comment on the same line documents its
output, and is checked: ``print(exc)  # no row in 'note' with primary key 2``
must print exactly that; a comment ending in ``...`` gives the beginning of the
output only. Every such line must run at least once, so an example showing an
exception fails if the exception is not raised.

The ``dbnexus`` commands of ``docs/cli.md`` are run in-process as well.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import inspect
import io
import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import dbnexus
from dbnexus.audit import audit_table
from dbnexus.cli import main as cli_main

pytest.importorskip("aiosqlite", reason="the documentation examples run on SQLite")
_only = os.environ.get("DBNEXUS_TEST_BACKENDS")
if _only and "sqlite" not in {b.strip() for b in _only.split(",")}:
    pytest.skip("the documentation examples run on SQLite", allow_module_level=True)

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = (
    "index.md",
    "entities.md",
    "pool.md",
    "permissions.md",
    "observability.md",
    "queries.md",
    "pagination.md",
    "system-fields.md",
    "tags.md",
    "relationships.md",
    "indexes.md",
    "signals.md",
    "sharding.md",
    "cli.md",
)
FENCE = re.compile(r"^```(\S*)\s*$")
NO_RUN = "<!-- no-run"
# an example taking longer than this is a hang, not a slow example
TIMEOUT = 30


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the first line of code, 1-based
    lang: str
    code: str
    run: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown page, with the line their code starts on."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"{page.name}:{i + 1}: unclosed code fence"
        before = lines[i - 1].strip() if i > 0 else ""
        yield Block(
            page.name,
            start + 1,
            m.group(1),
            "\n".join(lines[start:end]) + "\n",
            run=not before.startswith(NO_RUN),
        )
        i = end + 1


def python_blocks() -> list[Block]:
    return [b for p in sorted(DOCS.glob("*.md")) for b in blocks(p) if b.lang in ("python", "py")]


PYTHON = python_blocks()
RUNNABLE = [b for b in PYTHON if b.run]


PRINT_WITH_OUTPUT = re.compile(r"^(\s*)print\((.*)\)(\s*#\s*)(.*?)\s*$")


def expected_outputs(block: Block) -> dict[int, str]:
    """Line number (in the page) -> the output documented in that print line's comment."""
    found = {}
    for offset, line in enumerate(block.code.splitlines()):
        m = PRINT_WITH_OUTPUT.match(line)
        if m:
            found[block.line + offset] = m.group(4)
    return found


def instrumented(block: Block) -> str:
    """The block's code with each documented ``print(x)`` turned into ``__expect__(line, x)``."""
    lines = block.code.splitlines()
    for offset, line in enumerate(lines):
        m = PRINT_WITH_OUTPUT.match(line)
        if m:
            indent, args, hash_, comment = m.groups()
            lines[offset] = f"{indent}__expect__({block.line + offset}, {args}){hash_}{comment}"
    return "\n".join(lines) + "\n"


class Expectations:
    """Checks documented print outputs as the block runs."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.wanted = expected_outputs(block)
        self.seen: set[int] = set()

    def __call__(self, line: int, *args: object) -> None:
        got = " ".join(map(str, args))
        want = self.wanted[line]
        where = f"{self.block.page}:{line}"
        if want.endswith("..."):
            prefix = want[:-3].rstrip()
            assert got.startswith(prefix), f"{where}: printed {got!r}, documented {want!r}"
        else:
            assert got == want, f"{where}: printed {got!r}, documented {want!r}"
        self.seen.add(line)

    def check_all_seen(self) -> None:
        missing = sorted(set(self.wanted) - self.seen)
        assert not missing, (
            f"{self.block.page}: the documented print on line(s) {missing} never ran "
            "(an exception the example shows was not raised?)"
        )


def compile_block(block: Block, code: str | None = None) -> object:
    # leading newlines keep tracebacks pointing at the page's own line numbers
    source = "\n" * (block.line - 1) + (block.code if code is None else code)
    # dont_inherit: this module's `from __future__ import annotations` must not leak in
    return compile(
        source,
        str(DOCS / block.page),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )


@contextlib.contextmanager
def own_metadata() -> Iterator[None]:
    """Keep the entity tables of others off ``dbnexus.metadata``; drop the block's after."""
    md = dbnexus.metadata
    others = [t for t in md.tables.values() if t is not audit_table]
    for t in others:
        md.remove(t)
    try:
        yield
    finally:
        for t in list(md.tables.values()):
            if t is not audit_table:
                md.remove(t)
        for t in others:
            # MetaData has no public way to put a Table object back; this is what
            # Table() itself calls, and keeps the entity classes' tables identical
            md._add_table(t.name, t.schema, t)


async def run_block(block: Block) -> None:
    # a real module: dataclasses and typing look classes' modules up in sys.modules
    module = types.ModuleType(f"docs_{block.page[:-3].replace('-', '_')}_{block.line}")
    namespace = module.__dict__
    expect = Expectations(block)
    namespace["__expect__"] = expect
    sys.modules[module.__name__] = module
    try:
        result = eval(compile_block(block, instrumented(block)), namespace)  # our own docs
        if inspect.iscoroutine(result):
            await asyncio.wait_for(result, TIMEOUT)
        expect.check_all_seen()
    finally:
        del sys.modules[module.__name__]
        for value in list(namespace.values()):
            if isinstance(value, dbnexus.DbPool):
                await value.close()


def test_every_page_exists_is_linked_from_the_index_and_has_a_runnable_example() -> None:
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages >= set(PAGES), f"missing pages: {sorted(set(PAGES) - pages)}"
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    unlinked = sorted(p for p in pages - {"index.md"} if f"]({p})" not in index)
    assert not unlinked, f"pages not linked from index.md: {unlinked}"
    without = sorted(pages - {"cli.md"} - {b.page for b in RUNNABLE})
    assert not without, f"pages without a runnable example: {without}"


def test_the_convention_is_documented() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert NO_RUN in index


@pytest.mark.parametrize("block", [b for b in PYTHON if not b.run], ids=lambda b: b.id)
def test_no_run_examples_compile(block: Block) -> None:
    compile_block(block)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with own_metadata(), contextlib.redirect_stdout(io.StringIO()):
        asyncio.run(run_block(block))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a page."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_links_between_pages_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]*\.md)?(?:#([^)\s]*))?\)")
    for page in DOCS.glob("*.md"):
        for target, anchor in link.findall(page.read_text(encoding="utf-8")):
            path = page.parent / (target or page.name)
            assert path.is_file(), f"{page.name} links to {target}"
            if anchor:
                assert anchor in anchors(path), f"{page.name} links to {target}#{anchor}"


# ------------------------------------------------------------------------- cli.md


def test_cli_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with own_metadata():
        assert cli_main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "PermissionDenied" in out and "done." in out


def test_cli_migrate_creates_the_tables_of_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from dbnexus import entity, field\n\n\n"
        '@entity(table="users")\n'
        "class User:\n"
        "    id: int | None = field(primary_key=True, default=None)\n"
        "    name: str = field(max_length=100)\n"
    )
    monkeypatch.chdir(tmp_path)
    # what `PYTHONPATH=. dbnexus migrate` gives the command (see docs/cli.md)
    monkeypatch.syspath_prepend(str(tmp_path))
    with own_metadata():
        try:
            url = "sqlite+aiosqlite:///app.db"
            assert cli_main(["migrate", "--quiet", "--url", url, "myapp.models"]) == 0
        finally:
            sys.modules.pop("myapp.models", None)
            sys.modules.pop("myapp", None)
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "dbnexus_audit"} <= names
