"""Hash sharding spreads rows evenly on real databases, and a fifth shard takes about a fifth.

10,000 rows go through ``insert_batch`` into four SQLite shards; the rows each
shard really holds are counted. A fifth shard is then added by rebalancing,
and the rows moved are counted. The figures are printed (``pytest -s``).
"""

import pytest
from shard_support import make_tenant, shard_rows

pytestmark = [pytest.mark.backend, pytest.mark.layouts("sqlite4")]

KEYS = 10_000


async def test_10000_keys_spread_within_15_percent_and_a_fifth_shard_moves_15_to_25(
    make_sharded, layout, unique
):
    Tenant = make_tenant(unique("tenants"))
    pool = await make_sharded(Tenant, cache_ttl=0)
    codes = [f"customer-{i:05d}" for i in range(KEYS)]
    async with pool.session("loader") as s:
        await Tenant.insert_batch(s, [Tenant(code=c, name="n") for c in codes])

    rows = await shard_rows(pool, Tenant)
    counts = {name: len(r) for name, r in rows.items()}
    assert sum(counts.values()) == KEYS
    mean = KEYS / len(counts)
    deviation = max(abs(n - mean) / mean for n in counts.values())
    for name, r in rows.items():
        assert all(pool.shards.shard_for(Tenant, code) == name for code, _ in r)
    print(
        f"\nhash over 4 shards, {KEYS} keys: per shard {counts}, "
        f"max deviation from the mean {deviation:.1%}"
    )
    assert deviation <= 0.15, counts

    old = {code: name for name, r in rows.items() for code, _ in r}
    new = pool.shards.manager.with_shard("s4", layout.spare)
    report = await pool.shards.rebalance(new, batch_size=2_000, progress=False)
    assert report.complete
    after = await shard_rows(pool, Tenant)
    placed = {code: name for name, r in after.items() for code, _ in r}
    assert sorted(placed) == sorted(codes)  # every key exactly once
    assert sum(len(r) for r in after.values()) == KEYS
    moved = [code for code in codes if placed[code] != old[code]]
    share = len(moved) / KEYS
    print(
        f"adding a fifth shard moved {len(moved)} of {KEYS} keys ({share:.1%}); "
        f"per shard now { {name: len(r) for name, r in after.items()} }"
    )
    assert report[Tenant.__dbnexus__.table_name] == len(moved)
    # consistent hashing: every moved key went to the new shard, none between old ones
    assert {placed[code] for code in moved} == {"s4"}
    assert all(new.shard_for(Tenant, code) == placed[code] for code in codes)
    assert 0.15 <= share <= 0.25
