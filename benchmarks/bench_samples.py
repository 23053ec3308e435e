"""create-samples on the demo catalog: chips per second with 1 and 2 workers, and on Beam.

Goals: 2 workers faster than 1 (ratio > 1; at most 2 on this 2-core machine), and the Beam
DirectRunner (multi-processing, 2 workers) reported as a ratio against the local job with
2 workers (no goal: DirectRunner is for testing, not for speed).
"""

from __future__ import annotations

import tempfile
import time
from typing import Iterator

import shapely

from benchmarks.result import Result
from tfchips.demo_data import generate
from tfchips.grid import tiles_for_shape
from tfchips.imagery import ImageryRequest
from tfchips.labels import LabelRequest
from tfchips.samples import SampleJob, create_samples

TILESIZE = 16  # many small tiles: the per-tile work is what is measured


def _local(demo, tiles, out: str, workers: int) -> float:
    options = demo.job_options(out)
    job = SampleJob(ImageryRequest.from_options(options), LabelRequest.from_options(options), out)
    start = time.perf_counter()
    summary = create_samples(tiles, job, options, workers=workers)
    elapsed = time.perf_counter() - start
    assert summary.count("written") == len(tiles), summary.line
    return len(tiles) / elapsed


def _beam(demo, out: str, tiles_file: str, count: int) -> float:
    from beam_pipelines import create_training_samples

    options = demo.job_options(out)
    args = ["--tiles", tiles_file, "--out", out]
    for name in ("catalog", "bands", "start", "end", "mask_asset", "mask_values", "reference_date", "labels", "attribute"):
        args += [f"--{name.replace('_', '-')}", str(options[name])]
    start = time.perf_counter()
    create_training_samples.main(
        [*args, "--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    return count / (time.perf_counter() - start)


def run() -> Iterator[Result]:
    with tempfile.TemporaryDirectory() as root:
        demo = generate(f"{root}/demo", seed=0)
        tiles = tiles_for_shape(shapely.box(*demo.bbox), demo.resolution, TILESIZE)
        _local(demo, tiles[:8], f"{root}/warm", 1)  # page cache and catalog parsing out of the way
        one = _local(demo, tiles, f"{root}/one", 1)
        two = _local(demo, tiles, f"{root}/two", 2)
        yield Result(
            name="samples.create_samples.workers",
            unit="chips/s",
            figure=two,
            baseline=one,
            goal_ratio=1.2,
            details={"tiles": len(tiles), "tilesize": TILESIZE, "baseline_is": "1 worker", "figure_is": "2 workers"},
        )
        with open(f"{root}/tiles.txt", "w") as stream:
            stream.write("\n".join(t.key for t in tiles))
        beam = _beam(demo, f"{root}/beam", f"{root}/tiles.txt", len(tiles))
        yield Result(
            name="samples.beam_direct_runner",
            unit="chips/s",
            figure=beam,
            baseline=two,
            details={"tiles": len(tiles), "baseline_is": "local, 2 workers", "figure_is": "DirectRunner multi_processing, 2 workers"},
        )
