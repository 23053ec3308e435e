"""Raster datasets kept open between tiles, so that neighbouring tiles reuse what was fetched.

A closed dataset loses GDAL's block cache and its header: the next tile over the same
file would read the header again and fetch the blocks it shares with its neighbour a
second time. Each worker thread therefore keeps the datasets it opened in a bounded
least-recently-used pool (``TFCHIPS_OPEN_RASTERS`` datasets, 32 by default); GDAL's
block cache is bounded by ``GDAL_CACHEMAX`` (256 MiB unless the environment sets it).
GDAL's per-file ``VSI_CACHE`` stays off: up to 25 MB per open file, it fetched no fewer
bytes (`benchmarks.bench_fetch`: 1.17 times the unique bytes either way) and grew a
worker's peak memory over 5,000 tiles by 15 MB. A dataset whose read failed is closed
and dropped, so that a retry starts afresh.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable

import rasterio

from tfchips.errors import ConfigError

OPEN_RASTERS_VARIABLE = "TFCHIPS_OPEN_RASTERS"
DEFAULT_OPEN_RASTERS = 32
# MiB of decoded blocks GDAL keeps per process; its own default is 5% of the machine's memory.
DEFAULT_CACHE_MB = 256


def gdal_options() -> dict[str, str | int]:
    """GDAL settings for reading rasters: remote COGs never list their folder, neighbouring
    range requests merge, and the block cache has a fixed bound (GDAL reads a
    ``GDAL_CACHEMAX`` of the environment itself)."""
    options: dict[str, str | int] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    }
    if not os.environ.get("GDAL_CACHEMAX"):
        options["GDAL_CACHEMAX"] = DEFAULT_CACHE_MB << 20  # rasterio passes bytes on as bytes
    return options


def open_rasters_from_environment() -> int:
    """How many datasets each worker thread keeps open (``TFCHIPS_OPEN_RASTERS``)."""
    text = os.environ.get(OPEN_RASTERS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_OPEN_RASTERS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{OPEN_RASTERS_VARIABLE} must be a whole number of at least 1, got {text!r}")
    return int(text)


class DatasetPool:
    """Open datasets keyed by href, at most ``size`` of them; the least recently used closes first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._open: OrderedDict[tuple[str, tuple | None], rasterio.DatasetReader] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, href: str, opener: Callable[[str], rasterio.DatasetReader] = rasterio.open):
        """The open dataset of ``href``, opened with ``opener`` if it is not open yet.

        A local file changed since it was opened (another size or modification time) is
        opened again.
        """
        key = (href, _version(href))
        dataset = self._open.get(key)
        if dataset is not None and not dataset.closed:
            self._open.move_to_end(key)
            return dataset
        self.forget(href)
        dataset = opener(href)
        self._open[key] = dataset
        while len(self._open) > self.size:
            self._open.popitem(last=False)[1].close()
        return dataset

    def forget(self, href: str) -> None:
        """Close and drop the dataset of ``href``, if open."""
        for key in [key for key in self._open if key[0] == href]:
            self._open.pop(key).close()

    def clear(self) -> None:
        """Close every dataset."""
        while self._open:
            self._open.popitem()[1].close()


def _version(href: str) -> tuple | None:
    """(size, modification time) of a local file; None for a URL or a path that cannot be seen."""
    if "://" in href or href.startswith("/vsi"):
        return None
    try:
        status = os.stat(href)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


_local = threading.local()


def worker_pool() -> DatasetPool:
    """This thread's pool; rasterio datasets must not be shared between threads.

    The pool's size follows ``TFCHIPS_OPEN_RASTERS`` as it is when the pool is asked for.
    """
    pool = getattr(_local, "pool", None)
    size = open_rasters_from_environment()
    if pool is None:
        pool = _local.pool = DatasetPool(size)
    elif pool.size != size:
        pool.clear()
        pool.size = size
    return pool
