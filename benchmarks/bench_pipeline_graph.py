"""Driver time and graph size of the Beam create-samples pipeline at 1M tiles, built and not run.

Baseline: the same pipeline at 10k tiles, built in the same run. Goals (issue 14): the
serialized graph at 1M tiles within 10% of its size at 10k (ratio >= 0.9) and <= 1 MB;
the driver builds the 1M-tile job in <= 5 s.
"""

from __future__ import annotations

import tempfile
import time
from typing import Iterator

from benchmarks.result import Result, cpu_seconds
from tfchips.aoi import bbox_geometry
from tfchips.demo_data import generate
from tfchips.grid import tile_indices_for_shape



TILESIZE = 16


def resolution_for(area, tiles: int) -> float:
    """A resolution (m) at which `TILESIZE` px tiles cut ``area`` (WGS84) into ``tiles`` to 1.05 ``tiles`` tiles."""
    resolution = 10.0
    for _ in range(8):
        found = len(tile_indices_for_shape(area, resolution, TILESIZE))
        if tiles <= found <= 1.05 * tiles:
            return resolution
        resolution *= (found / (1.02 * tiles)) ** 0.5  # tiles go as the inverse square of the resolution
    raise ValueError(f"no resolution gives {tiles} tiles")


def demo_job_args(demo, out: str, resolution: float) -> list[str]:
    """Command-line options of the demo job over its bbox at ``resolution`` m in `TILESIZE` px tiles, into ``out``."""
    return [
        "--bbox", ",".join(map(str, demo.bbox)), "--resolution", str(resolution), "--tilesize", str(TILESIZE),
        "--catalog", demo.catalog, "--bands", ",".join(demo.bands), "--start", demo.start, "--end", demo.end,
        "--labels", demo.labels, "--attribute", demo.attribute, "--out", out,
    ]


def _build(demo, folder: str, resolution: float, records: bool) -> tuple[float, float, int, int]:
    """(wall s, CPU s, graph bytes, tiles) of building the pipeline, best wall of 3."""
    from beam_pipelines import create_training_samples

    best = None
    for attempt in range(3):
        out = f"{folder}/{resolution}-{records}-{attempt}"
        extra = ["--tfrecords", f"{out}-records", "--shards", "4", "--split", "train=0.8,val=0.2"] if records else []
        args = [*demo_job_args(demo, out, resolution), *extra, "--runner=DirectRunner"]
        started, cpu = time.perf_counter(), cpu_seconds()
        values, from_config, record_values, beam_args = create_training_samples.parse(args)
        pipeline, _, _ = create_training_samples.make_pipeline(values, from_config, record_values, beam_args)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        size = len(pipeline.to_runner_api().SerializeToString())
        if best is None or wall < best[0]:
            best = (wall, cpu, size)
    tiles = len(tile_indices_for_shape(bbox_geometry(demo.bbox), resolution, TILESIZE))
    return (*best, tiles)


def run(records: bool = False) -> Iterator[Result]:
    with tempfile.TemporaryDirectory() as folder:
        demo = generate(f"{folder}/demo", seed=0)
        area = bbox_geometry(demo.bbox)
        large = _build(demo, folder, resolution_for(area, 1_000_000), records)
        small = _build(demo, folder, resolution_for(area, 10_000), records)
    mode = "tfrecords" if records else "chip_folder"
    yield Result(
        name=f"beam.create_samples.{mode}.graph_bytes",
        unit="bytes",
        figure=large[2],
        baseline=small[2],
        goal_ratio=0.9,
        higher_is_better=False,
        details={"tiles": large[3], "baseline_tiles": small[3], "goal_bytes": 1 << 20, "baseline_is": "10k tiles"},
    )
    yield Result(
        name=f"beam.create_samples.{mode}.driver_seconds",
        unit="s",
        figure=large[0],
        baseline=5.0,
        goal_ratio=1.0,
        higher_is_better=False,
        details={"tiles": large[3], "cpu_s": round(large[1], 2), "baseline_is": "the 5 s goal",
                 "baseline_tiles_s": round(small[0], 3)},
    )


if __name__ == "__main__":
    import json

    for result in run():
        print(json.dumps(result.as_dict()))
