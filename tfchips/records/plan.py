"""Which split and shard each chip goes to, and in what order: decided before any work.

The plan depends only on the chip names, the seed, the split fractions, the
grouping and the shard counts, never on workers or timing, so that every run
(local or Beam) writes the same records to the same shards in the same order.
Orders come from SHA-256 of ``seed`` and a name, which no library upgrade changes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from tfchips.chips import chip_key
from tfchips.errors import ConfigError
from tfchips.grid import Tile

DEFAULT_SPLIT = "data"


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """Names per split per shard, in writing order; splits in the order they were given."""

    shards: Mapping[str, tuple[tuple[str, ...], ...]]

    def assignments(self) -> dict[str, tuple[str, int]]:
        """Chip name -> (split, shard index)."""
        return {
            name: (split, index)
            for split, shards in self.shards.items()
            for index, names in enumerate(shards)
            for name in names
        }

    def split_names(self, split: str) -> tuple[str, ...]:
        """Every name of ``split`` in writing order."""
        return tuple(name for names in self.shards[split] for name in names)


def parse_splits(text: str | None) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` -> fractions; None gives one split named ``data``."""
    if not text:
        return {DEFAULT_SPLIT: 1.0}
    splits: dict[str, float] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            raise ConfigError(f"split {item!r} is not NAME=FRACTION") from None
        if name.strip() in splits:
            raise ConfigError(f"split {name.strip()!r} is given twice")
        splits[name.strip()] = fraction
    return check_splits(splits)


def check_splits(fractions: Mapping[str, float]) -> dict[str, float]:
    """``fractions`` if split names are words and fractions in (0, 1] add up to 1; else `ConfigError`."""
    for name, fraction in fractions.items():
        if not str(name).isidentifier() or not 0 < fraction <= 1:
            raise ConfigError(f"split {name}={fraction}: names must be words and fractions in (0, 1]")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions {dict(fractions)} add up to {sum(fractions.values()):g}, not 1")
    return dict(fractions)


def parse_split_by(text: str) -> int:
    """Block size K of ``block:K``; 1 for ``tile``."""
    if text == "tile":
        return 1
    kind, _, size = text.partition(":")
    if kind != "block" or not size.isdigit() or int(size) < 1:
        raise ConfigError(f"`split_by` {text!r}: expected 'tile' or 'block:K' with K a positive whole number")
    return int(size)


def split_group(name: str, block: int) -> str:
    """The group a chip is split with: itself, or its K x K block of neighbouring tiles."""
    if block == 1:
        return name
    key = chip_key(name)
    if key is None:
        raise ConfigError(f"`split_by` block:{block} needs chips named by tile key; {name!r} is not")
    tile = Tile.from_key(key)
    return f"{tile.tilesize}:{tile.pad}:{tile.resolution}:{tile.zone}:{tile.ti // block}:{tile.tj // block}"


def _rank(seed: int, purpose: str, name: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{purpose}\0{name}".encode("utf-8")).digest()


def assign_splits(
    names: Sequence[str], fractions: Mapping[str, float], block: int = 1, seed: int = 0
) -> dict[str, str]:
    """Chip name -> split, with whole groups (tiles or blocks) in one split.

    Groups are taken in seeded-hash order and cut where the running chip count
    crosses each split's cumulative fraction, so counts match the fractions as
    closely as whole groups allow.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(split_group(name, block), []).append(name)
    order = sorted(groups, key=lambda group: _rank(seed, "split", group))
    bounds = np.cumsum(list(fractions.values())) * len(names)
    splits = list(fractions)
    assigned: dict[str, str] = {}
    done = 0
    for group in order:
        members = groups[group]
        middle = done + len(members) / 2
        split = splits[min(int(np.searchsorted(bounds, middle, side="right")), len(splits) - 1)]
        assigned.update((name, split) for name in members)
        done += len(members)
    return assigned


def plan_shards(
    names: Sequence[str],
    shards: int | Mapping[str, int],
    fractions: Mapping[str, float] | None = None,
    block: int = 1,
    seed: int = 0,
) -> ShardPlan:
    """Assign each chip name to a split and a shard, shuffled by ``seed``.

    ``shards`` is a count per split (one number for all of them); a split never
    gets more shards than chips, so no shard is empty (a split without chips has
    none). Within a split, chips are
    shuffled and cut into contiguous shards whose sizes differ by at most one.
    """
    fractions = fractions or {DEFAULT_SPLIT: 1.0}
    if len(set(names)) != len(names):
        raise ConfigError("chip names must be unique")
    splits = assign_splits(names, fractions, block, seed)
    plan = {}
    for split in fractions:
        members = sorted((n for n in names if splits[n] == split), key=lambda n: _rank(seed, "order", n))
        wanted = shards if isinstance(shards, int) else shards.get(split, 1)
        if wanted < 1:
            raise ConfigError(f"shard count must be at least 1, got {wanted}")
        count = min(wanted, len(members))
        bounds = np.linspace(0, len(members), count + 1).round().astype(int)
        plan[split] = tuple(tuple(members[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    return ShardPlan(plan)


def shards_for_size(estimated_bytes: float, shard_bytes: float) -> int:
    """Number of shards that keeps each near ``shard_bytes`` (uncompressed record bytes)."""
    if shard_bytes <= 0:
        raise ConfigError(f"shard size must be positive, got {shard_bytes}")
    return max(1, math.ceil(estimated_bytes / shard_bytes))
