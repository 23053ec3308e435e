"""Beam pipeline: tiles -> imagery, labels -> chip pairs (or TFRecords), with a dead-letter output.

    python -m beam_pipelines.create_training_samples --config job.yaml \\
        --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

Takes every option of ``tfchips create-samples``; with ``--tfrecords DIR`` (and the record
options of ``tfchips to-tfrecords``: ``--encoding``, ``--shards``, ``--split``, ...) it writes
shards and dataset.json to DIR instead of a chip folder; a DIR holding a complete dataset needs
``--overwrite``, as with ``to-tfrecords``. Local outputs are locked for the run (`tfchips.lock`).
The rest go to Beam's PipelineOptions. Ends with one summary line on stderr; Beam's own log
lines below ERROR show only with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time

from tfchips.runners import check_runner, pipeline_arguments, quiet_beam, run_entry_point

quiet_beam()  # before apache_beam is imported: it logs while it loads

import apache_beam as beam  # noqa: E402
import click  # noqa: E402
from apache_beam.metrics import Metrics  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from beam_pipelines.chips_to_tfrecords import chips_plan, summary_text, write_records  # noqa: E402
from tfchips import storage
from tfchips.chips import ChipPair, chip_paths, remove_partial_files
from tfchips.cli.config import save_effective_config
from tfchips.cli.create_samples import command as create_samples_command
from tfchips.cli.create_samples import options_from_config
from tfchips.cli.main import command_flags
from tfchips.cli.to_tfrecords import command as to_tfrecords_command
from tfchips.console import summary_line
from tfchips.job import job_from_values, recorded_options, writer_options
from tfchips.grid import Tile, key_to_filename
from tfchips.labels import load_ground_truth
from tfchips.lock import output_lock
from tfchips.records import RecordOptions, WriterOptions
from tfchips.records.writer import check_output_folder, encode_or_bad
from tfchips.samples import JobSummary, SampleJob, make_sample, start_job, write_job_metadata
from tfchips.workers import JobProcess, watch_job

FAILED = "failed"


class SampleTile(beam.DoFn):
    """Writes the chip pair of one tile key; failures go to the ``failed`` output."""

    def __init__(self, job: SampleJob) -> None:
        self.job = job
        self.launcher = JobProcess.current()
        self.counters = {s: Metrics.counter("tfchips", f"tiles_{s}") for s in ("written", "skipped", "failed")}

    def setup(self) -> None:
        watch_job(self.launcher)  # a local worker process ends with the pipeline's, even SIGKILLed
        load_ground_truth(self.job.labels)  # once per worker, not per element

    def process(self, key: str):
        record, band_names = make_sample(Tile.from_key(key), self.job)
        self.counters[record.status].inc()
        if record.status == FAILED:
            yield beam.pvalue.TaggedOutput(FAILED, json.dumps({"key": key, "error": record.reason}))
        else:
            yield record, band_names


class SampleRecord(SampleTile):
    """Makes the chip pair of one tile in a scratch folder and yields its encoded record."""

    def __init__(self, job: SampleJob, records: RecordOptions) -> None:
        super().__init__(job)
        self.records = records

    def setup(self) -> None:
        super().setup()
        self.scratch = tempfile.mkdtemp(prefix="tfchips-")
        self.scratch_job = dataclasses.replace(self.job, out=self.scratch, overwrite=True)

    def teardown(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def process(self, key: str):
        record, _ = make_sample(Tile.from_key(key), self.scratch_job)
        self.counters[record.status].inc()
        if record.status == FAILED:
            yield beam.pvalue.TaggedOutput(FAILED, json.dumps({"key": key, "error": record.reason}))
        elif record.status == "written":
            image, label = chip_paths(self.scratch, key)
            yield encode_or_bad(ChipPair(key_to_filename(key), key, image, label), self.records)
            for path in (image, label):
                storage.remove(path)


def write_metadata(results: list, job: SampleJob, parameters: dict) -> None:
    band_names = next((names for _, names in results if names), ())
    write_job_metadata(JobSummary(tuple(record for record, _ in results), band_names), job, parameters)


def _dead_letter(failures: beam.PCollection, folder: str) -> None:
    _ = failures | "WriteFailures" >> beam.io.WriteToText(
        storage.join(folder, "dead_letter", "failures"), file_name_suffix=".jsonl"
    )


def build(pipeline: beam.Pipeline, tiles: list[Tile], job: SampleJob, parameters: dict) -> None:
    """Add the create-samples steps to ``pipeline``."""
    results = (
        pipeline
        | "Tiles" >> beam.Create([tile.key for tile in tiles])
        | "Spread" >> beam.Reshuffle()
        | "Sample" >> beam.ParDo(SampleTile(job)).with_outputs(FAILED, main="records")
    )
    _dead_letter(results[FAILED], job.out)
    _ = (
        results.records
        | "Gather" >> beam.combiners.ToList()
        | "Metadata" >> beam.Map(write_metadata, job, parameters)
    )


def build_records(pipeline: beam.Pipeline, tiles: list[Tile], job: SampleJob, out: str, options: WriterOptions) -> None:
    """Add create-samples steps that write TFRecords to ``out`` instead of a chip folder."""
    records = dataclasses.replace(options.records, statistics=options.statistics)
    results = (
        pipeline
        | "Tiles" >> beam.Create([tile.key for tile in tiles])
        | "Spread" >> beam.Reshuffle()
        | "Sample" >> beam.ParDo(SampleRecord(job, records)).with_outputs(FAILED, main="records")
    )
    _dead_letter(results[FAILED], job.out)
    class_names = {str(k): v for k, v in job.class_names.items()} or None
    write_records(results.records, chips_plan(results.records, options), options, out, class_names, None)


_RECORD_OPTIONS = ("encoding", "label_encoding", "decoder", "schema", "shards", "compression", "split_text", "split_by", "seed", "statistics")

records_command = click.Command(
    "records",
    params=[
        click.Option(["--tfrecords"], type=click.Path(file_okay=False), help="Write TFRecords here, not chips."),
        *(p for p in to_tfrecords_command.params if p.name in _RECORD_OPTIONS),
    ],
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


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    values, from_config, record_values, beam_args = parse(sys.argv[1:] if argv is None else argv)
    out = record_values.pop("tfrecords")
    check_runner(beam_args, (values["out"], out))
    with contextlib.ExitStack() as locks:
        # Local outputs are locked before anything is written to them (URLs are not locked).
        for folder in dict.fromkeys(f for f in (values["out"], out) if f is not None):
            locks.enter_context(output_lock(folder))
        if out is not None:
            # --overwrite stands for both outputs: a complete dataset in the --tfrecords folder needs it.
            record_values = {**record_values, "shard_size_mb": None, "workers": 1, "processes": False,
                             "skip_bad": False, "overwrite": values["overwrite"],
                             "shards": record_values["shards"] or 1}
            options = writer_options(record_values)
            if not storage.is_url(out):
                check_output_folder(out, options.overwrite)  # before the labels are read and catalogs opened
        save_config = functools.partial(save_effective_config, command=create_samples_command)
        tiles, job = job_from_values(values, from_config, chips=out is None, save_config=save_config)
        pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
        if out is None:
            start_job(job, recorded_options(values), len(tiles))
            build(pipeline, tiles, job, recorded_options(values))
        else:
            remove_partial_files(job.out)
            build_records(pipeline, tiles, job, out, options)
        result = pipeline.run()
        result.wait_until_finish()
    counts = ", ".join(f"{n} tiles {status}" for status, n in tile_counts(result).items())
    chips = job.out if storage.is_url(job.out) else os.path.abspath(job.out)
    where = summary_text(out) if out is not None else f"chips in {chips}"
    summary_line(PROGRAM, f"{counts}; {where}", started)


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
