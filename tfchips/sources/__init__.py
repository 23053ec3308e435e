"""Imagery sources: where scenes are found and how they are read onto a tile.

`open_source` picks the implementation from the ``--catalog`` string:

- ``earthone:PRODUCT_ID``: an EarthOne product (`EarthOneProduct`);
- an ``http(s)://`` URL ending in ``.json``: a static STAC catalog or collection (`StaticCatalog`);
- any other ``http(s)://`` URL: a STAC API that answers ``/search`` (`StacApi`);
- anything else: a local ``catalog.json`` / ``collection.json``, or a folder holding one.

What a STAC catalog may make tfchips read is bounded by a `TrustBoundary` (network catalogs
name only http(s), s3 and gs URLs; no catalog names a device or standard input) and by
`CatalogLimits` (bytes per document, seconds per request, pages per search, items per
static catalog); both default to the environment's ``TFCHIPS_*`` settings.
"""

from __future__ import annotations

import functools
import os

from tfchips.sources.base import RESAMPLING, Pixels, Scene, SceneQuery, Source
from tfchips.sources.earthone import PREFIX as EARTHONE_PREFIX
from tfchips.sources.earthone import EarthOneProduct
from tfchips.sources.raster import BandRef, read_bands
from tfchips.sources.limits import CatalogLimits
from tfchips.sources.stac import StaticCatalog
from tfchips.sources.stac_api import StacApi
from tfchips.sources.trust import TrustBoundary

__all__ = [
    "RESAMPLING",
    "BandRef",
    "CatalogLimits",
    "EarthOneProduct",
    "Pixels",
    "Scene",
    "SceneQuery",
    "Source",
    "StacApi",
    "StaticCatalog",
    "TrustBoundary",
    "open_source",
    "read_bands",
]


def open_source(
    catalog: str,
    collection: str | None = None,
    boundary: TrustBoundary | None = None,
    limits: CatalogLimits | None = None,
) -> Source:
    """The source behind a ``--catalog`` string, opened once per process and then reused.

    A static catalog is indexed on first use; later calls with the same arguments return
    the same object, so a job over thousands of tiles reads catalog.json once.

    Args:
        catalog: see the module docstring.
        collection: collection id to search (STAC API) or keep (static catalog).
        boundary: what the catalog may name (see `TrustBoundary`); default: the environment's.
        limits: bounds on reading it (see `CatalogLimits`); default: the environment's.
    """
    if "://" not in catalog and not catalog.startswith(EARTHONE_PREFIX):
        catalog = os.path.abspath(catalog)
    boundary = boundary or TrustBoundary.from_environment()
    return _open(catalog, collection, boundary, limits or CatalogLimits.from_environment())


@functools.lru_cache(maxsize=32)
def _open(catalog: str, collection: str | None, boundary: TrustBoundary, limits: CatalogLimits) -> Source:
    if catalog.startswith(EARTHONE_PREFIX):
        return EarthOneProduct(catalog[len(EARTHONE_PREFIX) :])
    if catalog.startswith(("http://", "https://")) and not catalog.split("?")[0].endswith(".json"):
        return StacApi(catalog, collection, boundary, limits)
    return StaticCatalog(catalog, collection, boundary, limits)


open_source.cache_clear = _open.cache_clear  # type: ignore[attr-defined]
