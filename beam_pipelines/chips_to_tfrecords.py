"""Beam pipeline: a chip folder to sharded TFRecords and dataset.json, through Beam's TFRecord sink.

    python -m beam_pipelines.chips_to_tfrecords CHIPS --out OUT --encoding array --split train=0.8,val=0.2 \\
        --shards 8 --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

Takes the options of ``tfchips to-tfrecords`` and ``--verbose``; the rest go to Beam's PipelineOptions.
Ends with one summary line on stderr; Beam's own log lines below ERROR show only with ``--verbose``.
Records are the same as the local writer's; which shard holds a record, and the order
within a shard, are Beam's to choose. Compression: none or gzip. A local OUT is checked
like the local writer's (``--overwrite``) and shards of an earlier run are removed; an
OUT URL (``gs://...``) is neither checked nor cleaned: write each run to a fresh prefix.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import time
import zlib
from typing import Iterable, Iterator

from tfchips.runners import check_runner, pipeline_arguments, quiet_beam, run_entry_point

quiet_beam()  # before apache_beam is imported: it logs while it loads

import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from tfchips import storage
from tfchips.chips import ChipPair, read_manifest
from tfchips.cli.main import command_flags
from tfchips.options import output_path
from tfchips.cli.to_tfrecords import command as to_tfrecords_command
from tfchips.console import summary_line
from tfchips.job import writer_options
from tfchips.errors import ChipError, ConfigError, RecordError
from tfchips.lock import output_lock
from tfchips.records import RecordOptions, WriterOptions
from tfchips.records.encoder import EncodedChip
from tfchips.records.plan import parse_split_by, plan_shards
from tfchips.records.writer import (
    COMPRESSIONS,
    DATASET_JSON,
    BadChip,
    DatasetSummary,
    ShardInfo,
    Signature,
    accumulate,
    check_output_folder,
    check_signature,
    checked_pairs,
    computed_or_manifest_statistics,
    dataset_description,
    encode_or_bad,
    majority_signature,
    read_dataset_json,
    remove_stale_files,
    settled_record_options,
    shard_counts,
    worker_pool,
    write_dataset_json,
)

_BEAM_COMPRESSION = {"none": CompressionTypes.UNCOMPRESSED, "gzip": CompressionTypes.GZIP}
_BLOCK = 1 << 20


def encode(pair: ChipPair, options: RecordOptions, skip_bad: bool, reference: Signature | None = None):
    """`encode_or_bad`, then `check_signature`; a bad chip fails the pipeline unless ``skip_bad``."""
    result = check_signature(encode_or_bad(pair, options), reference)
    if isinstance(result, BadChip) and not skip_bad:
        # Failing the pipeline here leaves Beam's temporary shards unpublished.
        raise ChipError(f"{result.reason} (--skip-bad leaves bad chips out)")
    return result


class CombineDataset(beam.CombineFn):
    """The `DatasetSummary` of every encoded chip."""

    def create_accumulator(self) -> DatasetSummary:
        return DatasetSummary()

    def add_input(self, summary: DatasetSummary, chip: EncodedChip) -> DatasetSummary:
        return accumulate(summary, chip)

    def merge_accumulators(self, summaries: Iterable[DatasetSummary]) -> DatasetSummary:
        merged = DatasetSummary()
        for summary in summaries:
            merged = merged.merge(summary, "another worker's chips")
        return merged

    def extract_output(self, summary: DatasetSummary) -> DatasetSummary:
        return summary


def _hashed(stream, digest) -> Iterator[bytes]:
    """The blocks of ``stream``, each added to ``digest`` as it is read."""
    for block in iter(lambda: stream.read(_BLOCK), b""):
        digest.update(block)
        yield block


def _gunzip(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream (one member or more) read in blocks."""
    inflate = zlib.decompressobj(wbits=31)
    for block in blocks:
        while block:
            yield inflate.decompress(block)
            block = inflate.unused_data  # the start of the next member, if this one ended
            if inflate.eof:
                inflate = zlib.decompressobj(wbits=31)


def _count_records(chunks: Iterable[bytes], path: str) -> int:
    """Records in a TFRecord byte stream; each is an 8-byte little-endian length, a 4-byte CRC, data, a 4-byte CRC."""
    pending, records = bytearray(), 0
    for chunk in chunks:
        pending += chunk
        position = 0
        while len(pending) - position >= 12:
            end = position + 16 + struct.unpack_from("<Q", pending, position)[0]
            if end > len(pending):
                break
            records, position = records + 1, end
        del pending[:position]
    if pending:
        raise RecordError(f"{path}: truncated TFRecord shard ({len(pending)} bytes after the last whole record)")
    return records


def shard_info(path: str, compression: str) -> tuple[str, ShardInfo]:
    """(split, ShardInfo) of a finished shard, local or URL: its records counted as it is hashed, in one read."""
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        blocks = _hashed(stream, digest)
        records = _count_records(_gunzip(blocks) if compression == "gzip" else blocks, path)
    name = path.rsplit("/", 1)[-1]
    return name.split("-", 1)[0], ShardInfo(name, records, digest.hexdigest())


def describe(
    _,
    summary: DatasetSummary,
    shards: list[tuple[str, ShardInfo]],
    bad: list[BadChip],
    unpaired: list[BadChip],
    options: WriterOptions,
    class_names: dict | None,
    manifest_statistics: dict | None,
    out: str,
    stale: list[str],
) -> None:
    """Write dataset.json, once every shard is in place; shards of an earlier run not rewritten go first."""
    if summary.image is None:
        raise ChipError("every chip is bad; nothing to write")
    splits = {split: sorted((s for n, s in shards if n == split), key=lambda s: s.file) for split in options.splits}
    remove_stale_files(stale, keep=[storage.join(out, s.file) for infos in splits.values() for s in infos])
    stats, source = computed_or_manifest_statistics(
        options, summary.statistics, summary.image.band_names, manifest_statistics
    )
    image, label = summary.image, summary.label
    description = dataset_description(options, image, label, splits, class_names, stats, source, [*unpaired, *bad])
    write_dataset_json(out, description)


def build(pipeline: beam.Pipeline, chips: str, out: str, options: WriterOptions) -> None:
    """Add the to-tfrecords steps for folder ``chips`` to ``pipeline``."""
    check_compression(options)
    folder, unpaired = checked_pairs(chips, options.skip_bad)
    manifest = read_manifest(chips)
    records, _ = settled_record_options(options, manifest.statistics)
    counts = shard_counts(folder.pairs, options, records)
    reference = None
    if options.skip_bad:  # as the local writer: chips unlike most are bad, whatever order they come in
        with worker_pool(options.workers) as executor:
            reference = majority_signature(folder.pairs, executor, 2 * options.workers)
    encoded = (
        pipeline
        | "Chips" >> beam.Create(folder.pairs)
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.Map(encode, records, options.skip_bad, reference)
    )
    names = [p.name for p in folder.pairs]
    write_records(encoded, names, counts, options, out, manifest.class_names, manifest.statistics, unpaired)


def check_compression(options: WriterOptions) -> None:
    if options.compression not in _BEAM_COMPRESSION:
        raise ConfigError(f"compression {options.compression!r} is not available in the Beam pipeline; use gzip")


def write_records(
    encoded: beam.PCollection,
    names: list[str],
    counts: int | dict[str, int],
    options: WriterOptions,
    out: str,
    class_names: dict | None,
    manifest_statistics: dict | None,
    unpaired: list[BadChip],
) -> None:
    """Shard ``encoded`` chips (EncodedChip or BadChip) by split with Beam's TFRecord sink, then dataset.json.

    ``names`` are every chip name the pipeline may encode: splits, and shard counts
    capped at a split's chips, are planned from them up front as the local writer
    plans them; a split without chips gets no shard. A local ``out`` is checked
    (`check_output_folder`): an earlier run's dataset.json is removed now (Beam
    rewrites shards in place) and its other shards once the new ones are written.
    """
    pipeline = encoded.pipeline
    plan = plan_shards(names, counts, options.splits, parse_split_by(options.split_by), options.seed)
    split_of = {name: split for name, (split, _) in plan.assignments().items()}
    stale = [] if storage.is_url(out) else check_output_folder(out, options.overwrite)
    remove_stale_files([path for path in stale if os.path.basename(path) == DATASET_JSON])
    good = encoded | "Good" >> beam.Filter(lambda r: isinstance(r, EncodedChip))
    bad = encoded | "Bad" >> beam.Filter(lambda r: isinstance(r, BadChip))
    written = []
    for split, shards in plan.shards.items():
        if not shards:
            continue
        written.append(
            good
            | f"In{split}" >> beam.Filter(lambda chip, split=split: split_of[chip.name] == split)
            | f"Record{split}" >> beam.Map(lambda chip: chip.record)
            | f"Write{split}" >> beam.io.WriteToTFRecord(
                storage.join(out, split),
                file_name_suffix=COMPRESSIONS[options.compression][1],
                num_shards=len(shards),
                shard_name_template="-SSSSS-of-NNNNN",
                compression_type=_BEAM_COMPRESSION[options.compression],
            )
        )
    shard_infos = written | "Shards" >> beam.Flatten() | "Count" >> beam.Map(shard_info, options.compression)
    combined = good | "Specs" >> beam.CombineGlobally(CombineDataset())
    _ = (
        pipeline
        | "Once" >> beam.Create([None])
        | "DatasetJson" >> beam.Map(
            describe,
            beam.pvalue.AsSingleton(combined),
            beam.pvalue.AsList(shard_infos),
            beam.pvalue.AsList(bad),
            unpaired,
            options,
            class_names,
            manifest_statistics,
            out,
            stale,
        )
    )


PROGRAM = "beam_pipelines.chips_to_tfrecords"


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(to-tfrecords option values, Beam arguments) from one command line."""
    context = to_tfrecords_command.make_context(
        "chips_to_tfrecords", pipeline_arguments(argv), ignore_unknown_options=True, allow_extra_args=True
    )
    values, beam_args = dict(context.params), list(context.args)
    if values["legacy_out"] is not None and values["legacy_out"].startswith("-"):
        # Unknown options fill free arguments; this one is Beam's, not a deprecated OUT.
        beam_args.insert(0, values["legacy_out"])
        values["legacy_out"] = None
    output_path(values, "a second argument")
    return values, beam_args


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    values, beam_args = parse(sys.argv[1:] if argv is None else argv)
    check_runner(beam_args, (values["out"],))
    options = writer_options(values)
    with output_lock(values["out"]), beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build(pipeline, values["chips"], values["out"], options)
    summary_line(PROGRAM, summary_text(values["out"]), started)


def summary_text(out: str) -> str:
    """Records, shards and where dataset.json went, as dataset.json of a local ``out`` tells them."""
    if storage.is_url(out):
        return f"wrote shards and {DATASET_JSON} to {out}"
    description = read_dataset_json(out)
    splits = description["splits"]
    records = sum(info["records"] for info in splits.values())
    shards = sum(len(info["shards"]) for info in splits.values())
    return f"{records} records in {shards} shards, {len(description['skipped'])} chips skipped; wrote {storage.join(out, DATASET_JSON)}"


if __name__ == "__main__":
    run_entry_point(main, command_flags(to_tfrecords_command))
