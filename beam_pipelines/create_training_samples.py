"""Beam pipeline: tiles -> imagery, labels -> chip pairs, with a dead-letter output.

    python -m beam_pipelines.create_training_samples --config job.yaml \\
        --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

Takes every option of ``tfchips create-samples``; the rest go to Beam's PipelineOptions.
"""

from __future__ import annotations

import json
import sys

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from tfchips import storage
from tfchips.chips import chip_pair_exists, remove_partial_files
from tfchips.cli.create_samples import command as create_samples_command
from tfchips.cli.create_samples import job_from_values, recorded_options
from tfchips.grid import Tile
from tfchips.labels import load_ground_truth
from tfchips.samples import JobSummary, SampleJob, make_sample, resumed_sample, write_job_metadata

FAILED = "failed"


class SampleTile(beam.DoFn):
    """Writes the chip pair of one tile key; failures go to the ``failed`` output."""

    def __init__(self, job: SampleJob) -> None:
        self.job = job
        self.counters = {s: Metrics.counter("tfchips", f"tiles_{s}") for s in ("written", "skipped", "failed")}

    def setup(self) -> None:
        load_ground_truth(self.job.labels)  # once per worker, not per element

    def process(self, key: str):
        tile = Tile.from_key(key)
        if not self.job.overwrite and chip_pair_exists(self.job.out, key):
            record, band_names = resumed_sample(tile, self.job)
        else:
            record, band_names = make_sample(tile, self.job)
        self.counters[record.status].inc()
        if record.status == FAILED:
            yield beam.pvalue.TaggedOutput(FAILED, json.dumps({"key": key, "error": record.reason}))
        else:
            yield record, band_names


def write_metadata(results: list, job: SampleJob, parameters: dict) -> None:
    band_names = next((names for _, names in results if names), ())
    write_job_metadata(JobSummary(tuple(record for record, _ in results), band_names), job, parameters)


def build(pipeline: beam.Pipeline, tiles: list[Tile], job: SampleJob, parameters: dict) -> None:
    """Add the create-samples steps to ``pipeline``."""
    results = (
        pipeline
        | "Tiles" >> beam.Create([tile.key for tile in tiles])
        | "Spread" >> beam.Reshuffle()
        | "Sample" >> beam.ParDo(SampleTile(job)).with_outputs(FAILED, main="records")
    )
    _ = (
        results[FAILED]
        | "WriteFailures" >> beam.io.WriteToText(storage.join(job.out, "dead_letter", "failures"), file_name_suffix=".jsonl")
    )
    _ = (
        results.records
        | "Gather" >> beam.combiners.ToList()
        | "Metadata" >> beam.Map(write_metadata, job, parameters)
    )


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(create-samples option values, Beam arguments) from one command line."""
    context = create_samples_command.make_context(
        "create_training_samples", list(argv), ignore_unknown_options=True, allow_extra_args=True
    )
    return context.params, context.args


def main(argv: list[str] | None = None) -> None:
    values, beam_args = parse(sys.argv[1:] if argv is None else argv)
    tiles, job = job_from_values(values)
    remove_partial_files(job.out)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build(pipeline, tiles, job, recorded_options({k: v for k, v in values.items() if v is not None}))


if __name__ == "__main__":
    main()
