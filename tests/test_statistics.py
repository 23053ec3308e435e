"""Band statistics: counted by value for small unsigned integers, sampled by name unless exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_chips_reader import make_chip_folder

from tfchips.records import RecordOptions, WriterOptions, write_tfrecords
from tfchips.records.plan import SAMPLE_AT_LEAST, in_statistics_sample, statistics_rate
from tfchips.statistics import _moments, chip_statistics, valid_values


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize("nodata", [None, 7, 7.5, float("nan")])
@pytest.mark.parametrize("masked", [False, True])
def test_moments_by_value_equal_the_floating_point_pass(dtype, nodata, masked):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 250, (48, 40, 3)).astype(dtype)
    image[0, 0, 0] = 7
    label = rng.integers(0, 4, (48, 40, 1)).astype(np.uint8)
    valid = rng.random((48, 40)) > 0.3 if masked else None
    statistics = chip_statistics(image, nodata, label, 3, valid)
    for band, moments in enumerate(statistics.bands):
        values = image[:, :, band] if valid is None else image[:, :, band][valid]
        expected = _moments(valid_values(values, nodata))
        assert (moments.count, moments.minimum, moments.maximum) == (expected.count, expected.minimum, expected.maximum)
        assert math.isclose(moments.mean, expected.mean, rel_tol=1e-12)
        assert math.isclose(moments.m2, expected.m2, rel_tol=1e-9)
    assert dict(statistics.class_counts) == {str(v): int((label == v).sum()) for v in range(3)}


def test_sixteen_bit_moments_are_exact_where_floating_point_would_round():
    image = np.full((64, 64, 1), 65535, np.uint16)
    image[0, 0, 0] = 65534
    moments = chip_statistics(image, None, np.zeros((64, 64, 1), np.uint8), None).bands[0]
    n = image.size
    assert moments.m2 == (n - 1) / n  # one value off the mean by (n - 1) / n, the rest by 1 / n


def test_the_sample_rate_and_membership_are_per_name():
    assert statistics_rate(SAMPLE_AT_LEAST) == 1.0 and statistics_rate(10**6, exact=True) == 1.0
    assert statistics_rate(100) == SAMPLE_AT_LEAST / 100 and statistics_rate(10**6) == 1 / 64
    names = [f"256#0#10.0#13#{i % 100}#{i // 100}" for i in range(64_000)]
    sampled = sum(in_statistics_sample(name, 1 / 64) for name in names)
    assert abs(sampled - 1000) <= 3 * math.sqrt(1000)


def test_default_statistics_come_from_the_sample_and_exact_from_every_chip(tmp_path):
    folder = tmp_path / "chips"
    written = make_chip_folder(folder, "uint16", count=40)
    rate = statistics_rate(40)
    sampled = [name for name in written if in_statistics_sample(name, rate)]
    assert 0 < len(sampled) < 40
    for exact, names, source in ((False, sampled, "sample"), (True, list(written), "computed")):
        options = WriterOptions(RecordOptions("bytes"), shards=2, exact_statistics=exact)
        description = write_tfrecords(folder, tmp_path / source, options)
        assert description["statistics_source"] == source
        images = np.stack([written[name][0] for name in names]).astype(np.float64)
        for band, stats in enumerate(description["statistics"]["bands"]):
            assert stats["count"] == images[..., band].size
            assert stats["mean"] == pytest.approx(images[..., band].mean(), rel=1e-12)
            assert stats["std"] == pytest.approx(images[..., band].std(), rel=1e-9)


def test_integer_bands_merge_to_the_same_bits_in_any_order():
    # A Beam combiner merges tiles in its own order; the manifest must not depend on it.
    rng = np.random.default_rng(3)
    chips = [chip_statistics(rng.integers(0, 4000, (16, 16, 2), dtype=np.uint16), None,
                             rng.integers(0, 3, (16, 16), dtype=np.uint8), None) for _ in range(12)]
    orders = [list(range(12)), list(reversed(range(12))), list(rng.permutation(12))]
    merged = []
    for order in orders:
        total = chips[order[0]]
        for index in order[1:]:
            total = total.merge(chips[index])
        merged.append(total)
    pairwise = (chips[0].merge(chips[1])).merge(chips[2].merge(chips[3]))
    for index in range(4, 12):
        pairwise = pairwise.merge(chips[index])
    assert merged[0] == merged[1] == merged[2] == pairwise
