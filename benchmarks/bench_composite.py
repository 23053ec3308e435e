"""Composite of 16 scenes x 4 bands x 512 x 512 uint16, against plain numpy in the same run.

- median: `tfchips.composite.median` against ``np.nanmedian`` over a float32 copy with NaN
  where a pixel is masked (what one writes without tfchips);
- closest: `scene_order` + `first_valid` against an ``argsort`` of per-pixel ranks.

Both pairs must give identical pixels; the figure is megapixels (rows x cols) per second.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import numpy as np

from benchmarks.result import Result, best_seconds
from tfchips.composite import first_valid, median, scene_order

SCENES, BANDS, ROWS, COLS = 16, 4, 512, 512


def _stack(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 10000, (SCENES, BANDS, ROWS, COLS), dtype=np.uint16)
    # Clouds come in blobs: mask 16 x 16 blocks, about a third of each scene.
    blocks = rng.random((SCENES, ROWS // 16, COLS // 16)) < 0.35
    valid = ~np.repeat(np.repeat(blocks, 16, axis=1), 16, axis=2)
    return data, valid


def _nanmedian(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = np.where(valid[:, np.newaxis], data.astype(np.float32), np.float32(np.nan))
    middle = np.nanmedian(values, axis=0)
    return np.where(np.isnan(middle), 0, np.floor(middle + 0.5)).astype(data.dtype)


def _argsort_closest(data: np.ndarray, valid: np.ndarray, order: np.ndarray) -> np.ndarray:
    rank = np.empty(SCENES, dtype=np.int64)
    rank[order] = np.arange(SCENES)
    keys = np.where(valid, rank[:, np.newaxis, np.newaxis], SCENES)
    best = np.argsort(keys, axis=0, kind="stable")[0]
    out = np.take_along_axis(data, best[np.newaxis, np.newaxis], axis=0)[0]
    out[:, ~valid.any(axis=0)] = 0
    return out


def run() -> Iterator[Result]:
    data, valid = _stack()
    megapixels = ROWS * COLS / 1e6
    start = datetime(2023, 6, 1, tzinfo=timezone.utc)
    dates = [start + timedelta(days=5 * i) for i in range(SCENES)]
    clouds = [float(c) for c in np.random.default_rng(1).integers(0, 60, SCENES)]
    ids = [f"scene-{i:02d}" for i in range(SCENES)]
    reference = start + timedelta(days=37)

    def closest():
        return first_valid(data, valid, scene_order("closest", dates, clouds, ids, reference)).data

    order = scene_order("closest", dates, clouds, ids, reference)
    if not np.array_equal(median(data, valid).data, _nanmedian(data, valid)):
        raise AssertionError("median differs from np.nanmedian")
    if not np.array_equal(closest(), _argsort_closest(data, valid, order)):
        raise AssertionError("closest differs from the argsort baseline")

    shape = {"scenes": SCENES, "bands": BANDS, "rows": ROWS, "cols": COLS, "dtype": "uint16"}
    ours = best_seconds(lambda: median(data, valid), repeat=3)
    baseline = best_seconds(lambda: _nanmedian(data, valid), repeat=2)
    yield Result(
        name="composite.median",
        unit="Mpx/s",
        figure=megapixels / ours,
        baseline=megapixels / baseline,
        goal_ratio=3,
        details={**shape, "baseline_is": "np.nanmedian over float32 with NaN"},
    )
    ours = best_seconds(closest, repeat=5)
    baseline = best_seconds(lambda: _argsort_closest(data, valid, order), repeat=3)
    yield Result(
        name="composite.closest",
        unit="Mpx/s",
        figure=megapixels / ours,
        baseline=megapixels / baseline,
        goal_ratio=2,
        details={**shape, "baseline_is": "argsort of per-pixel scene ranks"},
    )
