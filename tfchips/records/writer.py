"""Chip folder to sharded TFRecords and their dataset.json, on one machine.

The writer is a parallel, ordered map of `encode_chip_pair` over the chips in
`plan_shards` order, followed by sequential writes, one shard at a time, by
`tfchips.records.shards.write_shard`, the writer Beam's ``chips_to_tfrecords``
calls too: the shards' bytes depend on the chips and options only, not on
``workers`` or the runner. At most a few batches of records are in memory at
once, whatever the folder's size.

dataset.json, beside the shards::

    {"schema": "tfchips" | "legacy", "schema_version": 1, "tfchips_version": "0.1.0",
     "compression": "none" | "gzip" | "zlib",
     "image": {"encoding", "format", "shape": [rows, cols, bands], "dtype", "band_names",
               "nodata", "parts": [bands held by each data element]},
     "label": {... the same for labels ...},
     "features": {key: {"type": "bytes" | "int64" | "float", "shape": [] | [n] | null}},
     "class_names": {"0": "background", ...} | null,
     "statistics": {"bands": [{"name", "mean", "std", "min", "max"}], "class_counts": {..}} | null,
     "statistics_source": "manifest" | "computed" | "sample" | null,
     "split": {"fractions": {"train": 0.8, ...}, "by": "tile" | "block:K", "seed": 0},
     "splits": {"train": {"records": n, "shards": [{"file", "records", "sha256"}]}},
     "skipped": [{"name", "reason"}]}

``shape`` entries and ``format`` are null where chips differ; ``nodata`` is a number, null,
or ``"nan"``. Shards are ``<split>-00000-of-00016.tfrecord`` (``.gz`` for gzip, ``.zz`` for
zlib); without ``--split`` the one split is named ``data``. `tfchips.records.dataset_info.DatasetInfo`
reads and writes dataset.json.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import heapq
import os
import re
from typing import Iterable, Iterator

from tfchips import storage
from tfchips.chips import NOT_UTF8, ChipFolder, ChipPair, find_chip_pairs, printable_path, read_manifest
from tfchips.errors import ChipError, ConfigError, OutputError
from tfchips.records.dataset_info import COMPRESSIONS, DATASET_JSON, BadChip, DatasetInfo, read_dataset_info
from tfchips.records.encoder import (
    EncodedChip,
    RecordOptions,
    encode_chip_files,
    encode_chip_pair,
    read_chip_files,
    read_header,
)
from tfchips.records.options import WriterOptions
from tfchips.records.plan import (
    SIZE_SAMPLE,
    in_statistics_sample,
    name_hash,
    parse_split_by,
    plan_shards,
    shard_counts_for_size,
    split_of,
    statistics_rate,
)
from tfchips.records.pool import ordered_batch_map, ordered_map, worker_pool
from tfchips.records.shards import (
    DatasetSources,
    DatasetSummary,
    ShardResult,
    Signature,
    accumulate,
    check_signature,
    dataset_description,
    discard_shards,
    finish_dataset,
    header_signature,
    majority,
    remove_stale_files,
    shard_file_name,
    write_dataset_json,
    write_shard,
)

__all__ = [
    "COMPRESSIONS", "DATASET_JSON", "BadChip", "DatasetSummary", "EncodedChip", "Signature", "WriterOptions",
    "accumulate", "check_output_folder", "check_signature", "checked_pairs", "chip_signature", "dataset_description",
    "encode_batch", "encode_or_bad", "majority_signature", "ordered_batch_map", "ordered_map", "read_dataset_json",
    "remove_stale_files", "settled_record_options", "shard_counts", "shard_file_name", "shard_paths", "worker_pool",
    "write_dataset_json", "write_tfrecords",
]

_SHARD_FILE = re.compile(r"^\w+-\d{5}-of-\d{5}\.tfrecord(\.gz|\.zz)?$")
# Tasks in flight per worker: enough to keep every worker busy, few enough that memory stays flat.
_TASKS_PER_WORKER = 2


def _or_bad(name: str, function, *args):
    # A bad chip is reported (or skipped); options that do not suit the chips
    # (RecordError: float pixels as PNG, TIFF for --decoder tf) stop the job.
    try:
        return function(*args)
    except ChipError as error:
        return BadChip(name, str(error))


def encode_or_bad(pair: ChipPair, options: RecordOptions) -> EncodedChip | BadChip:
    """`encode_chip_pair`, with a chip that cannot be read or encoded returned as a `BadChip`."""
    return _or_bad(pair.name, encode_chip_pair, pair, options)


def sampled_options(options: RecordOptions, name: str, rate: float) -> RecordOptions:
    """``options`` for chip ``name``: statistics only for chips in the sample of ``rate`` (`statistics_rate`)."""
    if not options.statistics or in_statistics_sample(name, rate):
        return options
    return dataclasses.replace(options, statistics=False)


def encode_batch(pairs: list[ChipPair], options: RecordOptions, rate: float = 1.0) -> list[EncodedChip | BadChip]:
    """`encode_or_bad` of each pair (statistics per `sampled_options`), every file read before any is decoded.

    A read releases the GIL for a moment, and a thread that gives it up between
    two decodes then waits for the other threads' Python work to get it back:
    reading a batch's files up front gave 22% more chips per second on two threads.
    """
    files = [_or_bad(pair.name, read_chip_files, pair) for pair in pairs]
    return [
        f if isinstance(f, BadChip) else _or_bad(f.pair.name, encode_chip_files, f, sampled_options(options, f.pair.name, rate))
        for f in files
    ]


def settled_record_options(options: WriterOptions, manifest_statistics: dict | None) -> tuple[RecordOptions, bool]:
    """Record options with statistics and decoder settled for this folder, and whether to use processes."""
    compute = options.statistics and manifest_statistics is None
    records = dataclasses.replace(options.records, statistics=compute)
    processes = options.processes and records.decodes and records.decoder != "tf"
    if processes and records.decoder == "auto":
        records = dataclasses.replace(records, decoder="gdal")  # no TensorFlow in worker processes
    return records, processes


def shard_counts(pairs: tuple[ChipPair, ...], options: WriterOptions, records: RecordOptions) -> int | dict[str, int]:
    """Shards per split: ``--shards``, or an estimate from file sizes and a few encoded chips (`shard_counts_for_size`)."""
    if options.shard_size_mb is None:
        return options.shards or 1
    sizes = {p.name: os.path.getsize(p.image_path) + os.path.getsize(p.label_path) for p in pairs}
    sample = heapq.nsmallest(SIZE_SAMPLE, pairs, key=lambda p: name_hash(0, "size", p.name))
    unsampled = dataclasses.replace(records, statistics=False)
    encoded = [r for r in (encode_or_bad(p, unsampled) for p in sample) if isinstance(r, EncodedChip)]
    split_bytes = dict.fromkeys(options.splits, 0)
    block = parse_split_by(options.split_by)
    for name, size in sizes.items():
        split_bytes[split_of(name, options.splits, block, options.seed)] += size
    record_bytes = sum(len(r.record) for r in encoded)
    return shard_counts_for_size(split_bytes, record_bytes, sum(sizes[r.name] for r in encoded), options.shard_size_mb)


def check_output_folder(out: str, overwrite: bool) -> list[str]:
    """Files of an earlier run in the local folder ``out``, to be replaced by the new ones.

    A complete dataset (one with dataset.json, which a run writes last) is refused
    unless ``overwrite``. Shards without a dataset.json are what a run killed while
    publishing left behind: they are replaced, like the temporary shards of a run
    killed earlier, which are removed now. Creates ``out`` if need be.
    """
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise OutputError(error.errno, error.strerror, out) from None
    storage.remove_partial_files(out)
    old = sorted(os.path.join(out, n) for n in os.listdir(out) if _SHARD_FILE.match(n) or n == DATASET_JSON)
    if os.path.join(out, DATASET_JSON) in old and not overwrite:
        raise ConfigError(f"{out} already holds TFRecords ({DATASET_JSON}); pass `overwrite=True` to replace them")
    return old


def checked_pairs(chips: str, skip_bad: bool) -> tuple[ChipFolder, list[BadChip]]:
    """The chip pairs of a folder, and its unpaired files and files named in another encoding than UTF-8 as bad chips.

    Those raise `ChipError` naming them unless ``skip_bad``.
    """
    folder = find_chip_pairs(chips)
    if folder.undecodable and not skip_bad:
        raise ChipError(f"{folder.undecodable[0]}: {NOT_UTF8} (`skip_bad=True` leaves bad chips out)")
    undecodable = [BadChip(os.path.relpath(path, printable_path(chips)), NOT_UTF8) for path in folder.undecodable]
    unpaired = unpaired_chips([os.path.relpath(path, chips) for path in folder.unpaired], chips, skip_bad)
    if not folder.pairs:
        raise ChipError(f"{chips}: no image has a label of the same name")
    return folder, undecodable + unpaired


def unpaired_chips(names: Iterable[str], chips: str, skip_bad: bool) -> list[BadChip]:
    """Chip files without a twin (``images/x.tif``), sorted, as bad chips; `ChipError` naming them unless ``skip_bad``."""
    skipped = [BadChip(name, "unpaired: no chip of the same name on the other side") for name in sorted(names)]
    if skipped and not skip_bad:
        names = ", ".join(bad.name for bad in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        raise ChipError(f"{chips}: {len(skipped)} unpaired chips: {names}{more} (`skip_bad=True` leaves them out)")
    return skipped


def chip_signature(pair: ChipPair) -> Signature | None:
    """The `Signature` of a chip pair from its headers; None when a header cannot be read."""
    try:
        return header_signature(read_header(pair.image_path), read_header(pair.label_path))
    except ChipError:
        return None  # a bad chip has no vote; encoding it reports why


def majority_signature(
    pairs: Iterable[ChipPair], executor: concurrent.futures.Executor | None = None, in_flight: int = 4
) -> Signature | None:
    """The `Signature` most chip pairs share, from their headers (`majority`).

    With ``--skip-bad`` chips of another signature are left out (`check_signature`):
    settling it from every header up front makes the result independent of the
    order chips are written in, so of ``--seed`` and of the worker count.
    """
    pairs = list(pairs)
    signatures = ordered_map(chip_signature, pairs, executor, in_flight)
    return majority((s, p.name) for s, p in zip(signatures, pairs) if s is not None)


def write_tfrecords(chips: str | os.PathLike, out: str | os.PathLike, options: WriterOptions = WriterOptions()) -> dict:
    """Translate a chip folder into sharded TFRecords plus ``out/dataset.json``; returns its content.

    Unpaired chips, and chips that cannot be read or encoded, raise `ChipError`
    naming them before any shard is published, unless ``options.skip_bad``, which
    leaves them out and lists them under ``skipped``.
    """
    from tfchips.console import progress as progress_bar

    chips, out = os.fspath(chips), os.fspath(out)
    folder, skipped = checked_pairs(chips, options.skip_bad)
    manifest = read_manifest(chips)
    records, processes = settled_record_options(options, manifest.statistics)
    rate = statistics_rate(len(folder.pairs), options.exact_statistics)
    plan = plan_shards(
        [p.name for p in folder.pairs],
        shard_counts(folder.pairs, options, records),
        options.splits,
        parse_split_by(options.split_by),
        options.seed,
    )
    stale = check_output_folder(out, options.overwrite)
    by_name = {p.name: p for p in folder.pairs}
    ordered = [by_name[name] for split in plan.shards for name in plan.split_names(split)]
    encode = functools.partial(encode_batch, options=records, rate=rate)
    in_flight = _TASKS_PER_WORKER * options.workers
    written: list[ShardResult] = []
    with worker_pool(options.workers, processes) as executor, progress_bar(
        len(ordered), "chip", "to-tfrecords", enabled=options.progress
    ) as progress:
        reference = majority_signature(folder.pairs, executor, in_flight) if options.skip_bad else None
        results = _counted(ordered_batch_map(encode, ordered, executor, in_flight), progress)
        try:
            for split, shards in plan.shards.items():
                for index, names in enumerate(shards):
                    chips_of_shard = (next(results) for _ in names)
                    written.append(write_shard(out, split, index, len(shards), chips_of_shard, options, reference))
        except BaseException:
            discard_shards(out, written)
            raise
    source = "computed" if rate >= 1.0 else "sample"
    sources = DatasetSources(manifest.class_names, manifest.statistics, source, tuple(skipped))
    return finish_dataset(out, written, options, sources, stale).as_json()


def _counted(results: Iterator, progress) -> Iterator:
    for result in results:
        progress.update()
        yield result


def read_dataset_json(out: str | os.PathLike) -> dict:
    """The dataset.json content of a local TFRecord folder, checked (`read_dataset_info`), as a dict."""
    return read_dataset_info(out).as_json()


def shard_paths(
    out: str | os.PathLike, split: str | None = None, description: DatasetInfo | dict | None = None
) -> list[str]:
    """Paths of the shards of one split (or all), from dataset.json (or its content ``description``), in order."""
    path = os.path.join(os.fspath(out), DATASET_JSON)
    info = read_dataset_info(out) if description is None else DatasetInfo.of(description, path)
    return info.shard_paths(out, split)
