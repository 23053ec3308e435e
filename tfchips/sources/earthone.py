"""EarthOne (EarthDaily, formerly Descartes Labs) products as an imagery source.

Scenes are the product's images whose footprint meets the tile, filtered by acquisition
date and ``cloud_fraction`` on the server; pixels come from the Raster service, which
rasters each image straight onto the DLTile of the tile key. Needs the optional
``earthdaily-earthone`` package and an EarthOne account.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

import numpy as np

from tfchips.errors import CatalogError, CredentialsError, RasterReadError, TfchipsError
from tfchips.grid import Tile
from tfchips.sources.base import Pixels, Scene, SceneQuery, Source, as_utc, first_line, sorted_scenes

PREFIX = "earthone:"
# The Raster service's names for our resampling choices.
_RESAMPLER = {"nearest": "near", "bilinear": "bilinear", "cubic": "cubic", "average": "average", "mode": "mode"}


class EarthOneProduct(Source):
    """Images of one EarthOne product.

    ``catalog_client`` and ``raster_client`` default to the client's own, authenticated
    from ``EARTHONE_CLIENT_ID`` / ``EARTHONE_CLIENT_SECRET``, ``EARTHONE_TOKEN`` or the
    file written by ``earthone auth login``; pass others to point at another service.
    """

    def __init__(self, product_id: str, catalog_client=None, raster_client=None) -> None:
        if not product_id:
            raise CatalogError(f"{PREFIX}: no product id; write it as {PREFIX}PRODUCT_ID")
        try:
            from earthdaily.earthone.catalog import CatalogClient
            from earthdaily.earthone.core.client.services.raster import Raster
        except ImportError:
            raise CatalogError(
                f"{PREFIX}{product_id}: the earthdaily-earthone package is not installed;"
                " pip install 'tfchips[earthone]'"
            ) from None
        self.name = PREFIX + product_id
        self.product_id = product_id
        if catalog_client is None or raster_client is None:
            check_credentials(self.name)
        self._catalog = catalog_client or CatalogClient.get_default_client()
        self._raster = raster_client or Raster.get_default_client()

    def search(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        from earthdaily.earthone.catalog import Image
        from earthdaily.earthone.catalog import properties as p

        search = Image.search(client=self._catalog).filter(p.product_id == self.product_id)
        search = search.intersects(tile.geometry)
        if query.start is not None:
            search = search.filter(p.acquired >= query.start)
        if query.end is not None:
            search = search.filter(p.acquired <= query.end)
        if query.max_cloud is not None:
            search = search.filter(p.cloud_fraction <= query.max_cloud / 100.0)
        with _service_errors(self.name, f"image search for tile {tile.key}"):
            images = list(search)
        scenes = []
        for image in images:
            cloud = image.cloud_fraction
            scenes.append(
                Scene(
                    id=image.id,
                    datetime=as_utc(image.acquired),
                    cloud_cover=None if cloud is None else 100.0 * cloud,
                    handle=image.id,
                )
            )
        return sorted_scenes([s for s in scenes if query.accepts(s.datetime, s.cloud_cover)])

    def read(self, scene: Scene, bands: Sequence[str], tile: Tile, resampling: str = "nearest") -> Pixels:
        with _service_errors(self.name, f"raster of image {scene.id!r} on tile {tile.key}", RasterReadError):
            array, _ = self._raster.ndarray(
                inputs=[scene.handle],
                bands=list(bands),
                dltile=tile.key,
                resampler=_RESAMPLER[resampling],
                order="gdal",
                masked=True,
                mask_nodata=True,
                mask_alpha=False,
                progress=False,
            )
        values = np.ma.asarray(array)
        if values.ndim == 2:
            values = values[np.newaxis]
        if values.shape != (len(bands), *tile.shape):
            raise RasterReadError(
                f"{self.name}: image {scene.id!r} came back with shape {values.shape},"
                f" expected {(len(bands), *tile.shape)} for tile {tile.key}"
            )
        return Pixels(np.ma.MaskedArray(values.data, mask=np.ma.getmaskarray(values)), None)


def check_credentials(name: str) -> None:
    """Raise `CredentialsError` naming the variable to set when no EarthOne credential is found."""
    from earthdaily.earthone.auth import auth as eo_auth

    env = os.environ
    if env.get(eo_auth.EARTHONE_TOKEN):
        return
    client_id = env.get(eo_auth.EARTHONE_CLIENT_ID)
    # Whichever variable holds the secret that goes with the client id.
    secrets = (eo_auth.EARTHONE_CLIENT_SECRET, eo_auth.EARTHONE_REFRESH_TOKEN)
    secret_name = next((variable for variable in secrets if env.get(variable)), None)
    if client_id and secret_name:
        return
    if client_id:
        raise CredentialsError(f"{name}: EARTHONE_CLIENT_ID is set but no secret; set EARTHONE_CLIENT_SECRET")
    if secret_name:
        raise CredentialsError(f"{name}: {secret_name} is set but no id; set EARTHONE_CLIENT_ID")
    token_file = env.get(eo_auth.EARTHONE_TOKEN_INFO_PATH) or eo_auth.DEFAULT_TOKEN_INFO_PATH
    if os.path.isfile(token_file):
        return
    raise CredentialsError(
        f"{name}: no EarthOne credentials; set EARTHONE_CLIENT_ID and EARTHONE_CLIENT_SECRET"
        f" (or EARTHONE_TOKEN), or run 'earthone auth login' to write {token_file}"
    )


@contextlib.contextmanager
def _service_errors(name: str, action: str, default: type[TfchipsError] = CatalogError) -> Iterator[None]:
    """Turn the client's exceptions into tfchips errors that name the product."""
    from earthdaily.earthone import exceptions

    try:
        yield
    except TfchipsError:
        raise
    except (exceptions.AuthError, exceptions.UnauthorizedError, exceptions.ForbiddenError) as error:
        raise CredentialsError(
            f"{name}: {action} was refused ({first_line(error)}); check the EarthOne credentials"
        ) from None
    except Exception as error:  # network, server and client errors alike
        raise default(f"{name}: {action} failed ({first_line(error)})") from None
