"""GeoTIFF headers and pixels read straight from the file's bytes, without GDAL.

Opening a chip with GDAL costs about half a millisecond (driver probing, sidecar
lookups, CRS construction); `bytes` records never need the pixels, so the
header they carry is parsed here in tens of microseconds. Only the common case
is handled: one EPSG-coded CRS, a pixel-is-area transform, GDAL's own band
description and nodata tags. Anything else returns None and the caller asks
GDAL, so the two paths always agree.

Pixels of such a GeoTIFF under a lossless compression are decoded by libtiff
(through imagecodecs), the library GDAL itself decodes GeoTIFFs with: the same
values, in about half the time of a GDAL read of a 256 x 256 x 3 LZW chip.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from xml.sax.saxutils import unescape

import numpy as np
from affine import Affine

from tfchips.chips import ChipGeoreference, ChipHeader, band_names
from tfchips.errors import ChipError
from tfchips.tiff_directory import FIELD_TYPES, Directory, read_directory, tag_bytes_problem

# (SampleFormat, BitsPerSample) -> numpy dtype name, as GDAL maps them.
_DTYPES = {
    (1, 8): "uint8",
    (1, 16): "uint16",
    (1, 32): "uint32",
    (1, 64): "uint64",
    (2, 8): "int8",
    (2, 16): "int16",
    (2, 32): "int32",
    (2, 64): "int64",
    (3, 32): "float32",
    (3, 64): "float64",
}
_WIDTH, _HEIGHT, _BITS, _SAMPLES, _SAMPLE_FORMAT, _PHOTOMETRIC = 256, 257, 258, 277, 339, 262
_COMPRESSION, _PLANAR_CONFIGURATION = 259, 284
_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS = 273, 279, 324, 325
_PIXEL_SCALE, _TIEPOINT, _MODEL_TRANSFORM = 33550, 33922, 34264
_GEOKEYS, _GEO_DOUBLES, _GEO_ASCII = 34735, 34736, 34737
_GDAL_METADATA, _GDAL_NODATA = 42112, 42113
_PALETTE = 3
_MIN_IS_BLACK, _RGB = 1, 2
_BAND_SEQUENTIAL = 2
# Compressions that decode to the same values whichever library decodes them:
# none, LZW, Deflate (two codes), PackBits, LZMA, Zstandard. JPEG is left to GDAL:
# its colour conversion and upsampling differ between libraries.
_LOSSLESS = {1, 5, 8, 32946, 32773, 34925, 50000}
# GeoKeys that do not change the CRS named by its EPSG code (citations, units that match it).
_MODEL_TYPE, _RASTER_TYPE, _GEOGRAPHIC_CODE, _PROJECTED_CODE = 1024, 1025, 2048, 3072
_HARMLESS_KEYS = {1026, 2049, 3073, 2054, 3076, 2057, 2058, 2059}
_HARMLESS_VALUES = {2054: 9102, 3076: 9001}  # degree, metre: GDAL's own choices for EPSG codes


def _tags(data: bytes, path: str, truncated_ok: bool = False) -> dict[int, object] | None:
    """Tags of the first IFD: numbers as tuples, ASCII as str. None if not a TIFF, or truncated and ``truncated_ok``.

    Raises `ChipError` naming ``path`` when the file is truncated, or its tags hold
    more bytes than `TIFF_TAG_BYTES` allows (checked before any is read, see `tag_bytes_problem`).
    """
    try:
        directory = read_directory(data)
    except struct.error:
        problem = "truncated TIFF header"
    else:
        if directory is None:
            return None
        too_large = tag_bytes_problem(directory)
        if too_large:
            raise ChipError(f"{path}: {too_large}")
        tags = _values(data, directory)
        if isinstance(tags, dict):
            return tags
        problem = f"truncated TIFF (tag {tags} lies past the end of the file)"
    if truncated_ok:
        return None
    raise ChipError(f"{path}: {problem}")


def _values(data: bytes, directory: Directory) -> dict[int, object] | int:
    """The directory's tag values; the number of the first tag whose values lie past the end of ``data`` instead."""
    tags: dict[int, object] = {}
    for index, tag, kind, count, offset in directory.entries:
        code, size = FIELD_TYPES[kind]
        inline = size * count <= directory.word_size
        value_at = directory.first + index * directory.entry_size + 4 + directory.word_size if inline else offset
        if value_at + size * count > len(data):
            return tag
        if kind == 2:
            tags[tag] = data[value_at : value_at + count].rstrip(b"\0").decode("latin-1")
        else:
            tags[tag] = struct.unpack_from(f"{directory.endian}{count}{code}", data, value_at)
    return tags


@functools.lru_cache(maxsize=256)
def _crs(directory: tuple[int, ...] | None) -> str | None:
    """``EPSG:<code>`` of a GeoKey directory, or None when GDAL must decide (no GeoKeys:
    it may find a sidecar). Cached: the chips of a folder share a handful of CRSs."""
    if directory is None:
        return None
    keys = {}
    for i in range(4, 4 + 4 * directory[3], 4):
        key, location, _, value = directory[i : i + 4]
        keys[key] = value if location == 0 else None
    model = keys.pop(_MODEL_TYPE, None)
    if keys.pop(_RASTER_TYPE, 1) != 1:
        return None  # pixel-is-point: GDAL shifts the transform by half a pixel
    code = keys.pop({1: _PROJECTED_CODE, 2: _GEOGRAPHIC_CODE}.get(model, -1), None)
    if code is None or not 1024 <= code < 32767:
        return None
    for key, value in keys.items():
        if key not in _HARMLESS_KEYS or _HARMLESS_VALUES.get(key, value) != value:
            return None
    return f"EPSG:{code}"


def _transform(tags: dict[int, object]) -> Affine | None:
    if _MODEL_TRANSFORM in tags:
        m = tags[_MODEL_TRANSFORM]
        return Affine(m[0], m[1], m[3], m[4], m[5], m[7])
    scale, tiepoint = tags.get(_PIXEL_SCALE), tags.get(_TIEPOINT)
    if scale is None or tiepoint is None or len(tiepoint) != 6:
        return None
    i, j, _, x, y, _ = tiepoint
    return Affine(scale[0], 0.0, x - i * scale[0], 0.0, -scale[1], y + j * scale[1])


@functools.lru_cache(maxsize=256)
def _descriptions(text: str | None, count: int) -> tuple[str | None, ...]:
    """Band descriptions in GDAL's metadata XML (cached: a folder's chips share theirs)."""
    descriptions: list[str | None] = [None] * count
    if text:
        for item in ElementTree.fromstring(text).iter("Item"):
            if item.get("role") == "description" and item.get("sample", "").isdigit():
                sample = int(item.get("sample"))
                if sample < count and item.text:
                    # GDAL escapes the text once more than XML needs, and unescapes it on reading.
                    descriptions[sample] = unescape(item.text, {"&quot;": '"', "&apos;": "'"})
    return tuple(descriptions)


@dataclass(frozen=True, slots=True)
class GeoTiff:
    """A GeoTIFF's header, and how libtiff returns its pixels.

    ``libtiff`` says libtiff decodes the pixels to exactly GDAL's values (a
    lossless compression, grey or RGB samples); ``band_sequential`` that they
    come as (bands, rows, cols).
    """

    header: ChipHeader
    libtiff: bool
    band_sequential: bool


def has_aux_file(path: str) -> bool:
    """Whether GDAL metadata (``.aux.xml``), which overrides the file's own, lies beside ``path``."""
    return os.path.exists(path + ".aux.xml")


def read_geotiff_header(path: str, data: bytes) -> ChipHeader | None:
    """Header of the GeoTIFF whose bytes are ``data``, or None where GDAL must read it (see `parse_geotiff`)."""
    parsed = parse_geotiff(path, data, has_aux_file(path))
    return parsed.header if parsed else None


def parse_geotiff(path: str, data: bytes, aux: bool) -> GeoTiff | None:
    """The GeoTIFF whose bytes are ``data``, or None where GDAL must read its header.

    ``aux`` says whether an ``.aux.xml`` lies beside it (`has_aux_file`); GDAL then
    reads the header, as the sidecar's metadata overrides the file's.

    Tags this parser does not understand, or that are malformed (a short GeoKey
    directory or transformation, an empty width), give None too: GDAL then
    decides, and reports a corrupt file as such. Raises `ChipError` when the file
    is a TIFF whose header or pixel blocks extend past its end (a truncated copy).
    """
    tags = _tags(data, path)
    if tags is None or aux:
        return None
    try:
        parsed = _header(path, tags)
    except (IndexError, TypeError, ValueError, ElementTree.ParseError):
        return None
    if parsed is None:
        return None
    header, offsets, sizes = parsed
    if len(offsets) != len(sizes) or max(o + s for o, s in zip(offsets, sizes)) > len(data):
        raise ChipError(f"{path}: truncated TIFF (pixel blocks lie past the end of the file)")
    return GeoTiff(header, _libtiff_decodes(tags, header.dtype), _band_sequential(tags))


def _libtiff_decodes(tags: dict[int, object], dtype: str) -> bool:
    """Whether libtiff decodes the pixels to GDAL's values: lossless, grey or RGB, whole-byte samples."""
    return (
        tags.get(_COMPRESSION, (1,))[0] in _LOSSLESS
        and tags.get(_PHOTOMETRIC, (_MIN_IS_BLACK,))[0] in (_MIN_IS_BLACK, _RGB)
        and set(tags.get(_BITS, (1,))) == {np.dtype(dtype).itemsize * 8}
    )


def _band_sequential(tags: dict[int, object]) -> bool:
    return tags.get(_SAMPLES, (1,))[0] > 1 and tags.get(_PLANAR_CONFIGURATION, (1,))[0] == _BAND_SEQUENTIAL


def libtiff_pixels(data: bytes, tiff: GeoTiff) -> np.ndarray | None:
    """(rows, cols, bands) pixels of the GeoTIFF ``data`` decoded by libtiff; None where GDAL must decode them."""
    if not tiff.libtiff:
        return None
    return _decoded(data, tiff.header.shape, tiff.header.dtype, tiff.band_sequential)


def tiff_pixels(data: bytes, shape: tuple[int, int, int], dtype: str) -> np.ndarray | None:
    """(rows, cols, bands) ``dtype`` pixels of the TIFF file ``data`` decoded by libtiff, georeferenced or not.

    None where libtiff would not give GDAL's values (see `parse_geotiff`), or the
    file does not hold pixels of that shape and dtype. Raises `ChipError` when its
    tags hold more bytes than `TIFF_TAG_BYTES` allows.
    """
    # A truncated file is GDAL's to report; tags past the limit raise here, before GDAL reads them.
    tags = _tags(data, "TIFF", truncated_ok=True)
    if tags is None or not _libtiff_decodes(tags, dtype):
        return None
    return _decoded(data, shape, dtype, _band_sequential(tags))


def _decoded(data: bytes, shape: tuple[int, int, int], dtype: str, band_sequential: bool) -> np.ndarray | None:
    import imagecodecs

    try:
        pixels = imagecodecs.tiff_decode(data)
    except Exception:  # libtiff fails in several exception types; GDAL then reads the chip and names the problem
        return None
    if band_sequential and pixels.ndim == 3:
        pixels = np.ascontiguousarray(pixels.transpose(1, 2, 0))
    if pixels.dtype != dtype or pixels.size != math.prod(shape):
        return None
    return pixels.reshape(shape)


def _header(path: str, tags: dict[int, object]) -> tuple[ChipHeader, tuple, tuple] | None:
    """The header and pixel block offsets and sizes the tags describe; None for the cases GDAL handles."""
    rows, cols = tags.get(_HEIGHT, (0,))[0], tags.get(_WIDTH, (0,))[0]
    count = tags.get(_SAMPLES, (1,))[0]
    bits, formats = set(tags.get(_BITS, (1,))), set(tags.get(_SAMPLE_FORMAT, (1,)))
    if len(bits) != 1 or len(formats) != 1 or not all(isinstance(n, int) and n > 0 for n in (rows, cols, count)):
        return None
    bits_per_sample = bits.pop()
    dtype = _DTYPES.get((formats.pop(), bits_per_sample))
    offsets = tags.get(_STRIP_OFFSETS, tags.get(_TILE_OFFSETS))
    sizes = tags.get(_STRIP_COUNTS, tags.get(_TILE_COUNTS))
    crs, transform = _crs(tags.get(_GEOKEYS)), _transform(tags)
    blocks_listed = all(isinstance(v, tuple) and v and all(isinstance(n, int) for n in v) for v in (offsets, sizes))
    if dtype is None or not blocks_listed or crs is None or transform is None:
        return None
    nodata = tags.get(_GDAL_NODATA)
    descriptions = _descriptions(tags.get(_GDAL_METADATA), count)
    nodata = float(nodata) if nodata else None
    georeference = ChipGeoreference(crs, transform, band_names(descriptions), nodata)
    paletted = tags.get(_PHOTOMETRIC, (1,))[0] == _PALETTE
    header = ChipHeader(path, "GTiff", (rows, cols, count), dtype, bits_per_sample, paletted, georeference)
    return header, offsets, sizes
