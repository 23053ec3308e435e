import os

import pytest

# TensorFlow's start-up chatter is noise in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Retries back off for milliseconds, not seconds, so that refused connections fail fast.
os.environ.setdefault("TFCHIPS_RETRY_BACKOFF", "0.01")


def write_vector(path, geometries, crs="EPSG:4326", fields=None, layer=None, append=False) -> str:
    """Write shapely ``geometries`` with ``fields`` (name -> values) as a vector file, driver by suffix."""
    import numpy as np
    import pyogrio
    import shapely

    fields = fields or {}
    driver = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON"}[os.path.splitext(str(path))[1]]
    pyogrio.raw.write(
        str(path),
        shapely.to_wkb(np.array(geometries, dtype=object)),
        [np.asarray(v) for v in fields.values()],
        list(fields),
        geometry_type="Unknown",
        crs=crs,
        driver=driver,
        layer=layer,
        append=append,
    )
    return str(path)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo catalog and labels, generated once per test session; tests copy, never change, them."""
    from tfchips.demo_data import generate

    return generate(str(tmp_path_factory.mktemp("demo")), seed=0)
