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
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from tfchips.errors import RasterReadError
from tfchips.grid import Tile
from tfchips.sources.base import RESAMPLING, Pixels, first_line, redact_text, redact_url
from tfchips.sources.retry import TRANSIENT_STATUS, RetryError, RetryPolicy, with_retries
from tfchips.size_limits import READ_PIXELS
from tfchips.tiff_directory import tiff_file_problem

# Remote COGs: never list the folder, merge neighbouring range requests.
# Retries and timeouts come from the `RetryPolicy` of each read.
_GDAL_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
}
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

    Each file is opened once however many of its bands are asked for. ``label`` (an item
    id, say) prefixes error messages, which always name the file.
    """
    if resampling not in RESAMPLING:
        raise ValueError(f"unknown resampling {resampling!r}; expected one of {', '.join(RESAMPLING)}")
    positions: dict[str, list[int]] = {}
    for position, ref in enumerate(refs):
        positions.setdefault(ref.href, []).append(position)
    parts: dict[str, Pixels] = {}
    prefix = f"{label}: " if label else ""
    policy = RetryPolicy.from_environment()
    with rasterio.Env(**_GDAL_OPTIONS, **policy.gdal_options()):
        for href, where in positions.items():
            parts[href] = _read_href(href, [refs[p] for p in where], tile, resampling, prefix, policy)
    dtype = np.result_type(*(part.values.dtype for part in parts.values()))
    values = np.ma.masked_all((len(refs), *tile.shape), dtype=dtype)
    for href, where in positions.items():
        values[where] = parts[href].values
    scale_offset = tuple((float(ref.scale), float(ref.offset)) for ref in refs)
    return Pixels(values=values, nodata=parts[refs[0].href].nodata, scale_offset=scale_offset)


def _read_href(
    href: str, refs: Sequence[BandRef], tile: Tile, resampling: str, prefix: str, policy: RetryPolicy
) -> Pixels:
    """One file's bands; a remote file is read again from scratch after a failure.

    GDAL caches what it fetched, truncated blocks included, so the whole read is retried,
    each time with GDAL's cache of remote files dropped; GDAL itself does not retry (see
    `RetryPolicy.gdal_options`), so a file is tried at most ``attempts`` times in all.
    A local TIFF whose tags hold more bytes than `TIFF_TAG_BYTES` allows is refused before
    GDAL reads them.
    """

    def read() -> Pixels:
        with rasterio.open(href) as dataset:
            return _read_file(dataset, refs, tile, resampling, prefix)

    try:
        if not href.startswith(_REMOTE):
            too_large = tiff_file_problem(href)
            if too_large:
                raise RasterReadError(redact_text(f"{prefix}{href}: {too_large}"))
            return read()
        return with_retries(read, policy, _transient_gdal_error, _forget_remote_files, f"reading {redact_url(href)}")
    # GDAL errors that rasterio does not wrap (PROJ finding no transformation between two
    # CRSs, say) are CPLE_BaseError, not RasterioError.
    except (RasterioError, CRSError, CPLE_BaseError, RetryError) as error:
        raise RasterReadError(redact_text(f"{prefix}cannot read {href}: {first_line(error)}")) from None


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


def _read_file(dataset, refs: Sequence[BandRef], tile: Tile, resampling: str, prefix: str) -> Pixels:
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
    rows, cols = tile.shape
    bounds = transform_bounds(tile.crs, dataset.crs, *tile.bounds, densify_pts=21)
    source = _source_window(dataset, bounds, _overview_factor(dataset, indexes[0], bounds, tile.shape))
    if source is None:
        return Pixels(np.ma.masked_all((len(refs), rows, cols), dtype=dtype), declared[0])
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
    warped = np.full((len(indexes), rows, cols), fill, dtype=raw.dtype)
    common = dict(src_transform=source.transform, src_crs=dataset.crs, dst_transform=tile.transform, dst_crs=tile.crs)
    reproject(
        filled,
        warped,
        src_nodata=fill if invalid.any() else None,
        dst_nodata=fill,
        resampling=Resampling[resampling],
        **common,
    )
    # Coverage follows the nearest source pixel, whatever resampling the values use.
    coverage = np.zeros((len(indexes), rows, cols), dtype=np.uint8)
    reproject(
        (~invalid).astype(np.uint8), coverage, src_nodata=0, dst_nodata=0, resampling=Resampling.nearest, **common
    )
    return Pixels(np.ma.MaskedArray(warped, mask=coverage == 0), declared[0])


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


def fits_dtype(value: float, dtype: np.dtype) -> bool:
    """Whether ``value`` can be stored in ``dtype``: a whole number within an integer dtype's
    range; for a float dtype NaN, infinities and any number that does not overflow it to
    infinity (it is stored rounded to the nearest value the dtype holds)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return not math.isfinite(value) or bool(np.isfinite(dtype.type(value)))
    if isinstance(value, float) and not value.is_integer():  # also False for NaN and infinities
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max
