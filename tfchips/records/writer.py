"""Chip folder to sharded TFRecords and their dataset.json, on one machine.

The writer is a parallel, ordered map of `encode_chip_pair` over the chips in
`plan_shards` order, followed by sequential writes, one shard at a time: the
shards' bytes depend on the chips and options only, not on ``workers``. At most
a few batches of records are in memory at once, whatever the folder's size.

dataset.json, beside the shards::

    {"schema": "tfchips" | "legacy", "schema_version": 1, "tfchips_version": "0.1.0",
     "compression": "none" | "gzip" | "zlib",
     "image": {"encoding", "format", "shape": [rows, cols, bands], "dtype", "band_names",
               "nodata", "parts": [bands held by each data element]},
     "label": {... the same for labels ...},
     "features": {key: {"type": "bytes" | "int64" | "float", "shape": [] | [n] | null}},
     "class_names": {"0": "background", ...} | null,
     "statistics": {"bands": [{"name", "mean", "std", "min", "max"}], "class_counts": {..}} | null,
     "statistics_source": "manifest" | "computed" | null,
     "split": {"fractions": {"train": 0.8, ...}, "by": "tile" | "block:K", "seed": 0},
     "splits": {"train": {"records": n, "shards": [{"file", "records", "sha256"}]}},
     "skipped": [{"name", "reason"}]}

``shape`` entries and ``format`` are null where chips differ; ``nodata`` is a number, null,
or ``"nan"``. Shards are ``<split>-00000-of-00016.tfrecord`` (``.gz`` for gzip, ``.zz`` for
zlib); without ``--split`` the one split is named ``data``. `tfchips.records.dataset_info.DatasetInfo`
reads and writes dataset.json.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import json
import multiprocessing
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

from tfchips import __version__, storage
from tfchips.chips import NOT_UTF8, ChipFolder, ChipPair, find_chip_pairs, printable_path, read_manifest
from tfchips.errors import ChipError, ConfigError, OutputError
from tfchips.records.dataset_info import (
    COMPRESSIONS,
    DATASET_JSON,
    BadChip,
    DatasetInfo,
    ShardInfo,
    SplitInfo,
    frozen_json,
    read_dataset_info,
)
from tfchips.records.encoder import (
    EncodedChip,
    RecordOptions,
    encode_chip_files,
    encode_chip_pair,
    read_chip_files,
    read_header,
)
from tfchips.records.plan import (
    DEFAULT_SPLIT,
    assign_splits,
    check_splits,
    parse_split_by,
    plan_shards,
    shards_for_size,
)
from tfchips.records.raster_spec import RasterSpec
from tfchips.records.tfds_metadata import write_tfds_metadata
from tfchips.records.tfrecord import TFRecordFile
from tfchips.redaction import redact_json
from tfchips.statistics import ChipStatistics, statistics_json

_SHARD_FILE = re.compile(r"^\w+-\d{5}-of-\d{5}\.tfrecord(\.gz|\.zz)?$")
# Chip pairs per task sent to a worker, and tasks in flight per worker: enough to
# keep every worker busy, few enough that memory does not grow with the folder.
_BATCH = 8
_TASKS_PER_WORKER = 2
_SIZE_SAMPLE = 8


@dataclass(frozen=True)
class WriterOptions:
    """Options of `write_tfrecords` (see ``tfchips to-tfrecords --help``).

    ``shards`` is a count per split; ``shard_size_mb`` instead aims at that many MB
    (10**6 bytes, uncompressed) per shard. ``statistics`` puts band statistics and
    class counts in dataset.json: from the chip manifest when it has them,
    otherwise computed, which decodes every chip. ``workers`` are threads, or
    with ``processes`` (GDAL decoding only) processes, which scale further on
    many cores at the cost of copying every record between processes.
    """

    records: RecordOptions = field(default_factory=RecordOptions)
    shards: int | None = None
    shard_size_mb: float | None = None
    compression: str = "none"
    workers: int = 1
    processes: bool = False
    splits: Mapping[str, float] = field(default_factory=lambda: {DEFAULT_SPLIT: 1.0})
    split_by: str = "tile"
    seed: int = 0
    statistics: bool = True
    skip_bad: bool = False
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"unknown compression {self.compression!r}; expected one of {', '.join(COMPRESSIONS)}")
        if self.shards is not None and self.shard_size_mb is not None:
            raise ConfigError("give `shards` or `shard_size_mb`, not both")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        check_splits(self.splits)
        parse_split_by(self.split_by)


def shard_file_name(split: str, index: int, count: int, compression: str = "none") -> str:
    """``train-00003-of-00016.tfrecord.gz`` style name of shard ``index`` of ``count``."""
    return f"{split}-{index:05d}-of-{count:05d}{COMPRESSIONS[compression][1]}"


def _or_bad(name: str, function: Callable, *args):
    # A bad chip is reported (or skipped); options that do not suit the chips
    # (RecordError: float pixels as PNG, TIFF for --decoder tf) stop the job.
    try:
        return function(*args)
    except ChipError as error:
        return BadChip(name, str(error))


def encode_or_bad(pair: ChipPair, options: RecordOptions) -> EncodedChip | BadChip:
    """`encode_chip_pair`, with a chip that cannot be read or encoded returned as a `BadChip`."""
    return _or_bad(pair.name, encode_chip_pair, pair, options)


def encode_batch(pairs: list[ChipPair], options: RecordOptions) -> list[EncodedChip | BadChip]:
    """`encode_or_bad` of each pair, every file read before any is decoded.

    A read releases the GIL for a moment, and a thread that gives it up between
    two decodes then waits for the other threads' Python work to get it back:
    reading a batch's files up front gave 22% more chips per second on two threads.
    """
    files = [_or_bad(pair.name, read_chip_files, pair) for pair in pairs]
    return [f if isinstance(f, BadChip) else _or_bad(f.pair.name, encode_chip_files, f, options) for f in files]


def _map_batch(function: Callable, batch: list) -> list:
    return [function(item) for item in batch]


def _worker_init() -> None:
    # One GDAL environment per worker thread or process, not one per opened chip.
    import rasterio

    rasterio.Env().__enter__()


@contextlib.contextmanager
def worker_pool(workers: int, processes: bool = False) -> Iterator[concurrent.futures.Executor | None]:
    """A pool of ``workers`` threads (or processes) for `ordered_map`; None for one worker.

    Threads are the default: libtiff, GDAL and TensorFlow decode with the GIL
    released, and records need not be copied between processes. Processes are
    forked, which starts them in milliseconds, unless this process has loaded
    TensorFlow: forking its threads is unsafe, so they are spawned (and the main
    script must then be import-safe).
    """
    if workers == 1:
        import rasterio

        with rasterio.Env():
            yield None
        return
    if not processes:
        executor = concurrent.futures.ThreadPoolExecutor(workers, initializer=_worker_init)
    else:
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method), initializer=_worker_init
        )
        executor.submit(int).result()  # forks every worker now, while no TensorFlow thread exists
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def ordered_map(
    function: Callable, items: Iterable, executor: concurrent.futures.Executor | None = None, in_flight: int = 4
) -> Iterator:
    """``map(function, items)`` on ``executor`` (in this process if None): in order, memory bounded.

    Items go to the workers in batches of a few; at most ``in_flight`` batches are
    submitted and not yet consumed, so results never pile up in memory.
    """
    if executor is None:
        return map(function, items)
    return ordered_batch_map(functools.partial(_map_batch, function), items, executor, in_flight)


def ordered_batch_map(
    function: Callable[[list], list],
    items: Iterable,
    executor: concurrent.futures.Executor | None = None,
    in_flight: int = 4,
) -> Iterator:
    """`ordered_map` of a ``function`` that takes a batch (a list of items) and returns their results."""
    if executor is None:
        for batch in _batches(items):
            yield from function(batch)
        return
    pending: collections.deque = collections.deque()
    for batch in _batches(items):
        pending.append(executor.submit(function, batch))
        if len(pending) >= in_flight:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


def _batches(items: Iterable) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def settled_record_options(options: WriterOptions, manifest_statistics: dict | None) -> tuple[RecordOptions, bool]:
    """Record options with statistics and decoder settled for this folder, and whether to use processes."""
    compute = options.statistics and manifest_statistics is None
    records = dataclasses.replace(options.records, statistics=compute)
    processes = options.processes and records.decodes and records.decoder != "tf"
    if processes and records.decoder == "auto":
        records = dataclasses.replace(records, decoder="gdal")  # no TensorFlow in worker processes
    return records, processes


def shard_counts(pairs: tuple[ChipPair, ...], options: WriterOptions, records: RecordOptions) -> int | dict[str, int]:
    """Shards per split: ``--shards``, or an estimate from a few encoded chips and file sizes."""
    if options.shard_size_mb is None:
        return options.shards or 1
    sizes = {p.name: os.path.getsize(p.image_path) + os.path.getsize(p.label_path) for p in pairs}
    step = max(1, len(pairs) // _SIZE_SAMPLE)
    sample = [
        r for r in map(functools.partial(encode_or_bad, options=records), pairs[::step]) if isinstance(r, EncodedChip)
    ]
    ratio = sum(len(r.record) for r in sample) / max(1, sum(sizes[r.name] for r in sample))
    splits = assign_splits(list(sizes), options.splits, parse_split_by(options.split_by), options.seed)
    per_split = collections.Counter()
    for name, split in splits.items():
        per_split[split] += sizes[name] * ratio
    return {split: shards_for_size(per_split[split], options.shard_size_mb * 1e6) for split in options.splits}


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


def remove_stale_files(stale: Iterable[str], keep: Iterable[str] = ()) -> None:
    """Delete the files of an earlier run that are not in ``keep``, its dataset.json first."""
    keep = set(keep)
    for path in sorted(stale, key=lambda p: os.path.basename(p) != DATASET_JSON):
        if path not in keep and os.path.exists(path):
            os.remove(path)


def write_dataset_json(out: str | os.PathLike, description: DatasetInfo | Mapping) -> str:
    """Write ``description`` as ``out/dataset.json`` at once (local folder or URL); returns its path.

    The content is checked as readers check it first (`DatasetInfo.from_mapping`):
    a dataset.json no reader would accept raises `RecordError` and is not written.
    """
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
    """dataset.json content (see the module docstring) from per-shard counts and hashes."""
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


class _ShardWriter:
    """Writes shards under temporary names; `publish` renames them all at the end."""

    def __init__(self, out: str, compression: str):
        self._out = out
        self._compression = compression
        self._file: TFRecordFile | None = None
        self._path = ""
        self.temporary: list[tuple[str, str]] = []  # (temporary path, final path)

    def open(self, name: str) -> None:
        final = os.path.join(self._out, name)
        self._path = os.path.join(self._out, storage.PARTIAL_PREFIX + name)
        self.temporary.append((self._path, final))
        with self._failures():
            self._file = TFRecordFile(self._path, self._compression)

    def write(self, record: bytes) -> None:
        with self._failures():
            self._file.write(record)

    def close(self) -> str:
        """Close the current shard; returns the SHA-256 of its bytes."""
        file, self._file = self._file, None
        with self._failures():
            file.close()
        return file.sha256.hexdigest()

    @contextlib.contextmanager
    def _failures(self):
        try:
            yield
        except OSError as error:  # a full disk, a read-only folder
            raise OutputError(error.errno or errno.EIO, error.strerror or str(error), self._path) from None

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        for temporary, _ in self.temporary:
            if os.path.exists(temporary):
                os.remove(temporary)

    def publish(self, stale: Iterable[str]) -> None:
        """Rename the new shards into place; ``stale`` files (an older dataset) go first."""
        remove_stale_files(stale, keep=(final for _, final in self.temporary))
        for temporary, final in self.temporary:
            os.replace(temporary, final)


def checked_pairs(chips: str, skip_bad: bool) -> tuple[ChipFolder, list[BadChip]]:
    """The chip pairs of a folder, and its unpaired files and files named in another encoding than UTF-8 as bad chips.

    Those raise `ChipError` naming them unless ``skip_bad``.
    """
    folder = find_chip_pairs(chips)
    if folder.undecodable and not skip_bad:
        raise ChipError(f"{folder.undecodable[0]}: {NOT_UTF8} (`skip_bad=True` leaves bad chips out)")
    undecodable = [BadChip(os.path.relpath(path, printable_path(chips)), NOT_UTF8) for path in folder.undecodable]
    skipped = [
        BadChip(os.path.relpath(path, chips), "unpaired: no chip of the same name on the other side")
        for path in folder.unpaired
    ]
    if skipped and not skip_bad:
        names = ", ".join(bad.name for bad in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        raise ChipError(f"{chips}: {len(skipped)} unpaired chips: {names}{more} (`skip_bad=True` leaves them out)")
    if not folder.pairs:
        raise ChipError(f"{chips}: no image has a label of the same name")
    return folder, undecodable + skipped


def computed_or_manifest_statistics(
    options: WriterOptions, statistics, band_names: tuple[str, ...], manifest_statistics: dict | None
) -> tuple[dict | None, str | None]:
    """dataset.json statistics and their source: computed from the chips, the manifest's, or none."""
    if statistics is not None:
        return statistics_json(statistics, band_names), "computed"
    if options.statistics:
        return manifest_statistics, "manifest"
    return None, None


def write_tfrecords(chips: str | os.PathLike, out: str | os.PathLike, options: WriterOptions = WriterOptions()) -> dict:
    """Translate a chip folder into sharded TFRecords plus ``out/dataset.json``; returns its content.

    Unpaired chips, and chips that cannot be read or encoded, raise `ChipError`
    naming them before any shard is published, unless ``options.skip_bad``, which
    leaves them out and lists them under ``skipped``.
    """
    chips, out = os.fspath(chips), os.fspath(out)
    folder, skipped = checked_pairs(chips, options.skip_bad)
    manifest = read_manifest(chips)
    records, processes = settled_record_options(options, manifest.statistics)
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
    encode = functools.partial(encode_batch, options=records)
    in_flight = _TASKS_PER_WORKER * options.workers
    with worker_pool(options.workers, processes) as executor:
        reference = majority_signature(folder.pairs, executor, in_flight) if options.skip_bad else None
        results = (check_signature(r, reference) for r in ordered_batch_map(encode, ordered, executor, in_flight))
        summary, splits = _write_shards(plan, results, _ShardWriter(out, options.compression), options, skipped, stale)
    image, label = summary.image, summary.label
    stats, source = computed_or_manifest_statistics(options, summary.statistics, image.band_names, manifest.statistics)
    description = dataset_description(options, image, label, splits, manifest.class_names, stats, source, skipped)
    write_dataset_json(out, description)
    return description.as_json()


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What dataset.json needs from the chips written: their shared image and label specs, merged statistics."""

    image: RasterSpec | None = None
    label: RasterSpec | None = None
    statistics: ChipStatistics | None = None

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
        )


def accumulate(summary: DatasetSummary, chip: EncodedChip) -> DatasetSummary:
    """``summary`` with one more chip (the local writer's loop and Beam's CombineFn both use it)."""
    return summary.merge(DatasetSummary(chip.image, chip.label, chip.statistics), chip.name)


# What every chip of a dataset must share: (image dtype, image band names, label dtype, label band names).
Signature = tuple[str, tuple[str, ...], str, tuple[str, ...]]


def chip_signature(pair: ChipPair) -> Signature | None:
    """The `Signature` of a chip pair from its headers; None when a header cannot be read."""
    try:
        image, label = read_header(pair.image_path), read_header(pair.label_path)
    except ChipError:
        return None  # a bad chip has no vote; encoding it reports why
    return image.dtype, image.georeference.band_names, label.dtype, label.georeference.band_names


def majority_signature(
    pairs: Iterable[ChipPair], executor: concurrent.futures.Executor | None = None, in_flight: int = 4
) -> Signature | None:
    """The `Signature` most chip pairs share, from their headers; ties go to the first pair by name.

    With ``--skip-bad`` chips of another signature are left out (`check_signature`):
    settling it from every header up front makes the result independent of the
    order chips are written in, so of ``--seed`` and of the worker count.
    """
    votes = collections.Counter(s for s in ordered_map(chip_signature, pairs, executor, in_flight) if s is not None)
    return votes.most_common(1)[0][0] if votes else None


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


def _write_shards(plan, results: Iterator, writer: _ShardWriter, options: WriterOptions, skipped: list, stale: list):
    """Write the records of ``results`` (in plan order) shard by shard; publish them all at the end.

    Returns the `DatasetSummary` of the chips written and the shards of each
    split; bad chips raise `ChipError` or, with ``skip_bad``, join ``skipped``.
    """
    from tfchips.console import progress as progress_bar

    summary = DatasetSummary()
    shards_written: list[tuple[str, str, int, str]] = []  # split, file, records, SHA-256
    published = False
    total = sum(len(names) for shards in plan.shards.values() for names in shards)
    try:
        with progress_bar(total, "chip", "to-tfrecords", enabled=options.progress) as progress:
            for split, shards in plan.shards.items():
                for index, names in enumerate(shards):
                    name = shard_file_name(split, index, len(shards), options.compression)
                    writer.open(name)
                    count = 0
                    for _ in names:
                        result = next(results)
                        progress.update()
                        if isinstance(result, EncodedChip):
                            try:
                                summary = accumulate(summary, result)
                            except ChipError as error:
                                result = BadChip(result.name, str(error))
                        if isinstance(result, BadChip):
                            if not options.skip_bad:
                                raise ChipError(f"{result.reason} (`skip_bad=True` leaves bad chips out)")
                            skipped.append(result)
                            continue
                        writer.write(result.record)
                        count += 1
                    shards_written.append((split, name, count, writer.close()))
        if summary.image is None:
            raise ChipError("every chip is bad; nothing to write")
        splits: dict[str, list[ShardInfo]] = {split: [] for split in plan.shards}
        for split, name, count, digest in shards_written:
            splits[split].append(ShardInfo(name, count, digest))
        writer.publish(stale)
        published = True
    finally:
        if not published:
            writer.discard()
    return summary, splits


def read_dataset_json(out: str | os.PathLike) -> dict:
    """The dataset.json content of a local TFRecord folder, checked (`read_dataset_info`), as a dict."""
    return read_dataset_info(out).as_json()


def shard_paths(
    out: str | os.PathLike, split: str | None = None, description: DatasetInfo | Mapping | None = None
) -> list[str]:
    """Paths of the shards of one split (or all), from dataset.json (or its content ``description``), in order."""
    path = os.path.join(os.fspath(out), DATASET_JSON)
    info = read_dataset_info(out) if description is None else DatasetInfo.of(description, path)
    return info.shard_paths(out, split)
