"""The create-samples pipeline's graph does not grow with its tile count (built, not run).

Dataflow refuses job graphs over 10 MB; the graph holds blocks of tiles (`tfchips.tile_blocks`)
that workers expand, so a million tiles cost what ten thousand do. Driver time: benchmarks/.
"""

import json

import pytest

from beam_pipelines import create_training_samples
from benchmarks.bench_pipeline_graph import demo_job_args, resolution_for
from tfchips.aoi import bbox_geometry

MB = 1 << 20


def graph_bytes(demo, out, tiles: int, *extra: str) -> int:
    """Serialized pipeline bytes of the demo job over its bbox cut into about ``tiles`` tiles."""
    resolution = resolution_for(bbox_geometry(demo.bbox), tiles)
    args = [*demo_job_args(demo, str(out), resolution), *extra, "--runner=DirectRunner"]
    values, from_config, record_values, beam_args = create_training_samples.parse(args)
    pipeline, _, _ = create_training_samples.make_pipeline(values, from_config, record_values, beam_args)
    return len(pipeline.to_runner_api().SerializeToString())


def started_tiles(out) -> int:
    """The tiles a chip-folder job started in ``out`` has to make (its manifest, `start_job`)."""
    return json.loads((out / "manifest.json").read_text())["counts"]["unfinished"]


def test_a_million_tile_chip_folder_pipeline_is_as_small_as_a_ten_thousand_tile_one(demo, tmp_path):
    large = graph_bytes(demo, tmp_path / "large", 1_000_000)
    small = graph_bytes(demo, tmp_path / "small", 10_000)
    assert 1_000_000 <= started_tiles(tmp_path / "large") <= 1_050_000 and 10_000 <= started_tiles(tmp_path / "small") <= 10_500
    assert large <= MB
    assert abs(large - small) <= 0.1 * small, (large, small)


def test_a_million_tile_tfrecords_pipeline_is_as_small_as_a_ten_thousand_tile_one(demo, tmp_path):
    records = ["--encoding", "array", "--split", "train=0.8,val=0.2", "--shards", "4"]
    large = graph_bytes(demo, tmp_path / "large", 1_000_000, "--tfrecords", str(tmp_path / "large-records"), *records)
    small = graph_bytes(demo, tmp_path / "small", 10_000, "--tfrecords", str(tmp_path / "small-records"), *records)
    assert large <= MB
    assert abs(large - small) <= 0.1 * small, (large, small)
