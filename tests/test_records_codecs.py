"""Record building blocks: PNG encoder, Example serializer, GeoTIFF header parser."""

from __future__ import annotations

import os

import numpy as np
import pytest
from affine import Affine
from test_chips_reader import random_pixels, write_raster

from tfchips.chips import read_chip_header
from tfchips.errors import ChipError, RecordError
from tfchips.records.codecs import decode_payload, encode_pixels, encode_png, png_channels
from tfchips.records.example import bytes_feature, float_feature, int64_feature, serialize_example
from tfchips.records.geotiff import read_geotiff_header

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_is_lossless_through_tensorflow(dtype, channels):
    pixels = random_pixels(np.random.default_rng(channels), channels, dtype, size=9).transpose(1, 2, 0)
    decoded = tf.io.decode_png(encode_png(pixels), channels=0, dtype=tf.as_dtype(dtype)).numpy()
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint16"])
def test_png_payload_of_13_bands_splits_in_fours_and_comes_back(dtype):
    pixels = random_pixels(np.random.default_rng(1), 13, dtype).transpose(1, 2, 0)
    encoded = encode_pixels(pixels, "png", "chip.tif")
    assert png_channels(13) == (4, 4, 4, 1) and len(encoded.data) == 4
    restored = decode_payload("png", encoded.data, encoded.shape, encoded.dtype)
    assert restored.dtype == pixels.dtype
    np.testing.assert_array_equal(restored, pixels)


def test_png_refuses_float_pixels_and_points_to_array():
    with pytest.raises(RecordError, match=r"chip\.tif: float32 .* use --encoding array"):
        encode_pixels(np.zeros((2, 2, 1), "float32"), "png", "chip.tif")


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint32", "float32", "float64"])
def test_array_payload_round_trips_any_dtype(dtype):
    pixels = random_pixels(np.random.default_rng(2), 5, dtype).transpose(1, 2, 0)
    encoded = encode_pixels(pixels, "array", "chip.tif")
    assert encoded.data[0] == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    np.testing.assert_array_equal(decode_payload("array", encoded.data, encoded.shape, dtype), pixels)


def test_serialized_example_parses_in_tensorflow_and_is_canonical():
    features = {
        "b": bytes_feature([b"x" * 300, b""]),
        "i": int64_feature([1, -5, 2**40]),
        "f": float_feature(np.array([1.5, -2.25])),
    }
    record = serialize_example(features)
    example = tf.train.Example.FromString(record)
    assert list(example.features.feature["b"].bytes_list.value) == [b"x" * 300, b""]
    assert list(example.features.feature["i"].int64_list.value) == [1, -5, 2**40]
    assert list(example.features.feature["f"].float_list.value) == [1.5, -2.25]
    assert example.SerializeToString(deterministic=True) == record
    assert serialize_example(dict(reversed(features.items()))) == record  # key order does not matter


@pytest.mark.parametrize(
    "case",
    [
        dict(bands=3, dtype="uint8", crs="EPSG:32613", options={"compress": "lzw"}),
        dict(
            bands=4,
            dtype="uint16",
            crs="EPSG:32613",
            nodata=0,
            options={"tiled": True, "blockxsize": 16, "blockysize": 16},
        ),
        dict(bands=13, dtype="float32", crs="EPSG:4326", transform=Affine(0.001, 0, -105.1, 0, -0.001, 35.7)),
        dict(bands=2, dtype="int16", crs="EPSG:3857", transform=Affine(2, 0.5, 1000, 0.25, -2, 5000)),
        dict(bands=1, dtype="float64", crs="EPSG:32613", nodata=float("nan"), options={"BIGTIFF": "YES"}),
    ],
)
def test_geotiff_header_matches_gdal(tmp_path, case):
    path = write_raster(
        str(tmp_path / "chip.tif"),
        random_pixels(np.random.default_rng(3), case["bands"], case["dtype"]),
        crs=case["crs"],
        transform=case.get("transform", Affine(10, 0, 500000, 0, -10, 4000000)),
        nodata=case.get("nodata"),
        names=[f"band {b} & more" for b in range(case["bands"] - 1)] + [""],
        **case.get("options", {}),
    )
    ours = read_geotiff_header(path, open(path, "rb").read())
    gdal = read_chip_header(path)
    assert ours is not None
    if case.get("nodata") is not None and np.isnan(case["nodata"]):
        assert np.isnan(ours.georeference.nodata) and np.isnan(gdal.georeference.nodata)
        ours, gdal = (
            h.georeference.__class__(h.georeference.crs, h.georeference.transform, h.georeference.band_names, None)
            for h in (ours, gdal)
        )
    assert ours == gdal


def test_geotiff_header_leaves_unusual_files_to_gdal(tmp_path):
    pixels = np.zeros((1, 4, 4), "uint8")
    no_crs = write_raster(str(tmp_path / "no_crs.tif"), pixels, crs=None)
    assert read_geotiff_header(no_crs, open(no_crs, "rb").read()) is None  # GDAL may find a world file
    custom = write_raster(str(tmp_path / "custom.tif"), pixels, crs="+proj=tmerc +lon_0=7 +k=0.9 +x_0=1 +ellps=GRS80")
    assert read_geotiff_header(custom, open(custom, "rb").read()) is None
    with_aux = write_raster(str(tmp_path / "aux.tif"), pixels)
    open(with_aux + ".aux.xml", "w").write("<PAMDataset/>")
    assert read_geotiff_header(with_aux, open(with_aux, "rb").read()) is None
    assert read_geotiff_header("x.png", b"\x89PNG\r\n\x1a\n") is None


def test_truncated_geotiff_is_reported(tmp_path):
    path = write_raster(str(tmp_path / "chip.tif"), random_pixels(np.random.default_rng(4), 3, "uint8"))
    data = open(path, "rb").read()
    with pytest.raises(ChipError, match=r"chip\.tif: truncated TIFF"):
        read_geotiff_header(path, data[: len(data) - 200])
    with pytest.raises(ChipError, match=r"chip\.tif: truncated TIFF"):
        read_geotiff_header(path, data[:12])
