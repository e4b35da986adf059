"""Permissions: decisions equal plain casbin's, changes apply at once, the policy file is kept.

Real casbin is the reference everywhere: a separate ``casbin.Enforcer`` built from the
same model and policy answers every request we compare.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

import casbin
import pytest
from casbin.persist.adapter import Adapter
from casbin.persist.adapters import StringAdapter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbnexus.errors import ConfigError, ValidationError
from dbnexus.permissions import ACTIONS, Permissions

HEAD3 = """
[request_definition]
r = sub, obj, act
"""
HEAD4 = """
[request_definition]
r = sub, dom, obj, act
"""

ACL = (
    HEAD3
    + """
[policy_definition]
p = sub, obj, act
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = r.sub == p.sub && r.obj == p.obj && r.act == p.act
"""
)

RBAC = (
    HEAD3
    + """
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""
)

RBAC_DOMAINS = (
    HEAD4
    + """
[policy_definition]
p = sub, dom, obj, act
[role_definition]
g = _, _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act
"""
)


def _with_eft(
    effect: str, matcher: str = "g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act"
) -> str:
    return (
        HEAD3
        + f"""
[policy_definition]
p = sub, obj, act, eft
[role_definition]
g = _, _
[policy_effect]
e = {effect}
[matchers]
m = {matcher}
"""
    )


ALLOW_AND_DENY = _with_eft("some(where (p.eft == allow)) && !some(where (p.eft == deny))")
DENY_OVERRIDE = _with_eft("!some(where (p.eft == deny))")
PRIORITY = _with_eft("priority(p.eft) || deny")
PRIORITY_FIELD = (
    HEAD3
    + """
[policy_definition]
p = priority, sub, obj, act, eft
[role_definition]
g = _, _
[policy_effect]
e = priority(p.eft) || deny
[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""
)
# keyMatch is not indexable: the index narrows on sub (via g) and act, casbin evaluates the rest.
KEY_MATCH = _with_eft(
    "some(where (p.eft == allow)) && !some(where (p.eft == deny))",
    "r.act == p.act && keyMatch(r.obj, p.obj) && g(r.sub, p.sub)",
)
# A top-level || is not recognised: decisions fall back to enforce().
UNRECOGNISED = (
    HEAD3
    + """
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act || r.obj == "public"
"""
)

USERS = ["alice", "bob", "carol", "dave", "erin"]
ROLES = ["admin", "editor", "viewer", "auditor"]
TABLES = ["users", "orders", "items", "logs"]
DOMAINS = ["acme", "globex"]


def reference(model_text: str, policy_text: str) -> casbin.Enforcer:
    """A plain casbin enforcer over the same text; changes stay in memory."""
    model = casbin.Enforcer.new_model(text=model_text)
    enforcer = casbin.Enforcer(model, StringAdapter(policy_text) if policy_text else None)
    enforcer.enable_auto_save(False)
    return enforcer


def tokens(model_text: str, sec: str) -> list[str]:
    return casbin.Enforcer.new_model(text=model_text)[sec][sec].tokens


def random_policy(model_text: str, rng: random.Random) -> str:
    p_tokens = tokens(model_text, "p")
    has_g = "[role_definition]" in model_text
    g_width = len(tokens(model_text, "g")) if has_g else 0
    lines = []
    for _ in range(rng.randint(4, 24)):
        values = {
            "p_sub": rng.choice(USERS + ROLES),
            "p_obj": rng.choice([*TABLES, "orders/*", "*"]) if model_text is KEY_MATCH else None,
            "p_act": rng.choice(ACTIONS),
            "p_dom": rng.choice(DOMAINS),
            "p_eft": rng.choice(["allow", "allow", "deny"]),
            "p_priority": str(rng.randint(0, 12)),
        }
        if values["p_obj"] is None:
            values["p_obj"] = rng.choice(TABLES)
        lines.append("p, " + ", ".join(str(values[t]) for t in p_tokens))
    for _ in range(rng.randint(0, 10) if has_g else 0):
        sub = rng.choice(USERS + ROLES)
        line = ["g", sub, rng.choice(ROLES)]
        if g_width == 3:
            line.append(rng.choice(DOMAINS))
        lines.append(", ".join(line))
    rng.shuffle(lines)
    return "\n".join(lines)


def random_request(model_text: str, rng: random.Random) -> tuple[str, str | None, str, str]:
    subject = rng.choice(USERS + ROLES + ["ghost"])
    if model_text is KEY_MATCH:
        table = rng.choice([*TABLES, "orders/1", "orders/2/x", "nope"])
    else:
        table = rng.choice([*TABLES, "nope"])
    action = rng.choice([*ACTIONS, "drop"])
    domain = rng.choice([*DOMAINS, "nowhere"]) if model_text is RBAC_DOMAINS else None
    return subject, domain, table, action


def expected(ref: casbin.Enforcer, request: tuple[str, str | None, str, str]) -> bool:
    subject, domain, table, action = request
    if domain is None:
        return bool(ref.enforce(subject, table, action))
    return bool(ref.enforce(subject, domain, table, action))


MODELS = {
    "acl": (ACL, True),
    "rbac": (RBAC, True),
    "rbac-domains": (RBAC_DOMAINS, True),
    "allow-and-deny": (ALLOW_AND_DENY, True),
    "deny-override": (DENY_OVERRIDE, True),
    "priority": (PRIORITY, True),
    "priority-field": (PRIORITY_FIELD, True),
    "keymatch": (KEY_MATCH, True),
    "unrecognised": (UNRECOGNISED, False),
}


# --- decisions equal casbin's -----------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_decisions_equal_casbin_on_random_policies(name: str) -> None:
    model_text, indexed = MODELS[name]
    for seed in range(4):
        rng = random.Random(f"{name}-{seed}")
        policy = random_policy(model_text, rng)
        perms = Permissions.from_text(model_text, policy)
        ref = reference(model_text, policy)
        assert perms.indexed is indexed
        assert perms.uses_domain is (model_text is RBAC_DOMAINS)
        for _ in range(100):
            request = random_request(model_text, rng)
            assert perms.check(*request) is expected(ref, request), (policy, request)
            # the memoised answer is the same
            assert perms.check(*request) is expected(ref, request)


def test_role_hierarchy_depth_limit_matches_casbin() -> None:
    # casbin's role manager follows at most 10 levels; roles beyond are not inherited.
    chain = ["alice", *[f"r{i}" for i in range(1, 14)]]
    lines = [f"g, {a}, {b}" for a, b in itertools.pairwise(chain)]
    lines += [f"p, {role}, t_{role}, read" for role in chain]
    lines += ["g, r13, r1"]  # and a cycle
    policy = "\n".join(lines)
    perms = Permissions.from_text(RBAC, policy)
    ref = reference(RBAC, policy)
    answers = []
    for user in chain:
        for role in chain:
            request = (user, None, f"t_{role}", "read")
            answers.append(expected(ref, request))
            assert perms.check(*request) is answers[-1], request
    assert True in answers and False in answers


def test_roles_of_roles_and_unknowns() -> None:
    policy = """
p, admin, users, delete
p, editor, users, update
p, viewer, users, read
g, alice, admin
g, admin, editor
g, editor, viewer
g, bob, viewer
"""
    perms = Permissions.from_text(RBAC, policy)
    assert perms.check("alice", None, "users", "read")
    assert perms.check("alice", None, "users", "delete")
    assert perms.check("bob", None, "users", "read")
    assert not perms.check("bob", None, "users", "update")
    assert not perms.check("nobody", None, "users", "read")
    assert not perms.check("alice", None, "nowhere", "read")
    assert perms.policy_size == 7


def test_domain_roles_only_apply_in_their_domain() -> None:
    policy = """
p, admin, acme, users, read
p, admin, globex, users, read
g, alice, admin, acme
"""
    perms = Permissions.from_text(RBAC_DOMAINS, policy)
    assert perms.check("alice", "acme", "users", "read")
    assert not perms.check("alice", "globex", "users", "read")


# Few tables and actions, so lines collide and the effect (and order) decides.
policy_lines = st.lists(
    st.tuples(
        st.sampled_from(USERS + ROLES),
        st.sampled_from(TABLES[:2]),
        st.sampled_from(ACTIONS[:2]),
        st.sampled_from(["allow", "deny"]),
    ),
    min_size=1,
    max_size=20,
)
role_lines = st.lists(st.tuples(st.sampled_from(USERS + ROLES), st.sampled_from(ROLES)), max_size=8)


@pytest.mark.parametrize(
    "model", [ALLOW_AND_DENY, DENY_OVERRIDE, PRIORITY], ids=["and", "deny", "priority"]
)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=policy_lines, g=role_lines)
def test_effects_match_casbin(
    model: str, p: list[tuple[str, ...]], g: list[tuple[str, ...]]
) -> None:
    lines = ["p, " + ", ".join(line) for line in p] + ["g, " + ", ".join(line) for line in g]
    policy = "\n".join(lines)
    perms = Permissions.from_text(model, policy)
    ref = reference(model, policy)
    # every request over the small universe, unknown names included
    for subject in [*USERS, *ROLES, "ghost"]:
        for table in [*TABLES[:2], "nope"]:
            for action in [*ACTIONS[:2], "drop"]:
                got = perms.check(subject, None, table, action)
                assert got is ref.enforce(subject, table, action), (policy, subject, table, action)


@pytest.mark.parametrize(
    ("model", "policy"),
    [
        # casbin takes the first matching line in policy order: the role's deny.
        (PRIORITY, "p, admin, users, read, deny\np, alice, users, read, allow\ng, alice, admin"),
        # with a priority field casbin sorts by it first, whatever the file order.
        (
            PRIORITY_FIELD,
            "p, 2, alice, users, read, allow\np, 1, admin, users, read, deny\ng, alice, admin",
        ),
    ],
)
def test_priority_follows_policy_order_across_roles(model: str, policy: str) -> None:
    perms = Permissions.from_text(model, policy)
    assert perms.check("alice", None, "users", "read") is False
    assert reference(model, policy).enforce("alice", "users", "read") is False


def test_subject_priority_matches_casbin() -> None:
    model = _with_eft("subjectPriority(p.eft) || deny")
    rng = random.Random("subject-priority")
    for _ in range(25):
        lines = [
            f"p, {rng.choice(USERS + ROLES)}, {rng.choice(TABLES[:2])}, read, "
            f"{rng.choice(['allow', 'deny'])}"
            for _ in range(rng.randint(2, 15))
        ]
        for _ in range(rng.randint(0, 6)):  # casbin rejects cycles here, so roles point "up"
            if rng.random() < 0.5:
                lines.append(f"g, {rng.choice(USERS)}, {rng.choice(ROLES)}")
            else:
                low, high = sorted(rng.sample(range(len(ROLES)), 2))
                lines.append(f"g, {ROLES[low]}, {ROLES[high]}")
        rng.shuffle(lines)
        policy = "\n".join(lines)
        perms = Permissions.from_text(model, policy)
        ref = reference(model, policy)
        assert perms.indexed
        for subject in [*USERS, *ROLES, "ghost"]:
            for table in TABLES[:2]:
                assert perms.check(subject, None, table, "read") is ref.enforce(
                    subject, table, "read"
                )


# --- runtime changes ------------------------------------------------------------------


def _p_rule(
    model_text: str, subject: str, table: str, action: str, domain: str | None
) -> list[str]:
    values = {"p_sub": subject, "p_obj": table, "p_act": action, "p_dom": domain, "p_eft": "allow"}
    return [str(values[t]) for t in tokens(model_text, "p")]


@pytest.mark.parametrize("name", ["acl", "rbac", "rbac-domains", "allow-and-deny", "keymatch"])
async def test_random_changes_track_casbin(name: str) -> None:
    model_text, _ = MODELS[name]
    rng = random.Random(name)
    policy = random_policy(model_text, rng)
    perms = Permissions.from_text(model_text, policy)
    ref = reference(model_text, policy)
    has_g = "[role_definition]" in model_text
    for _ in range(80):
        subject, domain, table, action = random_request(model_text, rng)
        version = perms.version
        op = rng.choice(
            ["grant", "revoke", "add_role", "remove_role"] if has_g else ["grant", "revoke"]
        )
        if op in ("grant", "revoke"):
            rule = _p_rule(model_text, subject, table, action, domain)
            present = ref.has_named_policy("p", rule)
            if op == "grant":
                changed = await perms.grant(subject, table, action, domain=domain)
                if not present:
                    ref.add_named_policy("p", rule)
            else:
                changed = await perms.revoke(subject, table, action, domain=domain)
                if present:
                    ref.remove_named_policy("p", rule)
            assert changed is (present if op == "revoke" else not present)
        else:
            role = rng.choice(ROLES)
            rule = [subject, role] + ([domain] if domain is not None else [])
            present = ref.has_named_grouping_policy("g", rule)
            if op == "add_role":
                changed = await perms.add_role(subject, role, domain=domain)
                if not present:
                    ref.add_named_grouping_policy("g", rule)
            else:
                changed = await perms.remove_role(subject, role, domain=domain)
                if present:
                    ref.remove_named_grouping_policy("g", rule)
            assert changed is (present if op == "remove_role" else not present)
        assert (perms.version > version) is changed
        g_lines = len(ref.get_grouping_policy()) if has_g else 0
        assert perms.policy_size == len(ref.get_policy()) + g_lines
        request = (subject, domain, table, action)
        assert perms.check(*request) is expected(ref, request)
        for _ in range(6):
            request = random_request(model_text, rng)
            assert perms.check(*request) is expected(ref, request), request


async def test_changes_apply_to_the_very_next_check() -> None:
    perms = Permissions.from_text(RBAC, "p, admin, users, read\ng, alice, admin")
    assert perms.check("bob", None, "users", "read") is False  # memoised
    v0 = perms.version
    assert await perms.grant("bob", "users", "read") is True
    assert perms.check("bob", None, "users", "read") is True
    assert perms.version > v0
    v1 = perms.version
    assert await perms.grant("bob", "users", "read") is False  # already there: no change
    assert perms.version == v1
    assert await perms.revoke("bob", "users", "read") is True
    assert perms.check("bob", None, "users", "read") is False
    assert await perms.revoke("bob", "users", "read") is False
    assert perms.check("alice", None, "users", "read") is True
    assert await perms.remove_role("alice", "admin") is True
    assert perms.check("alice", None, "users", "read") is False
    assert await perms.add_role("alice", "admin") is True
    assert perms.check("alice", None, "users", "read") is True
    assert perms.version > v1


async def test_deny_rule_keeps_winning_after_grant() -> None:
    perms = Permissions.from_text(ALLOW_AND_DENY, "p, bob, logs, delete, deny")
    await perms.grant("bob", "logs", "delete")
    assert perms.check("bob", None, "logs", "delete") is False
    await perms.grant("bob", "logs", "read")
    assert perms.check("bob", None, "logs", "read") is True


async def test_checks_interleaved_with_changes() -> None:
    perms = Permissions.from_text(RBAC, "p, admin, users, read")
    seen: list[bool] = []

    async def reader() -> None:
        for _ in range(200):
            seen.append(perms.check("carol", None, "users", "read"))
            await asyncio.sleep(0)

    async def writer() -> None:
        for _ in range(20):
            await perms.add_role("carol", "admin")
            assert perms.check("carol", None, "users", "read") is True
            await asyncio.sleep(0)
            await perms.remove_role("carol", "admin")
            assert perms.check("carol", None, "users", "read") is False
            await asyncio.sleep(0)

    await asyncio.gather(reader(), writer(), reader())
    assert True in seen and False in seen


def test_small_memo_stays_correct() -> None:
    policy = "p, admin, users, read\ng, alice, admin"
    perms = Permissions.from_text(RBAC, policy, memo_size=2)
    ref = reference(RBAC, policy)
    rng = random.Random(3)
    for _ in range(200):
        request = random_request(RBAC, rng)
        assert perms.check(*request) is expected(ref, request)
    assert len(perms._memo) <= 2


async def test_invalidate_after_changing_the_enforcer_directly() -> None:
    perms = Permissions.from_text(RBAC, "p, admin, users, read")
    assert perms.check("dave", None, "users", "read") is False
    assert perms.enforcer is not None
    perms.enforcer.add_policy("dave", "users", "read")
    perms.invalidate()
    assert perms.check("dave", None, "users", "read") is True


# --- files ------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "model.conf"
    policy = tmp_path / "policy.csv"
    model.write_text(RBAC)
    policy.write_text("p, admin, users, read\np, bob, orders, insert\ng, alice, admin\n")
    return model, policy


async def test_runtime_changes_never_touch_the_policy_file(files: tuple[Path, Path]) -> None:
    model, policy = files
    before = policy.read_bytes()
    perms = Permissions.from_files(model, policy)
    assert perms.check("alice", None, "users", "read")
    await perms.grant("carol", "users", "read")
    await perms.revoke("bob", "orders", "insert")
    await perms.add_role("dave", "admin")
    await perms.remove_role("alice", "admin")
    assert perms.check("carol", None, "users", "read")
    assert policy.read_bytes() == before
    # reload goes back to the file, dropping the runtime changes
    version = perms.version
    await perms.reload()
    assert perms.version > version
    assert not perms.check("carol", None, "users", "read")
    assert perms.check("alice", None, "users", "read")
    assert policy.read_bytes() == before


async def test_reload_picks_up_file_edits(files: tuple[Path, Path]) -> None:
    model, policy = files
    perms = Permissions.from_files(str(model), str(policy))
    assert not perms.check("erin", None, "logs", "read")
    policy.write_text(policy.read_text() + "p, erin, logs, read\n")
    await perms.reload()
    assert perms.check("erin", None, "logs", "read")
    policy.write_text("p, erin, logs\n")  # malformed: the old policy stays live
    with pytest.raises(ConfigError, match="expects 3"):
        await perms.reload()
    assert perms.check("erin", None, "logs", "read")
    policy.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        await perms.reload()
    assert perms.check("erin", None, "logs", "read")


async def test_wrapped_file_enforcer_keeps_the_file(files: tuple[Path, Path]) -> None:
    model, policy = files
    before = policy.read_bytes()
    perms = Permissions(casbin.Enforcer(str(model), str(policy)))
    await perms.grant("carol", "users", "read")
    assert perms.check("carol", None, "users", "read")
    assert policy.read_bytes() == before


# --- allow_all and errors -------------------------------------------------------------


async def test_allow_all() -> None:
    perms = Permissions.allow_all()
    assert perms.check("anyone", None, "anything", "delete")
    assert perms.check("anyone", "any-domain", "anything", "drop")
    assert perms.enforcer is None and perms.policy_size == 0 and not perms.uses_domain
    with pytest.raises(ConfigError, match="allow_all"):
        await perms.grant("a", "b", "read")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is not a model", "cannot parse"),
        (ACL.split("[matchers]")[0], "no \\[matchers\\] section"),
        (ACL.replace("r = sub, obj, act", "r = sub, obj"), "3 tokens"),
        (ACL.replace("some(where (p.eft == allow))", "sometimes"), "unsupported policy_effect"),
        (ACL.replace("r.sub == p.sub &&", "r.sub == == p.sub &&"), "not a valid expression"),
    ],
)
def test_bad_model_text_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Permissions.from_text(text, "p, alice, users, read")


def test_bad_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has 2 fields"):
        Permissions.from_text(ACL, "p, alice, users")
    with pytest.raises(ConfigError, match="has 1 fields"):
        Permissions.from_text(RBAC, "g, alice")


def test_missing_files_are_config_errors(files: tuple[Path, Path], tmp_path: Path) -> None:
    model, policy = files
    with pytest.raises(ConfigError, match="model file"):
        Permissions.from_files(tmp_path / "missing.conf", policy)
    with pytest.raises(ConfigError, match="policy file"):
        Permissions.from_files(model, tmp_path / "missing.csv")


def test_not_an_enforcer() -> None:
    with pytest.raises(ConfigError, match=r"casbin\.Enforcer"):
        Permissions("model.conf")


async def test_domain_model_needs_a_domain() -> None:
    perms = Permissions.from_text(RBAC_DOMAINS, "p, alice, acme, users, read")
    with pytest.raises(ValidationError, match="domain="):
        perms.check("alice", None, "users", "read")
    with pytest.raises(ValidationError, match="domain"):
        await perms.grant("alice", "users", "read")
    with pytest.raises(ValidationError, match="domain"):
        await perms.add_role("alice", "admin")


async def test_bad_change_arguments() -> None:
    perms = Permissions.from_text(ACL, "p, alice, users, read")
    with pytest.raises(ValidationError, match="no domain"):
        await perms.grant("alice", "users", "read", domain="acme")
    with pytest.raises(ValidationError, match="commas"):
        await perms.grant("alice, bob", "users", "read")
    with pytest.raises(ValidationError, match="non-empty"):
        await perms.revoke("alice", "", "read")
    with pytest.raises(ValidationError, match="role_definition"):
        await perms.add_role("alice", "admin")
    priority = Permissions.from_text(PRIORITY_FIELD, "p, 1, alice, users, read, allow")
    with pytest.raises(ValidationError, match="priority"):
        await priority.grant("alice", "users", "read")


# --- a large policy -------------------------------------------------------------------


class _ListAdapter(Adapter):
    """Loads pre-split rules, as adapters do, so 100k lines load without CSV parsing."""

    def __init__(self, p: list[list[str]], g: list[list[str]]) -> None:
        self.p, self.g = p, g

    def load_policy(self, model: Any) -> None:
        model.model["p"]["p"].policy.extend(list(rule) for rule in self.p)
        model.model["g"]["g"].policy.extend(list(rule) for rule in self.g)


# g() last, so casbin's reference scan short-circuits on obj/act and stays affordable.
LARGE_MODEL = RBAC.replace(
    "g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act",
    "r.obj == p.obj && r.act == p.act && g(r.sub, p.sub)",
)


async def test_large_policy_matches_casbin_on_a_sample() -> None:
    rng = random.Random(100_000)
    # role lines first, so casbin's reference scan stops early on them
    p = [[f"role{i}", f"table{i}", "read"] for i in range(7)]
    p += [
        [f"user{rng.randrange(5000)}", f"table{rng.randrange(2000)}", rng.choice(ACTIONS)]
        for _ in range(100_000)
    ]
    g = [[f"user{i}", f"role{i % 7}"] for i in range(0, 5000, 3)]

    def enforcer() -> casbin.Enforcer:
        e = casbin.Enforcer(casbin.Enforcer.new_model(text=LARGE_MODEL), _ListAdapter(p, g))
        e.enable_auto_save(False)
        return e

    perms = Permissions(enforcer())
    ref = enforcer()
    assert perms.indexed and perms.policy_size == len(p) + len(g)
    # Every denied request costs casbin a full scan (~0.5 s), so the sample is small.
    direct = p[rng.randrange(7, len(p))]
    sample = [
        (direct[0], None, direct[1], direct[2]),  # a line of its own
        ("user3", None, "table3", "read"),  # through role3
        ("stranger", None, direct[1], direct[2]),  # unknown user
    ]
    for request in sample:
        assert perms.check(*request) is expected(ref, request), request

    await perms.grant("stranger", direct[1], direct[2])
    ref.add_policy("stranger", direct[1], direct[2])
    await perms.revoke(*direct)
    ref.remove_policy(*direct)
    for request in (sample[0], sample[2]):
        assert perms.check(*request) is expected(ref, request), request
    assert perms.check(*sample[1]) is True
