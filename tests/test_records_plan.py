"""Split and shard plan: deterministic, by tile or block, fractions kept, no empty shard."""

from __future__ import annotations

import hashlib
import math

import pytest

from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.records.plan import (
    assign_splits,
    capped_shard_counts,
    parse_split_by,
    parse_splits,
    plan_shards,
    shard_of,
    shards_for_size,
    split_of,
    within_shard_order,
)

NAMES = [f"256#0#10.0#13#{ti}#{tj}" for ti in range(20) for tj in range(10)]
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_plan_is_a_function_of_names_and_seed_only():
    plan = plan_shards(NAMES, 4, SPLITS, seed=7)
    assert plan_shards(list(reversed(NAMES)), 4, SPLITS, seed=7) == plan
    assert plan_shards(NAMES, 4, SPLITS, seed=8) != plan
    assignments = plan.assignments()
    assert sorted(assignments) == sorted(NAMES)
    assert {split for split, _ in assignments.values()} == set(SPLITS)


def test_fractions_hold_within_three_binomial_sigmas_on_10k_names():
    names = [f"256#0#10.0#13#{ti}#{tj}" for ti in range(100) for tj in range(100)]
    for seed in (0, 1, 2):
        plan = plan_shards(names, 3, SPLITS, seed=seed)
        for split, fraction in SPLITS.items():
            sigma = math.sqrt(len(names) * fraction * (1 - fraction))
            assert abs(len(plan.split_names(split)) - len(names) * fraction) <= 3 * sigma
        sizes = [len(shard) for shard in plan.shards["train"]]
        assert sum(sizes) == len(plan.split_names("train"))
        assert max(sizes) - min(sizes) <= 6 * math.sqrt(sum(sizes) / 3)


def test_each_chip_is_placed_from_its_own_name_and_the_seed():
    plan = plan_shards(NAMES, 3, SPLITS, seed=5)
    counts = {split: len(shards) for split, shards in plan.shards.items()}
    for split, shards in plan.shards.items():
        for index, names in enumerate(shards):
            for name in names:
                assert split_of(name, SPLITS, seed=5) == split and shard_of(name, counts[split], seed=5) == index
            assert list(names) == sorted(names, key=lambda n: within_shard_order(n, 5))
    # Shuffled: the order within a split is not the sorted order.
    assert list(plan.split_names("train")) != sorted(plan.split_names("train"))
    # The documented hash, spelled out: a change to it changes every dataset's splits.
    point = int.from_bytes(hashlib.sha256(b"5\0split\0" + NAMES[0].encode()).digest()[:8], "big") / 2**64
    assert split_of(NAMES[0], SPLITS, seed=5) == ("train" if point < 0.8 else "val" if point < 0.9 else "test")


def test_a_split_gets_no_more_shards_than_chips_and_none_without_chips():
    fractions = {"train": 0.9, "val": 0.1}
    for seed in range(5):
        plan = plan_shards(NAMES[:3], 8, fractions, seed=seed)
        assert len(plan.assignments()) == 3
        for split, shards in plan.shards.items():
            assert len(shards) == min(8, len(plan.split_names(split)))
    assert capped_shard_counts({"train": 8, "val": 2}, {"train": 3, "val": 0}) == {"train": 3, "val": 0}
    empty = next(seed for seed in range(50) if not plan_shards(NAMES[:3], 8, fractions, seed=seed).split_names("val"))
    assert plan_shards(NAMES[:3], 8, fractions, seed=empty).shards["val"] == ()


def test_block_split_keeps_neighbours_together():
    block = 4
    splits = assign_splits(NAMES, SPLITS, block=block, seed=3)
    by_block: dict[tuple, set] = {}
    for name, split in splits.items():
        tile = Tile.from_key(name.replace("#", ":"))
        by_block.setdefault((tile.ti // block, tile.tj // block), set()).add(split)
    assert all(len(s) == 1 for s in by_block.values())
    assert len({frozenset(s) for s in by_block.values()}) > 1  # blocks do land in different splits


def test_block_split_needs_tile_keys():
    with pytest.raises(ConfigError, match="'000000001' is not"):
        assign_splits(["000000001"], SPLITS, block=2)


def test_option_parsing():
    assert parse_splits("train=0.8, val=0.2") == {"train": 0.8, "val": 0.2}
    assert parse_splits(None) == {"data": 1.0}
    assert parse_split_by("tile") == 1 and parse_split_by("block:3") == 3
    for bad in ("train=0.8,val=0.1", "train=x", "train=0.5,train=0.5", "a-b=1"):
        with pytest.raises(ConfigError):
            parse_splits(bad)
    for bad in ("block", "block:0", "grid:2"):
        with pytest.raises(ConfigError):
            parse_split_by(bad)
    assert shards_for_size(2.5e6, 1e6) == 3 and shards_for_size(10, 1e6) == 1
