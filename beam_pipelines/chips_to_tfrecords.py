"""Beam pipeline: a chip folder to sharded TFRecords and dataset.json, byte for byte those of ``tfchips to-tfrecords``.

    python -m beam_pipelines.chips_to_tfrecords CHIPS --out OUT --encoding array --split train=0.8,val=0.2 \\
        --shards 8 --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

Takes the options of ``tfchips to-tfrecords`` and ``--verbose``; the rest go to Beam's PipelineOptions.
Ends with one summary line on stderr; Beam's own log lines below ERROR show only with ``--verbose``.
CHIPS and OUT are local paths or any URL Beam's FileSystems reads (``gs://``, ``s3://``); the
folder is listed inside the pipeline, so the job graph does not grow with the chips. Each chip
goes to the split and shard its name gives (`tfchips.records.plan`); encoded chips are grouped by
shard and each shard is written in plan order by the local writer's `write_shard`, so shards
and dataset.json are the CLI's. A local OUT is checked like the local writer's
(``--overwrite``) and shards of an earlier run are removed; an OUT URL is neither checked nor
cleaned: write each run to a fresh prefix.
"""

from __future__ import annotations

import sys
import time

from tfchips.runners import check_runner, configure_filesystems, pipeline_arguments, quiet_beam, run_entry_point

quiet_beam()  # before apache_beam is imported: it logs while it loads

import apache_beam as beam  # noqa: E402
from apache_beam.io import fileio  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from tfchips import storage  # noqa: E402
from tfchips.options import command_flags, output_path, tfrecords_arguments  # noqa: E402
from tfchips.console import summary_line  # noqa: E402
from tfchips.job import writer_options  # noqa: E402
from tfchips.lock import output_lock  # noqa: E402
from tfchips.records.chip_listing import (  # noqa: E402
    ListedFile,
    ListedPair,
    chip_globs,
    listed_file,
    pair_files,
    read_folder_metadata,
)
from tfchips.records.dataset_info import BadChip, read_dataset_info  # noqa: E402
from tfchips.records.options import WriterOptions  # noqa: E402
from tfchips.records.plan import SIZE_SAMPLE, name_hash  # noqa: E402
from tfchips.records.record_plan import (  # noqa: E402
    add_counts,
    chip_split,
    encode_sampled,
    finish_planned,
    keyed_by_shard,
    plan_for_chips,
    record_plan,
    signature_vote,
    size_sample_bytes,
    split_size,
    write_planned_shard,
)
from tfchips.records.shards import Tally, merge_tallies, tally_votes  # noqa: E402
from tfchips.run_progress import ProgressFile, drawn, is_local_run, progress_file  # noqa: E402
from tfchips.records.writer import (  # noqa: E402
    DATASET_JSON,
    check_output_folder,
    remove_stale_files,
    settled_record_options,
)

import click  # noqa: E402


class TallySignatures(beam.CombineFn):
    """`tally_votes` of (signature, chip name) votes."""

    def create_accumulator(self) -> Tally:
        return {}

    def add_input(self, tally: Tally, vote) -> Tally:
        return tally_votes([vote], tally)

    def merge_accumulators(self, tallies) -> Tally:
        return merge_tallies(tallies)

    def extract_output(self, tally: Tally) -> Tally:
        return tally


def build(
    pipeline: beam.Pipeline, chips: str, out: str, options: WriterOptions, counter: ProgressFile = ProgressFile()
) -> None:
    """Add the to-tfrecords steps for the chip folder ``chips`` (path or URL) to ``pipeline``;
    ``counter`` counts the chips encoded."""
    manifest = read_folder_metadata(chips)
    records, _ = settled_record_options(options, manifest.statistics)
    files = (
        pipeline
        | "Globs" >> beam.Create(chip_globs(chips))
        | "List" >> fileio.MatchAll()
        | "Files" >> beam.FlatMap(lambda found: listed_file(found.path, found.size_in_bytes))
    )
    listed = (
        files
        | "ByStem" >> beam.Filter(lambda item: not isinstance(item, BadChip)).with_output_types(tuple[str, ListedFile])
        | "Stems" >> beam.GroupByKey()
        | "Pair" >> beam.FlatMapTuple(pair_files)
    )
    pairs = listed | "Pairs" >> beam.Filter(lambda item: isinstance(item, ListedPair))
    bad_files = beam.pvalue.AsList(
        (
            files | "NotUtf8" >> beam.Filter(lambda item: isinstance(item, BadChip)),
            listed | "Unpaired" >> beam.Filter(lambda item: isinstance(item, BadChip)),
        )
        | "BadFiles" >> beam.Flatten()
    )
    split_counts = pairs | "SplitOf" >> beam.Map(split_size, options) | "PerSplit" >> beam.CombinePerKey(add_counts)
    tally = size_sample = None
    if options.skip_bad:
        tally = beam.pvalue.AsSingleton(
            pairs | "Votes" >> beam.FlatMap(signature_vote) | "Tally" >> beam.CombineGlobally(TallySignatures())
        )
    if options.shard_size_mb is not None:
        size_sample = beam.pvalue.AsSingleton(
            pairs
            | "SizeSample" >> beam.combiners.Top.Of(SIZE_SAMPLE, key=lambda p: name_hash(0, "size", p.name), reverse=True)
            | "SampleBytes" >> beam.Map(size_sample_bytes, records)
        )
    plan = beam.pvalue.AsSingleton(
        pipeline
        | "Once" >> beam.Create([chips])
        | "Plan" >> beam.Map(
            record_plan,
            options,
            beam.pvalue.AsList(split_counts),
            bad_files,
            tally,
            size_sample,
            records.statistics,
        )
    )
    encoded = (
        pairs
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.Map(encode_sampled, records, plan)
        | "Counted" >> beam.Map(counter.counted)
    )
    write_records(encoded, plan, options, out, manifest.class_names, manifest.statistics)


def chips_plan(encoded: beam.PCollection, options: WriterOptions) -> beam.pvalue.AsSingleton:
    """The `RecordPlan` side input of chips encoded without a folder listing: shard counts from their splits."""
    split_counts = (
        encoded | "ChipSplit" >> beam.Map(chip_split, options) | "ChipsPerSplit" >> beam.CombinePerKey(add_counts)
    )
    return beam.pvalue.AsSingleton(
        encoded.pipeline
        | "PlanOnce" >> beam.Create([None])
        | "PlanChips" >> beam.Map(plan_for_chips, beam.pvalue.AsList(split_counts), options)
    )


def write_records(
    encoded: beam.PCollection,
    plan: beam.pvalue.AsSingleton,
    options: WriterOptions,
    out: str,
    class_names: dict | beam.pvalue.AsSingleton | None = None,
    manifest_statistics: dict | beam.pvalue.AsSingleton | None = None,
) -> None:
    """Write ``encoded`` chips (EncodedChip or BadChip) shard by shard into ``out``, then dataset.json.

    ``plan`` is the `RecordPlan` side input (`chips_plan` for chips that come from no folder).
    ``class_names`` and ``manifest_statistics`` (used when the records carry no statistics) are
    values, or side inputs (``AsSingleton``) of a pipeline that computes them. A local ``out`` is
    checked (`check_output_folder`): an earlier run's dataset.json is removed now and its other
    shards once the new ones are in place.
    """
    pipeline = encoded.pipeline
    stale = [] if storage.is_url(out) else check_output_folder(out, options.overwrite)
    remove_stale_files([path for path in stale if path.endswith(DATASET_JSON)])
    empty = (
        pipeline
        | "Planned" >> beam.Create([None])
        | "EveryShard" >> beam.FlatMap(lambda _, plan: [(key, None) for key in plan.shard_keys()], plan)
    )
    keyed = encoded | "KeyByShard" >> beam.Map(keyed_by_shard, options, plan)
    shards = (
        (keyed, empty)
        | "WithEmpty" >> beam.Flatten()
        | "ByShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.Map(lambda group, plan: write_planned_shard(*group, out, options, plan), plan)
    )
    _ = (
        pipeline
        | "Finally" >> beam.Create([None])
        | "DatasetJson" >> beam.Map(
            lambda _, results, plan, names, statistics: finish_planned(
                results, plan, out, options, names, statistics, stale
            ),
            beam.pvalue.AsList(shards),
            plan,
            class_names,
            manifest_statistics,
        )
    )


PROGRAM = "beam_pipelines.chips_to_tfrecords"


@click.command(PROGRAM)
@tfrecords_arguments
def command(**values) -> None:
    """The to-tfrecords command line, parsed only (`parse`)."""


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(to-tfrecords option values, Beam arguments) from one command line."""
    context = command.make_context(PROGRAM, pipeline_arguments(argv), ignore_unknown_options=True, allow_extra_args=True)
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
    configure_filesystems(beam_args)
    options = writer_options(values)
    with output_lock(values["out"]), progress_file(is_local_run(beam_args)) as counter:
        with drawn(counter, None, "chip", "chips_to_tfrecords"), beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
            build(pipeline, values["chips"], values["out"], options, counter)
    summary_line(PROGRAM, summary_text(values["out"]), started)


def summary_text(out: str) -> str:
    """Records, shards and where dataset.json went, as dataset.json of a local ``out`` tells them."""
    if storage.is_url(out):
        return f"wrote shards and {DATASET_JSON} to {out}"
    dataset = read_dataset_info(out)
    records = sum(split.records for split in dataset.splits)
    shards = sum(len(split.shards) for split in dataset.splits)
    return f"{records} records in {shards} shards, {len(dataset.skipped)} chips skipped; wrote {storage.join(out, DATASET_JSON)}"


if __name__ == "__main__":
    run_entry_point(main, command_flags(command))
