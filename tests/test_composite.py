"""Per-pixel composites over small stacks with known values."""

from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfchips.composite import composite, first_valid, median, scene_order


def day(d: int) -> datetime:
    return datetime(2023, 6, d, tzinfo=timezone.utc)


# Four scenes: dates, cloud cover, ids.
DATES = [day(1), day(12), day(20), day(8)]
CLOUDS = [10.0, 5.0, 40.0, 5.0]
IDS = ["a", "b", "c", "d"]


def test_closest_orders_by_distance_then_cloud_then_id():
    # Reference June 10: b and d are both 2 days away with 5 % cloud; "b" < "d" wins.
    assert scene_order("closest", DATES, CLOUDS, IDS, day(10)).tolist() == [1, 3, 0, 2]
    # With d cloudier, the cloud cover breaks the tie instead.
    assert scene_order("closest", DATES, [10.0, 5.0, 40.0, 6.0], IDS, day(10)).tolist() == [1, 3, 0, 2]
    assert scene_order("closest", DATES, [10.0, 6.0, 40.0, 5.0], IDS, day(10)).tolist() == [3, 1, 0, 2]


def test_order_does_not_depend_on_input_order():
    permutation = [2, 0, 3, 1]
    order = scene_order(
        "closest",
        [DATES[i] for i in permutation],
        [CLOUDS[i] for i in permutation],
        [IDS[i] for i in permutation],
        day(10),
    )
    assert [IDS[permutation[i]] for i in order] == ["b", "d", "a", "c"]


def test_latest_and_least_cloudy_orders():
    assert scene_order("latest", DATES, CLOUDS, IDS).tolist() == [2, 1, 3, 0]
    # b and d tie on 5 %: the more recent (b, June 12) first.
    assert scene_order("least-cloudy", DATES, CLOUDS, IDS).tolist() == [1, 3, 0, 2]
    # Unknown cloud cover ranks last.
    assert scene_order("least-cloudy", DATES, [None, 5.0, 40.0, 5.0], IDS).tolist() == [1, 3, 2, 0]


def test_scene_order_rejects_bad_method_and_missing_reference():
    with pytest.raises(ValueError, match="reference"):
        scene_order("closest", DATES, CLOUDS, IDS)
    with pytest.raises(ValueError, match="median"):
        scene_order("median", DATES, CLOUDS, IDS)


def _stack():
    """3 scenes x 2 bands x 2 x 3 pixels; band 1 = band 0 + 1."""
    values = np.array([10, 25, 30], dtype=np.uint16)
    data = np.empty((3, 2, 2, 3), dtype=np.uint16)
    data[:, 0] = values[:, None, None]
    data[:, 1] = values[:, None, None] + 1
    valid = np.ones((3, 2, 3), dtype=bool)
    valid[1, 0, 0] = valid[1, 0, 1] = False  # scene 1 masked on the two first pixels
    valid[0, 0, 0] = False  # scene 0 too on the first
    valid[2, 1, 0] = False  # scene 2 masked at (1, 0)
    valid[:, 1, 2] = False  # nothing valid at (1, 2)
    return data, valid


def test_first_valid_takes_every_band_of_the_first_valid_scene():
    data, valid = _stack()
    result = first_valid(data, valid, [1, 0, 2], nodata=0)
    assert result.data[0].tolist() == [[30, 10, 25], [25, 25, 0]]
    assert result.data[1].tolist() == [[31, 11, 26], [26, 26, 0]]
    assert result.valid.tolist() == [[True, True, True], [True, True, False]]
    assert result.used.tolist() == [True, True, True]


def test_first_valid_never_uses_scenes_left_out_of_the_order():
    data, valid = _stack()
    result = first_valid(data, valid, [1], nodata=7)
    assert result.data[0].tolist() == [[7, 7, 25], [25, 25, 7]]
    assert result.used.tolist() == [False, True, False]


def test_median_of_valid_values_rounds_half_up_for_integers():
    data, valid = _stack()
    result = median(data, valid, nodata=0)
    # (0,0): only 30; (0,1): 10, 30 -> 20; (1,0): 10, 25 -> 17.5 -> 18; else 10, 25, 30 -> 25.
    assert result.data[0].tolist() == [[30, 20, 25], [18, 25, 0]]
    assert result.data[1].tolist() == [[31, 21, 26], [19, 26, 0]]
    assert result.data.dtype == np.uint16
    assert result.valid.tolist() == [[True, True, True], [True, True, False]]


def test_median_keeps_the_largest_value_of_the_dtype():
    data = np.array([65535, 65535, 1], dtype=np.uint16).reshape(3, 1, 1, 1)
    valid = np.array([True, True, False]).reshape(3, 1, 1)
    assert median(data, valid).data.item() == 65535


def test_median_of_floats_ignores_masked_values():
    data = np.array([1.5, np.nan, 2.5, 100.0], dtype=np.float32).reshape(4, 1, 1, 1)
    valid = np.array([True, False, True, False]).reshape(4, 1, 1)
    result = median(data, valid, nodata=-1)
    assert result.data.item() == 2.0
    assert result.used.tolist() == [True, False, True, False]


def test_composite_dispatches_and_checks_arguments():
    data, valid = _stack()
    assert np.array_equal(composite(data, valid, "median").data, median(data, valid).data)
    assert np.array_equal(
        composite(data, valid, "latest", order=[2, 1, 0]).data, first_valid(data, valid, [2, 1, 0]).data
    )
    with pytest.raises(ValueError, match="scene order"):
        composite(data, valid, "closest")
    with pytest.raises(ValueError, match="unknown composite method"):
        composite(data, valid, "mean", order=[0])
    with pytest.raises(ValueError, match="valid mask"):
        median(data, valid[:, :1])


def test_empty_stack_gives_nodata_everywhere():
    data = np.zeros((0, 2, 3, 3), dtype=np.uint16)
    valid = np.zeros((0, 3, 3), dtype=bool)
    for result in (median(data, valid, nodata=9), first_valid(data, valid, [], nodata=9)):
        assert result.data.shape == (2, 3, 3) and (result.data == 9).all()
        assert not result.valid.any()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    data=hnp.arrays(np.uint16, st.tuples(st.integers(1, 6), st.just(2), st.integers(1, 4), st.integers(1, 4))),
    seed=st.integers(0, 2**16),
)
def test_median_matches_numpy_pixel_by_pixel(data, seed):
    valid = np.random.default_rng(seed).random((data.shape[0], *data.shape[2:])) < 0.6
    result = median(data, valid, nodata=0)
    for band in range(data.shape[1]):
        for row in range(data.shape[2]):
            for col in range(data.shape[3]):
                values = data[valid[:, row, col], band, row, col].astype(np.float64)
                expected = int(np.floor(np.median(values) + 0.5)) if values.size else 0
                assert result.data[band, row, col] == expected
