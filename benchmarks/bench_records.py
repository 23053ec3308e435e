"""Chips per second of `write_tfrecords` against the loop it replaces, and its peak memory.

The folder is like the issue's (6,000 pairs; ``TFCHIPS_BENCH_CHIPS``, default 2,000,
to stay within two minutes on two busy cores): 256 x 256 x 3 uint8 LZW GeoTIFF
images and uint8 labels, with a manifest as tfchips writes it. To generate it in a
second, 64 distinct chips are hard-linked under all the names: decoding costs the
same per chip, and what the folder's size changes (GDAL lists the folder each time
it opens a chip, looking for sidecar files) is kept.

The baseline, measured in the same run, is the naive single-process form of the
replaced implementation: open and read each pair with rasterio, build a
``tf.train.Example`` (``bytes``: the two files; ``array``: the decoded pixels,
H x W x C), write it. Its cost per chip is the same from the first chip to the
last, so it is timed on the first 300 pairs. Both sides have TensorFlow loaded
before timing starts, and each is timed three times, its fastest run kept: load
from other machines on shared cores slows single runs by up to a third. CPU
seconds per chip (all threads and processes) are reported too. Peak memory
(resident set of the writing process, peak reset before the runs on each
folder) is measured on half the folder and on all of it.

``records.statistics_cost.<encoding>`` is the cost of the default statistics on a
folder without a manifest (an ESRI export, or the output of the scripts tfchips
replaces), where they are computed: the default run (statistics from the
deterministic sample of `tfchips.records.plan.statistics_rate`) against
``--no-statistics`` in the same run, best of three each, wall and CPU; the goal is
the default within 1.25x (ratio >= 0.8). ``--exact-statistics`` is reported beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Iterator

import numpy as np

from benchmarks.result import Result, cpu_seconds
from tfchips.chips import find_chip_pairs
from tfchips.records import RecordOptions, WriterOptions, write_tfrecords

CHIPS = int(os.environ.get("TFCHIPS_BENCH_CHIPS", 2000))
ROUNDS = 3
DISTINCT = 64
BASELINE_SAMPLE = 300
SIZE, BANDS = 256, 3
GOALS = {"bytes": 8, "array": 5}


def _templates(folder: str, seed: int = 0) -> list[str]:
    """``DISTINCT`` chip pairs of smooth imagery with a little noise, like real scenes after LZW."""
    import rasterio
    from rasterio.transform import Affine

    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    names = []
    for i in range(DISTINCT):
        name = f"template{i}"
        coarse = rng.integers(20, 200, (BANDS, SIZE // 32, SIZE // 32))
        image = (np.kron(coarse, np.ones((32, 32))) + rng.integers(0, 8, (BANDS, SIZE, SIZE))).astype(np.uint8)
        label = np.kron(rng.integers(0, 4, (SIZE // 64, SIZE // 64)), np.ones((64, 64)))[None].astype(np.uint8)
        profile = dict(
            driver="GTiff",
            width=SIZE,
            height=SIZE,
            crs="EPSG:32613",
            compress="lzw",
            transform=Affine(10, 0, 500000 + 2560 * i, 0, -10, 2560),
        )
        with rasterio.open(
            os.path.join(folder, "images", name + ".tif"), "w", count=BANDS, dtype="uint8", **profile
        ) as dst:
            dst.write(image)
            dst.descriptions = ("red", "green", "blue")
        with rasterio.open(
            os.path.join(folder, "labels", name + ".tif"), "w", count=1, dtype="uint8", nodata=255, **profile
        ) as dst:
            dst.write(label)
        names.append(name)
    return names


def _generate(folder: str, count: int, templates: str, names: list[str]) -> None:
    """``count`` chip pairs named by tile key, hard links to the templates."""
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(folder, sub))
        for i in range(count):
            os.link(
                os.path.join(templates, sub, names[i % len(names)] + ".tif"),
                os.path.join(folder, sub, f"256#0#10.0#13#{i % 100}#{i // 100}.tif"),
            )
    statistics = {
        "bands": [{"name": n, "mean": 0, "std": 1, "min": 0, "max": 255} for n in ("red", "green", "blue")],
        "class_counts": {},
    }
    with open(os.path.join(folder, "manifest.json"), "w") as stream:
        json.dump({"statistics": statistics, "class_names": {str(c): f"class {c}" for c in range(4)}}, stream)


def _naive(chips: str, out: str, mode: str) -> tuple[float, float]:
    """Wall and CPU seconds per chip of the replaced loop, in one process, over the first pairs of ``chips``."""
    import rasterio
    import tensorflow as tf

    def feature(kind, values):
        lists = {"bytes_list": tf.train.BytesList, "int64_list": tf.train.Int64List}
        return tf.train.Feature(**{kind: lists[kind](value=values)})

    pairs = find_chip_pairs(chips).pairs[:BASELINE_SAMPLE]
    start, cpu = time.perf_counter(), cpu_seconds()
    with tf.io.TFRecordWriter(os.path.join(out, "naive.tfrecord")) as writer:
        for pair in pairs:
            with rasterio.open(pair.image_path) as src:
                image = src.read()
            with rasterio.open(pair.label_path) as src:
                label = src.read()
            if mode == "bytes":
                with open(pair.image_path, "rb") as a, open(pair.label_path, "rb") as b:
                    image_data, label_data = a.read(), b.read()
            else:
                image_data, label_data = image.transpose(1, 2, 0).tobytes(), label.transpose(1, 2, 0).tobytes()
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image/image_data": feature("bytes_list", [image_data]),
                        "target/target_data": feature("bytes_list", [label_data]),
                        "image/height": feature("int64_list", [image.shape[1]]),
                        "image/width": feature("int64_list", [image.shape[2]]),
                        "image/channels": feature("int64_list", [image.shape[0]]),
                        "target/height": feature("int64_list", [label.shape[1]]),
                        "target/width": feature("int64_list", [label.shape[2]]),
                        "identifier": feature("bytes_list", [pair.name.replace("#", ":").encode()]),
                    }
                )
            )
            writer.write(example.SerializeToString())
    return (time.perf_counter() - start) / len(pairs), (cpu_seconds() - cpu) / len(pairs)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")  # Linux: resets VmHWM to the current resident size


def _ours(chips: str, out: str, mode: str, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of `write_tfrecords` over the whole folder."""
    shutil.rmtree(out, ignore_errors=True)
    start, cpu = time.perf_counter(), cpu_seconds()
    write_tfrecords(chips, out, WriterOptions(records=RecordOptions(mode), shards=8, workers=workers))
    return time.perf_counter() - start, cpu_seconds() - cpu


def _bare(chips: str, out: str, mode: str, workers: int, statistics: bool, exact: bool) -> tuple[float, float]:
    """Wall and CPU seconds of `write_tfrecords` of a folder without a manifest."""
    shutil.rmtree(out, ignore_errors=True)
    options = WriterOptions(
        records=RecordOptions(mode), shards=8, workers=workers, statistics=statistics, exact_statistics=exact
    )
    start, cpu = time.perf_counter(), cpu_seconds()
    write_tfrecords(chips, out, options)
    return time.perf_counter() - start, cpu_seconds() - cpu


def statistics_cost(tmp: str, templates: str, names: list[str], workers: int) -> Iterator[Result]:
    """Default statistics against --no-statistics (and --exact-statistics) on a folder without a manifest."""
    folder = os.path.join(tmp, "bare")
    _generate(folder, CHIPS, templates, names)
    os.remove(os.path.join(folder, "manifest.json"))
    out = os.path.join(tmp, "bare-out")
    variants = {"none": (False, False), "default": (True, False), "exact": (True, True)}
    for mode in ("bytes", "array"):
        # Rounds interleave the variants, so that a slow spell of the shared cores does not fall on one.
        rounds = [
            {variant: _bare(folder, out, mode, workers, *flags) for variant, flags in variants.items()}
            for _ in range(ROUNDS)
        ]
        runs = {variant: min(r[variant] for r in rounds) for variant in variants}
        yield Result(
            name=f"records.statistics_cost.{mode}",
            unit="s",
            figure=runs["default"][0],
            baseline=runs["none"][0],
            goal_ratio=0.8,
            higher_is_better=False,
            details={
                "chips": CHIPS,
                "workers": workers,
                "baseline_is": "the same run with --no-statistics",
                "default_over_no_statistics_wall": round(runs["default"][0] / runs["none"][0], 3),
                "default_over_no_statistics_cpu": round(runs["default"][1] / runs["none"][1], 3),
                "exact_over_no_statistics_wall": round(runs["exact"][0] / runs["none"][0], 3),
                "exact_over_no_statistics_cpu": round(runs["exact"][1] / runs["none"][1], 3),
                "cpu_ms_per_chip": {v: round(c / CHIPS * 1e3, 3) for v, (_, c) in runs.items()},
            },
        )
    shutil.rmtree(out, ignore_errors=True)


def _fastest(measure, *args) -> tuple[float, float]:
    """The (wall, CPU) seconds of the fastest of ``ROUNDS`` runs of ``measure(*args)``."""
    return min(measure(*args) for _ in range(ROUNDS))


def run() -> Iterator[Result]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # loaded up front: neither side is timed loading it

    del tf
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="tfchips-bench-") as tmp:
        templates = os.path.join(tmp, "templates")
        names = _templates(templates)
        folders = {"half": os.path.join(tmp, "half"), "full": os.path.join(tmp, "full")}
        _generate(folders["half"], CHIPS // 2, templates, names)
        _generate(folders["full"], CHIPS, templates, names)
        naive_out = os.path.join(tmp, "naive")
        os.makedirs(naive_out)
        for mode in ("bytes", "array"):
            baseline = {size: _fastest(_naive, folder, naive_out, mode) for size, folder in folders.items()}
            peaks, ours = {}, {}
            for size, folder in folders.items():
                _reset_peak()
                ours[size] = _fastest(_ours, folder, os.path.join(tmp, "out"), mode, workers)
                peaks[size] = _peak_rss_mb()
            shutil.rmtree(os.path.join(tmp, "out"))
            count = {"half": CHIPS // 2, "full": CHIPS}
            yield Result(
                name=f"records.to_tfrecords.{mode}",
                unit="chips/s",
                figure=CHIPS / ours["full"][0],
                baseline=1 / baseline["full"][0],
                goal_ratio=GOALS[mode],
                details={
                    "chips": CHIPS,
                    "workers": workers,
                    "seconds": round(ours["full"][0], 2),
                    "baseline_is": "naive single-process rasterio read + tf.train.Example + TFRecordWriter",
                    "baseline_ms_per_chip": round(baseline["full"][0] * 1e3, 2),
                    "cpu_ms_per_chip": round(ours["full"][1] / CHIPS * 1e3, 2),
                    "baseline_cpu_ms_per_chip": round(baseline["full"][1] * 1e3, 2),
                    "chips_per_s_half_folder": round(count["half"] / ours["half"][0], 1),
                    "baseline_ms_per_chip_half_folder": round(baseline["half"][0] * 1e3, 2),
                    "peak_rss_mb_half_folder": round(peaks["half"], 1),
                    "peak_rss_mb_full_folder": round(peaks["full"], 1),
                },
            )
        yield from statistics_cost(tmp, templates, names, workers)
