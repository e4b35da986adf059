"""``@entity`` and ``field()``: declare a table as a dataclass.

The decorator validates the declaration, turns the class into a (keyword-only)
dataclass unless it already is one, builds a SQLAlchemy ``Table`` on
:data:`metadata` (so Alembic can autogenerate from it) and keeps everything it
learned in one :class:`EntityInfo`, read through :func:`entity_info`.

This layer knows nothing of sessions, pools or dialect execution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import operator
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, dataclass_transform, overload

import sqlalchemy as sa

from .errors import ValidationError
from .fieldtypes import column_fits, jsonable, python_type_of, sql_type_for, value_checker

__all__ = [
    "EntityInfo",
    "FieldInfo",
    "IndexSpec",
    "Relation",
    "entity",
    "entity_info",
    "field",
    "index",
    "is_entity",
    "metadata",
    "related",
]

T = TypeVar("T")

#: The MetaData every entity table (and the audit table) is declared on.
metadata = sa.MetaData()

# table name -> newest entity class declared for it (rebalance walks these)
_declared: dict[str, type] = {}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RESERVED_TABLES = frozenset({"dbnexus_audit"})
_META_KEY = "dbnexus"
_MISSING = dataclasses.MISSING


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a safe SQL identifier, else raise ValidationError."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValidationError(
            f"bad {what} name {name!r}: use letters, digits and underscores "
            "(starting with a letter or underscore), at most 63 characters"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldOptions:
    primary_key: bool = False
    max_length: int | None = None
    unique: bool = False
    index: bool = False
    autoincrement: bool | None = None
    references: Any = None
    on_delete: str | None = None
    precision: int = 20
    scale: int = 6
    relation: str | None = None


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | Any = _MISSING,
    primary_key: bool = False,
    max_length: int | None = None,
    unique: bool = False,
    index: bool = False,
    autoincrement: bool | None = None,
    references: type | None = None,
    on_delete: str | None = None,
    relation: str | None = None,
    precision: int = 20,
    scale: int = 6,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """Declare a column with options; use as a dataclass field default.

    Args:
        default, default_factory: as in :func:`dataclasses.field`.
        primary_key: this field is the primary key (exactly one per entity).
            An ``int`` primary key autoincrements unless ``autoincrement=False``.
        max_length: maximum length of a ``str``/``bytes`` value; checked before sending.
        unique, index: create a unique constraint / an index on this column.
        references: an entity class; the column becomes a foreign key to its primary key.
        on_delete: ``"CASCADE"``, ``"SET NULL"`` or ``"RESTRICT"`` for ``references``.
        relation: the name ``include=`` loads the referenced row under; by default
            the field name without its ``_id`` suffix (``author_id`` -> ``author``).
            A field not ending in ``_id`` has no relation unless one is named.
        precision, scale: for ``Decimal`` fields.

    Example::

        @entity(table="users")
        class User:
            id: int | None = field(primary_key=True, default=None)
            email: str = field(max_length=200, unique=True)
    """
    if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
        raise ValidationError(f"max_length must be a positive int, got {max_length!r}")
    if on_delete is not None and on_delete.upper() not in ("CASCADE", "SET NULL", "RESTRICT"):
        raise ValidationError(f"on_delete must be CASCADE, SET NULL or RESTRICT, got {on_delete!r}")
    opts = _FieldOptions(
        primary_key=primary_key,
        max_length=max_length,
        unique=unique,
        index=index,
        autoincrement=autoincrement,
        references=references,
        on_delete=on_delete.upper() if on_delete else None,
        relation=check_identifier(relation, "relation") if relation else None,
        precision=precision,
        scale=scale,
    )
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        repr=repr,
        compare=compare,
        metadata={_META_KEY: opts},
    )


@dataclasses.dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index declared with :func:`index`."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    where: Mapping[str, Any] | None = None


def index(
    name: str, *columns: str, unique: bool = False, where: Mapping[str, Any] | None = None
) -> IndexSpec:
    """Declare a single, composite or conditional index for ``@entity(indexes=[...])``.

    ``where`` holds equality conditions (``{"status": "active"}``) and makes a
    partial index on PostgreSQL and SQLite; MySQL has no partial indexes, so
    there the full index is created.
    """
    check_identifier(name, "index")
    if not columns:
        raise ValidationError(f"index {name!r} needs at least one column")
    return IndexSpec(name, tuple(columns), unique, dict(where) if where else None)


@dataclasses.dataclass(frozen=True, slots=True)
class Relation:
    """A one-to-many relation declared with :func:`related` (loaded with ``include=``)."""

    target: Any  # entity class, or a zero-argument callable returning it (forward refs)
    foreign_key: str  # field on the target that references this entity

    def target_class(self) -> type:
        t = self.target
        return t if isinstance(t, type) else t()


def related(target: type | Callable[[], type], foreign_key: str) -> Any:
    """Declare a one-to-many relation: rows of ``target`` whose ``foreign_key`` points here.

    The attribute is not a column; ``find_by_id(..., include=["name"])`` fills it.
    """
    return _RelatedMarker(Relation(target, foreign_key))


class _RelatedMarker:
    __slots__ = ("relation",)

    def __init__(self, relation: Relation) -> None:
        self.relation = relation


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class FieldInfo:
    """One column of an entity, as dbnexus understands it."""

    name: str
    pytype: type
    nullable: bool
    primary_key: bool
    autoincrement: bool
    max_length: int | None
    unique: bool
    system: bool
    references: type | None
    relation: str | None
    check: Callable[[Any], None]
    column: sa.Column[Any]


#: column types whose checked values are JSON as they are
_JSON_SCALARS = (str, int, float, bool)


@dataclasses.dataclass(eq=False, slots=True)
class EntityInfo:
    """Everything ``@entity`` learned about a class; read it with :func:`entity_info`."""

    cls: type
    table_name: str
    table: sa.Table
    fields: tuple[FieldInfo, ...]
    by_name: dict[str, FieldInfo]
    pk: FieldInfo
    names: tuple[str, ...]
    shard_key: str | None
    timestamps: bool
    soft_delete: bool
    indexes: tuple[IndexSpec, ...]
    relations: dict[str, Relation]
    references: dict[str, str]  # relation name (field name without _id) -> fk field
    has_dict: bool
    # derived from the fields in __post_init__:
    pk_index: int = dataclasses.field(init=False)
    deleted_index: int = dataclasses.field(init=False)  # -1 without soft delete
    created_index: int = dataclasses.field(init=False)  # -1 without timestamps (both)
    updated_index: int = dataclasses.field(init=False)
    #: (position, check) of every field callers set
    checks: tuple[tuple[int, Callable[[Any], None]], ...] = dataclasses.field(init=False)
    #: positions an insert decides: the key and the system fields
    generated: tuple[int, ...] = dataclasses.field(init=False)
    _get: Callable[[Any], tuple[Any, ...]] = dataclasses.field(init=False, repr=False)
    #: per column: its values are already what the audit log records (JSON scalars)
    _plain: tuple[bool, ...] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        at = {n: i for i, n in enumerate(self.names)}
        self.pk_index = at[self.pk.name]
        self.deleted_index = at.get("deleted_at", -1) if self.soft_delete else -1
        self.created_index = at.get("created_at", -1) if self.timestamps else -1
        self.updated_index = at.get("updated_at", -1) if self.timestamps else -1
        self.checks = tuple((i, f.check) for i, f in enumerate(self.fields) if not f.system)
        self.generated = (self.pk_index, *(i for i, f in enumerate(self.fields) if f.system))
        # one C call reads every column (attrgetter of one name returns it bare)
        if len(self.names) > 1:
            self._get = operator.attrgetter(*self.names)
        else:
            only = operator.attrgetter(self.names[0])
            self._get = lambda obj: (only(obj),)
        self._plain = tuple(f.pytype in _JSON_SCALARS for f in self.fields)

    def values_of(self, obj: Any) -> tuple[Any, ...]:
        """The column values of ``obj`` in declaration order."""
        return self._get(obj)

    def checked_values(self, obj: Any) -> list[Any]:
        """The column values of ``obj``, each checked against its field (ValidationError)."""
        if type(obj) is not self.cls:
            self._check_type(obj)
        values = list(self._get(obj))
        for i, check in self.checks:
            # an autoincrement key's check accepts None (the database assigns it)
            check(values[i])
        return values

    def audit_value(self, name: str, value: Any) -> Any:
        """``value`` as the audit log records it: JSON-friendly, as the column stores it."""
        if isinstance(value, decimal.Decimal):
            scale = getattr(self.by_name[name].column.type, "scale", None)
            if scale is not None:
                with contextlib.suppress(decimal.InvalidOperation):
                    value = value.quantize(decimal.Decimal(1).scaleb(-scale))
        return jsonable(value)

    def audit_row(self, values: Sequence[Any]) -> dict[str, Any]:
        """Every column of a row as the audit log records it."""
        return {
            n: v if plain or v is None else self.audit_value(n, v)
            for n, v, plain in zip(self.names, values, self._plain, strict=True)
        }

    def build(self, values: Sequence[Any]) -> Any:
        """Make an instance from column values without running ``__init__``."""
        obj: Any = object.__new__(self.cls)
        if self.has_dict:
            obj.__dict__.update(zip(self.names, values, strict=True))
        else:
            for n, v in zip(self.names, values, strict=True):
                object.__setattr__(obj, n, v)
        return obj

    def checked_rows(self, objs: Sequence[Any]) -> list[list[Any]]:
        """:meth:`checked_values` of many objects, checked column by column."""
        if set(map(type, objs)) != {self.cls}:
            for obj in objs:
                self._check_type(obj)
        rows = list(map(list, map(self._get, objs)))
        columns = list(zip(*rows, strict=True))
        fields = self.fields
        for i, check in self.checks:
            f = fields[i]
            if not column_fits(columns[i], f.pytype, f.nullable, f.max_length):
                for value in columns[i]:
                    check(value)
        return rows

    def validate(self, obj: Any, *, skip: Iterable[str] = ()) -> None:
        """Raise ValidationError if any column value of ``obj`` does not fit its field."""
        if not skip:
            self.checked_values(obj)
            return
        self._check_type(obj)
        skipped = set(skip)
        for i, check in self.checks:
            if self.names[i] not in skipped:
                check(getattr(obj, self.names[i]))

    def _check_type(self, obj: Any) -> None:
        if not isinstance(obj, self.cls):
            raise ValidationError(
                f"expected a {self.cls.__name__} instance, got {type(obj).__name__}"
            )

    def field(self, name: str) -> FieldInfo:
        """The field called ``name``; ValidationError naming the entity if unknown."""
        try:
            return self.by_name[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names)
            raise ValidationError(
                f"{self.cls.__name__} has no field {name!r}; its fields are: {known}"
            ) from None


def is_entity(cls: Any) -> bool:
    """True when ``cls`` was declared with ``@entity``."""
    return isinstance(cls, type) and isinstance(cls.__dict__.get("__dbnexus__"), EntityInfo)


def entity_info(cls: Any) -> EntityInfo:
    """The :class:`EntityInfo` of an entity class (or instance)."""
    if not isinstance(cls, type):
        cls = type(cls)
    info = cls.__dict__.get("__dbnexus__")
    if not isinstance(info, EntityInfo):
        raise ValidationError(f"{cls.__name__} is not an entity: decorate it with @entity")
    return info


@overload
def entity(cls: type[T], /) -> type[T]: ...
@overload
def entity(
    *,
    table: str | None = None,
    shard_key: str | None = None,
    timestamps: bool = False,
    soft_delete: bool = False,
    indexes: Sequence[IndexSpec] = (),
    metadata: sa.MetaData | None = None,
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(kw_only_default=True, field_specifiers=(field, dataclasses.field))
def entity(
    cls: type[T] | None = None,
    /,
    *,
    table: str | None = None,
    shard_key: str | None = None,
    timestamps: bool = False,
    soft_delete: bool = False,
    indexes: Sequence[IndexSpec] = (),
    metadata: sa.MetaData | None = None,
) -> Any:
    """Declare an entity: a dataclass backed by a table.

    Works bare (``@entity``, table named after the class in lower case) or with
    arguments. Fields are read from the annotations: ``int, str, float, bool,
    bytes, datetime, date, time, Decimal, UUID, dict, list`` (JSON), and
    ``X | None`` for nullable columns. Exactly one field must be the primary key.

    Args:
        table: the table name.
        shard_key: the field that routes rows to shards.
        timestamps: add ``created_at`` / ``updated_at`` (UTC, set by dbnexus).
        soft_delete: add ``deleted_at``; ``delete`` marks rows instead of removing them.
        indexes: extra indexes made with :func:`index`.
        metadata: a MetaData to declare the table on (default :data:`dbnexus.metadata`).

    Raises:
        ValidationError: no primary key, an unsupported type or a bad name.
    """

    def wrap(c: type[T]) -> type[T]:
        return _build_entity(
            c,
            table=table,
            shard_key=shard_key,
            timestamps=timestamps,
            soft_delete=soft_delete,
            indexes=tuple(indexes),
            md=metadata,
        )

    if cls is not None:
        return wrap(cls)
    return wrap


def _build_entity(
    cls: type[T],
    *,
    table: str | None,
    shard_key: str | None,
    timestamps: bool,
    soft_delete: bool,
    indexes: tuple[IndexSpec, ...],
    md: sa.MetaData | None,
) -> type[T]:
    md = metadata if md is None else md
    table_name = check_identifier(table or cls.__name__.lower(), "table")
    if table_name in _RESERVED_TABLES:
        raise ValidationError(f"table name {table_name!r} is reserved by dbnexus")
    relations = _take_relations(cls)
    system = _add_system_fields(cls, timestamps, soft_delete)
    cls = _make_dataclass(cls)
    hints = _type_hints(cls)
    fields = tuple(
        _field_info(f, hints.get(f.name, f.type), table_name, system)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    )
    fields += tuple(
        _field_info_for_plain_attr(cls, n, table_name)
        for n in system
        if n not in {f.name for f in fields}
    )
    pks = [f for f in fields if f.primary_key]
    if len(pks) != 1:
        what = "no primary key" if not pks else f"{len(pks)} primary keys"
        raise ValidationError(
            f"{cls.__name__} has {what}: mark exactly one field with field(primary_key=True)"
        )
    by_name = {f.name: f for f in fields}
    if shard_key is not None and shard_key not in by_name:
        raise ValidationError(f"{cls.__name__}: shard_key {shard_key!r} is not a field")
    for rel_name in relations:
        if rel_name in by_name:
            raise ValidationError(f"{cls.__name__}: relation {rel_name!r} clashes with a field")
    references = {f.relation: f.name for f in fields if f.references is not None and f.relation}
    for rel_name in references:
        if rel_name in by_name or rel_name in relations:
            raise ValidationError(
                f"{cls.__name__}: relation {rel_name!r} clashes with a field or relation; "
                "name it with field(references=..., relation='...')"
            )
    table_obj = _make_table(md, table_name, fields, indexes, by_name, cls.__name__)
    info = EntityInfo(
        cls=cls,
        table_name=table_name,
        table=table_obj,
        fields=fields,
        by_name=by_name,
        pk=pks[0],
        names=tuple(f.name for f in fields),
        shard_key=shard_key,
        timestamps=timestamps,
        soft_delete=soft_delete,
        indexes=indexes,
        relations=relations,
        references=references,
        has_dict="__slots__" not in cls.__dict__,
    )
    cls.__dbnexus__ = info  # type: ignore[attr-defined]
    _declared[table_name] = cls
    return cls


def declared_entities() -> list[type]:
    """Entity classes whose tables are on their MetaData, newest declaration per table."""
    return [
        c
        for c in _declared.values()
        if entity_info(c).table.metadata.tables.get(entity_info(c).table_name)
        is entity_info(c).table
    ]


def _take_relations(cls: type) -> dict[str, Relation]:
    relations = {}
    for name, value in list(cls.__dict__.items()):
        if isinstance(value, _RelatedMarker):
            relations[name] = value.relation
            # a relation is not a column: keep it out of the dataclass fields
            delattr(cls, name)
            cls.__annotations__.pop(name, None)
    for name in relations:
        setattr(cls, name, None)
    return relations


_SYSTEM_FIELDS = {"timestamps": ("created_at", "updated_at"), "soft_delete": ("deleted_at",)}


def _add_system_fields(cls: type, timestamps: bool, soft_delete: bool) -> tuple[str, ...]:
    names: list[str] = []
    if timestamps:
        names += _SYSTEM_FIELDS["timestamps"]
    if soft_delete:
        names += _SYSTEM_FIELDS["soft_delete"]
    if "__annotations__" not in cls.__dict__:
        cls.__annotations__ = {}
    annotations = cls.__annotations__
    for n in names:
        if n in annotations:
            raise ValidationError(
                f"{cls.__name__}: {n!r} is a system field set by dbnexus; remove it from the class"
            )
        if not dataclasses.is_dataclass(cls):
            annotations[n] = dt.datetime | None
            # system fields are written by dbnexus, never passed by the caller
            setattr(cls, n, dataclasses.field(default=None, init=False))
        else:
            setattr(cls, n, None)
    return tuple(names)


def _make_dataclass(cls: type[T]) -> type[T]:
    if "__dataclass_fields__" in cls.__dict__:
        return cls
    try:
        return dataclasses.dataclass(kw_only=True)(cls)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{cls.__name__} cannot be made a dataclass: {exc}") from exc


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        # unresolvable forward references: fall back to the raw annotations
        return {}


def _field_info(
    f: dataclasses.Field[Any], annotation: Any, table: str, system: tuple[str, ...]
) -> FieldInfo:
    check_identifier(f.name, "column")
    opts: _FieldOptions = f.metadata.get(_META_KEY, _FieldOptions())
    if isinstance(annotation, str):
        raise ValidationError(
            f"{table}.{f.name}: cannot resolve the annotation {annotation!r}; "
            "define the types it names at module level"
        )
    try:
        pytype, nullable = python_type_of(annotation)
    except ValidationError as exc:
        raise ValidationError(f"{table}.{f.name}: {exc}") from None
    return _make_field(f.name, pytype, nullable, opts, system=f.name in system)


def _field_info_for_plain_attr(cls: type, name: str, table: str) -> FieldInfo:
    # a system field added to a class that was already a dataclass
    return _make_field(name, dt.datetime, True, _FieldOptions(), system=True)


def _make_field(
    name: str, pytype: type, nullable: bool, opts: _FieldOptions, *, system: bool
) -> FieldInfo:
    if opts.max_length is not None and pytype not in (str, bytes):
        raise ValidationError(f"field {name!r}: max_length applies to str and bytes only")
    autoincrement = opts.primary_key and pytype is int and opts.autoincrement is not False
    keyed = opts.primary_key or opts.unique or opts.index or opts.references is not None
    sqltype = sql_type_for(
        pytype, max_length=opts.max_length, keyed=keyed, precision=opts.precision, scale=opts.scale
    )
    args: list[Any] = []
    if opts.references is not None:
        target = entity_info(opts.references)
        args.append(sa.ForeignKey(target.pk.column, ondelete=opts.on_delete))
        if target.pk.pytype is not pytype:
            raise ValidationError(
                f"field {name!r} references {target.cls.__name__} whose primary key is "
                f"{target.pk.pytype.__name__}, not {pytype.__name__}"
            )
    # created_at/updated_at are always written by dbnexus: NOT NULL lets them order pages
    not_null = opts.primary_key or (system and name != "deleted_at")
    column = sa.Column(
        name,
        sqltype,
        *args,
        primary_key=opts.primary_key,
        autoincrement=autoincrement if opts.primary_key else False,
        nullable=nullable and not not_null,
        unique=opts.unique or None,
        index=opts.index or None,
    )
    return FieldInfo(
        name=name,
        pytype=pytype,
        nullable=nullable or autoincrement,
        primary_key=opts.primary_key,
        autoincrement=autoincrement,
        max_length=opts.max_length,
        unique=opts.unique,
        system=system,
        references=opts.references,
        relation=opts.relation
        or (name[:-3] if opts.references is not None and name.endswith("_id") else None),
        check=value_checker(name, pytype, nullable or autoincrement, opts.max_length),
        column=column,
    )


def _make_table(
    md: sa.MetaData,
    name: str,
    fields: tuple[FieldInfo, ...],
    indexes: tuple[IndexSpec, ...],
    by_name: dict[str, FieldInfo],
    cls_name: str,
) -> sa.Table:
    if name in md.tables:
        # re-declaring (module reload, notebooks): the newest declaration wins
        md.remove(md.tables[name])
    table = sa.Table(name, md, *[f.column for f in fields])
    try:
        _add_indexes(table, indexes, by_name, cls_name)
    except BaseException:
        # a rejected declaration must not leave its table behind for migrate()
        md.remove(table)
        raise
    return table


def _add_indexes(
    table: sa.Table, indexes: tuple[IndexSpec, ...], by_name: dict[str, FieldInfo], cls_name: str
) -> None:
    for spec in indexes:
        cols = []
        for c in spec.columns:
            if c not in by_name:
                raise ValidationError(f"{cls_name}: index {spec.name!r} names unknown field {c!r}")
            cols.append(table.c[c])
        kw: dict[str, Any] = {}
        if spec.where:
            terms = []
            for k, v in spec.where.items():
                if k not in by_name:
                    _bad_index_field(cls_name, spec.name, k)
                col = table.c[k]
                # None means IS NULL ("unique among live rows": where={"deleted_at": None})
                terms.append(col.is_(None) if v is None else col == sa.literal(v, type_=col.type))
            cond = sa.and_(*terms)
            kw = {"postgresql_where": cond, "sqlite_where": cond}
        sa.Index(spec.name, *cols, unique=spec.unique, **kw)


def _bad_index_field(cls_name: str, index_name: str, field_name: str) -> Any:
    raise ValidationError(
        f"{cls_name}: index {index_name!r} condition names unknown field {field_name!r}"
    )
