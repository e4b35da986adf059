"""Casbin permissions on the hot path: memoised, indexed decisions and runtime policy changes.

:class:`Permissions` wraps a :class:`casbin.Enforcer` and answers "may ``user`` do
``action`` on ``table`` (in ``domain``)?" for every database operation. Plain
``Enforcer.enforce()`` scans every policy line (about 0.5 s at 100,000 lines), so
decisions are made in two layers:

* **Memo.** Each answer is kept in a bounded dict keyed by
  ``(user_id, domain, table, action)``; any policy change swaps in an empty memo, so
  the very next :meth:`Permissions.check` sees the change.
* **Index.** When the model has a recognised shape, the ``p`` lines are indexed by the
  values of the fields the matcher tests for equality, and a request looks at only
  the lines that can match. Recognised: a matcher that is a conjunction (``&&``)
  containing at least one term of the form ``r.X == p.Y`` (either order) or
  ``g(r.X, p.Y)`` / ``g(r.X, p.Y, r.Z)`` (any role definition ``g``, ``g2``, ... backed
  by casbin's default role or domain manager, without pattern-matching functions),
  and any casbin effect (allow-override, deny-override, allow-and-deny, priority,
  subject priority). The roles a ``g`` term accepts are those casbin's role manager
  reaches from the request value within its ``max_hierarchy_level``, which is what
  ``g()`` tests. Other terms (``keyMatch``, ``regexMatch``, ...) are evaluated by
  casbin's own expression evaluator over the candidate lines only, in policy order.
  Anything else (``||`` at the top, ``eval()``, conditional roles, custom role
  managers or effectors, malformed lines, an empty policy) falls back to
  ``enforcer.enforce()``, still memoised.

Runtime changes (:meth:`~Permissions.grant`, :meth:`~Permissions.revoke`,
:meth:`~Permissions.add_role`, :meth:`~Permissions.remove_role`) go through casbin's
management API and update the index incrementally. They are in memory only for
:meth:`~Permissions.from_files` and :meth:`~Permissions.from_text`: auto-save is
switched off, so ``policy.csv`` is never rewritten (pycasbin's ``FileAdapter`` does
not append on ``add_policy`` either; only ``save_policy()`` writes the file). To
persist, call ``perms.enforcer.save_policy()``. A wrapped enforcer keeps its own
auto-save setting and adapter.

The async methods do in-memory work without awaiting, so within one event loop they
never interleave with :meth:`~Permissions.check`. Changes are serialised by a lock;
a ``check`` running in another thread at the moment of a change may return the old
or the new decision, never a mix cached for later. If you change the enforcer
directly (``perms.enforcer.add_policy(...)``, ``load_policy()``, ``add_function``,
``enable_enforce``), call :meth:`~Permissions.invalidate` afterwards.
"""

from __future__ import annotations

import ast
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import product
from operator import itemgetter
from typing import Any, Final, NamedTuple

from casbin import Enforcer
from casbin.core_enforcer import CoreEnforcer
from casbin.effect import Effector, get_effector
from casbin.effect.default_effectors import (
    AllowAndDenyEffector,
    AllowOverrideEffector,
    DenyOverrideEffector,
    PriorityEffector,
)
from casbin.management_enforcer import ManagementEnforcer
from casbin.model import Model
from casbin.persist.adapter import Adapter, load_policy_line
from casbin.persist.adapters import FileAdapter
from casbin.rbac.default_role_manager import DomainManager, RoleManager
from casbin.util import generate_g_function, has_eval

from dbnexus.errors import ConfigError, DbNexusError, ValidationError

__all__ = ["ACTIONS", "DEFAULT_MEMO_SIZE", "RBAC_DOMAINS_MODEL", "RBAC_MODEL", "Permissions"]

logger = logging.getLogger(__name__)

ACTIONS: Final = ("read", "insert", "update", "delete")
"""The actions dbnexus sessions ask about."""

DEFAULT_MEMO_SIZE: Final = 100_000
"""How many decisions are memoised before the memo is emptied and refilled."""

_ALLOW: Final = Effector.ALLOW
_DENY: Final = Effector.DENY
_INDETERMINATE: Final = Effector.INDETERMINATE

_SECTION_NAMES: Final = {
    "r": "request_definition",
    "p": "policy_definition",
    "e": "policy_effect",
    "m": "matchers",
}

# DomainManager installs an equality lambda as its matching function; it behaves as no
# matching function at all, so role resolution stays exact. Any other function does not.
_DOMAIN_DEFAULT_MATCH_CODE: Final = DomainManager().matching_func.__code__

_Entry = tuple[int, int, list[str]]  # (policy order, effect, rule)


# --- policy loading -------------------------------------------------------------------


def _check_policy_lines(model: Model) -> None:
    """Raise ConfigError for policy lines casbin would choke on later, at enforce time."""
    for sec in ("p", "g"):
        for ptype, assertion in (model[sec] or {}).items():
            want = len(assertion.tokens)
            for rule in assertion.policy:
                if len(rule) == want or (sec == "g" and len(rule) > want):
                    continue
                line = ", ".join([ptype, *rule])
                raise ConfigError(
                    f"policy line {line!r} has {len(rule)} fields but the model's "
                    f"{ptype} = {assertion.value} expects {want}; fix the policy line"
                )


class _TextAdapter(Adapter):
    """Loads policy lines from a string (may be empty); changes are never written back."""

    def __init__(self, text: str) -> None:
        self._text = text

    def load_policy(self, model: Model) -> None:
        for line in self._text.splitlines():
            load_policy_line(line.strip(), model)
        _check_policy_lines(model)


class _PolicyFileAdapter(FileAdapter):
    """casbin's FileAdapter that validates lines on load and never writes on add/remove."""

    def load_policy(self, model: Model) -> None:
        if not os.path.isfile(self._file_path):
            raise ConfigError(f"the Casbin policy file {self._file_path!r} does not exist")
        super().load_policy(model)
        # Raising here, before casbin swaps in the new model, keeps the old policy live.
        _check_policy_lines(model)

    def add_policy(self, sec: str, ptype: str, rule: list[str]) -> None:
        return None

    def remove_policy(self, sec: str, ptype: str, rule: list[str]) -> None:
        return None

    def remove_filtered_policy(self, sec: str, ptype: str, field_index: int, *values: str) -> None:
        return None


def _load_model(where: str, *, path: str = "", text: str = "") -> Model:
    """Parse and sanity-check a casbin model; every problem becomes a ConfigError."""
    model = Model()
    try:
        if path:
            model.load_model(path)
        else:
            model.load_model_from_text(text)
    except Exception as exc:
        raise ConfigError(f"cannot parse the Casbin model {where}: {exc}") from exc
    _check_model(model, where)
    return model


def _check_model(model: Model, where: str) -> None:
    for sec, name in _SECTION_NAMES.items():
        if model[sec] is None or sec not in model[sec]:
            raise ConfigError(
                f"the Casbin model {where} has no [{name}] section with a '{sec} = ...' line"
            )
    r_def = model["r"]["r"]
    if len(r_def.tokens) not in (3, 4):
        raise ConfigError(
            f"the Casbin model {where} has r = {r_def.value}; dbnexus asks with 3 tokens "
            "(sub, obj, act) or 4 tokens (sub, dom, obj, act)"
        )
    try:
        get_effector(model["e"]["e"].value)
    except RuntimeError as exc:
        raise ConfigError(
            f"the Casbin model {where} has an unsupported policy_effect "
            f"{model['e']['e'].value!r}: {exc}"
        ) from exc
    try:
        CoreEnforcer._get_expression(model["m"]["m"].value)
    except SyntaxError as exc:
        raise ConfigError(
            f"the Casbin model {where} has a matcher that is not a valid expression "
            f"({model['m']['m'].value!r}): {exc}"
        ) from exc


def _build_enforcer(model: Model, adapter: Adapter, where: str) -> Enforcer:
    try:
        enforcer = Enforcer(model, adapter)
    except DbNexusError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot load the Casbin policy {where}: {exc}") from exc
    # Runtime grants are in memory only unless the caller saves the policy explicitly.
    enforcer.enable_auto_save(False)
    return enforcer


# --- the index ------------------------------------------------------------------------


class _Field(NamedTuple):
    """One indexed p field and where its accepted values come from in the request."""

    p_index: int
    r_index: int
    rm: Any  # role manager for a g() term; None for an equality term
    dom_r_index: int | None  # request index of g()'s third argument


def _role_closure(rm: Any, name: Any, dom_args: tuple[str, ...]) -> list[Any]:
    """Names ``g(name, x[, dom])`` accepts: those the role manager reaches within its level.

    casbin's ``has_link`` walks at most ``max_hierarchy_level`` levels, the start
    included, so x qualifies when its shortest path from ``name`` is shorter than that.
    """
    levels = rm.max_hierarchy_level
    if levels <= 0:
        return []
    seen = {name}
    found = [name]
    frontier = [name]
    for _ in range(levels - 1):
        nxt = []
        for current in frontier:
            for role in rm.get_roles(current, *dom_args):
                if role not in seen:
                    seen.add(role)
                    nxt.append(role)
        if not nxt:
            break
        found.extend(nxt)
        frontier = nxt
    return found


def _allow_override(effects: Iterable[int]) -> bool:
    return any(e == _ALLOW for e in effects)


def _deny_override(effects: Iterable[int]) -> bool:
    return all(e != _DENY for e in effects)


def _allow_and_deny(effects: Iterable[int]) -> bool:
    allowed = False
    for e in effects:
        if e == _DENY:
            return False
        if e == _ALLOW:
            allowed = True
    return allowed


def _priority(effects: Iterable[int]) -> bool:
    # Effects arrive in policy order; the first decisive line wins, as in casbin.
    for e in effects:
        if e == _ALLOW:
            return True
        if e == _DENY:
            return False
    return False


_EFFECTS: Final[dict[type, tuple[Callable[[Iterable[int]], bool], bool]]] = {
    # effector type -> (decision function, needs policy order)
    AllowOverrideEffector: (_allow_override, False),
    DenyOverrideEffector: (_deny_override, False),
    AllowAndDenyEffector: (_allow_and_deny, False),
    PriorityEffector: (_priority, True),
}


def _key_getter(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    if len(indices) == 1:
        i = indices[0]
        return lambda values: (values[i],)
    return itemgetter(*indices)


def _supported_rm(rm: Any) -> bool:
    """True for casbin's default role/domain managers whose has_link we can mirror."""
    if type(rm) is RoleManager:
        return rm.matching_func is None and rm.domain_matching_func is None
    if type(rm) is DomainManager:
        fn = rm.matching_func
        return (
            getattr(fn, "__code__", None) is _DOMAIN_DEFAULT_MATCH_CODE
            and rm.domain_matching_func is None
        )
    return False


class _Index:
    """The ``p`` lines bucketed by the values of the fields the matcher pins down."""

    def __init__(
        self,
        enforcer: Enforcer,
        fields: list[_Field],
        residual: bool,
        functions: dict[str, Any],
    ) -> None:
        model = enforcer.model
        p_def = model["p"]["p"]
        self.r_tokens: list[str] = model["r"]["r"].tokens
        self.p_tokens: list[str] = p_def.tokens
        self.matcher: str = model["m"]["m"].value
        self.functions = functions
        self.fields = fields
        self.residual = residual
        self.decide_effect, ordered = _EFFECTS[type(enforcer.eft)]
        # Residual terms are evaluated lazily, in policy order, like casbin's own loop.
        self.ordered = ordered or residual
        self.eft_index = self.p_tokens.index("p_eft") if "p_eft" in self.p_tokens else -1
        self.has_roles = any(f.rm is not None for f in fields)
        self.rule_key = _key_getter([f.p_index for f in fields])
        self.request_key = _key_getter([f.r_index for f in fields])
        self.buckets: dict[tuple[Any, ...], list[_Entry]] = {}
        self.count = 0
        # Position in casbin's list is the priority order (already sorted by priority or
        # subject hierarchy at load); new lines are appended by casbin, so they go last.
        self.next_seq = 0
        for rule in p_def.policy:
            self.add(rule)

    @classmethod
    def build(cls, enforcer: Enforcer) -> _Index | None:
        """Index the enforcer's policy, or return None when its model is not recognised."""
        reason = cls._unsupported(enforcer)
        if reason:
            logger.debug("casbin model not indexed (%s); using enforce()", reason)
            return None
        model = enforcer.model
        r_tokens = model["r"]["r"].tokens
        p_tokens = model["p"]["p"].tokens
        g_defs = model["g"] or {}
        functions = dict(enforcer.fm.get_functions())
        for key, g_def in g_defs.items():
            functions[key] = generate_g_function(g_def.rm)
        tree = CoreEnforcer._get_expression(model["m"]["m"].value, functions).ast_parsed_value
        allowed_names = {*r_tokens, *p_tokens, *functions}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id not in allowed_names:
                logger.debug("casbin matcher uses unknown name %r; using enforce()", node.id)
                return None

        fields: list[_Field] = []
        residual = False
        used: set[int] = set()
        for term in _conjuncts(tree):
            field = _indexable(term, r_tokens, p_tokens, g_defs)
            if field is None or field.p_index in used:
                residual = True
                continue
            used.add(field.p_index)
            fields.append(field)
        if not fields:
            logger.debug("casbin matcher has no equality or g() term to index; using enforce()")
            return None
        return cls(enforcer, fields, residual, functions)

    @staticmethod
    def _unsupported(enforcer: Enforcer) -> str:
        model = enforcer.model
        if type(enforcer.eft) not in _EFFECTS:
            return f"custom effector {type(enforcer.eft).__name__}"
        if enforcer.cond_rm_map:
            return "conditional role managers"
        if has_eval(model["m"]["m"].value):
            return "eval() in the matcher"
        p_def = model["p"]["p"]
        if type(p_def.policy) is not list:
            return "a non-list policy store"
        width = len(p_def.tokens)
        if any(len(rule) != width for rule in p_def.policy):
            return "policy lines with the wrong number of fields"
        return ""

    # --- changes

    def add(self, rule: list[str]) -> None:
        eft = _ALLOW
        if self.eft_index >= 0:
            value = rule[self.eft_index]
            eft = _ALLOW if value == "allow" else _DENY if value == "deny" else _INDETERMINATE
        self.buckets.setdefault(self.rule_key(rule), []).append((self.next_seq, eft, rule))
        self.next_seq += 1
        self.count += 1

    def remove(self, rule: list[str]) -> None:
        key = self.rule_key(rule)
        bucket = self.buckets.get(key, [])
        for i, entry in enumerate(bucket):
            # casbin's list.remove drops the first (earliest) equal line; mirror that.
            if entry[2] == rule:
                del bucket[i]
                self.count -= 1
                if not bucket:
                    del self.buckets[key]
                return

    # --- decisions

    def decide(self, rvals: tuple[Any, ...]) -> bool:
        buckets = self.buckets
        if not self.has_roles:
            candidates: list[_Entry] = buckets.get(self.request_key(rvals), [])
        else:
            choices: list[Any] = []
            for f in self.fields:
                if f.rm is None:
                    choices.append((rvals[f.r_index],))
                else:
                    dom = () if f.dom_r_index is None else (str(rvals[f.dom_r_index]),)
                    choices.append(_role_closure(f.rm, rvals[f.r_index], dom))
            candidates = []
            for key in product(*choices):
                bucket = buckets.get(key)
                if bucket:
                    candidates.extend(bucket)
        if self.ordered and len(candidates) > 1:
            candidates = sorted(candidates, key=itemgetter(0))
        if self.residual:
            return self.decide_effect(self._matched_effects(candidates, rvals))
        return self.decide_effect(entry[1] for entry in candidates)

    def _matched_effects(self, candidates: list[_Entry], rvals: tuple[Any, ...]) -> Iterator[int]:
        """Effects of the candidates casbin's matcher accepts, evaluated as casbin does."""
        if not candidates:
            return
        # A fresh evaluator per decision: casbin's keeps state between eval() calls.
        expression = CoreEnforcer._get_expression(self.matcher, self.functions)
        r_params = dict(zip(self.r_tokens, rvals, strict=True))
        for _, eft, rule in candidates:
            params = dict(r_params)
            params.update(zip(self.p_tokens, rule, strict=True))
            result = expression.eval(params)
            if isinstance(result, bool):
                if not result:
                    continue
            elif isinstance(result, float):
                if result == 0:
                    continue
            else:
                raise ConfigError(
                    f"the Casbin matcher returned {result!r}; it must be a boolean or a number"
                )
            yield eft


def _conjuncts(tree: ast.expr) -> list[ast.expr]:
    if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And):
        terms: list[ast.expr] = []
        for value in tree.values:
            terms.extend(_conjuncts(value))
        return terms
    return [tree]


def _indexable(
    term: ast.expr, r_tokens: list[str], p_tokens: list[str], g_defs: dict[str, Any]
) -> _Field | None:
    """The index field for ``r.X == p.Y`` or ``g(r.X, p.Y[, r.Z])``, else None."""
    if (
        isinstance(term, ast.Compare)
        and len(term.ops) == 1
        and isinstance(term.ops[0], ast.Eq)
        and isinstance(term.left, ast.Name)
        and isinstance(term.comparators[0], ast.Name)
    ):
        a, b = term.left.id, term.comparators[0].id
        if a in p_tokens:
            a, b = b, a
        if a in r_tokens and b in p_tokens:
            return _Field(p_tokens.index(b), r_tokens.index(a), None, None)
        return None
    if (
        isinstance(term, ast.Call)
        and isinstance(term.func, ast.Name)
        and term.func.id in g_defs
        and not term.keywords
        and len(term.args) in (2, 3)
    ):
        names = [arg.id for arg in term.args if isinstance(arg, ast.Name)]
        rm = g_defs[term.func.id].rm
        if (
            len(names) != len(term.args)
            or names[0] not in r_tokens
            or names[1] not in p_tokens
            or not _supported_rm(rm)
        ):
            return None
        dom = None
        if len(names) == 3:
            if names[2] not in r_tokens:
                return None
            dom = r_tokens.index(names[2])
        return _Field(p_tokens.index(names[1]), r_tokens.index(names[0]), rm, dom)
    return None


# --- the public wrapper ---------------------------------------------------------------


def _check_value(what: str, value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or value != value.strip()
        or any(c in value for c in ",\r\n")
    ):
        raise ValidationError(
            f"{what} must be a non-empty string without commas, line breaks or surrounding "
            f"spaces (it becomes a field of a Casbin policy line); got {value!r}"
        )
    return value


#: Role-based access: ``p, role, table, action`` and ``g, user, role``.
RBAC_MODEL = """\
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""

#: Role-based access per domain (tenant): ``p, role, domain, table, action`` and
#: ``g, user, role, domain``; sessions pass ``domain=``.
RBAC_DOMAINS_MODEL = """\
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act
"""


class Permissions:
    """Casbin decisions for dbnexus sessions, memoised and indexed.

    Args:
        enforcer: the casbin ``Enforcer`` to wrap (any adapter). Its request definition
            must have 3 tokens (sub, obj, act) or 4 (sub, dom, obj, act).
        memo_size: how many decisions to keep before the memo is emptied.

    Example::

        perms = Permissions.from_files("model.conf", "policy.csv")
        if not perms.check("alice", None, "users", "read"):
            raise PermissionDenied("alice", "users", "read")
        await perms.grant("alice", "orders", "insert")
    """

    def __init__(self, enforcer: Enforcer, *, memo_size: int = DEFAULT_MEMO_SIZE) -> None:
        if not isinstance(enforcer, ManagementEnforcer):
            raise ConfigError(
                f"Permissions wraps a casbin.Enforcer, got {type(enforcer).__name__}; "
                "use Permissions.from_files(), from_text() or allow_all() otherwise"
            )
        _check_model(enforcer.get_model(), "of the given enforcer")
        self._setup(enforcer, memo_size)

    def _setup(self, enforcer: Enforcer | None, memo_size: int) -> None:
        if not isinstance(memo_size, int) or memo_size < 1:
            raise ValidationError(f"memo_size must be a positive integer, got {memo_size!r}")
        self._enforcer = enforcer
        self._allow_all = enforcer is None
        self._memo_size = memo_size
        self._memo: dict[tuple[Any, ...], bool] = {}
        self._version = 0
        self._lock = threading.RLock()
        self._index: _Index | None = None
        self._counts: dict[str, Counter[tuple[str, ...]]] = {"p": Counter(), "g": Counter()}
        self._uses_domain = False
        if enforcer is not None:
            self._uses_domain = len(enforcer.get_model()["r"]["r"].tokens) == 4
            self._rebuild()
        self._version = 0

    # --- construction

    @classmethod
    def from_files(
        cls,
        model_path: str | os.PathLike[str],
        policy_path: str | os.PathLike[str],
        *,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> Permissions:
        """Load a model ``.conf`` and a policy ``.csv``; runtime changes never rewrite the csv.

        Args:
            model_path: the Casbin model file.
            policy_path: the policy file (``p, ...`` and ``g, ...`` lines).
            memo_size: see :class:`Permissions`.
        """
        model_file, policy_file = os.fspath(model_path), os.fspath(policy_path)
        for what, path in (("model", model_file), ("policy", policy_file)):
            if not os.path.isfile(path):
                raise ConfigError(f"the Casbin {what} file {path!r} does not exist")
        model = _load_model(f"in {model_file!r}", path=model_file)
        enforcer = _build_enforcer(model, _PolicyFileAdapter(policy_file), f"{policy_file!r}")
        return cls(enforcer, memo_size=memo_size)

    @classmethod
    def from_text(
        cls, model_text: str, policy_text: str = "", *, memo_size: int = DEFAULT_MEMO_SIZE
    ) -> Permissions:
        """Build from model text and CSV policy lines (``"p, alice, users, read"``; may be empty).

        :meth:`reload` restores the policy given here, dropping runtime changes.
        """
        model = _load_model("text", text=model_text)
        enforcer = _build_enforcer(model, _TextAdapter(policy_text), "text")
        return cls(enforcer, memo_size=memo_size)

    @classmethod
    def rbac(cls, policy_text: str = "", *, domains: bool = False) -> Permissions:
        """The common case: :data:`RBAC_MODEL` (or :data:`RBAC_DOMAINS_MODEL`) with a CSV policy.

        Example::

            perms = Permissions.rbac("p, editor, users, update\ng, alice, editor")
        """
        return cls.from_text(RBAC_DOMAINS_MODEL if domains else RBAC_MODEL, policy_text)

    @classmethod
    def allow_all(cls) -> Permissions:
        """Permissions that allow every request without consulting Casbin."""
        self = cls.__new__(cls)
        self._setup(None, DEFAULT_MEMO_SIZE)
        return self

    # --- state

    @property
    def enforcer(self) -> Enforcer | None:
        """The wrapped ``casbin.Enforcer``; None for :meth:`allow_all`."""
        return self._enforcer

    @property
    def uses_domain(self) -> bool:
        """True when the model's request definition is (sub, dom, obj, act)."""
        return self._uses_domain

    @property
    def version(self) -> int:
        """A counter that increases on every policy change, reload and invalidate."""
        return self._version

    @property
    def indexed(self) -> bool:
        """True when decisions use the policy index, False when they call ``enforce()``."""
        return self._index is not None

    @property
    def policy_size(self) -> int:
        """The number of policy lines (all ``p`` and ``g`` types)."""
        if self._enforcer is None:
            return 0
        model = self._enforcer.get_model()
        return sum(len(a.policy) for sec in ("p", "g") for a in (model[sec] or {}).values())

    # --- the hot path

    def check(self, user_id: str, domain: str | None, table: str, action: str) -> bool:
        """Decide whether ``user_id`` may do ``action`` on ``table``.

        Args:
            user_id: the subject.
            domain: the tenant/domain; required when :attr:`uses_domain`, ignored otherwise.
            table: the object.
            action: usually one of :data:`ACTIONS`.

        Raises:
            ValidationError: the model needs a domain and ``domain`` is None.
            ConfigError: casbin could not evaluate the policy.
        """
        if self._allow_all:
            return True
        key = (user_id, domain, table, action)
        decision = self._memo.get(key)
        if decision is None:
            return self._decide(key)
        return decision

    def _decide(self, key: tuple[Any, ...]) -> bool:
        # Captured first: a change swaps in a new memo, so a decision computed against
        # the old policy lands in the discarded dict.
        memo = self._memo
        user_id, domain, table, action = key
        if self._uses_domain:
            if domain is None:
                raise ValidationError(
                    "the permission model needs a domain (its request_definition has "
                    "sub, dom, obj, act); pass it with pool.session(user, domain=...)"
                )
            rvals: tuple[Any, ...] = key
        else:
            rvals = (user_id, table, action)
        enforcer = self._enforcer
        index = self._index
        assert enforcer is not None
        try:
            if not enforcer.enabled:
                decision = True
            elif index is not None and index.count:
                decision = index.decide(rvals)
            else:
                decision = bool(enforcer.enforce(*rvals))
        except DbNexusError:
            raise
        except Exception as exc:
            raise ConfigError(f"casbin could not decide the request {rvals!r}: {exc}") from exc
        if len(memo) >= self._memo_size:
            memo.clear()
        memo[key] = decision
        return decision

    # --- policy changes

    async def grant(
        self, subject: str, table: str, action: str, *, domain: str | None = None
    ) -> bool:
        """Add the policy line allowing ``subject`` to do ``action`` on ``table``.

        Args:
            subject: a user or role.
            table: the object.
            action: the action.
            domain: the domain, required when the policy has a ``dom`` field.

        Returns:
            True if the line was added, False if it was already there.
        """
        return self._change("p", self._p_rule(subject, table, action, domain), add=True)

    async def revoke(
        self, subject: str, table: str, action: str, *, domain: str | None = None
    ) -> bool:
        """Remove the line :meth:`grant` adds; True if it was there."""
        return self._change("p", self._p_rule(subject, table, action, domain), add=False)

    async def add_role(self, user: str, role: str, *, domain: str | None = None) -> bool:
        """Give ``user`` the role ``role`` (a ``g`` line); True if it was added.

        Args:
            user: the user (or role) that inherits.
            role: the role inherited.
            domain: the domain, required when the model has ``g = _, _, _``.
        """
        return self._change("g", self._g_rule(user, role, domain), add=True)

    async def remove_role(self, user: str, role: str, *, domain: str | None = None) -> bool:
        """Take the role ``role`` from ``user``; True if the ``g`` line was there."""
        return self._change("g", self._g_rule(user, role, domain), add=False)

    async def reload(self) -> None:
        """Reload the policy from the adapter (the file, or the text given to from_text).

        Runtime changes not saved to the adapter are dropped. Runs synchronously: the
        event loop waits while a large policy is parsed and indexed.
        """
        enforcer = self._require_enforcer("reload")
        with self._lock:
            if enforcer.adapter is None:
                raise ConfigError("this enforcer has no adapter to reload the policy from")
            try:
                enforcer.load_policy()
            except DbNexusError:
                self._rebuild()
                raise
            except Exception as exc:
                self._rebuild()
                raise ConfigError(f"cannot reload the Casbin policy: {exc}") from exc
            self._rebuild()

    def invalidate(self) -> None:
        """Forget memoised decisions and re-index; call after changing the enforcer directly."""
        if self._enforcer is not None:
            with self._lock:
                self._rebuild()

    # --- internals

    def _rebuild(self) -> None:
        enforcer = self._enforcer
        assert enforcer is not None
        model = enforcer.get_model()
        self._index = _Index.build(enforcer)
        for sec in ("p", "g"):
            assertion = (model[sec] or {}).get(sec)
            rules = assertion.policy if assertion is not None else []
            self._counts[sec] = Counter(map(tuple, rules))
        self._changed()

    def _changed(self) -> None:
        self._memo = {}
        self._version += 1

    def _require_enforcer(self, what: str) -> Enforcer:
        if self._enforcer is None:
            raise ConfigError(
                f"cannot {what}: Permissions.allow_all() has no policy; build Permissions "
                "from a Casbin model and policy instead"
            )
        return self._enforcer

    def _p_rule(self, subject: str, table: str, action: str, domain: str | None) -> list[str]:
        enforcer = self._require_enforcer("change the policy")
        p_def = enforcer.get_model()["p"]["p"]
        values = {
            "p_sub": _check_value("subject", subject),
            "p_obj": _check_value("table", table),
            "p_act": _check_value("action", action),
            "p_eft": "allow",
        }
        if domain is not None:
            values["p_dom"] = _check_value("domain", domain)
        if "p_dom" in p_def.tokens and domain is None:
            raise ValidationError(f"the policy is p = {p_def.value}; pass domain=...")
        if domain is not None and "p_dom" not in p_def.tokens:
            raise ValidationError(f"the policy p = {p_def.value} has no domain; drop domain=")
        missing = [t for t in ("p_sub", "p_obj", "p_act") if t not in p_def.tokens]
        unknown = [t for t in p_def.tokens if t not in values]
        if missing or unknown:
            raise ValidationError(
                f"grant()/revoke() fill the fields sub, obj, act, dom and eft, but the policy "
                f"is p = {p_def.value}; change such a policy with perms.enforcer and then "
                "call perms.invalidate()"
            )
        return [values[t] for t in p_def.tokens]

    def _g_rule(self, user: str, role: str, domain: str | None) -> list[str]:
        enforcer = self._require_enforcer("change the roles")
        g_defs = enforcer.get_model()["g"] or {}
        if "g" not in g_defs:
            raise ValidationError("the permission model has no role_definition 'g = _, _'")
        width = len(g_defs["g"].tokens)
        rule = [_check_value("user", user), _check_value("role", role)]
        if width == 3:
            if domain is None:
                raise ValidationError("the role definition is g = _, _, _; pass domain=...")
            rule.append(_check_value("domain", domain))
        elif width == 2:
            if domain is not None:
                raise ValidationError("the role definition is g = _, _ (no domain); drop domain=")
        else:
            raise ValidationError(f"add_role() cannot fill g = {g_defs['g'].value}")
        return rule

    def _change(self, sec: str, rule: list[str], *, add: bool) -> bool:
        enforcer = self._require_enforcer("change the policy")
        with self._lock:
            key = tuple(rule)
            counts = self._counts[sec]
            present = counts[key] > 0
            if present == add:
                # Nothing to do. Also spares casbin's add_grouping_policy, which re-adds
                # the role link even when the g line already exists.
                return False
            try:
                if sec == "p":
                    if add:
                        result = enforcer.add_named_policy("p", rule)
                    else:
                        result = enforcer.remove_named_policy("p", rule)
                elif add:
                    result = enforcer.add_named_grouping_policy("g", rule)
                else:
                    result = enforcer.remove_named_grouping_policy("g", rule)
            except Exception as exc:
                self._rebuild()  # whatever casbin managed to change, index it
                verb = "add" if add else "remove"
                raise ConfigError(f"casbin could not {verb} the {sec} line {rule}: {exc}") from exc
            # casbin's model appends/removes the line whenever it was absent/present,
            # whatever the adapter answered, so mirror the model rather than the result.
            if add:
                counts[key] += 1
            else:
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]
            if sec == "p" and self._index is not None:
                if add:
                    self._index.add(rule)
                else:
                    self._index.remove(rule)
            self._changed()
            return bool(result)
