"""Prometheus metrics: one registry per pool, operation counters, latency, gauges, /metrics."""

import asyncio
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from test_core_support import RBAC_MODEL, admin_policy, make_user, sample, sample_sum, users

from dbnexus import DbPool, IntegrityError, NotFound, PermissionDenied, Permissions

pytestmark = pytest.mark.backend


def ops(pool, table, action, outcome="ok"):
    return sample(pool, "dbnexus_operations_total", table=table, action=action, outcome=outcome)


def observed(pool, table, action):
    return sample(pool, "dbnexus_operation_duration_seconds_count", table=table, action=action)


async def test_operations_are_counted_and_timed(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        await User.insert_batch(s, users(User, 3))
        await User.find_by_id(s, u.id)
        await User.find_all(s)
        await User.count(s)
        u.age = 3
        await User.update(s, u)
        await User.delete(s, u.id)
    assert ops(pool, table, "insert") == 2
    assert ops(pool, table, "read") == 3
    assert ops(pool, table, "update") == 1
    assert ops(pool, table, "delete") == 1
    for action, n in (("insert", 2), ("read", 3), ("update", 1), ("delete", 1)):
        assert observed(pool, table, action) == n
        total = sample(pool, "dbnexus_operation_duration_seconds_sum", table=table, action=action)
        assert 0 < total < 60
    assert (
        sample(
            pool, "dbnexus_operation_duration_seconds_bucket", table=table, action="read", le="+Inf"
        )
        == 3
    )
    assert ops(pool, table, "read", "error") == 0
    assert ops(pool, table, "read", "denied") == 0


async def test_errors_and_denials_are_counted_by_outcome(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    perms = Permissions.from_text(RBAC_MODEL, admin_policy(table))
    pool = await make_pool(User, permissions=perms)
    async with pool.session("admin") as s:
        await User.insert(s, User(name="A", email="dup@x.org"))
        with pytest.raises(IntegrityError):
            await User.insert(s, User(name="B", email="dup@x.org"))
        with pytest.raises(NotFound):
            await User.delete(s, 98765)
    async with pool.session("mallory") as s:
        for _ in range(2):
            with pytest.raises(PermissionDenied):
                await User.count(s)
        with pytest.raises(PermissionDenied):
            await User.insert_batch(s, users(User, 2))
    assert ops(pool, table, "insert") == 1
    assert ops(pool, table, "insert", "error") == 1
    assert ops(pool, table, "delete", "error") == 1
    assert ops(pool, table, "read", "denied") == 2
    assert ops(pool, table, "insert", "denied") == 1
    assert sample(pool, "dbnexus_permission_denied_total", table=table, action="read") == 2
    assert sample(pool, "dbnexus_permission_denied_total", table=table, action="insert") == 1
    assert sample_sum(pool, "dbnexus_permission_denied_total", table=table) == 3


async def test_cache_hits_and_misses_are_counted_per_table(make_pool, unique):
    User = make_user(unique("users"))
    Other = make_user(unique("others"))
    t1, t2 = User.__dbnexus__.table_name, Other.__dbnexus__.table_name
    pool = await make_pool(User, Other)
    async with pool.session("alice") as s:
        u = await User.insert(s, User(name="A", email="a@x.org"))
        for _ in range(3):
            await User.find_by_id(s, u.id)
        await Other.count(s)
        await Other.count(s)
    assert sample(pool, "dbnexus_cache_misses_total", table=t1) == 1
    assert sample(pool, "dbnexus_cache_hits_total", table=t1) == 2
    assert sample(pool, "dbnexus_cache_misses_total", table=t2) == 1
    assert sample(pool, "dbnexus_cache_hits_total", table=t2) == 1


async def test_two_pools_have_separate_registries(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    one = await make_pool(User)
    two = await make_pool(User)
    assert one.metrics.registry is not two.metrics.registry
    async with one.session("alice") as s:
        await User.insert(s, User(name="A", email="a@x.org"))
        await User.count(s)
    async with two.session("alice") as s:
        await User.count(s)
    assert ops(one, table, "insert") == 1
    assert ops(two, table, "insert") == 0
    assert ops(one, table, "read") == 1
    assert ops(two, table, "read") == 1
    # nothing leaks into prometheus_client's global default registry
    labels = {"table": table, "action": "insert", "outcome": "ok"}
    assert REGISTRY.get_sample_value("dbnexus_operations_total", labels) is None


async def test_connections_in_use_gauge(make_pool, unique):
    User = make_user(unique("users"))
    pool = await make_pool(User)
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0
    async with pool.session("alice") as s:
        await s.begin()
        await User.insert(s, User(name="A", email="a@x.org"))
        assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 1
        await s.commit()
        assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0
        with pytest.raises(IntegrityError):
            await User.insert(s, User(name="A", email="a@x.org"))
        await asyncio.gather(*[User.count(s) for _ in range(5)])
    assert sample_sum(pool, "dbnexus_pool_connections_in_use") == 0


async def test_render_is_the_prometheus_text_format(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="A", email="a@x.org"))
    text = pool.metrics.render()
    if isinstance(text, bytes):
        text = text.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "dbnexus_operations",
        "dbnexus_operation_duration_seconds",
        "dbnexus_cache_hits",
        "dbnexus_cache_misses",
        "dbnexus_permission_denied",
        "dbnexus_pool_connections_in_use",
    ):
        assert name in families, name
    inserted = [
        s
        for s in families["dbnexus_operations"].samples
        if s.labels == {"table": table, "action": "insert", "outcome": "ok"}
    ]
    assert [s.value for s in inserted] == [1.0]


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""


async def test_serve_metrics_over_http(make_pool, unique):
    User = make_user(unique("users"))
    table = User.__dbnexus__.table_name
    pool = await make_pool(User)
    async with pool.session("alice") as s:
        await User.insert(s, User(name="A", email="a@x.org"))
    port = await pool.serve_metrics(0, addr="127.0.0.1")
    assert isinstance(port, int) and port > 0
    status, ctype, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert f'dbnexus_operations_total{{action="insert",outcome="ok",table="{table}"}} 1.0' in body
    status, _, _ = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/nope")
    assert status == 404
    # the served text is live: a later operation shows on the next scrape
    async with pool.session("alice") as s:
        await User.count(s)
    _, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
    assert f'dbnexus_operations_total{{action="read",outcome="ok",table="{table}"}} 1.0' in body


async def test_closing_the_pool_stops_serving_metrics(db_url):
    pool = await DbPool.connect(db_url, permissions=Permissions.allow_all())
    try:
        port = await pool.serve_metrics(0)
        status, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "dbnexus_pool_connections_in_use" in body
    finally:
        await pool.close()
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
