"""Imagery sources: where scenes are found and how they are read onto a tile.

`open_source` picks the implementation from the ``--catalog`` string:

- ``earthone:PRODUCT_ID``: an EarthOne product (`EarthOneProduct`);
- an ``http(s)://`` URL ending in ``.json``: a static STAC catalog or collection (`StaticCatalog`);
- any other ``http(s)://`` URL: a STAC API that answers ``/search`` (`StacApi`);
- anything else: a local ``catalog.json`` / ``collection.json``, or a folder holding one.
"""

from __future__ import annotations

import functools
import os

from tfchips.sources.base import RESAMPLING, Pixels, Scene, SceneQuery, Source
from tfchips.sources.earthone import PREFIX as EARTHONE_PREFIX
from tfchips.sources.earthone import EarthOneProduct
from tfchips.sources.raster import BandRef, read_bands
from tfchips.sources.stac import StacApi, StaticCatalog

__all__ = [
    "RESAMPLING",
    "BandRef",
    "EarthOneProduct",
    "Pixels",
    "Scene",
    "SceneQuery",
    "Source",
    "StacApi",
    "StaticCatalog",
    "open_source",
    "read_bands",
]


def open_source(catalog: str, collection: str | None = None) -> Source:
    """The source behind a ``--catalog`` string, opened once per process and then reused.

    A static catalog is read entirely on first use; later calls with the same arguments
    return the same object, so a job over thousands of tiles reads catalog.json once.
    """
    if "://" not in catalog and not catalog.startswith(EARTHONE_PREFIX):
        catalog = os.path.abspath(catalog)
    return _open(catalog, collection)


@functools.lru_cache(maxsize=32)
def _open(catalog: str, collection: str | None) -> Source:
    if catalog.startswith(EARTHONE_PREFIX):
        return EarthOneProduct(catalog[len(EARTHONE_PREFIX) :])
    if catalog.startswith(("http://", "https://")) and not catalog.split("?")[0].endswith(".json"):
        return StacApi(catalog, collection)
    return StaticCatalog(catalog, collection)


open_source.cache_clear = _open.cache_clear  # type: ignore[attr-defined]
