"""Chip folders: ``images/`` and ``labels/`` rasters paired by file stem.

A chip folder (ours, or one exported by ESRI's "Export Training Data For Deep
Learning" tool as Classified Tiles) holds ``FOLDER/images/<name>.<ext>`` and
``FOLDER/labels/<name>.<ext>``. Our chips are named by their DLTile key with
``:`` turned into ``#`` (``256#0#10.0#13#-34#1542.tif``); ESRI's have arbitrary
names (``000000001.tif``). Images are multi-band rasters of any dtype whose band
descriptions are the band names; labels are single-band class rasters (our
nodata 255 means "ignore"). ``manifest.json`` (ours) or ``*.emd`` (ESRI) may
describe the classes and band statistics.

This module reads chip folders; `tfchips.chip_folder` writes ours.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from tfchips.errors import ChipError, TileKeyError
from tfchips.grid import filename_to_key
from tfchips.sources.base import first_line
from tfchips.tiff_directory import tiff_file_problem

# PNG, JPEG and BMP chips without a world file are fine: rasterio's warning about
# them is noise. One filter for the process, installed once: warnings.catch_warnings
# in worker threads would race and leave the process's filters changed.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

# ---------------------------------------------------------------------------
# Reading chip folders
# ---------------------------------------------------------------------------

IMAGES_DIR = "images"
LABELS_DIR = "labels"
# Optional per-pixel provenance rasters (`tfchips.provenance`).
PROVENANCE_DIR = "provenance"
MANIFEST_NAME = "manifest.json"
# ESRI's export names its metadata mode here; tfchips reads only the Classified Tiles mode.
ESRI_STATS_NAME = "esri_accumulated_stats.json"
CLASSIFIED_TILES = "Classified_Tiles"
# A real export's statistics file is kilobytes; this bounds what a hostile one costs.
ESRI_STATS_MAX_BYTES = 16 * 1024 * 1024
# Raster suffixes a chip may have; sidecars (.aux.xml, .tfw, .pgw, .ovr) are not chips.
CHIP_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True, slots=True)
class ChipPair:
    """An image chip and its label chip, which share the file stem ``name``.

    ``key`` is the DLTile key the name encodes (``:`` form), or None for names
    that are not tile keys (ESRI exports).
    """

    name: str
    key: str | None
    image_path: str
    label_path: str


@dataclass(frozen=True, slots=True)
class ChipFolder:
    """The pairs of a chip folder, sorted by name, the chip files that have no twin, and
    those whose names are not UTF-8 (as `printable_path` writes them; see `NOT_UTF8`)."""

    pairs: tuple[ChipPair, ...]
    unpaired: tuple[str, ...]
    undecodable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChipGeoreference:
    """Where a chip lies and what its bands are.

    ``crs`` is ``"EPSG:<code>"`` when the CRS has an EPSG code, otherwise WKT, and
    None for rasters without a CRS. ``transform`` maps pixel (col, row) to CRS units
    (identity when not georeferenced). ``band_names`` are the band descriptions,
    ``band_<i>`` (1-based) where a band has none.
    """

    crs: str | None
    transform: Affine
    band_names: tuple[str, ...]
    nodata: float | None


@dataclass(frozen=True, slots=True)
class ChipHeader:
    """What a chip file holds, read without decoding its pixels.

    ``format`` is the GDAL driver name (``GTiff``, ``PNG``, ``JPEG``, ``BMP``);
    ``shape`` is (rows, cols, bands); ``bits`` is bits per sample (1 to 64);
    ``paletted`` says pixel values are indices into a colour table.
    """

    path: str
    format: str
    shape: tuple[int, int, int]
    dtype: str
    bits: int
    paletted: bool
    georeference: ChipGeoreference


@dataclass(frozen=True, slots=True)
class ChipManifest:
    """Class names and band statistics a chip folder declares about itself.

    ``statistics`` follows ``{"bands": [{"name", "mean", "std", "min", "max"}, ...],
    "class_counts": {"0": count, ...}}``; ``class_names`` maps class values
    (as strings) to names. Either is None when the folder does not say.
    """

    statistics: dict | None
    class_names: dict[str, str] | None


def chip_key(name: str) -> str | None:
    """DLTile key held by a chip name (stem or file name), or None if it holds none."""
    try:
        return filename_to_key(name)
    except TileKeyError:
        return None


# Why a chip whose file name is not UTF-8 is bad: GDAL, TFRecords and dataset.json take UTF-8 names only.
NOT_UTF8 = "the file name is not valid UTF-8; rename the file"


def printable_path(path: str) -> str:
    """``path`` with the bytes of its name that are not UTF-8 (``os.scandir`` gives them as
    lone surrogates) written as ``\\xNN``: text that can be printed, encoded and stored."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def utf8_path(path: str) -> str:
    """``path`` itself; `ChipError` naming it (undecodable bytes as ``\\xNN``) when it is not UTF-8."""
    printable = printable_path(path)
    if printable != path:
        raise ChipError(f"{printable}: {NOT_UTF8}")
    return path


def _chip_files(folder: str, undecodable: list[str]) -> dict[str, str]:
    """Stem -> path of the chip rasters directly inside ``folder``; appends to ``undecodable``
    the (printable) paths of those whose names are not UTF-8."""
    if not os.path.isdir(folder):
        raise ChipError(f"{folder}: no such folder; a chip folder holds images/ and labels/")
    found: dict[str, str] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            # Hidden files are temporary chips of a running job, or macOS "._" resource forks.
            if suffix.lower() not in CHIP_SUFFIXES or entry.name.startswith(".") or not entry.is_file():
                continue
            if printable_path(entry.path) != entry.path:
                undecodable.append(printable_path(entry.path))
                continue
            if stem in found:
                raise ChipError(
                    f"{entry.path}: two chips share the name {stem!r} "
                    f"({os.path.basename(found[stem])} and {entry.name})"
                )
            found[stem] = entry.path
    return found


def check_metadata_mode(folder: str) -> None:
    """Raise `ChipError` when ``folder`` is an ESRI export of another mode than Classified Tiles.

    Object detection and other exports keep label files (PASCAL VOC XML, KITTI
    text) that are not label rasters; without this check they would read as a
    folder of unpaired chips. A folder without ``esri_accumulated_stats.json``
    passes.
    """
    path = os.path.join(folder, ESRI_STATS_NAME)
    try:
        with open(path, "rb") as stream:
            content = stream.read(ESRI_STATS_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return  # not an ESRI export; listing the folder reports a missing folder
    except OSError as error:
        raise ChipError(f"{path}: cannot read ESRI statistics ({error.strerror})") from None
    check_esri_statistics(content, path)


def check_esri_statistics(content: bytes, path: str) -> None:
    """`check_metadata_mode` of the first `ESRI_STATS_MAX_BYTES` + 1 bytes of ``path``, an ESRI statistics file."""
    if len(content) > ESRI_STATS_MAX_BYTES:
        raise ChipError(f"{path}: ESRI statistics over {ESRI_STATS_MAX_BYTES // 2**20} MiB; not an ESRI export")
    try:
        mode = json.loads(content.decode("utf-8-sig")).get("MetaDataMode", CLASSIFIED_TILES)
    except (ValueError, AttributeError) as error:
        raise ChipError(f"{path}: not a valid ESRI statistics file ({first_line(error)})") from None
    if mode != CLASSIFIED_TILES:
        raise ChipError(
            f"{path}: MetaDataMode is {str(mode)[:80]!r}; tfchips reads only {CLASSIFIED_TILES} exports "
            "(label rasters in labels/); export the training data again with that metadata format"
        )


def find_chip_pairs(folder: str | os.PathLike) -> ChipFolder:
    """Pair ``folder/images/*`` with ``folder/labels/*`` by file stem.

    Files with a suffix in `CHIP_SUFFIXES` are chips; anything else (sidecars,
    world files, hidden files, tfchips' ESRI label views) is ignored. Pairs are sorted by name;
    chips present on one side only are listed in ``unpaired``, chips whose names are not UTF-8
    in ``undecodable``. Raises `ChipError` when either folder is missing, there is no chip at
    all, or the folder is an ESRI export of another metadata mode than Classified Tiles.
    """
    root = os.fspath(folder)
    check_metadata_mode(root)
    undecodable: list[str] = []
    images = _chip_files(os.path.join(root, IMAGES_DIR), undecodable)
    labels = _chip_files(os.path.join(root, LABELS_DIR), undecodable)
    if not images and not labels and not undecodable:
        raise ChipError(f"{root}: no chips in {IMAGES_DIR}/ or {LABELS_DIR}/")
    pairs = tuple(
        ChipPair(name, chip_key(name), images[name], labels[name]) for name in sorted(images.keys() & labels.keys())
    )
    unpaired = tuple(
        sorted([images[n] for n in images.keys() - labels.keys()] + [labels[n] for n in labels.keys() - images.keys()])
    )
    return ChipFolder(pairs, unpaired, tuple(sorted(undecodable)))


@functools.lru_cache(maxsize=64)
def _crs_text(wkt: str) -> str:
    """``EPSG:<code>`` for a WKT with an EPSG identity, else the WKT itself (cached: the lookup is slow)."""
    from rasterio.crs import CRS

    return CRS.from_wkt(wkt).to_string()


def band_names(descriptions: tuple[str | None, ...]) -> tuple[str, ...]:
    """Band descriptions with ``band_<i>`` (1-based) standing in for missing ones."""
    return tuple(d if d else f"band_{i}" for i, d in enumerate(descriptions, start=1))


def _georeference(dataset) -> ChipGeoreference:
    crs = _crs_text(dataset.crs.to_wkt()) if dataset.crs else None
    return ChipGeoreference(crs, dataset.transform, band_names(dataset.descriptions), dataset.nodata)


@contextlib.contextmanager
def _dataset(path: str, siblings: bool = True, pixels_only: bool = False):
    import rasterio

    too_large = tiff_file_problem(utf8_path(path))
    if too_large:
        raise ChipError(f"{path}: {too_large}")
    options = {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE" if siblings else "EMPTY_DIR"}
    if pixels_only:
        # GDAL builds the CRS when it opens a GeoTIFF; from the GeoKeys alone it
        # skips a slow EPSG database lookup that reading pixels does not need.
        options["GTIFF_SRS_SOURCE"] = "GEOKEYS"
    with rasterio.Env(**options):
        try:
            dataset = rasterio.open(path)
        except rasterio.errors.RasterioError as error:
            raise ChipError(f"{path}: not a readable raster ({error})") from None
        with dataset:
            yield dataset


def _header(path: str, dataset) -> ChipHeader:
    from rasterio.enums import ColorInterp

    dtypes = set(dataset.dtypes)
    if len(dtypes) != 1:
        raise ChipError(f"{path}: bands have different dtypes {sorted(dtypes)}")
    dtype = dtypes.pop()
    nbits = dataset.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    return ChipHeader(
        path=path,
        format=dataset.driver,
        shape=(dataset.height, dataset.width, dataset.count),
        dtype=dtype,
        bits=int(nbits) if nbits else np.dtype(dtype).itemsize * 8,
        paletted=dataset.colorinterp[0] == ColorInterp.palette,
        georeference=_georeference(dataset),
    )


@contextlib.contextmanager
def open_chip(path: str | os.PathLike) -> Iterator[tuple[ChipHeader, Callable[[], np.ndarray]]]:
    """A chip's header, and a function that reads its (rows, cols, bands) pixels, from one GDAL open.

    For callers that decide from the header whether they need GDAL's pixels at
    all; the function works only inside the ``with`` block.
    """
    path = os.fspath(path)
    with _dataset(path) as dataset:
        yield _header(path, dataset), functools.partial(_pixels, dataset, True)


def read_chip_header(path: str | os.PathLike) -> ChipHeader:
    """Format, shape, dtype and georeference of a chip, without decoding pixels (GDAL)."""
    with open_chip(path) as (header, _):
        return header


def _pixels(dataset, channels_last: bool) -> np.ndarray:
    import rasterio

    try:
        if not channels_last:
            return dataset.read()
        # GDAL fills the (rows, cols, bands) buffer through strides: no transpose copy.
        pixels = np.empty((dataset.height, dataset.width, dataset.count), dtype=dataset.dtypes[0])
        dataset.read(out=pixels.transpose(2, 0, 1))
        return pixels
    except rasterio.errors.RasterioError as error:
        detail = error.__cause__ or error  # "Read failed" says less than GDAL's own message
        raise ChipError(f"{dataset.name}: corrupt chip, pixels cannot be decoded ({detail})") from None


def read_chip(path: str | os.PathLike, siblings: bool = True) -> tuple[np.ndarray, ChipGeoreference]:
    """Pixels (bands, rows, cols) and georeference of a chip (GDAL).

    ``siblings=False`` stops GDAL from listing the chip's folder in search of
    sidecar files (.aux.xml, world files), which costs time in proportion to the
    number of files there; use it only for chips that carry their own
    georeferencing, like GeoTIFFs. Raises `ChipError` naming the file when it is
    missing, not a raster, or its pixels cannot be decoded (truncated, corrupt).
    """
    with _dataset(os.fspath(path), siblings) as dataset:
        return _pixels(dataset, channels_last=False), _georeference(dataset)


def read_chip_pixels(path: str | os.PathLike, siblings: bool = True, channels_last: bool = False) -> np.ndarray:
    """Pixels of a chip, (bands, rows, cols) or with ``channels_last`` (rows, cols, bands).

    Like `read_chip` without the georeference; ``channels_last`` is filled by GDAL
    directly, faster than transposing, for pixel-interleaved files most of all.
    """
    with _dataset(os.fspath(path), siblings, pixels_only=True) as dataset:
        return _pixels(dataset, channels_last)


def _esri_class_names(definition) -> dict[str, str] | None:
    classes = definition.get("Classes") if isinstance(definition, dict) else None
    if not isinstance(classes, list):
        return None
    return {str(int(c["Value"])): str(c["Name"]) for c in classes if "Value" in c and "Name" in c}


def parse_manifest(content: bytes, path: str) -> ChipManifest:
    """The `ChipManifest` of ``content``, the bytes of ``manifest.json`` (ours) or an ESRI ``*.emd`` at ``path``.

    Raises `ChipError` naming ``path`` when it is not valid JSON or not a JSON object.
    """
    try:
        if not path.lower().endswith(".emd"):
            manifest = json.loads(content.decode("utf-8"))
            if not isinstance(manifest, dict):
                raise TypeError(f"a JSON object was expected, not {type(manifest).__name__}")
            names, statistics = manifest.get("class_names"), manifest.get("statistics")
            if not isinstance(statistics, (dict, type(None))):
                raise TypeError(f"statistics must be an object, not {type(statistics).__name__}")
            return ChipManifest(
                statistics=statistics,
                class_names={str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None,
            )
        return ChipManifest(statistics=None, class_names=_esri_class_names(json.loads(content.decode("utf-8-sig"))))
    except (ValueError, KeyError, TypeError) as error:
        raise ChipError(f"{path}: not a valid chip manifest ({error})") from None


def read_manifest(folder: str | os.PathLike) -> ChipManifest:
    """Class names and statistics from ``manifest.json`` (ours) or an ESRI ``*.emd`` (`parse_manifest`).

    Missing files give None fields; a file that exists but cannot be read, is not
    valid JSON or is not a JSON object raises `ChipError` naming it.
    """
    root = os.fspath(folder)
    manifest = os.path.join(root, MANIFEST_NAME)
    try:
        if not os.path.isfile(manifest):
            emds = sorted(n for n in os.listdir(root) if n.lower().endswith(".emd"))
            if not emds:
                return ChipManifest(statistics=None, class_names=None)
            manifest = os.path.join(root, emds[0])
        with open(manifest, "rb") as stream:
            return parse_manifest(stream.read(), manifest)
    except OSError as error:
        raise ChipError(f"{error.filename or manifest}: cannot read chip manifest ({error.strerror})") from None


def valid_pixels(image: np.ndarray, nodata: int | float | None) -> np.ndarray:
    """(rows, cols) True where no band of (bands, rows, cols) holds ``nodata`` or NaN."""
    missing = np.isnan(image) if image.dtype.kind == "f" else np.zeros(image.shape, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        missing |= image == nodata
    return ~np.any(missing, axis=0)
