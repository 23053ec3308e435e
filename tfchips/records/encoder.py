"""One chip pair to one serialized record: the pure, picklable unit of work.

`encode_chip_pair` is what the local writer maps over its worker threads (or
processes) and what a Beam pipeline maps over its workers; it imports
TensorFlow only when a TensorFlow decoder is used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tfchips import storage
from tfchips.chips import ChipGeoreference, ChipHeader, ChipPair, open_chip, read_chip_header
from tfchips.errors import ChipError, ConfigError
from tfchips.records.codecs import (
    DECODERS,
    ENCODINGS,
    EncodedRaster,
    decode_pixels,
    decode_with_gdal,
    encode_file,
    encode_pixels,
)
from tfchips.records.geotiff import GeoTiff, has_aux_file, libtiff_pixels, parse_geotiff, read_geotiff_header
from tfchips.records.schema import SCHEMAS, RasterSpec, build_legacy_record, build_record
from tfchips.statistics import ChipStatistics, chip_statistics


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """How chip pairs become records.

    ``label_encoding`` None means "same as ``encoding``". ``decoder``: ``gdal``
    decodes any chip; ``tf`` decodes PNG, JPEG and BMP and refuses the rest; ``auto``
    uses TensorFlow for the chips it decodes exactly and GDAL for the others.
    ``statistics`` computes per-chip band statistics and class counts, which
    decodes the pixels even for ``bytes`` records.
    """

    encoding: str = "bytes"
    label_encoding: str | None = None
    decoder: str = "auto"
    schema: str = "tfchips"
    statistics: bool = False

    def __post_init__(self) -> None:
        for option, value, allowed in (
            ("encoding", self.encoding, ENCODINGS),
            ("label encoding", self.label_encoding or self.encoding, ENCODINGS),
            ("decoder", self.decoder, DECODERS),
            ("schema", self.schema, SCHEMAS),
        ):
            if value not in allowed:
                raise ConfigError(f"unknown {option} {value!r}; expected one of {', '.join(allowed)}")

    @property
    def labels(self) -> str:
        """Encoding of the label chips."""
        return self.label_encoding or self.encoding

    @property
    def decodes(self) -> bool:
        """Whether any pixels are decoded (``bytes`` records without statistics need none)."""
        return self.statistics or self.encoding != "bytes" or self.labels != "bytes"


@dataclass(frozen=True, slots=True)
class EncodedChip:
    """A serialized record with what the dataset description needs from it."""

    name: str
    record: bytes
    image: RasterSpec
    label: RasterSpec
    statistics: ChipStatistics | None


@dataclass(frozen=True, slots=True)
class _Loaded:
    encoded: EncodedRaster
    georeference: ChipGeoreference
    pixels: np.ndarray | None


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise ChipError(f"{path}: cannot read chip ({error.strerror})") from None


@dataclass(frozen=True, slots=True)
class ChipFile:
    """A chip file's bytes, and whether an ``.aux.xml`` lies beside it (`has_aux_file`)."""

    path: str
    data: bytes
    aux: bool


@dataclass(frozen=True, slots=True)
class ChipFiles:
    """A chip pair with its image and label files read."""

    pair: ChipPair
    image: ChipFile
    label: ChipFile


def read_chip_file(path: str) -> ChipFile:
    """A chip file read; `ChipError` naming it when it cannot be."""
    return ChipFile(path, _read_file(path), has_aux_file(path))


def read_chip_files(pair: ChipPair) -> ChipFiles:
    """A chip pair's two files read; `ChipError` naming a file that cannot be."""
    return ChipFiles(pair, read_chip_file(pair.image_path), read_chip_file(pair.label_path))


def read_header(path: str) -> ChipHeader:
    """A chip's header as the encoder reads it: parsed from a self-contained GeoTIFF's bytes, else by GDAL."""
    return read_geotiff_header(path, _read_file(path)) or read_chip_header(path)


def file_header(file: ChipFile) -> ChipHeader:
    """`read_header` of a chip file already read (local or URL)."""
    tiff = parse_geotiff(file.path, file.data, file.aux)
    if tiff is not None:
        return tiff.header
    with _gdal(file.path) as (header, _):
        return header


def _gdal(path: str):
    """`open_chip` of a local chip; a chip at a URL that GDAL would have to open is refused."""
    if storage.is_url(path):
        raise ChipError(
            f"{path}: only GeoTIFFs that hold their own georeferencing (no .aux.xml) can be read from a URL;"
            " copy the folder to local disk"
        )
    return open_chip(path)


def _load(file: ChipFile, encoding: str, decoder: str, want_pixels: bool) -> _Loaded:
    """Encode one chip file; decode it only when ``want_pixels`` (or its encoding) asks."""
    path, data = file.path, file.data
    decodes = want_pixels or encoding != "bytes"
    # A GeoTIFF that holds its own georeferencing needs neither GDAL for its header
    # nor GDAL's scan of the folder for sidecar files when it is decoded.
    tiff = parse_geotiff(path, data, file.aux)
    if tiff is not None:
        header = tiff.header
        gdal = functools.partial(_geotiff_pixels, data, tiff)
        pixels = decode_pixels(data, header, decoder, gdal) if decodes else None
    else:
        with _gdal(path) as (header, gdal):  # one GDAL open for the header and, if needed, the pixels
            pixels = decode_pixels(data, header, decoder, gdal) if decodes else None
    encoded = encode_file(data, header) if encoding == "bytes" else encode_pixels(pixels, encoding, path)
    return _Loaded(encoded, header.georeference, pixels)


def _geotiff_pixels(data: bytes, tiff: GeoTiff) -> np.ndarray:
    """GDAL's pixels of a GeoTIFF, decoded by libtiff directly where it gives the same values."""
    pixels = libtiff_pixels(data, tiff)
    return pixels if pixels is not None else decode_with_gdal(tiff.header, False)


def _check_twins(pair: ChipPair, image: _Loaded, label: _Loaded) -> None:
    if image.encoded.shape[:2] != label.encoded.shape[:2]:
        raise ChipError(
            f"{pair.label_path}: label is {label.encoded.shape[0]} x {label.encoded.shape[1]} pixels, "
            f"its image {pair.image_path} is {image.encoded.shape[0]} x {image.encoded.shape[1]}"
        )
    a, b = image.georeference, label.georeference
    if a.crs and b.crs and (a.crs != b.crs or not a.transform.almost_equals(b.transform)):
        raise ChipError(f"{pair.label_path}: label is not georeferenced like its image {pair.image_path}")


def encode_chip_pair(pair: ChipPair, options: RecordOptions) -> EncodedChip:
    """Serialized record of one chip pair, per ``options``; raises `ChipError` naming a bad file.

    Pure apart from reading the two chip files: the same pair and options give the
    same bytes in any process.
    """
    return encode_chip_files(read_chip_files(pair), options)


def encode_chip_files(files: ChipFiles, options: RecordOptions) -> EncodedChip:
    """`encode_chip_pair` of a pair whose files are already read."""
    pair = files.pair
    image = _load(files.image, options.encoding, options.decoder, options.statistics)
    label = _load(files.label, options.labels, options.decoder, options.statistics)
    _check_twins(pair, image, label)
    label_names = label.georeference.band_names
    if options.schema == "legacy":
        record = build_legacy_record(pair.name, pair.key, image.encoded, label.encoded)
    else:
        record = build_record(pair.name, pair.key, image.georeference, image.encoded, label.encoded, label_names)
    statistics = None
    if options.statistics:
        statistics = chip_statistics(image.pixels, image.georeference.nodata, label.pixels, label.georeference.nodata)
    return EncodedChip(
        pair.name,
        record,
        RasterSpec.of(image.encoded, image.georeference.band_names, image.georeference.nodata),
        RasterSpec.of(label.encoded, label_names, label.georeference.nodata),
        statistics,
    )
