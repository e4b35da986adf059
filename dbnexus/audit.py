"""The audit table, audit records and the audit-log query.

A write's audit row is inserted by the session in the write's own transaction,
so a rolled-back write leaves no audit row and a committed one always has one.
Denied and failed attempts are recorded on their own (there is no write to
share a transaction with).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from .backends import LongText
from .entity import metadata
from .errors import ValidationError
from .fieldtypes import UTCDateTime, jsonable

__all__ = [
    "AUDIT_COLUMNS",
    "AuditRecord",
    "audit_query",
    "audit_table",
    "batch_values",
    "insert_plan",
    "json_rows",
    "jsonable",
]

OUTCOMES = ("ok", "denied", "error")

#: ``dbnexus_audit``: one row per write (and per denied or failed attempt).
audit_table = sa.Table(
    "dbnexus_audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("domain", sa.String(255), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("table_name", sa.String(255), nullable=False),
    sa.Column("record_id", sa.String(255), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("changes", sa.JSON(), nullable=True),
    sa.Column("tags", sa.JSON(), nullable=True),
    sa.Index("ix_dbnexus_audit_table_ts", "table_name", "ts"),
    sa.Index("ix_dbnexus_audit_user_ts", "user_id", "ts"),
)

#: column order of audit rows as the session builds them (id is generated)
AUDIT_COLUMNS = (
    "ts",
    "user_id",
    "domain",
    "action",
    "table_name",
    "record_id",
    "outcome",
    "changes",
    "tags",
)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the audit log, as returned by ``pool.audit_log()``."""

    id: int
    ts: dt.datetime
    user_id: str
    domain: str | None
    action: str
    table_name: str
    record_id: str | None
    outcome: str
    changes: Any
    tags: list[str]
    shard: str | None = None


def record_id_text(value: Any) -> str | None:
    """Primary keys of any type are kept as text."""
    return None if value is None else str(value)


_RECORD_ID = AUDIT_COLUMNS.index("record_id")
_CHANGES = AUDIT_COLUMNS.index("changes")


def _processed(values: Iterable[Any], procs: Iterable[Any]) -> list[Any]:
    return [v if p is None or v is None else p(v) for v, p in zip(values, procs, strict=True)]


def batch_values(
    compiler: Any, template: Sequence[Any], records: Iterable[tuple[Any, Any]]
) -> list[Any]:
    """Processed values (row after row, AUDIT_COLUMNS order) of audit rows that share
    every value of ``template`` but their ``(record_id, changes)``, for a
    :class:`~dbnexus.statements.Compiler`'s dialect.

    The shared values go through their bind processors once, not once per row.
    """
    procs = compiler.bind_processors(audit_table, AUDIT_COLUMNS)
    row = _processed(template, procs)
    as_text, dump = procs[_RECORD_ID], procs[_CHANGES]
    out: list[Any] = []
    for record_id, changes in records:
        text = record_id_text(record_id)
        row[_RECORD_ID] = text if as_text is None or text is None else as_text(text)
        row[_CHANGES] = changes if dump is None or changes is None else dump(changes)
        out += row
    return out


class JsonAuditRows:
    """Audit rows that share every value but ``(record_id, changes)``, as one
    ``INSERT ... SELECT`` from a JSON document: ``JSON_TABLE`` on MySQL 8 and
    MariaDB 10.6+, ``json_each`` on SQLite 3.38+.

    The shared values are parameters once and the rows' own values one document,
    instead of nine parameters per row: PyMySQL renders parameters in Python, one
    at a time (the document goes as a hex literal, see ``LongText``), and one
    ``json.dumps`` of the document costs less than one per row.

    With ``pk`` (MySQL and MariaDB only), the rows are those of the multi-row INSERT
    just before on the same connection, whose keys the client does not know yet:
    the n-th row's key is ``LAST_INSERT_ID() + (n - 1) * step`` (consecutive keys,
    see the session), and the document holds only each row's other columns. So the
    rows and their audit rows go to the database together, in one trip.
    """

    __slots__ = ("procs", "sql")

    #: rows per statement (the document must fit in ``max_allowed_packet``)
    CHUNK = 1000
    _SHARED = tuple(i for i in range(len(AUDIT_COLUMNS)) if i not in (_RECORD_ID, _CHANGES))

    def __init__(self, compiler: Any, pk: str | None = None) -> None:
        dialect = compiler.dialect
        q = dialect.identifier_preparer.quote
        procs = compiler.bind_processors(audit_table, AUDIT_COLUMNS)
        self.procs = [procs[i] for i in self._SHARED]
        mark = "%s"
        rows = "JSON_TABLE(CONVERT(%s USING utf8mb4), '$[*]' COLUMNS ({}))"
        order = ""
        if dialect.name == "sqlite":
            if pk is not None:
                raise ValueError("keyed audit rows are MySQL's (LAST_INSERT_ID)")
            mark, order = "?", " ORDER BY r.key"
            # JSON text of the changes (a JSON null is SQL NULL, as in VALUES)
            record_id, changes = "r.value ->> '$[0]'", "NULLIF(r.value -> '$[1]', 'null')"
            source = "json_each(?)"
        elif pk is None:
            record_id, changes = "r.record_id", "r.changes"
            # LONGTEXT: an over-long record id fails on the audit column as in VALUES
            source = rows.format("record_id LONGTEXT PATH '$[0]', changes JSON PATH '$[1]'")
        else:
            record_id = "CAST(r.k AS CHAR)"
            # pk is a checked identifier ([A-Za-z0-9_]), safe inside the literal; the
            # key goes first, where most entities declare it, and as the object has no
            # other member of that name, nothing is merged
            changes = f"JSON_MERGE_PRESERVE(JSON_OBJECT('{pk}', r.k), r.changes)"
            # LAST_INSERT_ID() is the previous statement's until this one ends
            source = (
                "(SELECT LAST_INSERT_ID() + (j.n - 1) * %s AS k, j.changes FROM "
                + rows.format("n FOR ORDINALITY, changes JSON PATH '$'")
                + " AS j)"
            )
        select = [
            record_id if i == _RECORD_ID else changes if i == _CHANGES else mark
            for i in range(len(AUDIT_COLUMNS))
        ]
        self.sql = (
            f"INSERT INTO {q(audit_table.name)} ({', '.join(q(c) for c in AUDIT_COLUMNS)}) "
            f"SELECT {', '.join(select)} FROM {source} AS r{order}"
        )

    def _shared(self, template: Sequence[Any]) -> list[Any]:
        return _processed([template[i] for i in self._SHARED], self.procs)

    def params(self, template: Sequence[Any], records: Iterable[tuple[Any, Any]]) -> list[Any]:
        """Parameters for audit rows like ``template`` with these ``(record_id, changes)``."""
        doc = json.dumps([[record_id_text(r), c] for r, c in records])
        return [*self._shared(template), LongText(doc)]

    def keyed_params(
        self, template: Sequence[Any], step: int, changes: Iterable[dict[str, Any]]
    ) -> list[Any]:
        """Parameters (with ``pk``) for audit rows like ``template`` of the rows just
        inserted, keys ``step`` apart, whose other columns are ``changes``."""
        return [*self._shared(template), step, LongText(json.dumps(list(changes)))]


def json_rows(compiler: Any, pk: str | None = None) -> JsonAuditRows | None:
    """The :class:`JsonAuditRows` statement (with ``pk``: for the rows just inserted)
    for a compiler's dialect, or None where the database cannot read rows out of a
    JSON document."""
    if not compiler.json_source:
        return None
    return compiler.memo(("audit_json_rows", pk), lambda: JsonAuditRows(compiler, pk))


def audit_query(
    *,
    user_id: str | None = None,
    table: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    record_id: Any = None,
    since: dt.datetime | None = None,
    limit: int | None = 100,
) -> sa.Select[Any]:
    """SELECT audit rows matching the filters, newest first."""
    t = audit_table
    stmt = sa.select(*t.c)
    for col, value in (
        ("user_id", user_id),
        ("table_name", table),
        ("action", action),
        ("outcome", outcome),
    ):
        if value is not None:
            if not isinstance(value, str):
                raise ValidationError(f"audit_log {col} must be a str, got {value!r}")
            stmt = stmt.where(t.c[col] == value)
    if outcome is not None and outcome not in OUTCOMES:
        raise ValidationError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if record_id is not None:
        stmt = stmt.where(t.c.record_id == str(record_id))
    if since is not None:
        if not isinstance(since, dt.datetime):
            raise ValidationError(f"since must be a datetime, got {since!r}")
        stmt = stmt.where(t.c.ts >= since)
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValidationError(f"limit must be a non-negative int, got {limit!r}")
        stmt = stmt.limit(limit)
    return stmt.order_by(t.c.ts.desc(), t.c.id.desc())


def insert_plan(compiler: Any) -> Any:
    """The compiled single-row audit INSERT for a :class:`~dbnexus.statements.Compiler`."""
    return compiler.cached(
        ("audit_insert",),
        lambda: sa.insert(audit_table).values(
            {
                c: sa.bindparam(f"p{i}", type_=audit_table.c[c].type)
                for i, c in enumerate(AUDIT_COLUMNS)
            }
        ),
    )


def to_record(row: sa.Row[Any], shard: str | None = None) -> AuditRecord:
    """An :class:`AuditRecord` from a row of :func:`audit_query`."""
    m = row._mapping
    return AuditRecord(
        id=m["id"],
        ts=m["ts"],
        user_id=m["user_id"],
        domain=m["domain"],
        action=m["action"],
        table_name=m["table_name"],
        record_id=m["record_id"],
        outcome=m["outcome"],
        changes=m["changes"],
        tags=list(m["tags"] or []),
        shard=shard,
    )
