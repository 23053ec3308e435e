"""In-graph decoding of one side (image or label) of a record: `decode_tensor`, driven by a `RasterSpec`.

The TensorFlow twin of `tfchips.records.codecs.decode_payload` (numpy). ``array``
decodes with `tf.io.decode_raw`, ``png`` with `tf.io.decode_png` (several PNGs
concatenated on the band axis, ``int8``/``int16`` bitcast back), ``bytes`` of PNG
and 8-bit JPEG chips with `tf.io.decode_png` / `tf.io.decode_jpeg`. ``bytes`` of
GeoTIFF (and of BMP, 12-bit JPEG, and the colour-mapped or 1/2/4-bit PNGs
TensorFlow would expand) go to `decode_payload` inside `tf.numpy_function`, which
holds Python's GIL and cannot be saved in a SavedModel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfchips.records.codecs import decode_payload, png_storage_dtype
from tfchips.records.dataset_info import DATASET_JSON
from tfchips.records.raster_spec import RasterSpec

_PNG_PALETTE = 3  # PNG colour type of colour-mapped images
# tf.io.decode_raw has no unsigned 32- and 64-bit outputs: read the bits as signed, then bitcast.
_RAW_AS = {tf.uint32: tf.int32, tf.uint64: tf.int64}


def _gdal_decode(data: bytes, shape: np.ndarray, dtype: str) -> np.ndarray:
    return decode_payload("bytes", (data,), tuple(int(n) for n in shape), dtype).astype(dtype, copy=False)


def _sniff_format(data: tf.Tensor) -> tf.Tensor:
    """``png``, ``jpeg`` or ``other`` from a file's magic number (legacy records do not say)."""
    head = tf.strings.substr(data, 0, 4)
    jpeg_or_other = tf.where(tf.equal(tf.strings.substr(head, 0, 2), b"\xff\xd8"), "jpeg", "other")
    return tf.where(tf.equal(head, b"\x89PNG"), "png", jpeg_or_other)


def _decode_file(data: tf.Tensor, fmt: tf.Tensor | None, shape: tf.Tensor, spec: RasterSpec) -> tf.Tensor:
    """Pixels of a chip file stored as ``bytes``: TensorFlow for PNG and 8-bit JPEG, GDAL for the rest.

    PNGs TensorFlow would read differently from GDAL (it expands colour-mapped ones
    to RGB, scales 1/2/4-bit ones to 0-255, adds an alpha band for transparency
    chunks), found from the PNG header or the decoded band count, go to GDAL too.
    JPEG is lossy: TensorFlow's decoder may differ from GDAL's by a few levels.
    """
    dtype = tf.as_dtype(spec.dtype)
    gdal = functools.partial(
        tf.numpy_function, functools.partial(_gdal_decode, dtype=spec.dtype), [data, shape], dtype, False
    )

    def checked(decode: Callable[[], tf.Tensor], usable: tf.Tensor | None = None) -> Callable[[], tf.Tensor]:
        """``decode``, falling back to GDAL when ``usable`` is false or the band count is not the recorded one."""

        def via_tf() -> tf.Tensor:
            pixels = decode()
            return tf.cond(tf.equal(tf.shape(pixels)[2], shape[2]), lambda: pixels, gdal)

        return via_tf if usable is None else lambda: tf.cond(usable, via_tf, gdal)

    branches = {"png": gdal, "jpeg": gdal, "other": gdal}
    if dtype in (tf.uint8, tf.uint16):
        header = tf.io.decode_raw(tf.strings.substr(data, 24, 2), tf.uint8)  # IHDR bit depth, colour type
        usable = tf.logical_and(header[0] >= 8, tf.not_equal(header[1], _PNG_PALETTE))
        branches["png"] = checked(lambda: tf.io.decode_png(data, channels=0, dtype=dtype), usable)
    if dtype == tf.uint8:
        branches["jpeg"] = checked(lambda: tf.io.decode_jpeg(data, channels=0))
    if spec.format is not None:
        return branches.get(spec.format, gdal)()
    fmt = _sniff_format(data) if fmt is None else fmt
    index = tf.where(tf.equal(fmt, "png"), 0, tf.where(tf.equal(fmt, "jpeg"), 1, 2))
    return tf.switch_case(index, [branches["png"], branches["jpeg"], branches["other"]])


def decode_tensor(spec: RasterSpec, data: tf.Tensor, shape: tf.Tensor, fmt: tf.Tensor | None = None) -> tf.Tensor:
    """(rows, cols, bands) pixels of one side of a record, in the dtype of ``spec``, in-graph.

    Args:
        spec: what every record's side shares (dataset.json's ``image`` or ``label``).
        data: the record's data elements (a string vector; one element but for
            ``png`` of more than 4 bands).
        shape: the record's (rows, cols, bands), int32; used where ``spec`` leaves
            rows or columns unknown, and by GDAL.
        fmt: the record's ``format`` (a string scalar), for ``bytes`` datasets of
            mixed formats; None sniffs it from the file's magic number.
    """
    dtype = tf.as_dtype(spec.dtype)
    target = list(spec.shape) if None not in spec.shape else shape
    if spec.encoding == "array":
        raw = _RAW_AS.get(dtype, dtype)
        pixels = tf.reshape(tf.io.decode_raw(data[0], raw, little_endian=True), target)
        pixels = pixels if raw == dtype else tf.bitcast(pixels, dtype)
    elif spec.encoding == "png":
        storage = tf.as_dtype(png_storage_dtype(spec.dtype, DATASET_JSON).name)
        # decode_png takes channels 0 (as stored), 1, 3 or 4; two-band PNGs are read as stored.
        planes = [
            tf.ensure_shape(tf.io.decode_png(data[i], channels=0 if c == 2 else c, dtype=storage), [None, None, c])
            for i, c in enumerate(spec.parts)
        ]
        pixels = planes[0] if len(planes) == 1 else tf.concat(planes, axis=2)
        pixels = pixels if storage == dtype else tf.bitcast(pixels, dtype)
    else:  # bytes: `DatasetInfo` admits the three encodings only
        pixels = _decode_file(data[0], fmt, shape, spec)
    return tf.ensure_shape(pixels, spec.shape)
