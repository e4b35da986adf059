"""Shard routing: hash ring balance and stability, range bounds, custom choosers, the manager."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import dbnexus.sharding
from dbnexus.errors import ConfigError, ShardError
from dbnexus.sharding import (
    DEFAULT_VNODES,
    CustomStrategy,
    HashStrategy,
    RangeStrategy,
    ShardManager,
    ShardStrategy,
    canonical_key,
)

URLS4 = {f"s{i}": f"sqlite+aiosqlite:///s{i}.db" for i in range(4)}
URLS5 = {**URLS4, "s4": "sqlite+aiosqlite:///s4.db"}
STR_KEYS = [f"tenant-{i}" for i in range(10_000)]
INT_KEYS = list(range(10_000))
KEY_SETS = pytest.mark.parametrize("keys", [STR_KEYS, INT_KEYS], ids=["str", "int"])

# Computed once with blake2b-64 and 1024 vnodes over s0..s3. If this changes,
# every deployed hash-sharded database would be misrouted: do not "fix" the
# expectations, restore the hash.
PINNED = {
    "acme": "s2",
    "globex": "s0",
    "initech": "s3",
    "tenant-0": "s3",
    "tenant-9999": "s1",
    0: "s1",
    1: "s3",
    42: "s0",
    10**12: "s2",
    -7: "s3",
    UUID("12345678-1234-5678-1234-567812345678"): "s0",
}


@dataclass(frozen=True)
class Meta:
    """Stands in for the entity metadata object (``cls.__dbnexus__``)."""

    shard_key: str | None


class Order:
    __dbnexus__ = Meta(shard_key="tenant_id")


class Country:
    __dbnexus__ = Meta(shard_key=None)


class NotAnEntity:
    pass


def route_all(strategy: ShardStrategy, keys: list[Any]) -> list[str]:
    return [strategy.shard_for_key(key) for key in keys]


# ------------------------------------------------------------------ hash: balance


@KEY_SETS
def test_hash_spreads_keys_within_15_percent_of_the_mean(keys: list[Any]) -> None:
    counts = Counter(route_all(HashStrategy(URLS4), keys))
    mean = len(keys) / 4
    assert set(counts) == set(URLS4)
    assert max(abs(count - mean) / mean for count in counts.values()) <= 0.15


@KEY_SETS
def test_adding_a_fifth_shard_moves_about_a_fifth_of_keys_all_to_it(keys: list[Any]) -> None:
    before = route_all(HashStrategy(URLS4), keys)
    after = route_all(HashStrategy(URLS5), keys)
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert 0.15 <= len(moved) / len(keys) <= 0.25
    assert {new for _, new in moved} == {"s4"}


@KEY_SETS
@pytest.mark.parametrize("removed", sorted(URLS4))
def test_removing_a_shard_moves_only_its_keys(keys: list[Any], removed: str) -> None:
    before = route_all(HashStrategy(URLS4), keys)
    after = route_all(HashStrategy(name for name in URLS4 if name != removed), keys)
    for old, new in zip(before, after, strict=True):
        assert new == old if old != removed else new != removed


def test_ring_does_not_depend_on_declaration_order() -> None:
    forward = HashStrategy(["s0", "s1", "s2", "s3"])
    backward = HashStrategy(["s3", "s2", "s1", "s0"])
    assert route_all(forward, STR_KEYS[:2000]) == route_all(backward, STR_KEYS[:2000])


# ---------------------------------------------------------------- hash: stability


def test_hash_mapping_is_pinned() -> None:
    shards = ShardManager.hash(URLS4)
    assert {key: shards.shard_for_key(key) for key in PINNED} == PINNED


def test_hash_mapping_is_the_same_in_other_processes() -> None:
    script = (
        "import json, sys\n"
        "from dbnexus.sharding import HashStrategy\n"
        "keys = json.loads(sys.stdin.read())\n"
        "ring = HashStrategy(['s0', 's1', 's2', 's3'])\n"
        "print(json.dumps([ring.shard_for_key(k) for k in keys]))\n"
    )
    keys = [*STR_KEYS[:500], *INT_KEYS[:500]]
    expected = route_all(HashStrategy(URLS4), keys)
    root = str(Path(dbnexus.sharding.__file__).resolve().parents[1])
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert json.loads(done.stdout) == expected


# ------------------------------------------------------------ hash: key canonical


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 7


@pytest.mark.parametrize(
    ("key", "same_as"),
    [
        (5, "5"),
        (b"5", "5"),
        (bytearray(b"acme"), "acme"),
        (memoryview(b"acme"), "acme"),
        (-12, "-12"),
        (True, 1),
        (Level.HIGH, 7),
        (Color.RED, "red"),
        (
            UUID("12345678-1234-5678-1234-567812345678"),
            "12345678-1234-5678-1234-567812345678",
        ),
    ],
)
def test_equivalent_keys_hash_alike(key: Any, same_as: Any) -> None:
    assert canonical_key(key) == canonical_key(same_as)
    ring = HashStrategy(URLS4)
    assert ring.shard_for_key(key) == ring.shard_for_key(same_as)


def test_different_texts_are_different_keys() -> None:
    assert canonical_key("05") != canonical_key(5)
    assert canonical_key("ACME") != canonical_key("acme")


@pytest.mark.parametrize("key", [1.5, dt.date(2024, 1, 1), (1, 2), None, object()])
def test_unhashable_key_types_are_shard_errors(key: Any) -> None:
    with pytest.raises(ShardError, match="cannot hash shard key"):
        HashStrategy(URLS4).shard_for_key(key)


@pytest.mark.parametrize("vnodes", [0, -1, True, "8", 2.0])
def test_vnodes_must_be_a_positive_int(vnodes: Any) -> None:
    with pytest.raises(ConfigError, match="vnodes"):
        ShardManager.hash(URLS4, vnodes=vnodes)


def test_single_shard_ring_and_default_vnodes() -> None:
    ring = HashStrategy(["only"])
    assert ring.vnodes == DEFAULT_VNODES
    assert set(route_all(ring, STR_KEYS[:100])) == {"only"}


# -------------------------------------------------------------------------- range

TWO = {"s0": "db0", "s1": "db1"}
THREE = {"a": "db-a", "b": "db-b", "c": "db-c"}


def test_range_upper_bounds_are_exclusive() -> None:
    shards = ShardManager.range(TWO, bounds=[(1000, "s0"), (None, "s1")])
    assert shards.shard_for_key(-(10**9)) == "s0"
    assert shards.shard_for_key(999) == "s0"
    assert shards.shard_for_key(1000) == "s1"
    assert shards.shard_for_key(10**18) == "s1"


def test_range_shard_may_own_several_ranges_or_none() -> None:
    shards = ShardManager.range(THREE, bounds=[(10, "a"), (20, "b"), (30, "a")])
    assert [shards.shard_for_key(k) for k in (9, 10, 19, 20, 29)] == ["a", "b", "b", "a", "a"]


def test_range_compares_strings_and_dates_natively() -> None:
    by_name = RangeStrategy(THREE, [("h", "a"), ("p", "b"), (None, "c")])
    assert route_all(by_name, ["acme", "h", "hooli", "p", "zeta"]) == ["a", "b", "b", "c", "c"]
    by_day = RangeStrategy(TWO, [(dt.date(2024, 1, 1), "s0"), (None, "s1")])
    assert by_day.shard_for_key(dt.date(2023, 12, 31)) == "s0"
    assert by_day.shard_for_key(dt.date(2024, 1, 1)) == "s1"


def test_range_single_open_bound_takes_everything() -> None:
    assert RangeStrategy(TWO, [(None, "s1")]).shard_for_key(123) == "s1"


def test_range_key_at_or_beyond_last_bound_is_a_shard_error() -> None:
    shards = ShardManager.range(TWO, bounds=[(1000, "s0"), (2000, "s1")])
    assert shards.shard_for_key(1999) == "s1"
    with pytest.raises(ShardError, match=r"shard key 2000 is at or beyond the last range bound"):
        shards.shard_for_key(2000)


def test_range_key_of_another_type_is_a_shard_error() -> None:
    shards = ShardManager.range(TWO, bounds=[(1000, "s0"), (None, "s1")])
    with pytest.raises(ShardError, match=r"'acme' of type str cannot be compared") as caught:
        shards.shard_for_key("acme")
    assert isinstance(caught.value.__cause__, TypeError)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ([], "empty"),
        ([(2000, "s0"), (1000, "s1")], "strictly ascending"),
        ([(1000, "s0"), (1000, "s1")], "strictly ascending"),
        ([(1000, "s0"), (None, "nope")], "unknown shard 'nope'"),
        ([(None, "s0"), (1000, "s1")], "only be the last"),
        ([(None, "s0"), (None, "s1")], "only be the last"),
        ([(1000, "s0"), ("x", "s1")], "cannot be compared"),
        ([1000, 2000], "pairs"),
        ([(1000, "s0", "extra")], "pairs"),
    ],
)
def test_range_bounds_are_validated(bounds: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ShardManager.range(TWO, bounds=bounds)


# ------------------------------------------------------------------------- custom

REGIONS = {"eu": "db-eu", "us": "db-us"}


def by_region(key: str) -> str:
    return "eu" if key.startswith("eu-") else "us"


def test_custom_routes_with_the_function() -> None:
    shards = ShardManager.custom(REGIONS, by_region)
    assert shards.shard_for_key("eu-acme") == "eu"
    assert shards.shard_for_key("acme") == "us"


@pytest.mark.parametrize("returned", ["asia", None, ["eu"]])
def test_custom_return_must_be_a_known_shard(returned: Any) -> None:
    shards = ShardManager.custom(REGIONS, lambda key: returned)
    expected = rf"returned {re.escape(repr(returned))} for key 'acme'.*not a shard"
    with pytest.raises(ShardError, match=expected):
        shards.shard_for_key("acme")


def test_custom_function_errors_are_wrapped() -> None:
    shards = ShardManager.custom(REGIONS, by_region)
    with pytest.raises(ShardError, match=r"by_region failed for key 42: AttributeError") as caught:
        shards.shard_for_key(42)
    assert isinstance(caught.value.__cause__, AttributeError)


def test_custom_function_shard_errors_pass_through() -> None:
    original = ShardError("tenant is being migrated", shard="eu")

    def chooser(key: str) -> str:
        raise original

    with pytest.raises(ShardError) as caught:
        CustomStrategy(REGIONS, chooser).shard_for_key("acme")
    assert caught.value is original


def test_custom_function_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="callable"):
        ShardManager.custom(REGIONS, "eu")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ manager


@pytest.mark.parametrize(
    "shards",
    [
        ShardManager.hash(URLS4),
        ShardManager.range(TWO, bounds=[(1000, "s0"), (None, "s1")]),
        ShardManager.custom(REGIONS, lambda key: "eu"),
    ],
    ids=["hash", "range", "custom"],
)
def test_none_key_is_a_shard_error(shards: ShardManager) -> None:
    with pytest.raises(ShardError, match="None"):
        shards.shard_for_key(None)


def test_manager_attributes() -> None:
    urls = {"b": "db-b", "a": "db-a"}
    shards = ShardManager.hash(urls)
    assert shards.names == ("b", "a")
    assert shards.default_shard == "b"
    assert dict(shards.urls) == urls
    assert isinstance(shards.strategy, HashStrategy)
    with pytest.raises(TypeError):
        shards.urls["c"] = "db-c"  # type: ignore[index]
    urls["c"] = "db-c"
    assert "c" not in shards.urls


def test_manager_defaults_to_a_hash_strategy() -> None:
    assert ShardManager(URLS4).shard_for_key("acme") == PINNED["acme"]


def test_repr_names_strategy_and_hides_urls() -> None:
    shards = ShardManager.hash({"s0": "postgresql://app:secret@db0/app"}, vnodes=8)
    text = repr(shards)
    assert "secret" not in text
    assert text == (
        "ShardManager(names=['s0'], default_shard='s0', strategy=HashStrategy(['s0'], vnodes=8))"
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ShardManager.hash({}), "no shards"),
        (lambda: ShardManager.hash(URLS4, default_shard="s9"), "default shard 's9'"),
        (lambda: ShardManager.hash({"": "db"}), "non-empty strings"),
        (lambda: ShardManager(URLS4, strategy=HashStrategy(["s0"])), "must be the same"),
        (lambda: ShardManager(URLS4, strategy=object()), "not a ShardStrategy"),  # type: ignore[arg-type]
    ],
)
def test_manager_configuration_is_validated(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_shard_for_entity_with_shard_key_routes_by_key() -> None:
    shards = ShardManager.hash(URLS4)
    assert shards.shard_for(Order, "acme") == PINNED["acme"]


def test_shard_for_entity_without_shard_key_uses_default_shard() -> None:
    shards = ShardManager.hash(URLS4, default_shard="s3")
    assert shards.shard_for(Country, "acme") == "s3"
    assert shards.shard_for(Country, None) == "s3"


def test_shard_for_missing_key_value_names_entity_and_shard_key() -> None:
    shards = ShardManager.hash(URLS4)
    with pytest.raises(ShardError, match="entity Order needs a value for shard key 'tenant_id'"):
        shards.shard_for(Order, None)


def test_shard_for_non_entity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"NotAnEntity.*not an entity"):
        ShardManager.hash(URLS4).shard_for(NotAnEntity, "acme")


def test_shards_for_keys_groups_in_order() -> None:
    shards = ShardManager.range(THREE, bounds=[(10, "a"), (20, "b"), (None, "c")])
    groups = shards.shards_for_keys([15, 3, 25, 11, 7, 30])
    assert groups == {"b": [15, 11], "a": [3, 7], "c": [25, 30]}
    assert list(groups) == ["b", "a", "c"]
    assert shards.shards_for_keys([]) == {}


def test_shards_for_keys_rejects_none() -> None:
    with pytest.raises(ShardError):
        ShardManager.hash(URLS4).shards_for_keys(["acme", None])


# ------------------------------------------------------------------ user strategy


class EvenOdd:
    """A user-defined strategy, satisfying ShardStrategy structurally."""

    names = ("even", "odd")

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong

    def shard_for_key(self, key: Any) -> str:
        return "nowhere" if self.wrong else ("odd" if key % 2 else "even")


def test_user_strategy() -> None:
    urls = {"even": "db-e", "odd": "db-o"}
    shards = ShardManager(urls, strategy=EvenOdd(), default_shard="odd")
    assert isinstance(EvenOdd(), ShardStrategy)
    assert [shards.shard_for_key(k) for k in (1, 2)] == ["odd", "even"]
    assert shards.default_shard == "odd"
    bad = ShardManager(urls, strategy=EvenOdd(wrong=True))
    with pytest.raises(ShardError, match="returned 'nowhere'"):
        bad.shard_for_key(1)


def test_builtin_strategies_satisfy_the_protocol() -> None:
    for strategy in (
        HashStrategy(TWO),
        RangeStrategy(TWO, [(None, "s0")]),
        CustomStrategy(TWO, lambda key: "s0"),
    ):
        assert isinstance(strategy, ShardStrategy)


# -------------------------------------------------------------------- rebalancing


def test_with_shard_hash_rebuilds_the_ring() -> None:
    old = ShardManager.hash(URLS4, vnodes=300, default_shard="s1")
    new = old.with_shard("s4", URLS5["s4"])
    assert new.names == ("s0", "s1", "s2", "s3", "s4")
    assert new.urls["s4"] == URLS5["s4"]
    assert new.default_shard == "s1"
    assert isinstance(new.strategy, HashStrategy)
    assert new.strategy.vnodes == 300
    assert old.names == ("s0", "s1", "s2", "s3")
    assert route_all(new.strategy, STR_KEYS) == route_all(HashStrategy(URLS5, vnodes=300), STR_KEYS)


def test_without_shard_hash_moves_only_its_keys() -> None:
    old = ShardManager.hash(URLS4)
    new = old.without_shard("s2")
    assert new.names == ("s0", "s1", "s3")
    for key in STR_KEYS[:2000]:
        before = old.shard_for_key(key)
        assert new.shard_for_key(key) == before or before == "s2"


def test_with_shard_range_needs_bounds() -> None:
    old = ShardManager.range(TWO, bounds=[(1000, "s0"), (None, "s1")])
    with pytest.raises(ConfigError, match="needs bounds="):
        old.with_shard("s2", "db2")
    new = old.with_shard("s2", "db2", bounds=[(1000, "s0"), (2000, "s1"), (None, "s2")])
    assert [new.shard_for_key(k) for k in (999, 1999, 2000)] == ["s0", "s1", "s2"]
    with pytest.raises(ConfigError, match="not chooser="):
        old.with_shard("s2", "db2", chooser=lambda key: "s2")


def test_without_shard_range_keeps_bounds_unless_they_name_it() -> None:
    old = ShardManager.range(THREE, bounds=[(10, "a"), (None, "b")])
    assert old.without_shard("c").strategy.bounds == ((10, "a"), (None, "b"))  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown shard 'b'"):
        old.without_shard("b")
    new = old.without_shard("b", bounds=[(None, "a")])
    assert new.shard_for_key(50) == "a"


def test_with_shard_custom_needs_chooser() -> None:
    old = ShardManager.custom(REGIONS, by_region)
    with pytest.raises(ConfigError, match="needs chooser="):
        old.with_shard("ap", "db-ap")
    new = old.with_shard(
        "ap", "db-ap", chooser=lambda key: "ap" if key.startswith("ap-") else by_region(key)
    )
    assert [new.shard_for_key(k) for k in ("ap-x", "eu-x", "x")] == ["ap", "eu", "us"]
    kept = new.without_shard("ap")
    assert kept.names == ("eu", "us")
    with pytest.raises(ShardError, match="returned 'ap'"):
        kept.shard_for_key("ap-x")


def test_rebalancing_a_user_strategy_needs_strategy() -> None:
    shards = ShardManager({"even": "db-e", "odd": "db-o"}, strategy=EvenOdd())
    with pytest.raises(ConfigError, match="pass strategy="):
        shards.with_shard("third", "db-3")
    replaced = shards.with_shard("third", "db-3", strategy=HashStrategy(["even", "odd", "third"]))
    assert isinstance(replaced.strategy, HashStrategy)


def test_rebalancing_arguments_are_validated() -> None:
    shards = ShardManager.hash(URLS4)
    with pytest.raises(ConfigError, match="already exists"):
        shards.with_shard("s0", "db")
    with pytest.raises(ConfigError, match="no shard named 's9'"):
        shards.without_shard("s9")
    with pytest.raises(ConfigError, match="takes no bounds="):
        shards.with_shard("s4", "db", bounds=[(None, "s4")])
    with pytest.raises(ConfigError, match="only one of"):
        shards.with_shard("s4", "db", bounds=[(None, "s4")], strategy=HashStrategy(URLS5))


def test_removing_the_default_shard_needs_a_new_default() -> None:
    shards = ShardManager.hash(URLS4)
    with pytest.raises(ConfigError, match="default shard"):
        shards.without_shard("s0")
    assert shards.without_shard("s0", default_shard="s1").default_shard == "s1"
    with pytest.raises(ConfigError, match="no shards"):
        ShardManager.hash({"s0": "db"}).without_shard("s0", default_shard="s0")
