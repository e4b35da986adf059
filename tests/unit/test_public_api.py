"""The public surface of ``dbnexus``: what ``__all__`` promises, and an import that does nothing."""

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import dbnexus

CONTRACT = [
    "DbPool",
    "DbSession",
    "entity",
    "crud",
    "field",
    "Permissions",
    "Q",
    "DbNexusError",
    "PermissionDenied",
    "NotFound",
    "ValidationError",
    "ConfigError",
    "TransactionError",
    "PoolTimeout",
    "MissingDependencyError",
    "DatabaseError",
    "IntegrityError",
    "AuditRecord",
    "PoolSettings",
    "entity_info",
    "metadata",
]
ERRORS = [
    "ConfigError",
    "DatabaseError",
    "IntegrityError",
    "MissingDependencyError",
    "NotFound",
    "PermissionDenied",
    "PoolTimeout",
    "TransactionError",
    "ValidationError",
]


def test_every_name_in_all_exists():
    assert len(dbnexus.__all__) == len(set(dbnexus.__all__))
    for name in dbnexus.__all__:
        assert hasattr(dbnexus, name), name


def test_all_lists_exactly_the_public_names():
    public = {
        n
        for n, v in vars(dbnexus).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public == set(dbnexus.__all__) - {"__version__"}


@pytest.mark.parametrize("name", CONTRACT)
def test_contract_names_are_exported(name):
    assert name in dbnexus.__all__
    assert getattr(dbnexus, name) is not None


def test_error_tree():
    for name in ERRORS:
        assert issubclass(getattr(dbnexus, name), dbnexus.DbNexusError), name
    assert issubclass(dbnexus.DbNexusError, Exception)
    assert issubclass(dbnexus.ValidationError, ValueError)
    assert issubclass(dbnexus.MissingDependencyError, ImportError)
    assert issubclass(dbnexus.MissingDependencyError, dbnexus.ConfigError)
    assert issubclass(dbnexus.PoolTimeout, dbnexus.DatabaseError)
    assert issubclass(dbnexus.IntegrityError, dbnexus.DatabaseError)
    e = dbnexus.PermissionDenied("alice", "users", "delete")
    assert (e.user_id, e.table, e.action) == ("alice", "users", "delete")
    assert all(w in str(e) for w in ("alice", "users", "delete"))
    nf = dbnexus.NotFound("users", 7)
    assert (nf.table, nf.record_id) == ("users", 7) and "7" in str(nf)


def test_public_callables_are_documented():
    for name in dbnexus.__all__:
        obj = getattr(dbnexus, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
    for method in ("connect", "session", "migrate", "audit_log", "serve_metrics", "close"):
        assert inspect.getdoc(getattr(dbnexus.DbPool, method)), method


def test_connect_options_are_keyword_only():
    params = inspect.signature(dbnexus.DbPool.connect).parameters
    kinds = {n: p.kind for n, p in params.items()}
    assert kinds["url"] is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name in (
        "permissions",
        "cache_ttl",
        "cache_maxsize",
        "max_connections",
        "min_connections",
        "connect_timeout",
        "acquire_timeout",
        "idle_timeout",
        "max_lifetime",
        "audit_reads",
    ):
        assert kinds[name] is inspect.Parameter.KEYWORD_ONLY, name


def test_importing_dbnexus_imports_no_driver():
    code = (
        "import json, sys\n"
        "import dbnexus\n"
        "print(json.dumps([m for m in ('asyncpg', 'aiomysql', 'pymysql', 'aiosqlite') "
        "if m in sys.modules]))\n"
    )
    root = Path(dbnexus.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=root,
    )
    assert json.loads(out.stdout) == []


def test_version():
    assert isinstance(dbnexus.__version__, str)
    assert dbnexus.__version__.count(".") >= 1
