"""The ``dbnexus`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return asyncio.run(run(args.url))


def _migrate(args: argparse.Namespace) -> int:
    from . import DbPool

    # like `python -m`, find the application's modules from the current directory
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.module:
        # importing the module declares its entities on dbnexus.metadata
        importlib.import_module(module)

    async def go() -> None:
        pool = await DbPool.connect(args.url)
        try:
            await pool.migrate(progress=not args.quiet)
        finally:
            await pool.close()

    asyncio.run(go())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dbnexus`` console script."""
    parser = argparse.ArgumentParser(prog="dbnexus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a tour on an embedded SQLite file (no server needed)")
    demo.add_argument("--url", help="run on this database instead of a temporary SQLite file")
    demo.set_defaults(func=_demo)

    migrate = sub.add_parser("migrate", help="create the tables of the entities in modules")
    migrate.add_argument("--url", required=True, help="database URL")
    migrate.add_argument("module", nargs="+", help="modules that declare entities")
    migrate.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    migrate.set_defaults(func=_migrate)

    args = parser.parse_args(argv)
    from .errors import DbNexusError

    try:
        return int(args.func(args))
    except (DbNexusError, ImportError) as exc:
        print(f"dbnexus {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
