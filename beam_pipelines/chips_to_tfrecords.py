"""Beam pipeline: a chip folder to sharded TFRecords and dataset.json, through Beam's TFRecord sink.

    python -m beam_pipelines.chips_to_tfrecords CHIPS OUT --encoding array --split train=0.8,val=0.2 \\
        --shards 8 --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

Takes the options of ``tfchips to-tfrecords``; the rest go to Beam's PipelineOptions.
Records are the same as the local writer's; which shard holds a record, and the order
within a shard, are Beam's to choose. Compression: none or gzip.
"""

from __future__ import annotations

import os
import sys

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions

from tfchips import storage
from tfchips.chips import ChipPair, read_manifest
from tfchips.cli.main import one_line_errors
from tfchips.cli.to_tfrecords import command as to_tfrecords_command
from tfchips.cli.to_tfrecords import writer_options
from tfchips.errors import ChipError, ConfigError
from tfchips.records import RecordOptions, WriterOptions
from tfchips.records.encoder import EncodedChip
from tfchips.records.plan import assign_splits, parse_split_by
from tfchips.records.writer import (
    COMPRESSIONS,
    BadChip,
    ShardInfo,
    checked_pairs,
    combined_spec,
    computed_or_manifest_statistics,
    dataset_description,
    encode_or_bad,
    settled_record_options,
    shard_counts,
    write_dataset_json,
)

_BEAM_COMPRESSION = {"none": CompressionTypes.UNCOMPRESSED, "gzip": CompressionTypes.GZIP}


def encode(pair: ChipPair, options: RecordOptions, skip_bad: bool) -> EncodedChip | BadChip:
    result = encode_or_bad(pair, options)
    if isinstance(result, BadChip) and not skip_bad:
        # Failing the pipeline here leaves Beam's temporary shards unpublished.
        raise ChipError(f"{result.reason} (--skip-bad leaves bad chips out)")
    return result


class CombineDataset(beam.CombineFn):
    """Image and label specs and merged statistics of every encoded chip."""

    def create_accumulator(self):
        return None, None, None

    def add_input(self, accumulator, chip: EncodedChip):
        image, label, statistics = accumulator
        image = combined_spec(image, chip.image, chip.name)
        label = combined_spec(label, chip.label, chip.name)
        if chip.statistics is not None:
            statistics = chip.statistics if statistics is None else statistics.merge(chip.statistics)
        return image, label, statistics

    def merge_accumulators(self, accumulators):
        image = label = statistics = None
        for other_image, other_label, other_statistics in accumulators:
            if other_image is not None:
                image = combined_spec(image, other_image, "another worker's chips")
                label = combined_spec(label, other_label, "another worker's chips")
            if other_statistics is not None:
                statistics = other_statistics if statistics is None else statistics.merge(other_statistics)
        return image, label, statistics

    def extract_output(self, accumulator):
        return accumulator


def shard_info(path: str, compression: str) -> tuple[str, ShardInfo]:
    """(split, ShardInfo) of a finished shard file."""
    import tensorflow as tf

    records = sum(1 for _ in tf.data.TFRecordDataset(path, compression_type=COMPRESSIONS[compression][0]))
    name = path.rsplit("/", 1)[-1]
    return name.split("-", 1)[0], ShardInfo(name, records, storage.sha256(path))


def describe(_, combined, shards, bad, unpaired, options: WriterOptions, class_names, manifest_statistics, out: str) -> None:
    image, label, statistics = combined
    if image is None:
        raise ChipError("every chip is bad; nothing to write")
    splits = {split: sorted((s for name, s in shards if name == split), key=lambda s: s.file) for split in options.splits}
    stats, source = computed_or_manifest_statistics(options, statistics, image.band_names, manifest_statistics)
    description = dataset_description(options, image, label, splits, class_names, stats, source, [*unpaired, *bad])
    write_dataset_json(out, description)


def build(pipeline: beam.Pipeline, chips: str, out: str, options: WriterOptions) -> None:
    """Add the to-tfrecords steps for folder ``chips`` to ``pipeline``."""
    check_compression(options)
    folder, unpaired = checked_pairs(chips, options.skip_bad)
    manifest = read_manifest(chips)
    records, _ = settled_record_options(options, manifest.statistics)
    counts = shard_counts(folder.pairs, options, records)
    encoded = (
        pipeline
        | "Chips" >> beam.Create(folder.pairs)
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.Map(encode, records, options.skip_bad)
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

    ``names`` are every chip name the pipeline may encode: splits are assigned from them up front.
    """
    pipeline = encoded.pipeline
    split_of = assign_splits(names, options.splits, parse_split_by(options.split_by), options.seed)
    good = encoded | "Good" >> beam.Filter(lambda r: isinstance(r, EncodedChip))
    bad = encoded | "Bad" >> beam.Filter(lambda r: isinstance(r, BadChip))
    written = []
    for split in options.splits:
        shards = counts[split] if isinstance(counts, dict) else counts
        written.append(
            good
            | f"In{split}" >> beam.Filter(lambda chip, split=split: split_of[chip.name] == split)
            | f"Record{split}" >> beam.Map(lambda chip: chip.record)
            | f"Write{split}" >> beam.io.WriteToTFRecord(
                storage.join(out, split),
                file_name_suffix=COMPRESSIONS[options.compression][1],
                num_shards=shards,
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
        )
    )


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(to-tfrecords option values, Beam arguments) from one command line."""
    context = to_tfrecords_command.make_context(
        "chips_to_tfrecords", list(argv), ignore_unknown_options=True, allow_extra_args=True
    )
    return context.params, context.args


def main(argv: list[str] | None = None) -> None:
    values, beam_args = parse(sys.argv[1:] if argv is None else argv)
    options = writer_options(values)
    if not storage.is_url(values["out"]):
        os.makedirs(values["out"], exist_ok=True)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build(pipeline, values["chips"], values["out"], options)


if __name__ == "__main__":
    with one_line_errors():
        main()
