"""Split and shard plan: deterministic, by tile or block, fractions kept, no empty shard."""

from __future__ import annotations

import pytest

from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.records.plan import assign_splits, parse_split_by, parse_splits, plan_shards, shards_for_size

NAMES = [f"256#0#10.0#13#{ti}#{tj}" for ti in range(20) for tj in range(10)]
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_plan_is_a_function_of_names_and_seed_only():
    plan = plan_shards(NAMES, 4, SPLITS, seed=7)
    assert plan_shards(list(reversed(NAMES)), 4, SPLITS, seed=7) == plan
    assert plan_shards(NAMES, 4, SPLITS, seed=8) != plan
    assignments = plan.assignments()
    assert sorted(assignments) == sorted(NAMES)
    assert {split for split, _ in assignments.values()} == set(SPLITS)


def test_fractions_and_shard_sizes():
    plan = plan_shards(NAMES, 3, SPLITS, seed=0)
    assert {split: len(plan.split_names(split)) for split in SPLITS} == {"train": 160, "val": 20, "test": 20}
    assert [len(shard) for shard in plan.shards["train"]] == [53, 54, 53]
    # Shuffled: the order within a split is not the sorted order.
    assert list(plan.split_names("train")) != sorted(plan.split_names("train"))


def test_no_empty_shards_and_a_split_without_chips_has_none():
    plan = plan_shards(NAMES[:3], {"train": 8, "val": 8}, {"train": 0.9, "val": 0.1})
    assert [len(s) for s in plan.shards["train"]] == [1, 1, 1]
    assert plan.shards["val"] == ()


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
