"""One shard writer for the local job and Beam: records in plan order to a shard, then dataset.json.

`write_shard` takes one shard's encoded chips in `tfchips.records.plan` order and
writes them under a temporary name (a local folder or any Beam FileSystems URL);
`finish_dataset` takes every shard's `ShardResult`, renames the shards into place
and writes dataset.json. The local writer streams each shard's chips in from its
worker pool; a Beam pipeline groups encoded chips by shard and sorts each group.
Both call these two functions with the same arguments, so their shards and
dataset.json are the same bytes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, Mapping

from tfchips import __version__, storage
from tfchips.chips import ChipHeader
from tfchips.errors import ChipError, OutputError
from tfchips.records.dataset_info import COMPRESSIONS, DATASET_JSON, BadChip, DatasetInfo, ShardInfo, SplitInfo, frozen_json
from tfchips.records.encoder import EncodedChip
from tfchips.records.options import WriterOptions
from tfchips.records.plan import within_shard_order
from tfchips.records.raster_spec import RasterSpec
from tfchips.records.tfds_metadata import write_tfds_metadata
from tfchips.records.tfrecord import TFRecordFile
from tfchips.redaction import redact_json
from tfchips.statistics import ChipStatistics, statistics_json

# What every chip of a dataset must share: (image dtype, image band names, label dtype, label band names).
Signature = tuple[str, tuple[str, ...], str, tuple[str, ...]]


def shard_file_name(split: str, index: int, count: int, compression: str = "none") -> str:
    """``train-00003-of-00016.tfrecord.gz`` style name of shard ``index`` of ``count``."""
    return f"{split}-{index:05d}-of-{count:05d}{COMPRESSIONS[compression][1]}"


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What dataset.json needs from the chips written: their shared image and label specs, merged statistics.

    ``first`` names the first chip, so that a summary that cannot be merged names a chip.
    """

    image: RasterSpec | None = None
    label: RasterSpec | None = None
    statistics: ChipStatistics | None = None
    first: str = ""

    def merge(self, other: DatasetSummary, where: str) -> DatasetSummary:
        """The summary of both sets of chips; `ChipError` naming ``where`` when their bands or dtypes differ."""
        if other.image is None:
            return self
        if self.image is None:
            return other
        a, b = self.statistics, other.statistics
        return DatasetSummary(
            self.image if self.image == other.image else self.image.combine(other.image, where),
            self.label if self.label == other.label else self.label.combine(other.label, where),
            b if a is None else a if b is None else a.merge(b),
            self.first,
        )


def accumulate(summary: DatasetSummary, chip: EncodedChip) -> DatasetSummary:
    """``summary`` with one more chip."""
    return summary.merge(DatasetSummary(chip.image, chip.label, chip.statistics, chip.name), chip.name)


def header_signature(image: ChipHeader, label: ChipHeader) -> Signature:
    """The `Signature` of a chip pair from its two headers."""
    return image.dtype, image.georeference.band_names, label.dtype, label.georeference.band_names


# A tally of signature votes: signature -> [chips that have it, the first of them by name].
Tally = dict


def tally_votes(votes: Iterable[tuple[Signature, str]], tally: Tally | None = None) -> Tally:
    """``tally`` (a new one if None) with (signature, chip name) ``votes`` added."""
    tally = {} if tally is None else tally
    for signature, name in votes:
        entry = tally.setdefault(signature, [0, name])
        entry[0] += 1
        entry[1] = min(entry[1], name)
    return tally


def merge_tallies(tallies: Iterable[Tally]) -> Tally:
    """One tally of the votes of every tally in ``tallies``."""
    merged: Tally = {}
    for tally in tallies:
        for signature, (count, first) in tally.items():
            entry = merged.setdefault(signature, [0, first])
            entry[0] += count
            entry[1] = min(entry[1], first)
    return merged


def tally_majority(tally: Tally) -> Signature | None:
    """The signature with most votes, ties to the one whose first chip by name comes first; None without votes."""
    if not tally:
        return None
    return min(tally, key=lambda s: (-tally[s][0], tally[s][1]))


def majority(votes: Iterable[tuple[Signature, str]]) -> Signature | None:
    """The `Signature` most chips have, from (signature, chip name) votes in any order; None without votes.

    Ties go to the signature of the first chip by name, so the result depends on
    the folder only, not on the order chips are read in (or the worker count).
    """
    return tally_majority(tally_votes(votes))


def check_signature(result: EncodedChip | BadChip, reference: Signature | None) -> EncodedChip | BadChip:
    """``result``, or a `BadChip` when its dtypes or band names are not those of ``reference`` (None: any)."""
    if reference is None or not isinstance(result, EncodedChip):
        return result
    found = (result.image.dtype, result.image.band_names, result.label.dtype, result.label.band_names)
    differences = [
        f"{side} has {found[i]} bands {list(found[i + 1])} where most chips have {reference[i]} bands "
        f"{list(reference[i + 1])}"
        for i, side in ((0, "image"), (2, "label"))
        if found[i : i + 2] != reference[i : i + 2]
    ]
    return BadChip(result.name, f"{result.name}: {'; '.join(differences)}") if differences else result


@dataclass(frozen=True, slots=True)
class ShardResult:
    """A shard written under its temporary name: where it goes, what it holds, the chips left out."""

    split: str
    index: int
    info: ShardInfo
    summary: DatasetSummary
    bad: tuple[BadChip, ...]


def temporary_path(out: str, file: str) -> str:
    """Where shard ``file`` of ``out`` is written before `finish_dataset` renames it."""
    return storage.join(out, storage.PARTIAL_PREFIX + file)


def _create(path: str) -> BinaryIO:
    if storage.is_url(path):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        # Uncompressed: the shard's bytes are compressed already, whatever its suffix says.
        return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "wb")


@contextlib.contextmanager
def _output_errors(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:  # a full disk, a read-only folder
        raise OutputError(error.errno or errno.EIO, error.strerror or str(error), path) from None


def write_shard(
    out: str,
    split: str,
    index: int,
    count: int,
    chips: Iterable[EncodedChip | BadChip],
    options: WriterOptions,
    reference: Signature | None = None,
) -> ShardResult:
    """Write shard ``index`` of ``count`` of ``split`` under its temporary name in ``out`` (folder or URL).

    ``chips`` are the shard's encoded chips in plan order (`ordered_chips`). A bad
    chip, or one whose bands or dtypes are not ``reference``'s or its shard's,
    raises `ChipError` (no shard left behind) unless ``options.skip_bad``, which
    leaves it out and lists it in the result.
    """
    file = shard_file_name(split, index, count, options.compression)
    path = temporary_path(out, file)
    summary, bad, records = DatasetSummary(), [], 0
    shard = None  # created with the first record: a shard without records has no file
    try:
        for chip in chips:
            chip = check_signature(chip, reference)
            if isinstance(chip, EncodedChip):
                try:
                    summary = accumulate(summary, chip)
                except ChipError as error:
                    chip = BadChip(chip.name, str(error))
            if isinstance(chip, BadChip):
                if not options.skip_bad:
                    raise ChipError(f"{chip.reason} (`skip_bad=True` leaves bad chips out)")
                bad.append(chip)
                continue
            with _output_errors(path):
                if shard is None:
                    shard = TFRecordFile(path, options.compression, _create(path))
                shard.write(chip.record)
            records += 1
        if shard is not None:
            with _output_errors(path):
                shard.close()
    except BaseException:
        if shard is not None:
            with contextlib.suppress(OSError):
                shard.close()
            _remove(path)
        raise
    digest = shard.sha256.hexdigest() if shard is not None else ""
    return ShardResult(split, index, ShardInfo(file, records, digest), summary, tuple(bad))


def ordered_chips(chips: Iterable[EncodedChip | BadChip], seed: int) -> list[EncodedChip | BadChip]:
    """One shard's chips, arrived in any order, in plan order (`within_shard_order`)."""
    return sorted(chips, key=lambda chip: within_shard_order(chip.name, seed))


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        if storage.is_url(path) or os.path.exists(path):
            storage.remove(path)


def discard_shards(out: str, results: Iterable[ShardResult]) -> None:
    """Delete the temporary files of shards that will not be published."""
    for result in results:
        _remove(temporary_path(out, result.info.file))


def remove_stale_files(stale: Iterable[str], keep: Iterable[str] = ()) -> None:
    """Delete the files of an earlier run that are not in ``keep``, its dataset.json first."""
    keep = set(keep)
    for path in sorted(stale, key=lambda p: p.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1] != DATASET_JSON):
        if path not in keep:
            _remove(path)


def _numbered(results: list[ShardResult], options: WriterOptions) -> list[tuple[ShardResult, ShardInfo]]:
    """The shards that hold records, each with its published name: numbered anew within its split.

    A split's chips fall into shards by a hash of their names (`tfchips.records.plan`), so a
    shard may get none; it is not written, and the others are named ``-of-`` their own count.
    """
    kept = [r for r in results if r.info.records]
    counts = collections.Counter(r.split for r in kept)
    numbered, seen = [], collections.Counter()
    for result in kept:
        name = shard_file_name(result.split, seen[result.split], counts[result.split], options.compression)
        seen[result.split] += 1
        numbered.append((result, dataclasses.replace(result.info, file=name)))
    return numbered


def _publish_shards(out: str, numbered: list[tuple[ShardResult, ShardInfo]], stale: Iterable[str]) -> None:
    finals = [storage.join(out, info.file) for _, info in numbered]
    remove_stale_files(stale, keep=finals)
    for (result, _), final in zip(numbered, finals):
        temporary = temporary_path(out, result.info.file)
        if storage.is_url(out):
            from apache_beam.io.filesystems import FileSystems

            FileSystems.rename([temporary], [final])
        else:
            with _output_errors(final):
                os.replace(temporary, final)


def write_dataset_json(out: str | os.PathLike, description: DatasetInfo | Mapping) -> str:
    """Write ``description`` as ``out/dataset.json`` at once (local folder or URL); returns its path.

    The content is checked as readers check it first (`DatasetInfo.from_mapping`):
    a dataset.json no reader would accept raises `RecordError` and is not written.
    """
    import json

    path = storage.join(os.fspath(out), DATASET_JSON)
    content = DatasetInfo.of(description, path).as_json()
    DatasetInfo.from_mapping(content, path)
    write_tfds_metadata(out, DatasetInfo.of(description, path))  # before dataset.json, which completes a folder
    storage.publish(path, (json.dumps(redact_json(content), indent=2) + "\n").encode("utf-8"))
    return path


def dataset_description(
    options: WriterOptions,
    image: RasterSpec,
    label: RasterSpec,
    splits: Mapping[str, list[ShardInfo]],
    class_names: Mapping[str, str] | None = None,
    statistics: dict | None = None,
    statistics_source: str | None = None,
    skipped: Iterable[BadChip] = (),
) -> DatasetInfo:
    """dataset.json content (see `tfchips.records.writer`) from per-shard counts and hashes."""
    return DatasetInfo(
        schema=options.records.schema,
        tfchips_version=__version__,
        compression=options.compression,
        image=image,
        label=label,
        class_names=frozen_json(dict(class_names)) if class_names else None,
        statistics=frozen_json(statistics) if statistics else None,
        statistics_source=statistics_source if statistics else None,
        split=frozen_json({"fractions": dict(options.splits), "by": options.split_by, "seed": options.seed}),
        splits=tuple(
            SplitInfo(split, sum(s.records for s in shards), tuple(shards)) for split, shards in splits.items()
        ),
        skipped=tuple(skipped),
    )


@dataclass(frozen=True, slots=True)
class DatasetSources:
    """What dataset.json takes from the chip folder rather than the shards.

    ``statistics_source`` is what computed statistics are called (``computed``, or
    ``sample`` when they come from a sample of the chips); ``skipped`` lists the
    chips left out before encoding (unpaired, names not UTF-8).
    """

    class_names: Mapping[str, str] | None = None
    manifest_statistics: dict | None = None
    statistics_source: str = "computed"
    skipped: tuple[BadChip, ...] = ()


def finish_dataset(
    out: str, results: Iterable[ShardResult], options: WriterOptions, sources: DatasetSources, stale: Iterable[str] = ()
) -> DatasetInfo:
    """Publish every shard of ``results`` (any order) and write dataset.json; returns its content.

    Summaries merge shard by shard in plan order (splits as given, then shard
    index), so the statistics are the same bits however the shards were written.
    ``stale`` files of an earlier run go first. Raises `ChipError` when every
    chip is bad; the temporary shards are then deleted.
    """
    order = {split: i for i, split in enumerate(options.splits)}
    results = sorted(results, key=lambda r: (order[r.split], r.index))
    summary, bad = DatasetSummary(), []
    try:
        for result in results:
            summary = summary.merge(result.summary, result.summary.first)
            bad.extend(result.bad)
        if summary.image is None:
            raise ChipError("every chip is bad; nothing to write")
    except BaseException:
        discard_shards(out, results)
        raise
    numbered = _numbered(results, options)
    _publish_shards(out, numbered, stale)
    splits: dict[str, list[ShardInfo]] = collections.defaultdict(list)
    for result, info in numbered:
        splits[result.split].append(info)
    splits = {split: splits.get(split, []) for split in options.splits}
    statistics, source = None, None
    if summary.statistics is not None:
        statistics, source = statistics_json(summary.statistics, summary.image.band_names), sources.statistics_source
    elif options.statistics:
        statistics, source = sources.manifest_statistics, "manifest"
    description = dataset_description(
        options, summary.image, summary.label, splits, sources.class_names, statistics, source, [*sources.skipped, *bad]
    )
    write_dataset_json(out, description)
    return description
