"""Band statistics and class counts, per chip and merged over a dataset.

Per-chip moments are merged with Chan's pairwise formula in record order, so the
totals are the same bits whatever the number of workers. Bands of unsigned
integers of up to 16 bits are counted by value (`numpy.bincount`), and their
moments computed from those counts in integer arithmetic: exact, and about five
times faster than the floating-point pass the other dtypes take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class BandMoments:
    """Count, mean, sum of squared deviations, min and max of one band's valid pixels.

    ``sums`` (sum of values, sum of squares, as exact integers) is kept for integer
    bands counted by histogram: merging adds them exactly, so the merged moments have
    the same bits in whatever order tiles are merged (a Beam combiner's order is its
    own). Otherwise Chan's pairwise formula keeps the variance exact where sums of
    squares of large values would cancel.
    """

    count: int
    mean: float
    m2: float
    minimum: float
    maximum: float
    sums: tuple[int, int] | None = None

    @classmethod
    def of_sums(cls, count: int, total: int, squares: int, minimum: float, maximum: float) -> BandMoments:
        """Moments from exact integer sums, each rounded once: n * sum(x^2) - sum(x)^2 is exact."""
        return cls(count, total / count, (count * squares - total * total) / count, minimum, maximum, (total, squares))

    def merge(self, other: BandMoments) -> BandMoments:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        minimum, maximum = min(self.minimum, other.minimum), max(self.maximum, other.maximum)
        if self.sums is not None and other.sums is not None:
            total, squares = self.sums[0] + other.sums[0], self.sums[1] + other.sums[1]
            return BandMoments.of_sums(count, total, squares, minimum, maximum)
        delta = other.mean - self.mean
        return BandMoments(
            count,
            self.mean + delta * other.count / count,
            self.m2 + other.m2 + delta * delta * self.count * other.count / count,
            minimum,
            maximum,
        )


@dataclass(frozen=True, slots=True)
class ChipStatistics:
    """Moments per image band and pixel count per label class value."""

    bands: tuple[BandMoments, ...]
    class_counts: tuple[tuple[str, int], ...]

    def merge(self, other: ChipStatistics) -> ChipStatistics:
        counts = dict(self.class_counts)
        for value, count in other.class_counts:
            counts[value] = counts.get(value, 0) + count
        return ChipStatistics(
            tuple(a.merge(b) for a, b in zip(self.bands, other.bands)),
            tuple(sorted(counts.items(), key=lambda item: _class_order(item[0]))),
        )


def _class_order(value: str) -> tuple[float, str]:
    try:
        return (float(value), value)
    except ValueError:
        return (math.inf, value)


def valid_values(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """The values that are neither NaN nor ``nodata``."""
    keep = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        keep &= values != nodata
    return values[keep]


def _moments(values: np.ndarray) -> BandMoments:
    if values.size == 0:
        return BandMoments(0, 0.0, 0.0, math.inf, -math.inf)
    as_float = values.astype(np.float64)
    mean = float(as_float.mean())
    return BandMoments(
        int(values.size), mean, float(np.square(as_float - mean).sum()), float(values.min()), float(values.max())
    )


def _histogram(values: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Pixel count per value of a 1-D unsigned integer array of up to 16 bits, ``nodata`` left out; else None."""
    if values.dtype.kind != "u" or values.dtype.itemsize > 2:
        return None
    counts = np.bincount(values)
    if nodata is not None and not math.isnan(nodata) and float(nodata).is_integer() and 0 <= nodata < counts.size:
        counts[int(nodata)] = 0
    return counts


def _histogram_moments(counts: np.ndarray) -> BandMoments:
    values = np.flatnonzero(counts)
    if values.size == 0:
        return _moments(np.empty(0))
    frequencies = counts[values].astype(np.int64)
    values = values.astype(np.int64)
    n, total, squares = int(frequencies.sum()), int(frequencies @ values), int(frequencies @ (values * values))
    return BandMoments.of_sums(n, total, squares, float(values[0]), float(values[-1]))


def _band_moments(band: np.ndarray, nodata: float | None) -> BandMoments:
    counts = _histogram(band, nodata)
    return _moments(valid_values(band, nodata)) if counts is None else _histogram_moments(counts)


def _class_label(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def chip_statistics(
    image: np.ndarray,
    image_nodata: float | None,
    label: np.ndarray,
    label_nodata: float | None,
    valid: np.ndarray | None = None,
) -> ChipStatistics:
    """Statistics of one chip pair, (rows, cols, bands) arrays; nodata and NaN pixels are left out.

    ``valid`` (rows, cols), when given, further restricts the image pixels counted.
    """
    # Band-sequential once: counting a strided band would copy it anyway.
    planes = np.ascontiguousarray(np.moveaxis(image, 2, 0)).reshape(image.shape[2], -1)
    if valid is not None:
        planes = planes[:, valid.ravel()]
    bands = tuple(_band_moments(plane, image_nodata) for plane in planes)
    frequencies = _histogram(label.ravel(), label_nodata)
    if frequencies is not None:
        values = np.flatnonzero(frequencies)
        counts = frequencies[values]
    else:
        values, counts = np.unique(valid_values(label.ravel(), label_nodata), return_counts=True)
    return ChipStatistics(bands, tuple((_class_label(v), int(c)) for v, c in zip(values, counts)))


def empty_statistics(bands: int) -> ChipStatistics:
    """Statistics of no pixels, the identity of `ChipStatistics.merge`."""
    return ChipStatistics(tuple(_moments(np.empty(0)) for _ in range(bands)), ())


def statistics_json(statistics: ChipStatistics, band_names: tuple[str, ...]) -> dict:
    """The manifest's ``{"bands": [...], "class_counts": {...}}`` form (population std)."""

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "bands": [
            {
                "name": name,
                "mean": finite(m.mean) if m.count else None,
                "std": finite(math.sqrt(m.m2 / m.count)) if m.count else None,
                "min": finite(m.minimum),
                "max": finite(m.maximum),
                "count": m.count,
            }
            for name, m in zip(band_names, statistics.bands)
        ],
        "class_counts": dict(statistics.class_counts),
    }
