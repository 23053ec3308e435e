"""A small synthetic STAC catalog and ground truth, generated offline from a seed.

`generate` writes, over a 1.8 km x 1.9 km area near Santa Fe, New Mexico:

- ``catalog.json`` with five Sentinel-2-like scenes (June-July 2023): cloud-optimised
  GeoTIFFs ``blue``, ``green``, ``red``, ``nir`` (uint16 reflectance x 10 000) and ``scl``
  (uint8 scene classes: 3 cloud shadow, 4 vegetation, 5 bare, 6 water, 8/9 cloud,
  10 cirrus); four scenes in UTM 13N, one in the neighbouring zone 12N, one covering only
  part of the area. Like Sentinel-2 files, the GeoTIFFs declare no nodata: the value 0
  is declared in the STAC ``raster:bands`` instead;
- ``labels.gpkg``: polygons in WGS84 with an integer ``class`` attribute (1 building,
  2 water, 3 vegetation; 0 background is everything else), visible in the imagery.

`write_catalog` is the writer behind it, usable for any arrays (the tests build their
catalogs with it). Files are written under temporary names and renamed into place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from pyproj import Transformer
from rasterio.features import rasterize

from tfchips.sources.base import as_utc

# Demo area of interest, W, S, E, N in WGS84 degrees: 16 tiles of 64 px at 10 m.
DEMO_BBOX = (-105.95, 35.68, -105.93, 35.697)
DEMO_CRS = "EPSG:32613"
OTHER_CRS = "EPSG:32612"
RESOLUTION = 10.0
BANDS = ("blue", "green", "red", "nir")
MASK_ASSET = "scl"
MASK_VALUES = (3, 8, 9, 10)
CLASS_NAMES = {0: "background", 1: "building", 2: "water", 3: "vegetation"}
ATTRIBUTE = "class"
# Scene extent beyond the AOI, in metres, so padded tiles on the edge are covered too.
_MARGIN = 1000.0
# Reflectance x 10 000 of each class in blue, green, red, nir.
_SPECTRA = np.array(
    [[700, 950, 1200, 2300], [1600, 1650, 1750, 2000], [500, 450, 300, 150], [300, 600, 350, 3800]],
    dtype=np.float64,
)
_SCL_OF_CLASS = np.array([5, 5, 6, 4], dtype=np.uint8)
# (date, CRS, target cloud fraction, covers only the east of the area)
_SCENES = (
    ("2023-06-03", DEMO_CRS, 0.20, False),
    ("2023-06-13", DEMO_CRS, 0.02, True),
    ("2023-06-23", OTHER_CRS, 0.10, False),
    ("2023-07-03", DEMO_CRS, 0.60, False),
    ("2023-07-13", DEMO_CRS, 0.30, False),
)
_EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_PROJ = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass(frozen=True)
class DemoData:
    """Where `generate` wrote the demo and how to ask for its imagery.

    ``bbox`` is (west, south, east, north) in WGS84 degrees; ``resolution`` in metres.
    """

    root: str
    catalog: str
    labels: str
    attribute: str
    bbox: tuple[float, float, float, float]
    bands: tuple[str, ...]
    mask_asset: str
    mask_values: tuple[int, ...]
    resolution: float
    tilesize: int
    class_names: dict[int, str]
    start: str
    end: str
    reference_date: str
    max_cloud: float

    def imagery_options(self) -> dict:
        """Option values for `tfchips.imagery.ImageryRequest.from_options`."""
        return {
            "catalog": self.catalog,
            "bands": ",".join(self.bands),
            "start": self.start,
            "end": self.end,
            "max_cloud": self.max_cloud,
            "mask_asset": self.mask_asset,
            "mask_values": ",".join(map(str, self.mask_values)),
            "method": "closest",
            "reference_date": self.reference_date,
        }

    def job_options(self, out_dir: str = "samples") -> dict:
        """Every ``tfchips create-samples`` option for this demo, as a YAML config holds them."""
        return {
            "bbox": ",".join(map(str, self.bbox)),
            "resolution": self.resolution,
            "tilesize": self.tilesize,
            **self.imagery_options(),
            "labels": self.labels,
            "attribute": self.attribute,
            "classes": ",".join(f"{value}={name}" for value, name in sorted(self.class_names.items())),
            "out": out_dir,
        }

    def config_options(self) -> dict:
        """`job_options` as ``root/job.yaml`` holds them: paths relative to ``root``, so the folder can move."""
        return {
            **self.job_options("samples"),
            "catalog": os.path.relpath(self.catalog, self.root),
            "labels": os.path.relpath(self.labels, self.root),
        }

    def command_line(self, out_dir: str = "samples") -> str:
        """A suggested ``tfchips create-samples`` invocation on this demo."""
        words = [f"--{name.replace('_', '-')} {value:g}" if isinstance(value, float) else f"--{name.replace('_', '-')} {value}"
                 for name, value in self.job_options(out_dir).items()]
        return " ".join(["tfchips create-samples", *words])


@dataclass(frozen=True)
class SceneSpec:
    """One scene to write: arrays on one grid (``crs``, ``transform``), one file per asset.

    ``assets`` maps asset keys to (rows, cols) or (bands, rows, cols) arrays.
    ``common_names`` gives an asset's ``eo:bands`` common names (one per band).
    ``file_nodata`` is written into the GeoTIFFs, ``stac_nodata`` only into
    ``raster:bands``. ``geometry`` is the WGS84 footprint (default: the raster's bounds).
    A ``datetime`` without a time zone is taken to be UTC.
    """

    id: str
    datetime: datetime
    crs: str
    transform: Affine
    assets: Mapping[str, np.ndarray]
    cloud_cover: float | None = None
    file_nodata: int | float | None = None
    stac_nodata: int | float | None = None
    common_names: Mapping[str, Sequence[str]] = field(default_factory=dict)
    geometry: shapely.Geometry | None = None
    overview_resampling: Mapping[str, str] = field(default_factory=dict)


def write_catalog(
    out_dir: str | os.PathLike, scenes: Sequence[SceneSpec], catalog_id: str = "tfchips-demo", title: str = ""
) -> str:
    """Write a self-contained static STAC catalog of COG scenes; returns the catalog.json path.

    Items go to ``OUT_DIR/ITEM_ID/ITEM_ID.json`` beside their ``ASSET.tif`` files.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    links = [
        {"rel": "root", "href": "./catalog.json", "type": "application/json"},
    ]
    for scene in scenes:
        folder = os.path.join(out_dir, scene.id)
        os.makedirs(folder, exist_ok=True)
        assets = {}
        for key, array in scene.assets.items():
            array = array if array.ndim == 3 else array[np.newaxis]
            _write_cog(
                os.path.join(folder, f"{key}.tif"),
                array,
                scene.crs,
                scene.transform,
                scene.file_nodata,
                scene.overview_resampling.get(key, "average"),
            )
            assets[key] = _asset_json(key, array, scene)
        _write_json(os.path.join(folder, f"{scene.id}.json"), _item_json(scene, assets))
        links.append({"rel": "item", "href": f"./{scene.id}/{scene.id}.json", "type": "application/geo+json"})
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": catalog_id,
        "title": title or catalog_id,
        "description": title or f"Scenes written by tfchips ({len(scenes)} items)",
        "links": links,
    }
    path = os.path.join(out_dir, "catalog.json")
    _write_json(path, catalog)
    return path


def generate(out_dir: str | os.PathLike, seed: int = 0) -> DemoData:
    """Write the demo catalog and labels under ``out_dir``; same seed, same pixels."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    to_utm = Transformer.from_crs(4326, DEMO_CRS, always_xy=True)
    west, south, east, north = to_utm.transform_bounds(*DEMO_BBOX)
    classes = _ground_truth(rng, (west, south, east, north))

    scenes = []
    for number, (day, crs, cloudiness, partial) in enumerate(_SCENES):
        scenes.append(_demo_scene(rng, number, day, crs, cloudiness, partial, classes))
    catalog = write_catalog(out_dir, scenes, "tfchips-demo", "tfchips synthetic Sentinel-2-like demo scenes")
    labels = os.path.join(out_dir, "labels.gpkg")
    _write_labels(labels, classes)
    return DemoData(
        root=out_dir,
        catalog=catalog,
        labels=labels,
        attribute=ATTRIBUTE,
        bbox=DEMO_BBOX,
        bands=BANDS,
        mask_asset=MASK_ASSET,
        mask_values=MASK_VALUES,
        resolution=RESOLUTION,
        tilesize=64,
        class_names=dict(CLASS_NAMES),
        start="2023-06-01",
        end="2023-07-15",
        reference_date="2023-06-15",
        max_cloud=50.0,
    )


def _ground_truth(
    rng: np.random.Generator, aoi: tuple[float, float, float, float]
) -> list[tuple[int, shapely.Geometry]]:
    """Non-overlapping (class, polygon) pairs in UTM 13N metres inside ``aoi``."""
    west, south, east, north = aoi
    width, height = east - west, north - south

    def at(fx: float, fy: float) -> tuple[float, float]:
        return west + fx * width, south + fy * height

    lake = shapely.affinity.rotate(
        shapely.affinity.scale(shapely.Point(*at(0.28, 0.70)).buffer(1.0, 32), 260, 150), rng.uniform(0, 180)
    )
    river = shapely.LineString([at(0.0, 0.35), at(0.35, 0.45), at(0.6, 0.38), at(1.0, 0.5)]).buffer(25, 8)
    water = shapely.union(lake, river)
    buildings = []
    for row in range(4):
        for col in range(5):
            x, y = at(0.55 + 0.08 * col, 0.62 + 0.08 * row)
            w, h = rng.uniform(30, 70), rng.uniform(30, 60)
            box = shapely.box(x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            buildings.append(shapely.affinity.rotate(box, rng.uniform(-20, 20)))
    built = shapely.difference(shapely.union_all(buildings), water)
    fields = []
    for fx, fy in ((0.15, 0.15), (0.45, 0.12), (0.80, 0.18), (0.10, 0.92), (0.78, 0.92)):
        x, y = at(fx, fy)
        w, h = rng.uniform(180, 320), rng.uniform(150, 260)
        fields.append(shapely.box(x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    for _ in range(6):
        fields.append(
            shapely.Point(*at(rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95))).buffer(rng.uniform(40, 90), 16)
        )
    vegetation = shapely.difference(shapely.union_all(fields), shapely.union(water, built))
    shapes = []
    for value, geometry in ((1, built), (2, water), (3, vegetation)):
        for part in shapely.get_parts(geometry):
            if part.geom_type == "Polygon" and part.area > 100:
                shapes.append((value, part))
    return shapes


def _demo_scene(
    rng: np.random.Generator,
    number: int,
    day: str,
    crs: str,
    cloudiness: float,
    partial: bool,
    classes: list[tuple[int, shapely.Geometry]],
) -> SceneSpec:
    to_scene = Transformer.from_crs(4326, crs, always_xy=True)
    west, south, east, north = to_scene.transform_bounds(*DEMO_BBOX)
    west = np.floor((west - _MARGIN) / RESOLUTION) * RESOLUTION
    north = np.ceil((north + _MARGIN) / RESOLUTION) * RESOLUTION
    cols = int(np.ceil((east + _MARGIN - west) / RESOLUTION))
    rows = int(np.ceil((north - (south - _MARGIN)) / RESOLUTION))
    transform = Affine(RESOLUTION, 0.0, west, 0.0, -RESOLUTION, north)
    from_utm = Transformer.from_crs(DEMO_CRS, crs, always_xy=True)
    shapes = [(shapely.transform(g, from_utm.transform, interleaved=False), v) for v, g in classes]
    truth = rasterize(shapes, out_shape=(rows, cols), transform=transform, fill=0, dtype="uint8")

    # Surface: class spectra, a slow brightness field, vegetation greening over the season, noise.
    surface = _SPECTRA[truth].transpose(2, 0, 1)
    surface = surface * (1.0 + 0.06 * _smooth_noise(rng, (rows, cols), 40))[np.newaxis]
    surface[3] += np.where(truth == 3, 150.0 * number, 0.0)
    surface += rng.normal(0.0, 40.0, surface.shape)

    # Clouds: a thresholded smooth field; bright where thick, with a shadow cast to the south-east.
    haze = _smooth_noise(rng, (rows, cols), 30) + 0.5 * _smooth_noise(rng, (rows, cols), 8)
    cloud = haze > np.quantile(haze, 1.0 - cloudiness) if cloudiness > 0 else np.zeros((rows, cols), bool)
    thick = haze > np.quantile(haze, 1.0 - 0.6 * cloudiness) if cloudiness > 0 else cloud
    shadow = np.zeros_like(cloud)
    shadow[12:, 9:] = cloud[:-12, :-9]
    shadow &= ~cloud
    surface[:, shadow] *= 0.45
    opacity = np.where(thick, 0.95, 0.6)[np.newaxis]
    surface = np.where(cloud[np.newaxis], (1 - opacity) * surface + opacity * 7500.0, surface)
    bands = np.clip(np.rint(surface), 1, 65535).astype(np.uint16)

    scl = _SCL_OF_CLASS[truth]
    scl[shadow] = 3
    scl[cloud] = 8
    scl[thick] = 9
    if number == 4:
        # A veil of cirrus over the west third: flagged but barely visible.
        cirrus = ~cloud & (np.arange(cols) < cols // 3)[np.newaxis]
        scl[cirrus] = 10
        bands[:, cirrus] = np.minimum(bands[:, cirrus] + 300, 65535)
    footprint = None
    if partial:
        # The swath edge runs north-north-east through the middle of the area.
        col = np.arange(cols)[np.newaxis]
        row = np.arange(rows)[:, np.newaxis]
        outside = col < cols * 0.35 + (rows - row) * 0.2
        bands[:, outside] = 0
        scl[outside] = 0
        xs = [west + RESOLUTION * (cols * 0.35 + rows * 0.2), west + cols * RESOLUTION]
        top, bottom = north, north - rows * RESOLUTION
        corners = [(xs[0], top), (xs[1], top), (xs[1], bottom), (west + RESOLUTION * cols * 0.35, bottom)]
        to_wgs84 = Transformer.from_crs(crs, 4326, always_xy=True)
        footprint = shapely.Polygon([to_wgs84.transform(x, y) for x, y in corners])
    valid = scl > 0
    cloud_cover = round(100.0 * float(np.isin(scl[valid], (8, 9, 10)).mean()), 2)
    assets = {name: bands[i] for i, name in enumerate(BANDS)}
    assets[MASK_ASSET] = scl
    return SceneSpec(
        id=f"DEMO_S2_{day.replace('-', '')}",
        datetime=datetime.fromisoformat(day).replace(hour=17, minute=45, tzinfo=timezone.utc),
        crs=crs,
        transform=transform,
        assets=assets,
        cloud_cover=cloud_cover,
        stac_nodata=0,
        common_names={name: (name,) for name in BANDS},
        geometry=footprint,
        overview_resampling={MASK_ASSET: "nearest"},
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean value noise: a coarse random grid of ``cell`` px, smoothly interpolated."""
    rows, cols = shape
    coarse = rng.standard_normal((rows // cell + 2, cols // cell + 2))
    y, x = np.arange(rows) / cell, np.arange(cols) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep hides the grid
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy)[:, np.newaxis] + bottom * fy[:, np.newaxis]


def _write_cog(path: str, array: np.ndarray, crs: str, transform: Affine, nodata, overview_resampling: str) -> None:
    count, rows, cols = array.shape
    temporary = f"{path}.{os.getpid()}.tmp"
    profile = dict(
        driver="COG",
        width=cols,
        height=rows,
        count=count,
        dtype=array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
        blocksize=128,
        overview_resampling=overview_resampling,
    )
    try:
        with rasterio.open(temporary, "w", **profile) as dataset:
            dataset.write(array)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _asset_json(key: str, array: np.ndarray, scene: SceneSpec) -> dict:
    bands = array.shape[0]
    nodata = scene.stac_nodata if scene.stac_nodata is not None else scene.file_nodata
    raster_bands = [{"data_type": array.dtype.name, "spatial_resolution": abs(scene.transform.a)} for _ in range(bands)]
    if nodata is not None:
        for band in raster_bands:
            band["nodata"] = "nan" if isinstance(nodata, float) and np.isnan(nodata) else nodata
    asset = {
        "href": f"./{key}.tif",
        "type": _COG_TYPE,
        "roles": ["data"],
        "raster:bands": raster_bands,
    }
    names = scene.common_names.get(key)
    if names is not None:
        asset["eo:bands"] = [{"name": f"{key}{i}" if bands > 1 else key, "common_name": n} for i, n in enumerate(names)]
    return asset


def _item_json(scene: SceneSpec, assets: dict) -> dict:
    if scene.geometry is not None:
        footprint = scene.geometry
    else:
        rows, cols = next(iter(scene.assets.values())).shape[-2:]
        west, north = scene.transform @ (0, 0)
        east, south = scene.transform @ (cols, rows)
        to_wgs84 = Transformer.from_crs(scene.crs, 4326, always_xy=True)
        ring = shapely.segmentize(
            shapely.box(west, min(south, north), east, max(south, north)), abs(scene.transform.a) * 8
        )
        footprint = shapely.transform(ring, to_wgs84.transform, interleaved=False)
    properties = {"datetime": as_utc(scene.datetime).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if scene.cloud_cover is not None:
        properties["eo:cloud_cover"] = scene.cloud_cover
    if scene.crs.upper().startswith("EPSG:"):
        properties["proj:epsg"] = int(scene.crs.split(":")[1])
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [_EO, _RASTER, _PROJ],
        "id": scene.id,
        "geometry": shapely.geometry.mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": properties,
        "links": [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        ],
        "assets": assets,
    }


def _write_json(path: str, document: dict) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=1)
        stream.write("\n")
    os.replace(temporary, path)


def _write_labels(path: str, classes: list[tuple[int, shapely.Geometry]]) -> None:
    import pyogrio

    to_wgs84 = Transformer.from_crs(DEMO_CRS, 4326, always_xy=True)
    geometries = [shapely.transform(g, to_wgs84.transform, interleaved=False) for _, g in classes]
    temporary = f"{path}.{os.getpid()}.tmp.gpkg"
    try:
        pyogrio.raw.write(
            temporary,
            geometry=shapely.to_wkb(geometries),
            field_data=[np.array([v for v, _ in classes], dtype=np.int32)],
            fields=[ATTRIBUTE],
            layer="labels",
            driver="GPKG",
            geometry_type="Polygon",
            crs="EPSG:4326",
        )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
