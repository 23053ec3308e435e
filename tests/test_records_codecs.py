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
    with pytest.raises(RecordError, match=r"chip\.tif: float32 .* use `encoding='array'`"):
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


def patch_tag(data: bytes, tag: int, count: int | None = None, values: tuple[int, ...] | None = None) -> bytes:
    """A classic little-endian TIFF with the count (or the first 16-bit values) of one first-IFD tag replaced."""
    import struct

    patched = bytearray(data)
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack_from("<H", data, at)[0] == tag:
            if count is not None:
                struct.pack_into("<I", patched, at + 4, count)
            if values is not None:
                struct.pack_into(f"<{len(values)}H", patched, struct.unpack_from("<I", data, at + 8)[0], *values)
            return bytes(patched)
    raise AssertionError(f"no tag {tag}")


@pytest.mark.parametrize(
    "damage, transform",
    [
        ("geokeys claim 50 keys", Affine(10, 0, 500000, 0, -10, 4000000)),
        ("short pixel scale", Affine(10, 0, 500000, 0, -10, 4000000)),
        ("short transformation", Affine(2, 0.5, 1000, 0.25, -2, 5000)),
        ("empty width", Affine(10, 0, 500000, 0, -10, 4000000)),
    ],
)
def test_malformed_geotiff_tags_leave_the_header_to_gdal(tmp_path, damage, transform):
    from tfchips.chips import ChipPair
    from tfchips.records import RecordOptions
    from tfchips.records.writer import BadChip, EncodedChip, encode_or_bad

    path = write_raster(str(tmp_path / "images" / "x.tif"), np.ones((1, 8, 8), "uint8"), transform=transform)
    write_raster(str(tmp_path / "labels" / "x.tif"), np.ones((1, 8, 8), "uint8"), transform=transform)
    data = open(path, "rb").read()
    if damage == "geokeys claim 50 keys":
        data = patch_tag(data, 34735, values=(1, 1, 0, 50))
    elif damage == "short pixel scale":
        data = patch_tag(data, 33550, count=1)
    elif damage == "short transformation":
        data = patch_tag(data, 34264, count=4)
    else:
        data = patch_tag(data, 256, count=0)
    open(path, "wb").write(data)
    assert read_geotiff_header(path, data) is None
    pair = ChipPair("x", None, path, str(tmp_path / "labels" / "x.tif"))
    assert isinstance(encode_or_bad(pair, RecordOptions("bytes")), (EncodedChip, BadChip))  # never a bare error


def record_of(**changes) -> bytes:
    """A tfchips record of a 2 x 2 uint8 image and label, with some features replaced (None: left out)."""
    from tfchips.records.example import bytes_feature, int64_feature, serialize_example

    features = {
        "name": bytes_feature([b"chip"]),
        "key": bytes_feature([b""]),
        "crs": bytes_feature([b""]),
        "transform": bytes_feature([b"\0" * 48]),
    }
    for side in ("image", "label"):
        features[f"{side}/encoding"] = bytes_feature([b"array"])
        features[f"{side}/format"] = bytes_feature([b"raw"])
        features[f"{side}/data"] = bytes_feature([bytes(4)])
        features[f"{side}/shape"] = int64_feature([2, 2, 1])
        features[f"{side}/dtype"] = bytes_feature([b"uint8"])
        features[f"{side}/band_names"] = bytes_feature([b"b"])
    features.update(changes)
    return serialize_example({k: v for k, v in features.items() if v is not None})


def test_decode_example_reports_bad_records_as_record_errors():
    from tfchips.records import decode_example
    from tfchips.records.example import bytes_feature

    assert decode_example(record_of()).image.shape == (2, 2, 1)
    with pytest.raises(RecordError, match="not a tf.train.Example"):
        decode_example(b"\xff\xff\xff")
    with pytest.raises(RecordError, match=r"record 'chip': label data do not decode as array uint8 \[2, 2, 1\]"):
        decode_example(record_of(**{"label/data": bytes_feature([bytes(10)])}))
    with pytest.raises(RecordError, match=r"record 'chip': .*missing or malformed feature 'image/shape'"):
        decode_example(record_of(**{"image/shape": None}))


def test_decode_example_of_a_legacy_record_without_a_feature_names_it():
    from tfchips.records import decode_example
    from tfchips.records.codecs import encode_pixels
    from tfchips.records.schema import build_legacy_record

    raster = encode_pixels(np.zeros((2, 2, 1), "uint8"), "array", "x")
    example = tf.train.Example.FromString(build_legacy_record("chip", None, raster, raster))
    spec = {"encoding": "array", "dtype": "uint8", "shape": [2, 2, 1], "band_names": ["b"]}
    dataset = {"image": spec, "label": spec}
    assert decode_example(example.SerializeToString(), dataset).label.shape == (2, 2, 1)
    del example.features.feature["target/height"]
    with pytest.raises(RecordError, match=r"legacy record 'chip': .*'target/height'"):
        decode_example(example.SerializeToString(), dataset)


@pytest.mark.parametrize(
    "encoding,dtype,bands",
    [("array", "float64", 3), ("array", "uint32", 1), ("png", "uint16", 13), ("png", "int16", 2), ("png", "int8", 5)],
)
def test_raster_spec_encodes_and_decodes_in_numpy_in_graph_and_json_alike(encoding, dtype, bands):
    import json

    import tensorflow as tf

    from tfchips.records.json_fields import JsonFields
    from tfchips.records.raster_spec import RasterSpec

    pixels = random_pixels(np.random.default_rng(bands), bands, dtype, size=12).transpose(1, 2, 0)
    spec = RasterSpec.stored(encoding, "raw" if encoding == "array" else "png", pixels.shape, dtype, ("b",) * bands)
    payload = spec.encode(pixels)
    assert len(payload.data) == len(spec.parts) and sum(spec.parts) == bands
    numpy = spec.decode(payload.data)
    graph = tf.function(lambda data: spec.decode_tensor(data, tf.constant(pixels.shape, tf.int32)))(
        tf.constant(payload.data)
    )
    assert numpy.dtype == pixels.dtype and graph.dtype.name == dtype
    np.testing.assert_array_equal(numpy, pixels)
    np.testing.assert_array_equal(graph.numpy(), pixels)
    # Chips of varying size: rows and columns come from the record.
    unsized = RasterSpec.stored(encoding, spec.format, (None, None, bands), dtype, spec.band_names)
    np.testing.assert_array_equal(unsized.decode(payload.data, pixels.shape), pixels)
    through_json = json.loads(json.dumps(spec.as_json()))
    assert RasterSpec.from_json(JsonFields(through_json, "image", "dataset.json")) == spec
    through_json["parts"] = [1] * bands
    if encoding == "png":
        with pytest.raises(RecordError, match=r"dataset\.json: image\.parts: .* is not how png holds"):
            RasterSpec.from_json(JsonFields(through_json, "image", "dataset.json"))


def test_decode_example_refuses_a_record_band_count_before_sizing_anything():
    from tfchips.records import decode_example

    record = record_of(**{"image/shape": int64_feature([16, 16, 2**40]), "image/encoding": bytes_feature([b"png"])})
    with pytest.raises(RecordError, match=r"image shape \[16, 16, 1099511627776\]: 1099511627776 bands, not 1\.\.4096"):
        decode_example(record)
