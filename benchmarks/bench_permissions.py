"""Case 9: one permission decision, plain ``casbin.Enforcer.enforce()`` against dbnexus
``Permissions.check()``, with 10, 1,000 and 100,000 policy lines. No database.

The policy of N lines alternates ``p, role_i, bench_t<i % 100>, read`` and
``g, user_i, role_i``: each of the N/2 users holds one role with one permission.
The requests are ``(user_k, bench_t<k % 100>, read)``, all allowed, for the
users ``k`` whose lines sit in the middle tenth of the policy, so casbin's linear scan
stops about half way down on every call (the typical request, and a steady figure).

* **first**: a decision dbnexus has not memoised. Each call passes a domain never
  used before; the model has no domain, so the decision is exactly that of
  ``(user, table, action)``, but the memo, keyed by ``(user, domain, table, action)``,
  has never seen the key. After timing, the run checks that the memo grew by one
  entry per call, i.e. that no call was answered from it. casbin gets the same
  requests (it memoises nothing, so its first and repeated decisions do the same work).
* **repeated**: the same request every call (a memo hit for dbnexus).

Both columns share one casbin ``Enforcer`` per size (``Permissions(enforcer)``
wraps it; "repeated" has a wrapper of its own), so the 100,000-line policy is parsed
once. The repetitions of all four figures of a size are interleaved.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from casbin import Enforcer
from casbin.model import Model
from casbin.persist.adapter import Adapter

from benchmarks.common import Operation
from benchmarks.harness import Settings, Timer
from benchmarks.report import Cell, Table
from dbnexus.permissions import RBAC_MODEL

__all__ = ["MODEL", "SIZES", "permissions_table", "policy_rules", "run_permissions"]

SIZES = (10, 1_000, 100_000)

COLUMNS = (("casbin", "casbin enforce()"), ("dbnexus", "dbnexus check()"))

MODEL = RBAC_MODEL


def policy_rules(n: int) -> list[tuple[str, list[str]]]:
    """The N policy lines as (type, fields): what ``p, role_0, bench_t0, read`` parses to."""
    return [
        ("p", [f"role_{i // 2}", f"bench_t{(i // 2) % 100}", "read"])
        if i % 2 == 0
        else ("g", [f"user_{i // 2}", f"role_{i // 2}"])
        for i in range(n)
    ]


def requests(n: int) -> list[tuple[str, str, str]]:
    """Allowed requests whose policy lines sit in the middle tenth of the policy.

    Any run of calls then costs casbin about half a scan, whichever requests it reaches
    (a small policy has too few users for a band: it cycles over all of them).
    """
    users = n // 2
    width = max(5, users // 10)
    first = max(0, users // 2 - width // 2)
    ks = range(first, min(users, first + width))
    return [(f"user_{k}", f"bench_t{k % 100}", "read") for k in ks]


class _RulesAdapter(Adapter):
    """Hands casbin the rules already split (what ``load_policy_line`` would append),
    which saves parsing 100,000 CSV lines: this case is not about loading."""

    def __init__(self, rules: list[tuple[str, list[str]]]) -> None:
        self.rules = rules

    def load_policy(self, model: Model) -> None:
        for ptype, rule in self.rules:
            model.model[ptype][ptype].policy.append(rule)


def make_enforcer(n: int) -> Enforcer:
    model = Model()
    model.load_model_from_text(MODEL)
    return Enforcer(model, _RulesAdapter(policy_rules(n)))


def casbin_ops(enforcer: Enforcer, reqs: list[tuple[str, str, str]]) -> dict[str, Operation]:
    enforce = enforcer.enforce
    cycle = itertools.cycle(reqs).__next__
    sub, obj, act = reqs[len(reqs) // 2]

    def first() -> object:
        return enforce(*cycle())

    def repeated() -> object:
        return enforce(sub, obj, act)

    return {"first": Operation(first), "repeated": Operation(repeated)}


def dbnexus_ops(perms: Any, reqs: list[tuple[str, str, str]]) -> dict[str, Operation]:
    check = perms.check
    cycle = itertools.cycle(reqs).__next__
    domains = map(str, itertools.count()).__next__
    sub, obj, act = reqs[len(reqs) // 2]

    def first() -> object:
        user, table, action = cycle()
        return check(user, domains(), table, action)

    def repeated() -> object:
        return check(sub, None, obj, act)

    return {"first": Operation(first), "repeated": Operation(repeated)}


def memo_size(perms: Any) -> int | None:
    """How many decisions are memoised (a private attribute: used only as a check)."""
    memo = getattr(perms, "_memo", None)
    return len(memo) if isinstance(memo, dict) else None


def check_unmemoised(perms: Any, before: int | None, calls: int) -> str:
    """Check that every one of ``calls`` decisions added a memo entry (none was a hit).

    The memo empties itself when it reaches ``memo_size`` and then takes the new entry,
    so after ``calls`` fresh keys it holds ``(before + calls - 1) % memo_size + 1``;
    a single memo hit would leave it one short.
    """
    after, capacity = memo_size(perms), getattr(perms, "_memo_size", None)
    if before is None or after is None or not isinstance(capacity, int):
        return "un-memoised check skipped: the memo is not inspectable"
    expected = (before + calls - 1) % capacity + 1
    verdict = f"{calls} calls, memo size {after}, expected {expected}"
    return f"un-memoised: {verdict}" if after == expected else f"FAILED un-memoised: {verdict}"


async def run_permissions(settings: Settings) -> dict[str, Any]:
    """Time both columns for every size; returns rows of cells plus setup timings."""
    try:
        from dbnexus import Permissions
    except Exception as exc:
        permissions_cls: Any = None
        dbnexus_error = f"import failed: {type(exc).__name__}: {exc}"
    else:
        permissions_cls = Permissions
        dbnexus_error = ""
    rows: dict[str, dict[str, Cell]] = {}
    setup: dict[str, dict[str, float]] = {}
    for n in SIZES:
        t0 = time.perf_counter()
        enforcer = make_enforcer(n)
        setup[str(n)] = {"casbin_load_s": round(time.perf_counter() - t0, 3)}
        reqs = requests(n)
        sample = [reqs[0], reqs[len(reqs) // 2], reqs[-1]]
        if not all(enforcer.enforce(*req) for req in sample):
            raise AssertionError(f"the policy of {n} lines should allow {sample}")
        if enforcer.enforce("user_x", "bench_t0", "read"):
            raise AssertionError("an unknown user is allowed")
        ops: dict[tuple[str, str], Operation] = {
            ("casbin", kind): op for kind, op in casbin_ops(enforcer, reqs).items()
        }
        perms = None
        if permissions_cls is not None:
            t0 = time.perf_counter()
            perms = permissions_cls(enforcer)
            setup[str(n)]["dbnexus_wrap_s"] = round(time.perf_counter() - t0, 3)
            if not all(perms.check(s, None, o, a) for s, o, a in sample):
                raise AssertionError("dbnexus denies a request casbin allows")
            if perms.check("user_x", None, "bench_t0", "read"):
                raise AssertionError("dbnexus allows an unknown user")
            # A wrapper of its own for "repeated", so that the memo of "first" holds
            # only first decisions and can be checked.
            ops["dbnexus", "first"] = dbnexus_ops(perms, reqs)["first"]
            ops["dbnexus", "repeated"] = dbnexus_ops(permissions_cls(enforcer), reqs)["repeated"]
        memo_before = memo_size(perms)
        timers = {key: Timer(op, settings) for key, op in ops.items()}
        for timer in timers.values():
            await timer.warm_up()
        # All four interleaved, so that drift touches first and repeated alike.
        for _ in range(settings.repeat):
            for timer in timers.values():
                await timer.repetition()
        for kind in ("first", "repeated"):
            cells: dict[str, Cell] = {}
            for key, _ in COLUMNS:
                timer = timers.get((key, kind))
                if timer is None:
                    cells[key] = Cell(na=dbnexus_error or "not available")
                else:
                    cells[key] = Cell(stats=timer.stats())
            if kind == "first" and ("dbnexus", "first") in timers:
                calls = timers["dbnexus", "first"].calls_done
                cells["dbnexus"].checks.append(check_unmemoised(perms, memo_before, calls))
            d, c = cells["dbnexus"].stats, cells["casbin"].stats
            if d is not None and c is not None:
                cells["dbnexus"].ratios["casbin"] = d.median_us / c.median_us
            rows[f"{n}:{kind}"] = cells
    return {"rows": rows, "setup": setup}


def permissions_table(result: dict[str, Any]) -> Table:
    table = Table("== 9. permission decision (no database) ==", COLUMNS)
    for key, cells in result["rows"].items():
        n, kind = key.split(":")
        table.rows.append((f"{int(n):,} lines, {kind}", cells))
    for n, s in result["setup"].items():
        text = f"{int(n):,} lines: casbin builds the enforcer in {s['casbin_load_s']:.3f} s"
        if "dbnexus_wrap_s" in s:
            text += f"; Permissions(enforcer) indexes it in {s['dbnexus_wrap_s']:.3f} s"
        table.extra_notes.append(text)
    table.extra_notes.append(
        "first: a request key never decided before (checked: the memo grew by one per call);"
        " repeated: the same request every call"
    )
    return table
