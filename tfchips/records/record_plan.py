"""The steps of a chips-to-records pipeline that runs in workers: plan, encode, write a shard, finish.

A Beam pipeline composes these as they are; each takes what the local writer
(`tfchips.records.writer.write_tfrecords`) takes for the same step, so both
write the same bytes. What the workers need from the whole folder is a few
numbers, settled once by `record_plan` into a `RecordPlan` (a side input): the
shard count of each split, the signature most chips share (``skip_bad``), the
statistics sample rate and the chips left out before encoding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping

from tfchips.chips import NOT_UTF8
from tfchips.errors import ChipError
from tfchips.records.chip_listing import ListedPair, read_listed_pair
from tfchips.records.dataset_info import BadChip
from tfchips.records.encoder import EncodedChip, RecordOptions, encode_chip_files, file_header
from tfchips.records.options import WriterOptions
from tfchips.records.plan import (
    capped_shard_counts,
    parse_split_by,
    shard_counts_for_size,
    shard_of,
    split_of,
    statistics_rate,
)
from tfchips.records.shards import (
    DatasetSources,
    ShardResult,
    Signature,
    Tally,
    finish_dataset,
    header_signature,
    ordered_chips,
    tally_majority,
    write_shard,
)
from tfchips.records.writer import sampled_options, unpaired_chips

ShardKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """What every worker needs to know about the whole folder (see the module docstring)."""

    shards: Mapping[str, int]
    reference: Signature | None = None
    rate: float = 1.0
    skipped: tuple[BadChip, ...] = ()

    def shard_key(self, name: str, options: WriterOptions) -> ShardKey:
        """(split, shard index) of chip ``name`` (`tfchips.records.plan`)."""
        split = split_of(name, options.splits, parse_split_by(options.split_by), options.seed)
        return split, shard_of(name, self.shards[split], options.seed)

    def shard_keys(self) -> list[ShardKey]:
        """Every shard, chips or not, in writing order."""
        return [(split, index) for split, count in self.shards.items() for index in range(count)]

    @property
    def statistics_source(self) -> str:
        return "computed" if self.rate >= 1.0 else "sample"


def split_size(listed: ListedPair, options: WriterOptions) -> tuple[str, tuple[int, int]]:
    """(split, (1, file bytes)) of a listed pair, to be summed per split (`add_counts`)."""
    return split_of(listed.name, options.splits, parse_split_by(options.split_by), options.seed), (1, listed.size)


def add_counts(values: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """Element-wise sum of (chips, bytes) pairs: associative, for a per-split combine."""
    chips = size = 0
    for count, nbytes in values:
        chips, size = chips + count, size + nbytes
    return chips, size


def size_sample_bytes(sample: Iterable[ListedPair], records: RecordOptions) -> tuple[int, int]:
    """(record bytes, file bytes) of the size-sample chips that encode (`tfchips.records.plan.SIZE_SAMPLE`)."""
    record_bytes = file_bytes = 0
    for listed in sample:
        encoded = encode_listed(listed, dataclasses.replace(records, statistics=False))
        if isinstance(encoded, EncodedChip):
            record_bytes, file_bytes = record_bytes + len(encoded.record), file_bytes + listed.size
    return record_bytes, file_bytes


def signature_vote(listed: ListedPair) -> list[tuple[Signature, str]]:
    """The (signature, name) vote of a listed pair from its headers; none when a header cannot be read."""
    try:
        files = read_listed_pair(listed)
        return [(header_signature(file_header(files.image), file_header(files.label)), listed.name)]
    except ChipError:
        return []  # a bad chip has no vote; encoding it reports why


def record_plan(
    root: str,
    options: WriterOptions,
    split_counts: Iterable[tuple[str, tuple[int, int]]],
    bad_files: Iterable[BadChip],
    tally: Tally | None = None,
    size_sample: tuple[int, int] | None = None,
    statistics: bool = True,
) -> RecordPlan:
    """The `RecordPlan` of a listed folder; `ChipError` for what the local writer refuses before writing.

    Args:
        root: the chip folder (path or URL), for messages.
        options: the job's options.
        split_counts: (split, (chips, file bytes)) of each split with chips (`split_size`, `add_counts`).
        bad_files: unpaired chips and names not UTF-8 (`tfchips.records.chip_listing.pair_files`).
        tally: signature votes of every pair, with ``options.skip_bad``.
        size_sample: (record bytes, file bytes) of the size sample, with ``options.shard_size_mb``.
        statistics: whether statistics are computed (the manifest has none).
    """
    bad_files = list(bad_files)
    undecodable = sorted((b for b in bad_files if b.reason == NOT_UTF8), key=lambda b: b.name)
    if undecodable and not options.skip_bad:
        raise ChipError(f"{root}/{undecodable[0].name}: {NOT_UTF8} (`skip_bad=True` leaves bad chips out)")
    unpaired = unpaired_chips([b.name for b in bad_files if b.reason != NOT_UTF8], root, options.skip_bad)
    counts = {split: (0, 0) for split in options.splits} | dict(split_counts)
    chips = sum(n for n, _ in counts.values())
    if not chips:
        if not bad_files:
            raise ChipError(f"{root}: no chips in images/ or labels/")
        raise ChipError(f"{root}: no image has a label of the same name")
    wanted: int | dict[str, int] = options.shards or 1
    if options.shard_size_mb is not None:
        record_bytes, file_bytes = size_sample or (0, 0)
        split_bytes = {split: size for split, (_, size) in counts.items()}
        wanted = shard_counts_for_size(split_bytes, record_bytes, file_bytes, options.shard_size_mb)
    return RecordPlan(
        capped_shard_counts(wanted, {split: n for split, (n, _) in counts.items()}),
        tally_majority(tally or {}) if options.skip_bad else None,
        statistics_rate(chips, options.exact_statistics) if statistics else 1.0,
        tuple(undecodable + unpaired),
    )


def encode_listed(listed: ListedPair, records: RecordOptions) -> EncodedChip | BadChip:
    """The record of a listed pair read through FileSystems, or a `BadChip` saying why it has none."""
    try:
        return encode_chip_files(read_listed_pair(listed), records)
    except ChipError as error:
        return BadChip(listed.name, str(error))


def encode_sampled(listed: ListedPair, records: RecordOptions, plan: RecordPlan) -> EncodedChip | BadChip:
    """`encode_listed`, with statistics only for chips in the plan's sample."""
    return encode_listed(listed, sampled_options(records, listed.name, plan.rate))


def keyed_by_shard(
    chip: EncodedChip | BadChip, options: WriterOptions, plan: RecordPlan
) -> tuple[ShardKey, EncodedChip | BadChip]:
    """(shard key, chip): what a pipeline groups encoded chips by."""
    return plan.shard_key(chip.name, options), chip


def chip_split(chip: EncodedChip | BadChip, options: WriterOptions) -> tuple[str, tuple[int, int]]:
    """(split, (1, 0)) of an encoded chip, for `plan_for_chips` (sizes are not needed there)."""
    return split_of(chip.name, options.splits, parse_split_by(options.split_by), options.seed), (1, 0)


def plan_for_chips(_, split_counts: Iterable[tuple[str, tuple[int, int]]], options: WriterOptions) -> RecordPlan:
    """The `RecordPlan` of chips encoded without a folder listing (tiles sampled into records): shard counts only.

    ``split_counts`` come from `chip_split` summed by `add_counts`; ``options.shards`` (or 1) per split.
    """
    counts = {split: 0 for split in options.splits} | {split: n for split, (n, _) in split_counts}
    return RecordPlan(capped_shard_counts(options.shards or 1, counts))


def write_planned_shard(
    key: ShardKey, chips: Iterable[EncodedChip | BadChip | None], out: str, options: WriterOptions, plan: RecordPlan
) -> ShardResult:
    """`write_shard` of one shard's chips, arrived in any order (None: the placeholder of an empty shard)."""
    split, index = key
    ordered = ordered_chips((c for c in chips if c is not None), options.seed)
    return write_shard(out, split, index, plan.shards[split], ordered, options, plan.reference)


def finish_planned(
    results: Iterable[ShardResult],
    plan: RecordPlan,
    out: str,
    options: WriterOptions,
    class_names: Mapping[str, str] | None,
    manifest_statistics: dict | None,
    stale: Iterable[str] = (),
) -> None:
    """`finish_dataset` with what the plan says about the folder."""
    sources = DatasetSources(class_names, manifest_statistics, plan.statistics_source, plan.skipped)
    finish_dataset(out, results, options, sources, stale)
