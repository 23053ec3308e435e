"""Reading raster bands onto a tile's pixel grid.

Only the source window under the tile is read (plus a few pixels for the resampling
kernel), from the coarsest overview that is still at least as fine as the tile, so a
64 px tile costs a handful of COG blocks however large the scene. The window is then
warped onto the tile's CRS, transform and shape; nodata is carried as a mask.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from tfchips.errors import RasterReadError
from tfchips.grid import Tile
from tfchips.sources.base import RESAMPLING, Pixels, first_line, redact_text, redact_url
from tfchips.sources.dataset_pool import DatasetPool, gdal_options, worker_pool
from tfchips.sources.retry import TRANSIENT_STATUS, RetryError, RetryPolicy, with_retries
from tfchips.size_limits import READ_PIXELS
from tfchips.sources.warp import SourceRead, fits_dtype, warp_reads
from tfchips.tiff_directory import tiff_file_problem

# Prefixes of rasters GDAL reads over the network.
_REMOTE = ("http://", "https://", "s3://", "gs://", "az://", "/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls")
# Source pixels kept around the tile's footprint so bilinear and cubic kernels see their neighbours.
_KERNEL_MARGIN = 3


@dataclass(frozen=True)
class BandRef:
    """Where one band lives: a raster file or URL, its 1-based band index, the nodata
    value to assume when the file declares none, and the scale and offset that make its
    stored values physical ones (all from STAC ``raster:bands``)."""

    href: str
    index: int = 1
    nodata: int | float | None = None
    scale: float = 1.0
    offset: float = 0.0


def read_bands(refs: Sequence[BandRef], tile: Tile, resampling: str = "nearest", label: str = "") -> Pixels:
    """Bands ``refs`` on the tile grid, as a masked (bands, rows, cols) array.

    Each file is opened once however many of its bands are asked for, and kept open for
    the next tile (see `tfchips.sources.dataset_pool`); the bands of files on one grid are
    warped together, their coverage in the same call (see `tfchips.sources.warp`).
    ``label`` (an item id, say) prefixes error messages, which always name the file.
    """
    return read_bands_and_masks(refs, (), tile, resampling, label)[0]


def read_bands_and_masks(
    refs: Sequence[BandRef], masks: Sequence[BandRef], tile: Tile, resampling: str = "nearest", label: str = ""
) -> tuple[Pixels, np.ma.MaskedArray]:
    """`read_bands` of ``refs``, and of ``masks`` (class or probability rasters) read with
    nearest resampling, all in one pass: a file holding both is read once, and bands and
    masks on one grid are warped in one call. The masks come back as a masked
    (masks, rows, cols) array in their files' dtype, the bands in theirs."""
    if resampling not in RESAMPLING:
        raise ValueError(f"unknown resampling {resampling!r}; expected one of {', '.join(RESAMPLING)}")
    every = [*refs, *masks]
    methods = [resampling] * len(refs) + ["nearest"] * len(masks)
    positions: dict[str, list[int]] = {}
    for position, ref in enumerate(every):
        positions.setdefault(ref.href, []).append(position)
    prefix = f"{label}: " if label else ""
    policy = RetryPolicy.from_environment()
    pool = worker_pool()
    with rasterio.Env(**gdal_options(), **policy.gdal_options()):
        reads = [
            _read_href(href, every, where, methods, tile, prefix, policy, pool) for href, where in positions.items()
        ]
    values = warp_reads(reads, len(every), tile)
    bands = _section(values, reads, 0, len(refs))
    scale_offset = tuple((float(ref.scale), float(ref.offset)) for ref in refs)
    return Pixels(bands, reads[0].nodata, scale_offset), _section(values, reads, len(refs), len(every))


def _section(values: np.ma.MaskedArray, reads: Sequence[SourceRead], start: int, stop: int) -> np.ma.MaskedArray:
    """Layers ``start:stop`` of ``values`` in the dtype of the files they come from."""
    kinds = [read.dtype for read in reads if any(start <= p < stop for p in read.positions)]
    dtype = np.result_type(*kinds) if kinds else np.dtype(np.uint8)
    return values[start:stop].astype(dtype, copy=False)


def _read_href(
    href: str,
    refs: Sequence[BandRef],
    where: Sequence[int],
    methods: Sequence[str],
    tile: Tile,
    prefix: str,
    policy: RetryPolicy,
    pool: DatasetPool,
) -> SourceRead:
    """One file's bands (``refs`` at positions ``where``) under the tile; a remote file is
    read again from scratch after a failure.

    GDAL caches what it fetched, truncated blocks included, so the whole read is retried,
    each time with the dataset closed and GDAL's cache of remote files dropped; GDAL itself
    does not retry (see `RetryPolicy.gdal_options`), so a file is tried at most ``attempts``
    times in all. A local TIFF whose tags hold more bytes than `TIFF_TAG_BYTES` allows is
    refused before GDAL reads them.
    """

    def read() -> SourceRead:
        try:
            dataset = pool.get(href, _opener(prefix))
            return _read_file(dataset, [refs[p] for p in where], where, [methods[p] for p in where], tile, prefix)
        except BaseException:
            pool.forget(href)
            raise

    def forget() -> None:
        pool.forget(href)
        _forget_remote_files()

    try:
        if not href.startswith(_REMOTE):
            return read()
        return with_retries(read, policy, _transient_gdal_error, forget, f"reading {redact_url(href)}")
    # GDAL errors that rasterio does not wrap (PROJ finding no transformation between two
    # CRSs, say) are CPLE_BaseError, not RasterioError.
    except (RasterioError, CRSError, CPLE_BaseError, RetryError) as error:
        raise RasterReadError(redact_text(f"{prefix}cannot read {href}: {first_line(error)}")) from None


def _opener(prefix: str):
    def open_raster(href: str):
        if not href.startswith(_REMOTE):
            too_large = tiff_file_problem(href)
            if too_large:
                raise RasterReadError(redact_text(f"{prefix}{href}: {too_large}"))
        return rasterio.open(href)

    return open_raster


def _transient_gdal_error(error: BaseException) -> tuple[bool, float | None]:
    """Any GDAL error on a remote file may be the network's, except an HTTP status that says "never"."""
    if not isinstance(error, RasterioError):
        return False, None
    status = re.search(r"HTTP response code: (\d+)", first_line(error))
    return (status is None or int(status.group(1)) in TRANSIENT_STATUS), None


def _forget_remote_files() -> None:
    """Drop GDAL's cache of /vsicurl/ (and /vsis3/, ...) files, so a retry fetches them again."""
    for library in _gdal_libraries():
        library.VSICurlClearCache()


@functools.lru_cache(maxsize=1)
def _gdal_libraries() -> tuple:
    """The GDAL shared libraries loaded in this process, through ctypes.

    rasterio does not expose ``VSICurlClearCache``. Wheels bundle their own GDAL
    (pyogrio's may sit beside rasterio's), so on Linux every libgdal found in
    /proc/self/maps is returned; elsewhere the one the system finds by name.
    """
    paths = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "/libgdal" in line})
    except OSError:
        pass
    paths = paths or [ctypes.util.find_library("gdal")]
    libraries = []
    for path in filter(None, paths):
        try:
            library = ctypes.CDLL(path)
            library.VSICurlClearCache.restype = None
        except (OSError, AttributeError):
            continue
        libraries.append(library)
    return tuple(libraries)


def _read_file(
    dataset, refs: Sequence[BandRef], where: Sequence[int], methods: Sequence[str], tile: Tile, prefix: str
) -> SourceRead:
    indexes = [ref.index for ref in refs]
    for index in indexes:
        if not 1 <= index <= dataset.count:
            raise RasterReadError(redact_text(f"{prefix}{dataset.name} has {dataset.count} band(s), no band {index}"))
    if dataset.crs is None:
        raise RasterReadError(redact_text(f"{prefix}{dataset.name} has no CRS"))
    declared = [
        dataset.nodatavals[index - 1] if dataset.nodatavals[index - 1] is not None else ref.nodata
        for index, ref in zip(indexes, refs)
    ]
    dtype = np.dtype(dataset.dtypes[indexes[0] - 1])
    bounds = transform_bounds(tile.crs, dataset.crs, *tile.bounds, densify_pts=21)
    source = _source_window(dataset, bounds, _overview_factor(dataset, indexes[0], bounds, tile.shape))
    if source is None:
        return SourceRead(tuple(where), tuple(methods), declared[0], dtype)
    # The header alone sets the window's size (a scene may declare any number of pixels
    # under the tile): refuse it before GDAL allocates it.
    excess = READ_PIXELS.excess(len(indexes) * math.prod(source.shape))
    if excess:
        window = " x ".join(map(str, (len(indexes), *source.shape)))
        message = f"{prefix}{dataset.name}: a read window of {window} (bands x rows x cols) is {excess}"
        raise RasterReadError(redact_text(message))

    # Asking GDAL for a decimated window makes it read the matching overview.
    data = dataset.read(indexes, window=source.window, out_shape=(len(indexes), *source.shape), masked=True)
    invalid = np.ma.getmaskarray(data).copy()
    raw = np.asarray(data.data)
    for band, value in enumerate(declared):
        if value is None:
            continue
        invalid[band] |= np.isnan(raw[band]) if np.isnan(value) else raw[band] == value
    if raw.dtype.kind == "f":
        invalid |= np.isnan(raw)
    fill = next((v for v in declared if v is not None and fits_dtype(v, raw.dtype)), 0)
    filled = np.where(invalid, np.asarray(fill, dtype=raw.dtype), raw)
    return SourceRead(
        tuple(where), tuple(methods), declared[0], raw.dtype, filled, invalid, fill, dataset.crs, source.transform
    )


def _overview_factor(dataset, index: int, bounds: tuple, shape: tuple[int, int]) -> int:
    """Largest overview decimation whose pixels are not coarser than the tile's."""
    left, bottom, right, top = bounds
    rows, cols = shape
    target = min((right - left) / cols, (top - bottom) / rows)
    native = min(abs(dataset.res[0]), abs(dataset.res[1]))
    usable = [f for f in dataset.overviews(index) if f * native <= target * (1 + 1e-9)]
    return max(usable, default=1)


@dataclass(frozen=True)
class _SourceWindow:
    """What to ask GDAL for: a window in full-resolution pixels (fractional when overview
    pixels are not a whole number of them), the (rows, cols) it comes back as, and the
    transform of those pixels in the dataset CRS."""

    window: Window
    shape: tuple[int, int]
    transform: Affine


def _source_window(dataset, bounds: tuple, factor: int = 1, margin: int = _KERNEL_MARGIN) -> _SourceWindow | None:
    """The pixels of the overview with decimation ``factor`` (1: full resolution) under
    ``bounds`` (in the dataset CRS), grown by ``margin`` of them, clipped to the raster.

    The window covers whole overview pixels: asked for one that starts inside an overview
    pixel, GDAL reads from the nearest whole one, up to half a pixel away from where the
    window says. GDAL makes an overview ceil(width / factor) pixels wide over the full
    raster's extent, so its pixels are width / ceil(width / factor) full pixels wide: not
    quite ``factor`` when the width is not a multiple of it. Any affine transform works
    (north-up, south-up, rotated): the window is the pixel-space envelope of the corners.
    """
    width, height = dataset.width, dataset.height
    cols, rows = math.ceil(width / factor), math.ceil(height / factor)
    left, bottom, right, top = bounds
    inverse = ~dataset.transform
    xs, ys = zip(*(inverse @ corner for corner in ((left, bottom), (left, top), (right, bottom), (right, top))))
    col0 = max(math.floor(min(xs) * cols / width) - margin, 0)
    row0 = max(math.floor(min(ys) * rows / height) - margin, 0)
    col1 = min(math.ceil(max(xs) * cols / width) + margin, cols)
    row1 = min(math.ceil(max(ys) * rows / height) + margin, rows)
    if col1 <= col0 or row1 <= row0:
        return None
    window = Window(
        col0 * width / cols, row0 * height / rows, (col1 - col0) * width / cols, (row1 - row0) * height / rows
    )
    transform = (
        dataset.transform
        @ Affine.translation(window.col_off, window.row_off)
        @ Affine.scale(width / cols, height / rows)
    )
    return _SourceWindow(window, (row1 - row0, col1 - col0), transform)
