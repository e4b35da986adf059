"""Core statements compiled once per dialect into driver-ready SQL.

SQLAlchemy does the hard parts (dialect SQL, quoting, type conversion); this
module keeps the result: the SQL string in the driver's positional paramstyle,
the order in which values fill it, and SQLAlchemy's own bind/result processors
for each position. Executing then costs a list comprehension and one driver
call, instead of SQLAlchemy's per-execution machinery.

Plans are cached per :class:`Compiler` (one per engine), keyed by the shape of
the query, so a query shape is compiled once and reused.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from .audit import AUDIT_COLUMNS, audit_table
from .entity import EntityInfo
from .query import Shape, count_statement, select_statement

__all__ = ["Compiler", "EntityPlan", "SqlPlan"]

Processor = Callable[[Any], Any] | None
R = TypeVar("R")

# PostgreSQL type OIDs: SQLAlchemy's asyncpg numeric result processors need them
_PG_COLTYPES = {sa.Numeric: 1700, sa.Float: 701, sa.Double: 701}


class SqlPlan:
    """One compiled statement: SQL text, parameter order and processors."""

    __slots__ = ("_consts", "_procs", "order", "sql")

    def __init__(
        self,
        sql: str,
        order: tuple[int, ...],
        procs: tuple[Processor, ...],
        consts: tuple[Any, ...] = (),
    ) -> None:
        self.sql = sql
        # negative positions address constants the dialect added (SQLite's OFFSET 0)
        self.order = order
        self._procs = procs if any(procs) else None
        self._consts = consts

    def params(self, values: Sequence[Any]) -> list[Any]:
        """Positional parameters for the driver from values in plan order."""
        if self._consts:
            values = (*values, *self._consts)
        if self._procs is None:
            return [values[i] for i in self.order]
        out = []
        for i, proc in zip(self.order, self._procs, strict=True):
            v = values[i]
            out.append(v if proc is None or v is None else proc(v))
        return out

    def ordered(self, values: Sequence[Any]) -> list[Any]:
        """Positional parameters from values already processed, in plan order."""
        if self._consts:
            values = (*values, *self._consts)
        return [values[i] for i in self.order]

    def __repr__(self) -> str:
        return f"SqlPlan({self.sql!r})"


class RowDecoder:
    """Turns a driver row into Python values with SQLAlchemy's result processors."""

    __slots__ = ("_procs",)

    def __init__(self, procs: Sequence[Processor]) -> None:
        self._procs = tuple((i, p) for i, p in enumerate(procs) if p is not None)

    def __call__(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if not self._procs:
            return tuple(row)
        values = list(row)
        for i, proc in self._procs:
            v = values[i]
            if v is not None:
                values[i] = proc(v)
        return tuple(values)


class EntityPlan:
    """The fixed statements of one entity on one dialect."""

    __slots__ = (
        "audited_auto",
        "audited_full",
        "audited_update",
        "by_pk",
        "by_pk_for_update",
        "decode",
        "delete_by_pk",
        "delete_returning",
        "info",
        "insert_auto",
        "insert_full",
        "insert_returning",
        "pk_index",
        "update_by_pk",
    )

    def __init__(self, compiler: Compiler, info: EntityInfo) -> None:
        dialect = compiler.dialect
        t = info.table
        pk = info.pk
        pk_col = t.c[pk.name]
        self.info = info
        self.pk_index = info.pk_index
        self.decode = RowDecoder([compiler.result_processor(c) for c in t.c])
        where_pk = pk_col == sa.bindparam("p0", type_=pk_col.type)
        self.by_pk = compiler.compile(sa.select(*t.c).where(where_pk))
        self.by_pk_for_update = compiler.compile(sa.select(*t.c).where(where_pk).with_for_update())
        self.insert_returning = bool(dialect.insert_returning)
        self.insert_full = compiler.compile(
            _insert(t, info.names, self.insert_returning, pk_col), value_names=info.names
        )
        auto_names = tuple(n for n in info.names if n != pk.name)
        # only an autoincrement key may be left out of an INSERT
        self.insert_auto = (
            compiler.compile(
                _insert(t, auto_names, self.insert_returning, pk_col),
                value_names=auto_names,
                all_names=info.names,
            )
            if pk.autoincrement
            else self.insert_full
        )
        upd = (
            sa.update(t)
            .where(pk_col == sa.bindparam(f"p{len(info.names)}", type_=pk_col.type))
            .values(
                {n: sa.bindparam(f"p{info.names.index(n)}", type_=t.c[n].type) for n in auto_names}
            )
        )
        # values: every column in declaration order, then the pk again for WHERE
        self.update_by_pk = compiler.compile(upd)
        self.delete_returning = bool(dialect.delete_returning)
        dele = sa.delete(t).where(where_pk)
        self.delete_by_pk = compiler.compile(
            dele.returning(*t.c) if self.delete_returning else dele
        )
        self.audited_auto = self.audited_full = self.audited_update = None
        if dialect.name == "postgresql":
            self.audited_update = PgAuditedUpdate(compiler, info)
            quote = dialect.identifier_preparer.quote
            self.audited_full = _pg_audited_insert(self.insert_full, pk.name, quote)
            if pk.autoincrement:
                self.audited_auto = _pg_audited_insert(self.insert_auto, pk.name, quote)


def _insert(t: sa.Table, names: Sequence[str], returning: bool, pk_col: sa.Column[Any]) -> Any:
    stmt = sa.insert(t).values({n: sa.bindparam(n, type_=t.c[n].type) for n in names})
    if returning:
        stmt = stmt.returning(pk_col)
    return stmt


# the audit table's INSERT head; its columns in AUDIT_COLUMNS order
_AUDIT_INSERT = f"INSERT INTO {audit_table.name} ({', '.join(AUDIT_COLUMNS)}) "


#: positions in the audit-row values (AUDIT_COLUMNS order) an audited insert takes:
#: all but record_id, which the database fills in
PG_INSERT_AUDIT_PARAMS = (0, 1, 2, 3, 4, 6, 7, 8)


def _pg_audited_insert(insert: SqlPlan, pk: str, quote: Callable[[str], str]) -> str:
    """One statement that inserts a row and its audit row (PostgreSQL).

    A data-modifying CTE is atomic on its own, so the write and its audit row
    need no BEGIN/COMMIT round trips. Parameters: the insert's, then the audit
    row's ts, user_id, domain, action, table_name, outcome, changes, tags; the
    generated key is filled into record_id and into ``changes`` by the database.
    """
    n = len(insert.order)
    p = [f"${n + i}" for i in range(1, 9)]
    qpk = quote(pk)
    # pk is a checked identifier ([A-Za-z0-9_]), safe inside the path literal
    return (
        f"WITH ins AS ({insert.sql}) {_AUDIT_INSERT}"
        f"SELECT {p[0]}::TIMESTAMP WITH TIME ZONE, {p[1]}::VARCHAR, {p[2]}::VARCHAR, "
        f"{p[3]}::VARCHAR, {p[4]}::VARCHAR, CAST(ins.{qpk} AS TEXT), {p[5]}::VARCHAR, "
        f"CAST(jsonb_set(CAST({p[6]}::JSON AS JSONB), '{{{pk}}}', to_jsonb(ins.{qpk})) AS JSON), "
        f"{p[7]}::JSON FROM ins RETURNING dbnexus_audit.record_id"
    )


class PgAuditedUpdate:
    """One PostgreSQL statement that locks a row, updates it and writes its audit row.

    The changed fields and their old -> new values are worked out by the
    database and rendered the way :func:`~dbnexus.fieldtypes.jsonable` renders
    them in Python, so audit rows look the same whichever path wrote them.
    ``created_at`` and ``deleted_at`` keep their stored values. The statement
    returns the old row (nothing when it is absent or soft-deleted).
    """

    __slots__ = ("idx", "names", "pk_proc", "procs", "sql")

    #: positions in the audit-row values (AUDIT_COLUMNS order) the statement takes
    AUDIT_PARAMS = (0, 1, 2, 4, 5, 8)  # ts, user_id, domain, table_name, record_id, tags

    def __init__(self, compiler: Compiler, info: EntityInfo) -> None:
        dialect = compiler.dialect
        q = dialect.identifier_preparer.quote
        types = dialect.type_compiler_instance
        t = info.table
        kept = {"created_at", "deleted_at"} if info.timestamps or info.soft_delete else set()
        self.names = tuple(n for n in info.names if n != info.pk.name and n not in kept)
        self.procs = compiler.bind_processors(t, self.names)
        self.idx = tuple(info.names.index(n) for n in self.names)
        (self.pk_proc,) = compiler.bind_processors(t, (info.pk.name,))
        k = len(self.names)
        tbl, pk = q(info.table_name), q(info.pk.name)
        cast = {n: types.process(t.c[n].type.dialect_impl(dialect)) for n in info.names}
        sets = ", ".join(f"{q(n)} = ${i + 1}::{cast[n]}" for i, n in enumerate(self.names))
        p = {
            name: f"${k + i}"
            for i, name in enumerate(
                ("pk", "new", "ts", "user", "domain", "table", "record", "tags"), start=1
            )
        }
        live = f" AND {tbl}.{q('deleted_at')} IS NULL" if info.soft_delete else ""
        cols = ", ".join(f"{tbl}.{q(n)}" for n in info.names)
        diffs = ", ".join(
            f"('{n}', CASE WHEN {_pg_changed(info, n, f'u.{q(n)}', i + 1, p['new'], cast)} "
            f"THEN jsonb_build_array({_pg_json(info, n, f'u.{q(n)}')}, "
            f"{p['new']}::jsonb -> '{n}') END)"
            for i, n in enumerate(self.names)
        )
        changes = (
            f"(SELECT COALESCE(jsonb_object_agg(d.k, d.v), '{{}}'::jsonb) FROM (VALUES {diffs})"
            " AS d(k, v) WHERE d.v IS NOT NULL)::json"
            if self.names
            else "'{}'::json"
        )
        self.sql = (
            f"WITH o AS (SELECT {cols} FROM {tbl} "
            f"WHERE {tbl}.{pk} = {p['pk']}::{cast[info.pk.name]}{live} FOR UPDATE), "
            f"u AS (UPDATE {tbl} SET {sets} FROM o WHERE {tbl}.{pk} = o.{pk} RETURNING "
            + ", ".join(f"o.{q(n)}" for n in info.names)
            + "), "
            f"a AS ({_AUDIT_INSERT}"
            f"SELECT {p['ts']}::TIMESTAMP WITH TIME ZONE, {p['user']}::VARCHAR, "
            f"{p['domain']}::VARCHAR, 'update', {p['table']}::VARCHAR, {p['record']}::VARCHAR, "
            f"'ok', {changes}, {p['tags']}::JSON FROM u) "
            "SELECT * FROM u"
        )

    def params(
        self, values: Sequence[Any], pk: Any, new_json: str, audit: Sequence[Any]
    ) -> list[Any]:
        """Parameters: the SET values, the key, the new values as JSON, then the audit
        row's values at :attr:`AUDIT_PARAMS` (already processed)."""
        out = []
        for i, proc in zip(self.idx, self.procs, strict=True):
            v = values[i]
            out.append(v if proc is None or v is None else proc(v))
        if self.pk_proc is not None:
            pk = self.pk_proc(pk)
        return [*out, pk, new_json, *audit]


# types whose row_to_json rendering differs from jsonable's
_PG_JSON_DIFFERS = (dt.datetime, dt.time, decimal.Decimal, bytes)


def _pg_changed(
    info: EntityInfo, name: str, old: str, param: int, new: str, cast: dict[str, str]
) -> str:
    if info.by_name[name].pytype in (dict, list):
        # json has no equality operator; jsonb compares by value
        # None is stored as SQL NULL, not as JSON null
        return f"{old}::jsonb IS DISTINCT FROM NULLIF({new}::jsonb -> '{name}', 'null'::jsonb)"
    return f"{old} IS DISTINCT FROM ${param}::{cast[name]}"


def _pg_json(info: EntityInfo, name: str, col: str) -> str:
    """SQL rendering a column value as JSON exactly like ``jsonable`` does in Python."""
    pytype = info.by_name[name].pytype
    if pytype is dt.datetime:
        utc = f"({col} AT TIME ZONE 'UTC')"
        return (
            f"to_jsonb(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            f"CASE WHEN to_char({utc}, 'US') = '000000' THEN '' "
            f"ELSE to_char({utc}, '.US') END || '+00:00')"
        )
    if pytype is dt.time:
        stamp = f"(DATE '2000-01-01' + {col})"
        return (
            f"to_jsonb(to_char({stamp}, 'HH24:MI:SS') || CASE WHEN to_char({stamp}, 'US') "
            f"= '000000' THEN '' ELSE to_char({stamp}, '.US') END)"
        )
    if pytype is decimal.Decimal:
        return f"to_jsonb({col}::text)"
    if pytype is bytes:
        return f"to_jsonb(translate(encode({col}, 'base64'), E'\\n', ''))"
    if pytype in (dict, list):
        return f"{col}::jsonb"
    return f"to_jsonb({col})"


#: the text form of a batch column (see :class:`PgBatchInsert`): values joined by the
#: unit separator, None written as the record separator
_SEP, _NULL = "\x1f", "\x1e"
_NONE = type(None)


def _joined_strs(col: Sequence[Any]) -> str | None:
    """A column of str (or None) as one string; None when it cannot go that way (a
    value of another type, or one holding a separator)."""
    kinds = set(map(type, col))
    if kinds == {str}:
        nulls, text = 0, _SEP.join(col)
    elif kinds <= {str, _NONE}:
        nulls = col.count(None)
        text = _SEP.join([_NULL if v is None else v for v in col])
    else:
        return None
    # as many separators as the joins made: no value holds one
    if text.count(_SEP) != len(col) - 1 or text.count(_NULL) != nulls:
        return None
    return text


def _joined_ints(col: Sequence[Any]) -> str | None:
    """A column of int (or None) as one comma-separated string; None when it cannot go
    that way (a value of another type, or one too long for ``str``)."""
    kinds = set(map(type, col))
    try:
        if kinds == {int}:
            return ",".join(map(str, col))
        if kinds <= {int, _NONE}:
            return ",".join(["" if v is None else str(v) for v in col])
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        pass
    return None


#: how a column travels in the text form: its joiner and the SQL that splits it
_TEXT_FORMS: dict[type, tuple[Callable[[Sequence[Any]], str | None], str]] = {
    str: (_joined_strs, "string_to_array(${}::TEXT, E'\\x1f', E'\\x1e')"),
    int: (_joined_ints, "string_to_array(${}::TEXT, ',', '')"),
}


class PgBatchInsert:
    """Rows and their audit rows in one PostgreSQL statement.

    The rows arrive as one array per column (``unnest``), so the statement and
    its parameter count do not grow with the batch; each audit row's
    ``changes`` is rendered by the database like ``jsonable`` renders it.
    Parameters: one per column, then ts, user_id, domain, table_name, tags.
    Returns one row: the rows' keys as an ascending array.

    A str or int column with no bind processor goes, when it can, as one text
    parameter that the database splits into the array (``string_to_array``):
    asyncpg spends about a third of a microsecond per element encoding an array,
    and joining costs a C loop. :meth:`bind` falls back to arrays for a chunk that
    cannot go that way (one row, a value of another type, a str holding ``\\x1f``
    or ``\\x1e``).
    """

    __slots__ = ("idx", "joiners", "procs", "sql", "text_sql")

    #: positions in the audit-row values (AUDIT_COLUMNS order) the statement takes
    AUDIT_PARAMS = (0, 1, 2, 4, 8)  # ts, user_id, domain, table_name, tags

    def __init__(self, compiler: Compiler, info: EntityInfo, names: Sequence[str]) -> None:
        dialect = compiler.dialect
        q = dialect.identifier_preparer.quote
        types = dialect.type_compiler_instance
        t = info.table
        self.idx = tuple(info.names.index(n) for n in names)
        self.procs = compiler.bind_processors(t, names)
        k = len(names)
        casts = [types.process(t.c[n].type.dialect_impl(dialect)) for n in names]
        forms = [
            None if proc is not None else _TEXT_FORMS.get(info.by_name[n].pytype)
            for n, proc in zip(names, self.procs, strict=True)
        ]
        self.joiners = tuple(None if f is None else f[0] for f in forms)
        # row_to_json renders most types the way jsonable does (and keeps the column
        # order); the others are rendered one by one over it
        special = [
            f"'{n}', {_pg_json(info, n, f'ins.{q(n)}')}"
            for n in info.names
            if info.by_name[n].pytype in _PG_JSON_DIFFERS
        ]
        changes = "row_to_json(ins)"
        if special:
            # jsonb_build_object takes at most 100 arguments: 50 pairs per call
            changes = " || ".join(
                ["row_to_json(ins)::jsonb"]
                + [
                    f"jsonb_build_object({', '.join(special[i : i + 50])})"
                    for i in range(0, len(special), 50)
                ]
            )
        p = [f"${k + i}" for i in range(1, 6)]
        pk = f"ins.{q(info.pk.name)}"
        # the audit INSERT is a CTE of its own so that the statement returns the keys
        # in their own type, in one array (PostgreSQL runs a data-modifying CTE even
        # when nothing reads it)
        tail = (
            ") RETURNING "
            + ", ".join(f"{q(info.table_name)}.{q(n)}" for n in info.names)
            + f"), aud AS ({_AUDIT_INSERT}"
            f"SELECT {p[0]}::TIMESTAMP WITH TIME ZONE, {p[1]}::VARCHAR, {p[2]}::VARCHAR, "
            f"'insert', {p[3]}::VARCHAR, CAST({pk} AS TEXT), 'ok', "
            f"CAST({changes} AS JSON), {p[4]}::JSON FROM ins) "
            f"SELECT array_agg({pk} ORDER BY {pk}) FROM ins"
        )
        head = f"WITH ins AS (INSERT INTO {q(info.table_name)} ({', '.join(q(n) for n in names)}) "
        arrays = [f"${i + 1}::{cast}[]" for i, cast in enumerate(casts)]
        self.sql = f"{head}SELECT * FROM unnest({', '.join(arrays)}{tail}"
        texts = [
            a if f is None else f"{f[1].format(i + 1)}::{cast}[]"
            for i, (a, f, cast) in enumerate(zip(arrays, forms, casts, strict=True))
        ]
        self.text_sql = (
            f"{head}SELECT * FROM unnest({', '.join(texts)}{tail}" if texts != arrays else None
        )

    def bind(self, rows: Sequence[Sequence[Any]], audit: Sequence[Any]) -> tuple[str, list[Any]]:
        """The SQL and its parameters for ``rows`` (full column values), then ``audit``:
        the text form when every column that has one can take it, else arrays."""
        columns = list(zip(*rows, strict=True))
        arrays: list[Any] = []
        for i, proc in zip(self.idx, self.procs, strict=True):
            col = columns[i]
            arrays.append(col if proc is None else [None if v is None else proc(v) for v in col])
        if self.text_sql is not None and len(rows) > 1:
            joined = zip(arrays, self.joiners, strict=True)
            texts = [a if join is None else join(a) for a, join in joined]
            if None not in texts:
                return self.text_sql, [*texts, *audit]
        return self.sql, [*arrays, *audit]


class Compiler:
    """Compiles Core statements for one dialect and caches plans by key."""

    def __init__(self, dialect: sa.Dialect, *, cache_size: int = 2048) -> None:
        self.dialect = dialect
        self._entities: dict[EntityInfo, EntityPlan] = {}
        self._plans: OrderedDict[Any, SqlPlan] = OrderedDict()
        self._cache_size = cache_size
        self._pg = dialect.name == "postgresql"
        self._memo: dict[Any, Any] = {}
        version = dialect.server_version_info or ()
        #: the database reads rows out of a JSON document: JSON_TABLE (MySQL 8.0.4,
        #: MariaDB 10.6 and later) or json_each (SQLite 3.38 and later, where the
        #: JSON functions are built in)
        self.json_source = (
            dialect.name == "mysql"
            and version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 4))
        ) or (dialect.name == "sqlite" and version >= (3, 38))

    def entity(self, info: EntityInfo) -> EntityPlan:
        """The fixed statements of an entity (built on first use)."""
        plan = self._entities.get(info)
        if plan is None:
            plan = self._entities[info] = EntityPlan(self, info)
        return plan

    def result_processor(self, column: sa.ColumnElement[Any]) -> Processor:
        """SQLAlchemy's result processor for a column on this dialect (None when none)."""
        coltype = None
        if self._pg:
            for base, oid in _PG_COLTYPES.items():
                if isinstance(column.type, base):
                    coltype = oid
        return column.type._cached_result_processor(self.dialect, coltype)

    def compile(
        self,
        stmt: Any,
        *,
        value_names: Sequence[str] | None = None,
        all_names: Sequence[str] | None = None,
    ) -> SqlPlan:
        """Compile ``stmt`` into a :class:`SqlPlan`.

        Bind parameters named ``p<N>`` take value ``N``; binds named after
        columns take the value at that name's index in ``all_names`` (or in
        ``value_names`` when ``all_names`` is None).
        """
        compiled = stmt.compile(dialect=self.dialect)
        names = compiled.positiontup or []
        index_of = {n: i for i, n in enumerate(all_names or value_names or ())}
        order: list[int] = []
        procs = []
        consts: list[Any] = []
        for name in names:
            bind = compiled.binds[name]
            if name in index_of:
                order.append(index_of[name])
            elif name.startswith("p") and name[1:].isdigit():
                order.append(int(name[1:]))
            elif bind.value is not None and not bind.callable:
                order.append(len(consts))
                consts.append(bind.value)
            else:
                raise AssertionError(f"unexpected bind parameter {name!r} in {compiled.string}")
            procs.append(bind.type._cached_bind_processor(self.dialect))
        if consts:
            first = len(order) - len(consts)
            # constants sit after the values: address them from the end
            k = 0
            for pos, name in enumerate(names):
                if name not in index_of and not (name.startswith("p") and name[1:].isdigit()):
                    order[pos] = k - len(consts)
                    k += 1
            del first
        return SqlPlan(compiled.string, tuple(order), tuple(procs), tuple(consts))

    def cached(self, key: Any, build: Callable[[], Any]) -> SqlPlan:
        """The plan for ``key``, compiling ``build()`` on first use (LRU bounded)."""
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = self.compile(build())
        self._plans[key] = plan
        if len(self._plans) > self._cache_size:
            self._plans.popitem(last=False)
        return plan

    def select(
        self,
        info: EntityInfo,
        where: Shape,
        order: Shape,
        *,
        limit: bool,
        offset: bool,
        include_deleted: bool = False,
        nulls_first: bool | None = None,
    ) -> SqlPlan:
        """The plan for ``find_all`` with this shape."""
        key = ("select", info, where, order, limit, offset, include_deleted, nulls_first)
        return self.cached(
            key,
            lambda: select_statement(
                info,
                where,
                order,
                limit=limit,
                offset=offset,
                include_deleted=include_deleted,
                nulls_first=nulls_first,
            ),
        )

    def count(self, info: EntityInfo, where: Shape, *, include_deleted: bool = False) -> SqlPlan:
        """The plan for ``count`` with this shape."""
        key = ("count", info, where, include_deleted)
        return self.cached(
            key, lambda: count_statement(info, where, include_deleted=include_deleted)
        )

    def memo(self, key: Any, build: Callable[[], R]) -> R:
        """What ``build()`` makes for this dialect, made once per key (not bounded:
        keys are fixed by declarations)."""
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = build()
        return got

    def pg_batch_insert(self, info: EntityInfo, names: Sequence[str]) -> PgBatchInsert:
        """The PostgreSQL batch insert of ``names`` columns (see :class:`PgBatchInsert`)."""
        names = tuple(names)
        return self.memo(("pg_batch", info, names), lambda: PgBatchInsert(self, info, names))

    def bind_processors(self, table: sa.Table, names: Sequence[str]) -> tuple[Processor, ...]:
        """SQLAlchemy's bind processor of each of ``names`` on this dialect."""
        names = tuple(names)
        return self.memo(
            ("bind_processors", table, names),
            lambda: tuple(table.c[n].type._cached_bind_processor(self.dialect) for n in names),
        )

    def insert_many(
        self, table: sa.Table, names: Sequence[str], rows: int, returning: sa.Column[Any] | None
    ) -> SqlPlan:
        """A multi-row ``INSERT ... VALUES (...), (...)``; values row after row."""
        key = ("insert_many", table, tuple(names), rows, returning is not None)

        def build() -> Any:
            n = len(names)
            stmt = sa.insert(table).values(
                [
                    {
                        c: sa.bindparam(f"p{r * n + j}", type_=table.c[c].type)
                        for j, c in enumerate(names)
                    }
                    for r in range(rows)
                ]
            )
            return stmt.returning(returning) if returning is not None else stmt

        return self.cached(key, build)
