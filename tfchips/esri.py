"""ESRI "Classified Tiles" metadata of a chip folder, written as ``arcgis.learn`` reads it.

ArcGIS's ``prepare_data(path, dataset_type="Classified_Tiles")`` reads
``esri_model_definition.emd`` (classes, band names and statistics),
``esri_accumulated_stats.json`` (``MetaDataMode``, class pixel counts for class
weights) and the first line of ``map.txt`` (the label file suffix); it pairs
``images/<name>`` with ``labels/<name>.<that suffix>``.

ArcGIS names label value 0 "NoData" and passes any other value through as a
class index. tfchips therefore gives ArcGIS ESRI class values: a tfchips class
keeps its value, unless the job named class 0, in which case every class moves
up by one (``background`` 0 becomes ESRI class 1). Pixels of the ignore value
(outside ``--extent``, and by default where the image has no valid pixel) and of no
declared class become 0, NoData. When that
mapping is not the identity, each label gets a GDAL VRT beside it,
``labels/<name>.vrt``, whose lookup table applies the mapping as ArcGIS reads
the pixels; ``map.txt`` then names the VRTs. The chips themselves, and so
TFRecords made from the folder, keep tfchips' values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable
from xml.sax.saxutils import escape

from tfchips import storage
from tfchips.chips import CLASSIFIED_TILES, ESRI_STATS_NAME, IMAGES_DIR, LABELS_DIR
from tfchips.grid import Tile, filename_to_key, key_to_filename
from tfchips.manifest import class_colour, publish_text

MODEL_DEFINITION_NAME = "esri_model_definition.emd"
MAP_NAME = "map.txt"
ESRI_FILES = (MODEL_DEFINITION_NAME, MAP_NAME, "stats.txt", ESRI_STATS_NAME)
LABEL_VIEW_SUFFIX = ".vrt"
# Label chips are uint8: the lookup table covers every value they can hold.
LABEL_VALUES = 256


@dataclass(frozen=True)
class EsriClasses:
    """How tfchips label values become ESRI class values.

    ``values`` maps each declared tfchips class value to its ESRI value (1-255);
    ``names`` maps ESRI values to class names, in ESRI's order. Every other
    label value (the ignore value, an unnamed 0) reads as 0, ESRI's NoData.
    """

    values: dict[int, int]
    names: dict[int, str]

    def lookup(self) -> list[int]:
        """ESRI value of each uint8 label value 0-255."""
        return [self.values.get(value, 0) for value in range(LABEL_VALUES)]

    def is_identity(self, ignore_value: int | None) -> bool:
        """True when the label pixels can be read as they are (no VRT view needed)."""
        shifted = any(value != esri for value, esri in self.values.items())
        return not shifted and ignore_value in (None, 0)


def esri_classes(class_names: dict[int, str], class_counts: dict[int, int], ignore_value: int | None) -> EsriClasses:
    """ESRI classes of a job: the named classes and every value its chips hold, less the ignore value.

    Args:
        class_names: Class value -> name, as given to create-samples (``--classes``).
        class_counts: Class value -> pixel count over the written chips.
        ignore_value: The label value outside ``--extent``, or None.
    """
    declared = sorted((set(class_names) | set(class_counts)) - {ignore_value})
    shift = 1 if 0 in class_names and 0 in declared else 0
    values = {value: value + shift for value in declared if value + shift != 0}
    names = {esri: class_names.get(value, f"class_{value}") for value, esri in values.items()}
    return EsriClasses(values, names)


def label_view(label_name: str, tile: Tile, lookup: list[int]) -> bytes:
    """A GDAL VRT that reads the label chip ``label_name`` (beside it) through ``lookup``.

    Args:
        label_name: File name of the uint8 label GeoTIFF in the same folder.
        tile: The chip's tile, for its size, transform and CRS (UTM metres).
        lookup: Output value for each input value 0-255.
    """
    from rasterio.crs import CRS

    t = tile.transform
    table = ",".join(f"{value}:{out}" for value, out in enumerate(lookup))
    text = (
        f'<VRTDataset rasterXSize="{tile.size}" rasterYSize="{tile.size}">\n'
        f"  <SRS>{escape(CRS.from_string(tile.crs).to_wkt())}</SRS>\n"
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>\n"
        '  <VRTRasterBand dataType="Byte" band="1">\n'
        "    <ComplexSource>\n"
        f'      <SourceFilename relativeToVRT="1">{escape(label_name)}</SourceFilename>\n'
        "      <SourceBand>1</SourceBand>\n"
        f"      <LUT>{table}</LUT>\n"
        "    </ComplexSource>\n"
        "  </VRTRasterBand>\n"
        "</VRTDataset>\n"
    )
    return text.encode("utf-8")


def _stats(values: list[int]) -> dict:
    """ESRI's ``{Min, Max, Mean, Sum, Count}`` of per-image figures."""
    if not values:
        return {"Min": 0, "Max": 0, "Mean": 0.0, "Sum": 0, "Count": 0}
    return {"Min": min(values), "Max": max(values), "Mean": sum(values) / len(values), "Sum": sum(values), "Count": len(values)}


def class_pixel_stats(classes: EsriClasses, tile_counts: list[dict[int, int]]) -> dict:
    """``ClassPixelStats``: lists in the order of ``classes.names``, as prepare_data reads them.

    Args:
        classes: The job's ESRI classes.
        tile_counts: Per written chip, tfchips class value -> pixel count.
    """
    per_image = []
    for counts in tile_counts:
        esri_counts: dict[int, int] = {}
        for value, count in counts.items():
            esri = classes.values.get(value)
            if esri is not None and count:
                esri_counts[esri] = esri_counts.get(esri, 0) + count
        per_image.append(esri_counts)
    order = list(classes.names)
    return {
        "NumClasses": len(order),
        "NumImagesTotal": len(per_image),
        "NumImagesPerClass": [sum(esri in image for image in per_image) for esri in order],
        "NumPixelsPerClass": [sum(image.get(esri, 0) for image in per_image) for esri in order],
        "NumClassesPerImage": _stats([len(image) for image in per_image]),
        "PixelsPerClass": [_stats([image[esri] for image in per_image if esri in image]) for esri in order],
    }


def _label_views(out: str) -> set[str]:
    """Label VRTs that ``out/map.txt`` names (written by an earlier run)."""
    path = storage.join(out, MAP_NAME)
    if not storage.exists(path):
        return set()
    views = set()
    for line in storage.read(path).decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].endswith(LABEL_VIEW_SUFFIX):
            views.add(fields[1].replace("\\", "/").rsplit("/", 1)[-1])
    return views


def _remove_label_views(out: str, views: set[str], run_names: set[str]) -> None:
    """Delete ``views`` of this run's chips, and those whose label chip is gone.

    A view of a chip outside this run stays, as the chip itself does.
    """
    for view in views:
        label = view[: -len(LABEL_VIEW_SUFFIX)] + ".tif"
        path = storage.join(out, LABELS_DIR, view)
        if (label in run_names or not storage.exists(storage.join(out, LABELS_DIR, label))) and storage.exists(path):
            storage.remove(path)


def remove_esri_metadata(out: str) -> None:
    """Delete ESRI metadata an earlier run wrote, when this run wrote no chip (and views of removed chips)."""
    _remove_label_views(out, _label_views(out), set())
    for name in ESRI_FILES:
        path = storage.join(out, name)
        if storage.exists(path):
            storage.remove(path)


def _band_stats(bands: list[dict]) -> list[dict]:
    """ESRI's per-band statistics from the manifest's (valid pixels only)."""
    return [{"BandName": b["name"], "Min": b["min"], "Max": b["max"], "Mean": b["mean"], "StdDev": b["std"]} for b in bands]


def _model_definition(bands: list[dict], class_list: list[dict], chip_size: int, sensor: str) -> dict:
    """``esri_model_definition.emd``: what prepare_data takes classes, band names and statistics from."""
    band_minimum = min((b["min"] for b in bands if b["min"] is not None), default=0)
    band_maximum = max((b["max"] for b in bands if b["max"] is not None), default=0)
    return {
        "Framework": "",
        "ModelConfiguration": "",
        "ModelType": "ImageClassification",
        "MetaDataMode": CLASSIFIED_TILES,
        "ImageHeight": chip_size,
        "ImageWidth": chip_size,
        "ExtractBands": list(range(len(bands))),
        "DataRange": [band_minimum, band_maximum],
        "ImageSpaceUsed": "MAP_SPACE",
        "IsMultispectral": len(bands) > 3,
        "InputRastersProps": {"RasterCount": 1, "SensorName": sensor, "BandNames": [b["name"] for b in bands]},
        "AllTilesStats": _band_stats(bands),
        "Classes": class_list,
    }


def _accumulated_stats(
    bands: list[dict], class_list: list[dict], pixel_stats: dict, chip_size: int, resolution: float, crs: str, tiles: int
) -> dict:
    """``esri_accumulated_stats.json``: the metadata mode and the class pixel counts of class weights."""
    epsg = int(crs.split(":")[1])
    return {
        "Version": "1.0",
        "MetaDataMode": CLASSIFIED_TILES,
        "ImageFormat": "TIFF",
        "NumTiles": tiles,
        "TileSizeX": chip_size,
        "TileSizeY": chip_size,
        "NumBands": len(bands),
        "MinCellSize": {"x": resolution, "y": resolution},
        "MaxCellSize": {"x": resolution, "y": resolution},
        "SpatialReference": {"wkid": epsg, "latestWkid": epsg},
        # ESRI's running moments; prepare_data merges them when it loads several folders.
        "BandStatsState": [
            {"Num": b["count"], "Min": b["min"], "Max": b["max"], "M1": b["mean"], "M2": (b["std"] or 0.0) ** 2 * b["count"]}
            for b in bands
        ],
        "NumClasses": len(class_list),
        "OutputFeatures": sum(pixel_stats["NumPixelsPerClass"]),
        "Classes": [{"ClassValue": c["Value"], "ClassName": c["Name"]} for c in class_list],
        "ClassPixelStats": pixel_stats,
        # tfchips' own fields, which ESRI does not read.
        "BandStats": _band_stats(bands),
        "ClassAttributes": class_list,
    }


def _write_label_views(out: str, names: list[str], classes: EsriClasses) -> list[str]:
    """Publish ``labels/NAME.vrt`` for each chip file name; returns the view names."""
    lookup = classes.lookup()
    views = []
    for name in names:
        view = name.rsplit(".", 1)[0] + LABEL_VIEW_SUFFIX
        storage.publish(storage.join(out, LABELS_DIR, view), label_view(name, Tile.from_key(filename_to_key(name)), lookup))
        views.append(view)
    return views


def write_esri_metadata(
    out: str, manifest: dict, rows: Iterable[dict], chip_size: int, resolution: float, crs: str
) -> None:
    """ESRI "Classified Tiles" metadata beside images/ and labels/ (see README, "ESRI ArcGIS").

    Args:
        out: The chip folder (local path or URL).
        manifest: The job's manifest (`tfchips.manifest.build_manifest`).
        rows: Its per-tile rows (`tfchips.manifest.manifest_rows`), read once.
        chip_size: Chip width and height in pixels.
        resolution: Pixel size in CRS units (metres).
        crs: ``EPSG:<code>`` of the chips.
    """
    statistics = manifest["statistics"]
    ignore_value = manifest.get("ignore_value")
    classes = esri_classes(
        {int(k): v for k, v in manifest["class_names"].items()},
        {int(k): c for k, c in statistics["class_counts"].items()},
        ignore_value,
    )
    run_names, written = set(), {}
    for row in rows:
        name = key_to_filename(row["key"]) + ".tif"  # the same in images/ and labels/
        run_names.add(name)
        if row["status"] == "written":
            written[name] = {int(k): c for k, c in row["class_counts"].items()}
    names = sorted(written)
    stale_views = _label_views(out)
    label_names = names if classes.is_identity(ignore_value) else _write_label_views(out, names, classes)
    stale_views -= set(label_names)
    pixel_stats = class_pixel_stats(classes, [written[name] for name in names])
    class_list = [
        {"Value": esri, "Name": classes.names[esri], "Color": list(class_colour(value))}
        for value, esri in classes.values.items()
    ]
    bands = statistics["bands"]
    sensor = str((manifest.get("parameters") or {}).get("collection") or "tfchips")
    model_definition = _model_definition(bands, class_list, chip_size, sensor)
    accumulated = _accumulated_stats(bands, class_list, pixel_stats, chip_size, resolution, crs, len(names))
    map_lines = [f"{IMAGES_DIR}\\{image}  {LABELS_DIR}\\{label}" for image, label in zip(names, label_names)]
    stats_lines = [
        f"Number of tiles: {len(names)}",
        f"Tile size: {chip_size} x {chip_size} pixels at {resolution} m",
        f"Bands: {', '.join(b['name'] for b in bands)}",
        *(
            f"Class {c['Value']} ({c['Name']}): {count} pixels"
            for c, count in zip(class_list, pixel_stats["NumPixelsPerClass"])
        ),
    ]
    publish_text(storage.join(out, MODEL_DEFINITION_NAME), json.dumps(model_definition, indent=1))
    publish_text(storage.join(out, ESRI_STATS_NAME), json.dumps(accumulated, indent=1))
    publish_text(storage.join(out, MAP_NAME), "\n".join(map_lines) + "\n")
    publish_text(storage.join(out, "stats.txt"), "\n".join(stats_lines) + "\n")
    _remove_label_views(out, stale_views, run_names)
