"""Pixels in and out of records: chip decoders (TensorFlow, GDAL) and the three encodings.

Every array here is (rows, cols, bands), TensorFlow's (H, W, C) order.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfchips.chips import ChipHeader, read_chip_pixels
from tfchips.errors import ChipError, RecordError
from tfchips.records.geotiff import tiff_pixels

ENCODINGS = ("bytes", "png", "array")
DECODERS = ("auto", "tf", "gdal")
# GDAL driver -> format name recorded for `bytes` records.
FORMATS = {"GTiff": "tiff", "PNG": "png", "JPEG": "jpeg", "BMP": "bmp"}
RAW_FORMAT = "raw"
PNG_MAX_CHANNELS = 4
# PNG stores 8- and 16-bit unsigned samples; signed ones are stored bit for bit
# and turned back by the recorded dtype. Anything else needs `array`.
_PNG_STORAGE = {"uint8": "uint8", "int8": "uint8", "uint16": "uint16", "int16": "uint16"}
_PNG_LEVEL = 6
# Formats and dtypes TensorFlow decodes (--decoder tf), and of those the formats it
# decodes to exactly GDAL's values (--decoder auto): JPEG is lossy, and TensorFlow's
# libjpeg-turbo and GDAL's libjpeg round differently (a few levels on smooth chips, tens on noisy ones).
_TF_DECODABLE = {"PNG": ("uint8", "uint16"), "JPEG": ("uint8",), "BMP": ("uint8",)}
_TF_EXACT = ("PNG", "BMP")


@dataclass(frozen=True, slots=True)
class EncodedRaster:
    """One chip as it goes into a record.

    ``data`` holds one element (the file, or the raw array) except for `png` with
    more than four bands: one PNG per group of up to four bands, in band order.
    ``shape`` is (rows, cols, bands) and ``dtype`` the dtype of the decoded pixels.
    """

    encoding: str
    format: str
    data: tuple[bytes, ...]
    shape: tuple[int, int, int]
    dtype: str


def png_channels(bands: int) -> tuple[int, ...]:
    """Channels of each PNG that holds ``bands`` bands: groups of four, the last one smaller."""
    return tuple(min(PNG_MAX_CHANNELS, bands - start) for start in range(0, bands, PNG_MAX_CHANNELS))


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of (rows, cols, 1 to 4) uint8 or uint16 pixels.

    Written here, not by a library, so that the bytes are the same on every
    machine; every row uses PNG's "Up" filter.
    """
    rows, cols, channels = pixels.shape
    if pixels.dtype not in (np.uint8, np.uint16) or not 1 <= channels <= PNG_MAX_CHANNELS:
        raise RecordError(f"PNG holds 1 to 4 channels of uint8 or uint16, got {channels} of {pixels.dtype}")
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    scanlines = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">")).view(np.uint8)
    scanlines = scanlines.reshape(rows, -1)
    filtered = np.empty((rows, scanlines.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it
    filtered[:, 1:] = scanlines
    filtered[1:, 1:] -= scanlines[:-1]
    header = struct.pack(">IIBBBBB", cols, rows, pixels.dtype.itemsize * 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in ((b"IHDR", header), (b"IDAT", zlib.compress(filtered.tobytes(), _PNG_LEVEL)), (b"IEND", b""))
    )


def png_storage_dtype(dtype: str, where: str) -> np.dtype:
    """The unsigned dtype a PNG stores ``dtype`` pixels in; `RecordError` naming ``where`` if none."""
    if dtype not in _PNG_STORAGE:
        raise RecordError(
            f"{where}: {dtype} pixels do not fit PNG (8- or 16-bit integers only); "
            "use `encoding='array'`, which keeps any dtype"
        )
    return np.dtype(_PNG_STORAGE[dtype])


def encode_pixels(pixels: np.ndarray, encoding: str, path: str) -> EncodedRaster:
    """`png` or `array` record payload for decoded (rows, cols, bands) pixels."""
    shape, dtype = tuple(int(n) for n in pixels.shape), pixels.dtype.name
    if encoding == "array":
        data = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
        return EncodedRaster("array", RAW_FORMAT, (data,), shape, dtype)
    if encoding == "png":
        stored = pixels.view(png_storage_dtype(dtype, path))
        parts = tuple(encode_png(stored[:, :, i : i + PNG_MAX_CHANNELS]) for i in range(0, shape[2], PNG_MAX_CHANNELS))
        return EncodedRaster("png", "png", parts, shape, dtype)
    raise RecordError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def encode_file(data: bytes, header: ChipHeader) -> EncodedRaster:
    """`bytes` record payload: the chip file as stored."""
    if header.format not in FORMATS:
        raise RecordError(f"{header.path}: {header.format} chips cannot be stored as bytes")
    return EncodedRaster("bytes", FORMATS[header.format], (data,), header.shape, header.dtype)


def _tf_reads(header: ChipHeader) -> bool:
    return (
        header.dtype in _TF_DECODABLE.get(header.format, ())
        and not header.paletted
        and header.bits in (8, 16)
        and 1 <= header.shape[2] <= PNG_MAX_CHANNELS
    )


def tf_decodable(header: ChipHeader) -> bool:
    """Whether TensorFlow decodes the chip to exactly the values GDAL reads (``--decoder auto``).

    Only 8- and 16-bit PNGs and 8-bit BMPs qualify. Colour-mapped and sub-byte PNGs
    are expanded by TensorFlow (to RGB, to 0-255), and JPEG is lossy: TensorFlow and
    GDAL round differently. These are left to GDAL, so ``auto`` gives GDAL's values
    everywhere, and the same records as ``gdal``.
    """
    return header.format in _TF_EXACT and _tf_reads(header)


def _tf_pixels(data: bytes, header: ChipHeader) -> np.ndarray:
    import tensorflow as tf

    try:
        if header.format == "PNG":
            pixels = tf.io.decode_png(data, channels=0, dtype=tf.as_dtype(header.dtype))
        elif header.format == "JPEG":
            pixels = tf.io.decode_jpeg(data, channels=0)
        else:
            pixels = tf.io.decode_bmp(data, channels=0)
        return pixels.numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        raise ChipError(f"{header.path}: corrupt chip, pixels cannot be decoded ({error.message})") from None


def decode_with_tf(data: bytes, header: ChipHeader) -> np.ndarray:
    """(rows, cols, bands) pixels of a PNG, JPEG or BMP chip, decoded by TensorFlow."""
    if not _tf_reads(header):
        raise RecordError(
            f"{header.path}: `decoder='tf'` cannot decode {header.format} {header.dtype} chips"
            f"{' with a colour table' if header.paletted else ''}; use `decoder='gdal'`"
        )
    pixels = _tf_pixels(data, header)
    if pixels.shape != header.shape:
        raise ChipError(f"{header.path}: TensorFlow decodes {pixels.shape}, the header says {header.shape}")
    return pixels


def decode_with_gdal(header: ChipHeader, siblings: bool = True) -> np.ndarray:
    """(rows, cols, bands) pixels of any GDAL-readable chip (see `read_chip` for ``siblings``)."""
    pixels = read_chip_pixels(header.path, siblings, channels_last=True)
    if pixels.shape != header.shape:
        raise ChipError(f"{header.path}: GDAL decodes {pixels.shape}, the header says {header.shape}")
    return pixels


def decode_pixels(data: bytes, header: ChipHeader, decoder: str, gdal: Callable[[], np.ndarray]) -> np.ndarray:
    """(rows, cols, bands) pixels of the chip file ``data`` by ``decoder``; ``gdal()`` reads them with GDAL.

    ``auto`` takes TensorFlow's pixels where they are exact (`tf_decodable`) and
    have the shape of GDAL's header (a 32-bit BMP is 3 bands to GDAL, 4 to
    TensorFlow), GDAL's otherwise.
    """
    if decoder == "tf":
        return decode_with_tf(data, header)
    if decoder == "auto" and tf_decodable(header):
        pixels = _tf_pixels(data, header)
        if pixels.shape == header.shape:
            return pixels
    return gdal()


def decode_payload(encoding: str, data: tuple[bytes, ...], shape: tuple[int, int, int], dtype: str) -> np.ndarray:
    """Pixels (rows, cols, bands) of a record payload; the inverse of `encode_pixels` / `encode_file`."""
    if encoding == "array":
        return np.frombuffer(data[0], dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    if encoding == "png":
        import tensorflow as tf

        stored = np.concatenate(
            [
                tf.io.decode_png(part, channels=0, dtype=tf.as_dtype(png_storage_dtype(dtype, "record").name)).numpy()
                for part in data
            ],
            axis=2,
        )
        return stored.view(dtype).reshape(shape)
    if encoding == "bytes":
        pixels = tiff_pixels(data[0], shape, dtype)
        if pixels is not None:
            return pixels
        from rasterio.io import MemoryFile

        with MemoryFile(data[0]) as memory, memory.open() as dataset:
            return dataset.read().transpose(1, 2, 0).reshape(shape)
    raise RecordError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
