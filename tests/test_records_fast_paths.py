"""The writer's fast paths give what the slow ones would: libtiff pixels, TFRecord files, batched encoding."""

from __future__ import annotations

import hashlib
import itertools
import os

import numpy as np
import pytest
from test_chips_reader import random_pixels, write_raster

from tfchips.chips import ChipPair, find_chip_pairs, read_chip_pixels
from tfchips.records.encoder import RecordOptions, encode_chip_pair
from tfchips.records.geotiff import has_aux_file, libtiff_pixels, parse_geotiff
from tfchips.records.tfrecord import TFRecordFile
from tfchips.records.writer import BadChip, encode_batch, encode_or_bad, ordered_batch_map, worker_pool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

LOSSLESS = [("none", 1), ("lzw", 1), ("lzw", 2), ("deflate", 2), ("zstd", 1), ("packbits", 1), ("lzma", 1)]
DTYPES = ["uint8", "int16", "uint16", "int32", "float32", "float64"]
LAYOUTS = list(itertools.product(DTYPES, [1, 3, 13], ["pixel", "band"], [False, True]))


def _geotiff(path, pixels, compress, predictor=1, interleave="pixel", tiled=False):
    options = {"interleave": interleave, "tiled": tiled}
    if tiled:
        options.update(blockxsize=16, blockysize=16)
    if compress != "none":
        options["compress"] = compress
    if predictor != 1:
        options["predictor"] = predictor
    return write_raster(path, pixels, **options)


def _parsed(path):
    data = open(path, "rb").read()
    return data, parse_geotiff(path, data, has_aux_file(path))


@pytest.mark.parametrize("dtype,bands,interleave,tiled", LAYOUTS)
@pytest.mark.parametrize("compress,predictor", LOSSLESS)
def test_libtiff_decodes_lossless_geotiffs_to_gdals_pixels(
    tmp_path, dtype, bands, interleave, tiled, compress, predictor
):
    if predictor == 2 and np.dtype(dtype).kind == "f":
        predictor = 3  # floating-point predictor
    pixels = random_pixels(np.random.default_rng(bands), bands, dtype, size=40)
    path = _geotiff(str(tmp_path / "chip.tif"), pixels, compress, predictor, interleave, tiled)
    data, tiff = _parsed(path)
    ours = libtiff_pixels(data, tiff)
    assert ours is not None, "libtiff was not used"
    gdal = read_chip_pixels(path, channels_last=True)
    assert ours.shape == gdal.shape and ours.dtype == gdal.dtype and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, gdal)


@pytest.mark.parametrize("bands,options", [(3, {"photometric": "RGB"}), (4, {"photometric": "RGB", "alpha": "YES"})])
def test_libtiff_decodes_rgb_and_rgba_geotiffs_to_gdals_pixels(tmp_path, bands, options):
    pixels = random_pixels(np.random.default_rng(bands), bands, "uint8", size=40)
    path = write_raster(str(tmp_path / "rgb.tif"), pixels, compress="lzw", **options)
    ours = libtiff_pixels(*_parsed(path))
    assert ours is not None, "libtiff was not used"
    np.testing.assert_array_equal(ours, read_chip_pixels(path, channels_last=True))


def test_jpeg_geotiffs_and_colour_tables_are_left_to_gdal(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    jpeg = _geotiff(str(tmp_path / "jpeg.tif"), rgb, "jpeg")
    assert libtiff_pixels(*_parsed(jpeg)) is None
    import rasterio

    paletted = _geotiff(str(tmp_path / "palette.tif"), rgb[:1], "lzw")
    with rasterio.open(paletted, "r+") as dataset:
        dataset.write_colormap(1, {0: (0, 0, 0, 255), 255: (255, 255, 255, 255)})
    data, tiff = _parsed(paletted)
    assert tiff.header.paletted and libtiff_pixels(data, tiff) is None


def test_a_corrupt_strip_falls_back_to_gdal_which_names_the_file(tmp_path):
    from test_records_writer import make_chip_folder

    make_chip_folder(tmp_path, "uint16", count=1)
    pair = find_chip_pairs(tmp_path).pairs[0]
    data = bytearray(open(pair.image_path, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # inside the LZW strips
    open(pair.image_path, "wb").write(bytes(data))
    assert libtiff_pixels(*_parsed(pair.image_path)) is None
    result = encode_or_bad(pair, RecordOptions("array"))
    assert isinstance(result, BadChip) and result.reason.startswith(f"{pair.image_path}: corrupt chip")


RECORDS = [b"", b"x", os.urandom(70_000), b"tile" * 1000]


def test_uncompressed_tfrecord_files_equal_tensorflows_byte_for_byte(tmp_path):
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "theirs.tfrecord")
    with TFRecordFile(ours) as file:
        for record in RECORDS:
            file.write(record)
    with tf.io.TFRecordWriter(theirs) as writer:
        for record in RECORDS:
            writer.write(record)
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert file.sha256.hexdigest() == hashlib.sha256(open(ours, "rb").read()).hexdigest()


@pytest.mark.parametrize("compression,kind", [("gzip", "GZIP"), ("zlib", "ZLIB")])
def test_compressed_tfrecord_files_read_back_in_tensorflow(tmp_path, compression, kind):
    path = str(tmp_path / "shard")
    with TFRecordFile(path, compression) as file:
        for record in RECORDS:
            file.write(record)
    assert [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=kind)] == RECORDS
    assert file.sha256.hexdigest() == hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_an_unknown_compression_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown compression 'lz4'"):
        TFRecordFile(str(tmp_path / "x"), "lz4")
    assert not os.path.exists(tmp_path / "x")


def test_a_batch_encodes_like_one_pair_at_a_time_and_isolates_a_missing_file(tmp_path):
    from test_records_writer import make_chip_folder

    make_chip_folder(tmp_path, "uint16", count=3)
    pairs = list(find_chip_pairs(tmp_path).pairs)
    missing = ChipPair("gone", None, str(tmp_path / "images" / "gone.tif"), pairs[0].label_path)
    batch = [pairs[0], missing, *pairs[1:]]
    options = RecordOptions("array")
    results = encode_batch(batch, options)
    assert isinstance(results[1], BadChip) and "gone.tif: cannot read chip" in results[1].reason
    assert [r.record for i, r in enumerate(results) if i != 1] == [encode_chip_pair(p, options).record for p in pairs]


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_batch_map_keeps_order(workers):
    with worker_pool(workers) as executor:
        results = ordered_batch_map(lambda batch: [-i for i in batch], range(50), executor, in_flight=2)
        assert list(results) == [-i for i in range(50)]


def test_record_bytes_of_any_lossless_tiff_decode_through_libtiff_like_gdal(tmp_path):
    from tfchips.records.codecs import decode_payload
    from tfchips.records.geotiff import tiff_pixels

    pixels = random_pixels(np.random.default_rng(3), 4, "uint16", size=24)
    plain = write_raster(str(tmp_path / "plain.tif"), pixels, crs=None, transform=None, compress="lzw")  # no CRS
    data = open(plain, "rb").read()
    expected = pixels.transpose(1, 2, 0)
    np.testing.assert_array_equal(tiff_pixels(data, (24, 24, 4), "uint16"), expected)
    assert tiff_pixels(data, (24, 24, 4), "int16") is None  # not what the file holds
    assert tiff_pixels(data[:100], (24, 24, 4), "uint16") is None  # truncated: left to GDAL
    assert tiff_pixels(b"\x89PNG\r\n\x1a\n", (24, 24, 4), "uint16") is None
    np.testing.assert_array_equal(decode_payload("bytes", (data,), (24, 24, 4), "uint16"), expected)
