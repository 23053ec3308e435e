"""Beam pipeline: tiles -> imagery, labels -> chip pairs (or TFRecords), with a dead-letter output.

    python -m beam_pipelines.create_training_samples --config job.yaml \\
        --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

Takes every option of ``tfchips create-samples``; with ``--tfrecords DIR`` (and the record
options of ``tfchips to-tfrecords``: ``--encoding``, ``--shards``, ``--split``, ...) it writes
shards and dataset.json to DIR instead of a chip folder, encoding each tile's record in memory
(`tfchips.sample_records`); a DIR holding a complete dataset needs ``--overwrite``, as with
``to-tfrecords``. Local outputs are locked for the run (`tfchips.lock`). The rest go to Beam's
PipelineOptions. The graph holds a few hundred blocks of tiles (`tfchips.tile_blocks`), which
workers expand, not the tiles. Failed tiles go to ``OUT/dead_letter/`` and the manifest, and
make the run exit 1, as with the CLI. Ends with one summary line on stderr; Beam's own log
lines below ERROR show only with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time

from tfchips.runners import check_runner, configure_filesystems, pipeline_arguments, quiet_beam, run_entry_point

quiet_beam()  # before apache_beam is imported: it logs while it loads

import apache_beam as beam  # noqa: E402
import click  # noqa: E402
from apache_beam.metrics import Metrics  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from beam_pipelines.chips_to_tfrecords import chips_plan, summary_text, write_records  # noqa: E402
from tfchips import storage
from tfchips.chip_folder import finish_job, remove_partial_files, start_job
from tfchips.config_file import save_effective_config
from tfchips.console import summary_line
from tfchips.grid import Tile
from tfchips.job import job_from_values, recorded_options, writer_options
from tfchips.labels import load_ground_truth
from tfchips.lock import output_lock
from tfchips.manifest import (
    ROWS_SUFFIX,
    ManifestSummary,
    remove_stale_rows,
    row_line,
    rows_prefix,
    summary_statistics,
)
from tfchips.options import command_flags, create_samples_options, options_from_config, record_options
from tfchips.records import RecordOptions, WriterOptions
from tfchips.records.writer import check_output_folder
from tfchips.run_progress import ProgressFile, drawn, is_local_run, progress_file
from tfchips.sample_records import sample_record
from tfchips.samples import SampleJob, make_sample, sample_to_folder
from tfchips.tile_blocks import Block, TileSource
from tfchips.workers import JobProcess, watch_job

FAILED = "failed"


class SampleTile(beam.DoFn):
    """One tile into the chip folder (`sample_to_folder`): yields its record and band names;
    a failed tile's key and reason also go to the ``failed`` output (the dead letters)."""

    def __init__(self, job: SampleJob, counter: ProgressFile = ProgressFile()) -> None:
        self.job = job
        self.counter = counter  # a local run's progress bar counts the tiles done
        self.launcher = JobProcess.current()
        self.counters = {s: Metrics.counter("tfchips", f"tiles_{s}") for s in ("written", "skipped", "failed")}

    def setup(self) -> None:
        watch_job(self.launcher)  # a local worker process ends with the pipeline's, even SIGKILLed
        load_ground_truth(self.job.labels)  # once per worker, not per element

    def counted(self, record):
        """Count ``record``'s outcome; the dead letter of a failed one."""
        self.counters[record.status].inc()
        self.counter.tick()
        if record.status == FAILED:
            yield beam.pvalue.TaggedOutput(FAILED, json.dumps({"key": record.key, "error": record.reason}))

    def process(self, tile: Tile):
        record, band_names = sample_to_folder(tile, self.job)
        yield from self.counted(record)
        yield record, band_names


OUTCOMES = "outcomes"


class SampleRecord(SampleTile):
    """One tile to its encoded record (`sample_record`), made in memory: no chip is written.

    Every tile's record and band names also go to the ``outcomes`` output, whose summary gives
    dataset.json the statistics the chip manifest would (`summary_statistics`)."""

    def __init__(self, job: SampleJob, records: RecordOptions, counter: ProgressFile = ProgressFile()) -> None:
        super().__init__(job, counter)
        self.records = records

    def process(self, tile: Tile):
        sample = make_sample(tile, self.job)
        record, encoded = sample_record(sample, self.records, self.job.out)
        yield from self.counted(record)
        yield beam.pvalue.TaggedOutput(OUTCOMES, (record, sample.band_names))
        if encoded is not None:
            yield encoded


class CombineManifest(beam.CombineFn):
    """The `ManifestSummary` of every tile's record, and the job's band names."""

    def create_accumulator(self) -> tuple[ManifestSummary, tuple[str, ...]]:
        return ManifestSummary(), ()

    def add_input(self, summary, outcome):
        record, band_names = outcome
        return summary[0].merge(ManifestSummary.of(record)), summary[1] or band_names

    def merge_accumulators(self, summaries):
        merged, names = ManifestSummary(), ()
        for summary, band_names in summaries:
            merged, names = merged.merge(summary), names or band_names
        return merged, names

    def extract_output(self, summary):
        return summary


def write_metadata(
    _, summary: tuple[ManifestSummary, tuple[str, ...]], rows: list[str], job: SampleJob, parameters: dict
) -> None:
    """The manifest and ESRI metadata, once the ``rows`` files are in place; an earlier run's rows files go."""
    remove_stale_rows(job.out, rows)
    finish_job(*summary, job, parameters)


def _dead_letter(failures: beam.PCollection, folder: str) -> None:
    """Failed tiles as JSON lines in FOLDER/dead_letter/ (no file when none failed)."""
    _ = failures | "WriteFailures" >> beam.io.WriteToText(
        storage.join(folder, "dead_letter", "failures"), file_name_suffix=".jsonl", skip_if_empty=True
    )


def _tiles(pipeline: beam.Pipeline, source: TileSource, blocks: list[Block]) -> beam.PCollection:
    """The tiles of ``blocks``, each block expanded on the worker that samples its tiles."""
    return (
        pipeline
        | "Blocks" >> beam.Create(blocks)
        | "Spread" >> beam.Reshuffle()
        | "Tiles" >> beam.FlatMap(source.block_tiles)
    )


def build(
    pipeline: beam.Pipeline, source: TileSource, blocks: list[Block], job: SampleJob, parameters: dict,
    counter: ProgressFile = ProgressFile(),
) -> None:
    """Add the create-samples steps to ``pipeline``; ``counter`` counts the tiles done."""
    results = _tiles(pipeline, source, blocks) | "Sample" >> beam.ParDo(SampleTile(job, counter)).with_outputs(
        FAILED, main="records"
    )
    _dead_letter(results[FAILED], job.out)
    # No worker holds every row: rows go to sharded JSON lines, the summary is combined.
    rows = (
        results.records
        | "Rows" >> beam.Map(lambda outcome: row_line(outcome[0]))
        | "WriteRows" >> beam.io.WriteToText(rows_prefix(job.out), file_name_suffix=ROWS_SUFFIX)
    )
    summary = results.records | "Summary" >> beam.CombineGlobally(CombineManifest())
    _ = (
        pipeline
        | "Once" >> beam.Create([None])
        | "Metadata" >> beam.Map(
            write_metadata, beam.pvalue.AsSingleton(summary), beam.pvalue.AsList(rows), job, parameters
        )
    )


def build_records(
    pipeline: beam.Pipeline, source: TileSource, blocks: list[Block], job: SampleJob, out: str, options: WriterOptions,
    counter: ProgressFile = ProgressFile(),
) -> None:
    """Add create-samples steps that write TFRecords to ``out`` instead of a chip folder; ``counter``
    counts the tiles done."""
    # The statistics come from the tiles' summary, as the CLI's come from the chip manifest.
    records = dataclasses.replace(options.records, statistics=False)
    results = _tiles(pipeline, source, blocks) | "Sample" >> beam.ParDo(SampleRecord(job, records, counter)).with_outputs(
        FAILED, OUTCOMES, main="records"
    )
    _dead_letter(results[FAILED], job.out)
    class_names = {str(k): v for k, v in job.class_names.items()} or None
    statistics = (
        results[OUTCOMES]
        | "Summary" >> beam.CombineGlobally(CombineManifest())
        | "Statistics" >> beam.MapTuple(summary_statistics)
    )
    write_records(
        results.records, chips_plan(results.records, options), options, out, class_names,
        beam.pvalue.AsSingleton(statistics),
    )


_RECORD_OPTIONS = (
    "encoding", "label_encoding", "decoder", "schema", "shards", "compression", "split_text", "split_by", "seed",
    "statistics", "exact_statistics",
)


def _values(**values) -> dict:
    return values


create_samples_command = click.command("create_training_samples")(create_samples_options(_values))
records_command = click.command("records")(
    click.option("--tfrecords", type=click.Path(file_okay=False), help="Write TFRecords here, not chips.")(
        record_options(_values, _RECORD_OPTIONS)
    )
)


def parse(argv: list[str]) -> tuple[dict, frozenset[str], dict, list[str]]:
    """From one command line: create-samples option values (and which came from --config),
    record option values, and the Beam arguments."""
    samples = create_samples_command.make_context(
        "create_training_samples", pipeline_arguments(argv), ignore_unknown_options=True, allow_extra_args=True
    )
    records = records_command.make_context(
        "create_training_samples", list(samples.args), ignore_unknown_options=True, allow_extra_args=True
    )
    return samples.params, options_from_config(samples, samples.params), records.params, records.args


PROGRAM = "beam_pipelines.create_training_samples"


def make_pipeline(
    values: dict, from_config: frozenset[str], record_values: dict, beam_args: list[str],
    counter: ProgressFile = ProgressFile(),
) -> tuple[beam.Pipeline, SampleJob, int]:
    """The pipeline of one command line's option values (`parse`), built, not run, its job and
    tile count; ``counter`` counts the tiles done.

    Checks the job (`job_from_values`) and, for a chip folder, starts it (`start_job`).
    """
    out = record_values["tfrecords"]
    if out is not None:
        # --overwrite stands for both outputs: a complete dataset in the --tfrecords folder needs it.
        record_values = {**record_values, "shard_size_mb": None, "workers": 1, "processes": False,
                         "skip_bad": False, "overwrite": values["overwrite"], "shards": record_values["shards"] or 1}
        options = writer_options({k: v for k, v in record_values.items() if k != "tfrecords"})
        if not storage.is_url(out):
            check_output_folder(out, options.overwrite)  # before the labels are read and catalogs opened
    save_config = functools.partial(save_effective_config, command=create_samples_command)
    source, blocks, job = job_from_values(values, from_config, chips=out is None, save_config=save_config)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    if out is None:
        start_job(job, recorded_options(values), source.count)
        build(pipeline, source, blocks, job, recorded_options(values), counter)
    else:
        remove_partial_files(job.out)
        build_records(pipeline, source, blocks, job, out, options, counter)
    return pipeline, job, source.count


def main(argv: list[str] | None = None) -> None:
    """Run the pipeline of ``argv``; exits 1 when any tile failed, as ``tfchips create-samples`` does."""
    started = time.monotonic()
    values, from_config, record_values, beam_args = parse(sys.argv[1:] if argv is None else argv)
    out = record_values["tfrecords"]
    worker_inputs = {name: values[name] for name in ("labels", "extent", "catalog", "tiles_path")}
    check_runner(beam_args, (values["out"], out), worker_inputs)
    configure_filesystems(beam_args)
    with contextlib.ExitStack() as held:
        # Local outputs are locked before anything is written to them (URLs are not locked).
        for folder in dict.fromkeys(f for f in (values["out"], out) if f is not None):
            held.enter_context(output_lock(folder))
        counter = held.enter_context(progress_file(is_local_run(beam_args)))
        pipeline, job, tiles = make_pipeline(values, from_config, record_values, beam_args, counter)
        with drawn(counter, tiles, "tile", "create_training_samples"):
            result = pipeline.run()
            result.wait_until_finish()
    counts = tile_counts(result)
    chips = job.out if storage.is_url(job.out) else os.path.abspath(job.out)
    where = summary_text(out) if out is not None else f"chips in {chips}"
    dead = f"; failed tiles in {storage.join(job.out, 'dead_letter')}" if counts[FAILED] else ""
    summary_line(PROGRAM, f"{', '.join(f'{n} tiles {status}' for status, n in counts.items())}; {where}{dead}", started)
    if counts[FAILED]:
        sys.exit(1)


def tile_counts(result) -> dict[str, int]:
    """Tiles written, skipped and failed, from the counters of `SampleTile` in a finished pipeline."""
    counters = result.metrics().query(MetricsFilter().with_namespace("tfchips"))["counters"]
    counts = {status: 0 for status in ("written", "skipped", "failed")}
    for counter in counters:
        status = counter.key.metric.name.removeprefix("tiles_")
        if status in counts:
            counts[status] += counter.committed or 0
    return counts


if __name__ == "__main__":
    run_entry_point(main, {**command_flags(records_command), **command_flags(create_samples_command)})
