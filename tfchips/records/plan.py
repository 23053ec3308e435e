"""Which split and shard each chip goes to, and in what order: a function of its name and the seed.

Every decision is made per chip, from its name (or its block's, for ``block:K``),
the seed and the split fractions, never from a list of every chip, so a Beam
worker decides for its own chips what the local writer decides for the folder:

- split: ``u = H(seed, "split", group) / 2**64`` in [0, 1); the chip goes to the
  first split whose cumulative fraction exceeds ``u``. ``group`` is the chip name,
  or its K x K block of neighbouring tiles for ``split_by=block:K``;
- shard: ``H(seed, "shard", name) mod shards``, where ``shards`` is the split's
  shard count (``--shards``, never more than the split's chips);
- order within a shard: ascending ``SHA-256(seed, "order", name)``;
- statistics sample (`statistics_rate`): ``H(0, "statistics", name) / 2**64 < rate``,
  independent of the seed, so that statistics do not change with the split;

with ``H`` the first 8 bytes of SHA-256 of ``f"{seed}\\0{purpose}\\0{name}"`` as
a big-endian integer, which no library upgrade changes. Split sizes are then
binomial rather than exact: a split of fraction p of n chips holds n * p chips
within 3 * sqrt(n * p * (1 - p)) in 99.7% of seeds (10% of 10,000 chips: 1,000
within 90); with ``block:K`` the same holds for blocks. Shard sizes vary the same
way, and a split with few chips per shard may have an empty shard.
"""

from __future__ import annotations

import collections
import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from tfchips.chips import chip_key
from tfchips.errors import ConfigError
from tfchips.grid import Tile

DEFAULT_SPLIT = "data"
_SCALE = 2.0**64


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


def name_hash(seed: int, purpose: str, name: str) -> int:
    """``H``: the first 8 bytes of SHA-256 of ``seed``, ``purpose`` and ``name``, as an integer in [0, 2**64)."""
    return int.from_bytes(order_key(seed, purpose, name)[:8], "big")


def order_key(seed: int, purpose: str, name: str) -> bytes:
    """SHA-256 of ``f"{seed}\\0{purpose}\\0{name}"``: a sort key no library upgrade changes."""
    return hashlib.sha256(f"{seed}\0{purpose}\0{name}".encode("utf-8")).digest()


def split_of(name: str, fractions: Mapping[str, float], block: int = 1, seed: int = 0) -> str:
    """The split of chip ``name`` (see the module docstring); whole groups (tiles or blocks) share one."""
    point = name_hash(seed, "split", split_group(name, block)) / _SCALE
    cumulative = 0.0
    for split, fraction in fractions.items():
        cumulative += fraction
        if point < cumulative:
            return split
    return split  # fractions add up to 1 within rounding: the last split takes the rest


def shard_of(name: str, shards: int, seed: int = 0) -> int:
    """Index of the shard of chip ``name`` among its split's ``shards``."""
    return name_hash(seed, "shard", name) % shards


def within_shard_order(name: str, seed: int = 0) -> bytes:
    """Sort key of chip ``name`` within its shard."""
    return order_key(seed, "order", name)


# Default statistics come from about 1 chip in SAMPLE_EVERY, and at least SAMPLE_AT_LEAST chips expected.
# Decoding and counting a 256 x 256 x 3 uint8 LZW GeoTIFF costs about 2.5 ms CPU, where its ``bytes``
# record costs 0.8 ms (benchmarks/bench_records.py: --exact-statistics 3.24 ms against 0.77 ms per chip),
# so statistics from every chip cost 4x; from 1 in 64, a few percent.
SAMPLE_EVERY = 64
SAMPLE_AT_LEAST = 16


def statistics_rate(chips: int, exact: bool = False) -> float:
    """Fraction of a folder of ``chips`` pairs whose pixels the statistics come from (1.0: every chip)."""
    if exact or chips <= SAMPLE_AT_LEAST:
        return 1.0
    return max(1 / SAMPLE_EVERY, SAMPLE_AT_LEAST / chips)


def in_statistics_sample(name: str, rate: float) -> bool:
    """Whether chip ``name`` counts in the statistics of a folder sampled at ``rate`` (`statistics_rate`)."""
    return rate >= 1.0 or name_hash(0, "statistics", name) / _SCALE < rate


def assign_splits(
    names: Iterable[str], fractions: Mapping[str, float], block: int = 1, seed: int = 0
) -> dict[str, str]:
    """Chip name -> split (`split_of` of each)."""
    return {name: split_of(name, fractions, block, seed) for name in names}


def capped_shard_counts(wanted: int | Mapping[str, int], chips: Mapping[str, int]) -> dict[str, int]:
    """Shards per split: ``wanted`` (one number for all, or per split), at most the split's ``chips``.

    A split without chips gets no shard.
    """
    counts = {}
    for split, count in chips.items():
        shards = wanted if isinstance(wanted, int) else wanted.get(split, 1)
        if shards < 1:
            raise ConfigError(f"shard count must be at least 1, got {shards}")
        counts[split] = min(shards, count)
    return counts


def plan_shards(
    names: Sequence[str],
    shards: int | Mapping[str, int],
    fractions: Mapping[str, float] | None = None,
    block: int = 1,
    seed: int = 0,
) -> ShardPlan:
    """Each chip name's split, shard and place, by `split_of`, `shard_of` and `within_shard_order`.

    ``shards`` is a count per split (one number for all of them), capped by
    `capped_shard_counts`.
    """
    fractions = fractions or {DEFAULT_SPLIT: 1.0}
    if len(set(names)) != len(names):
        raise ConfigError("chip names must be unique")
    splits = assign_splits(names, fractions, block, seed)
    chips = collections.Counter(splits.values())
    counts = capped_shard_counts(shards, {split: chips[split] for split in fractions})
    members: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    for name, split in splits.items():
        members[split, shard_of(name, counts[split], seed)].append(name)
    return ShardPlan(
        {
            split: tuple(
                tuple(sorted(members[split, index], key=lambda n: within_shard_order(n, seed)))
                for index in range(counts[split])
            )
            for split in fractions
        }
    )


# Chips encoded to estimate record bytes per file byte for ``--shard-size``: the SIZE_SAMPLE of smallest
# ``H(0, "size", name)``, so that any runner picks the same ones.
SIZE_SAMPLE = 8


def shard_counts_for_size(
    split_bytes: Mapping[str, int], record_bytes: int, file_bytes: int, shard_mb: float
) -> dict[str, int]:
    """Shards per split for ``shard_mb`` MB shards (10**6 bytes, uncompressed).

    Args:
        split_bytes: bytes of the chip files of each split.
        record_bytes: bytes of the records of the sampled chips.
        file_bytes: bytes of the chip files of the sampled chips.
        shard_mb: the shard size aimed at.
    """
    ratio = record_bytes / max(1, file_bytes)
    return {split: shards_for_size(size * ratio, shard_mb * 1e6) for split, size in split_bytes.items()}


def shards_for_size(estimated_bytes: float, shard_bytes: float) -> int:
    """Number of shards that keeps each near ``shard_bytes`` (uncompressed record bytes)."""
    if shard_bytes <= 0:
        raise ConfigError(f"shard size must be positive, got {shard_bytes}")
    return max(1, math.ceil(estimated_bytes / shard_bytes))
