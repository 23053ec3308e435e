"""Figures of decoded chips: band statistics, pixel samples, histograms, class shares, valid fractions.

`chip_figures` gathers what one chip contributes; the summaries merge them over a
dataset in any order (pixel samples are seeded by chip name, so a uniform sample
whatever the order).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tfchips.chips import valid_pixels
from tfchips.statistics import ChipStatistics, chip_statistics, statistics_json, valid_values

if TYPE_CHECKING:  # the reader formats its layouts with format_number
    from tfchips.dataset_reader import DecodedChip, RasterLayout

# Pixel values kept per band, a uniform random sample, for histograms and percentiles.
SAMPLE_SIZE = 100_000
HISTOGRAM_BINS = 50
VALID_FRACTION_BINS = 10
PERCENTILES = (2.0, 50.0, 98.0)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts of values in ``len(edges) - 1`` bins; the last bin includes its upper edge."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def as_json(self) -> dict:
        return {"edges": list(self.edges), "counts": list(self.counts)}


@dataclass(frozen=True, slots=True)
class BandSummary:
    """Statistics of one band over valid pixels (not nodata, not NaN), in the band's units.

    ``percentiles`` (2nd, 50th, 98th) and ``histogram`` come from a uniform random
    sample of ``sample_size`` valid pixels; the others are exact.
    """

    name: str
    count: int
    mean: float | None
    std: float | None
    minimum: float | None
    maximum: float | None
    percentiles: tuple[float, ...]
    histogram: Histogram
    sample_size: int

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "min": self.minimum,
            "max": self.maximum,
            "percentiles": {f"p{p:g}": v for p, v in zip(PERCENTILES, self.percentiles)},
            "histogram": self.histogram.as_json(),
            "sample_size": self.sample_size,
        }


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """Label pixels of one class value; ``frequency`` is their share of all non-ignored pixels."""

    value: str
    name: str | None
    pixels: int
    frequency: float


@dataclass(frozen=True, slots=True)
class FractionSummary:
    """Distribution over chips of the fraction of pixels valid in every band."""

    minimum: float | None
    mean: float | None
    median: float | None
    maximum: float | None
    histogram: Histogram


@dataclass(frozen=True, slots=True)
class ChipEntry:
    """One decoded chip: its name, tile key, split (records only) and valid-pixel fraction."""

    name: str
    key: str | None
    split: str | None
    valid_fraction: float



def format_number(value: float | None) -> str:
    """A figure for people: thousands separated, one decimal from 100 on, else four significant digits."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"



@dataclass(frozen=True, slots=True)
class ChipFigures:
    """What one chip contributes to an `Inspection`.

    ``samples`` holds per band (keys, values): every valid value with a random key
    in [0, 1) seeded by the chip name, so that keeping the smallest keys over a
    dataset is a uniform sample whatever the order chips come in.
    """

    entry: ChipEntry
    layouts: tuple[RasterLayout, RasterLayout]
    statistics: ChipStatistics
    ignored_pixels: int
    samples: tuple[tuple[np.ndarray, np.ndarray], ...]


def chip_figures(chip: DecodedChip, sample_size: int = SAMPLE_SIZE) -> ChipFigures:
    """Statistics, valid fraction and pixel samples of one chip."""
    image_nodata, label_nodata = chip.image_layout.nodata, chip.label_layout.nodata
    statistics = chip_statistics(chip.image, image_nodata, chip.label[:, :, np.newaxis], label_nodata)
    rng = np.random.default_rng(zlib.crc32(chip.name.encode("utf-8")))
    samples = []
    for band in range(chip.image.shape[2]):
        values = valid_values(chip.image[:, :, band].ravel(), image_nodata)
        samples.append(_smallest(rng.random(values.size), values.astype(np.float64), sample_size))
    counted = sum(count for _, count in statistics.class_counts)
    entry = ChipEntry(chip.name, chip.key, chip.split, float(valid_pixels(np.moveaxis(chip.image, -1, 0), image_nodata).mean()))
    return ChipFigures(entry, (chip.image_layout, chip.label_layout), statistics, chip.label.size - counted, tuple(samples))


def _smallest(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if keys.size <= size:
        return keys, values
    kept = np.argpartition(keys, size)[:size]
    return keys[kept], values[kept]


class PixelSample:
    """The ``size`` values of smallest key seen so far; compacts when twice as many are held."""

    def __init__(self, size: int):
        self.size = size
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.held = 0

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys.append(keys)
        self.values.append(values)
        self.held += keys.size
        if self.held > 2 * self.size:
            self._compact()

    def _compact(self) -> None:
        keys, values = _smallest(np.concatenate(self.keys or [np.empty(0)]), np.concatenate(self.values or [np.empty(0)]), self.size)
        self.keys, self.values, self.held = [keys], [values], keys.size

    def result(self) -> np.ndarray:
        self._compact()
        return self.values[0]


def _histogram(values: np.ndarray, low: float, high: float, bins: int) -> Histogram:
    if values.size == 0:
        return Histogram((), ())
    if low == high:
        return Histogram((low, high), (int(values.size),))
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in counts))


def band_summaries(statistics: ChipStatistics | None, band_names: tuple[str, ...], samples: list[PixelSample]) -> tuple[BandSummary, ...]:
    if statistics is None:
        return ()
    summaries = []
    for band, sample in zip(statistics_json(statistics, band_names)["bands"], samples):
        values = sample.result()
        percentiles = tuple(float(v) for v in np.percentile(values, PERCENTILES)) if values.size else ()
        low, high = (band["min"], band["max"]) if band["count"] else (0.0, 0.0)
        summaries.append(
            BandSummary(
                band["name"], band["count"], band["mean"], band["std"], band["min"], band["max"],
                percentiles, _histogram(values, low, high, HISTOGRAM_BINS), int(values.size),
            )
        )
    return tuple(summaries)


def class_summaries(statistics: ChipStatistics | None, class_names: dict[str, str] | None) -> tuple[ClassSummary, ...]:
    counts = dict(statistics.class_counts) if statistics else {}
    names = class_names or {}
    for value in names:
        counts.setdefault(value, 0)
    total = sum(counts.values())

    def order(value: str) -> tuple[float, str]:
        try:
            return (float(value), value)
        except ValueError:
            return (math.inf, value)

    return tuple(
        ClassSummary(value, names.get(value), counts[value], counts[value] / total if total else 0.0)
        for value in sorted(counts, key=order)
    )


def fraction_summary(fractions: list[float]) -> FractionSummary:
    edges = tuple(i / VALID_FRACTION_BINS for i in range(VALID_FRACTION_BINS + 1))
    if not fractions:
        return FractionSummary(None, None, None, None, Histogram(edges, (0,) * VALID_FRACTION_BINS))
    values = np.asarray(fractions)
    counts, _ = np.histogram(values, bins=np.asarray(edges))
    return FractionSummary(
        float(values.min()), float(values.mean()), float(np.median(values)), float(values.max()),
        Histogram(edges, tuple(int(c) for c in counts)),
    )

