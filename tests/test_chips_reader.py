"""Reading chip folders: pairing by stem, pixels, headers, manifests.

Also home of the tiny chip writers the records tests import.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine

from tfchips.chips import ChipPair, find_chip_pairs, read_chip, read_chip_header, read_chip_pixels, read_manifest
from tfchips.errors import ChipError

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
SIZE = 16


def write_raster(
    path, pixels: np.ndarray, driver="GTiff", crs="EPSG:32613", transform=TRANSFORM, nodata=None, names=None, **options
) -> str:
    """Write (bands, rows, cols) ``pixels`` to ``path``; returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bands, rows, cols = pixels.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            path,
            "w",
            driver=driver,
            width=cols,
            height=rows,
            count=bands,
            dtype=pixels.dtype,
            crs=crs,
            transform=transform,
            nodata=nodata,
            **options,
        ) as dst:
            dst.write(pixels)
            if names:
                dst.descriptions = tuple(names)
    return str(path)


def random_pixels(rng, bands: int, dtype: str, size: int = SIZE) -> np.ndarray:
    """(bands, size, size) values that use the dtype's range (negative, above 2**24...)."""
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal((bands, size, size)) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (bands, size, size), endpoint=True).astype(dtype)


# name, image suffix/driver/bands/dtype, label suffix/driver, names are tile keys?
KINDS = {
    "png": (".png", "PNG", 3, "uint8", ".png", "PNG", False),
    "jpeg": (".jpg", "JPEG", 3, "uint8", ".png", "PNG", False),
    "uint16": (".tif", "GTiff", 4, "uint16", ".tif", "GTiff", True),
    "float32": (".tif", "GTiff", 13, "float32", ".tif", "GTiff", True),
}


def make_chip_folder(root, kind: str, count: int = 3, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A chip folder of ``count`` pairs of one kind; returns name -> (image, label) as written, (H, W, C)."""
    image_suffix, image_driver, bands, dtype, label_suffix, label_driver, keyed = KINDS[kind]
    rng = np.random.default_rng(seed)
    written = {}
    for i in range(count):
        name = f"16#0#10.0#13#{i}#{-i}" if keyed else f"{i:09d}"
        transform = TRANSFORM * Affine.translation(SIZE * i, 0)
        if kind == "jpeg":  # smooth content, so that JPEG's loss stays small
            ramp = np.add.outer(np.arange(SIZE), np.arange(SIZE)) * 3
            image = (ramp[None] + rng.integers(0, 150, (bands, 1, 1))).astype(dtype)
        else:
            image = random_pixels(rng, bands, dtype)
        label = rng.integers(0, 4, (1, SIZE, SIZE)).astype("uint8")
        label[0, 0, :3] = 255
        options = {"compress": "lzw"} if image_driver == "GTiff" else {}
        names = [f"b{b + 1:02d}" for b in range(bands)]
        write_raster(
            os.path.join(root, "images", name + image_suffix),
            image,
            image_driver,
            transform=transform,
            names=names,
            **options,
        )
        write_raster(
            os.path.join(root, "labels", name + label_suffix),
            label,
            label_driver,
            transform=transform,
            nodata=255 if label_driver == "GTiff" else None,
            **options,
        )
        written[name] = (image.transpose(1, 2, 0), label.transpose(1, 2, 0))
    return written


def test_pairs_by_stem_sorted_with_keys_and_unpaired(tmp_path):
    make_chip_folder(tmp_path, "uint16", count=3)
    os.rename(tmp_path / "labels" / "16#0#10.0#13#2#-2.tif", tmp_path / "labels" / "stray.tif")
    (tmp_path / "images" / "16#0#10.0#13#0#0.tif.aux.xml").write_text("<PAMDataset/>")
    (tmp_path / "images" / "notes.txt").write_text("not a chip")

    folder = find_chip_pairs(tmp_path)

    assert [p.name for p in folder.pairs] == ["16#0#10.0#13#0#0", "16#0#10.0#13#1#-1"]
    assert folder.pairs[1] == ChipPair(
        "16#0#10.0#13#1#-1",
        "16:0:10.0:13:1:-1",
        str(tmp_path / "images" / "16#0#10.0#13#1#-1.tif"),
        str(tmp_path / "labels" / "16#0#10.0#13#1#-1.tif"),
    )
    assert folder.unpaired == (
        str(tmp_path / "images" / "16#0#10.0#13#2#-2.tif"),
        str(tmp_path / "labels" / "stray.tif"),
    )


def test_esri_names_have_no_key_and_pair_across_formats(tmp_path):
    make_chip_folder(tmp_path, "jpeg", count=2)
    pairs = find_chip_pairs(tmp_path).pairs
    assert [(p.name, p.key) for p in pairs] == [("000000000", None), ("000000001", None)]
    assert pairs[0].image_path.endswith(".jpg") and pairs[0].label_path.endswith(".png")


def test_two_chips_with_one_name_are_refused(tmp_path):
    make_chip_folder(tmp_path, "png", count=1)
    write_raster(str(tmp_path / "images" / "000000000.tif"), np.zeros((1, 4, 4), "uint8"))
    with pytest.raises(ChipError, match="two chips share the name '000000000'"):
        find_chip_pairs(tmp_path)


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(ChipError, match="no such folder"):
        find_chip_pairs(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(ChipError, match="no chips"):
        find_chip_pairs(tmp_path)


def test_read_chip_pixels_and_georeference(tmp_path):
    written = make_chip_folder(tmp_path, "float32", count=1)
    ((name, (image, label)),) = written.items()

    pixels, georeference = read_chip(tmp_path / "images" / f"{name}.tif")
    assert pixels.dtype == np.float32 and pixels.shape == (13, SIZE, SIZE)
    np.testing.assert_array_equal(pixels, image.transpose(2, 0, 1))
    assert georeference.crs == "EPSG:32613"
    assert georeference.transform == TRANSFORM
    assert georeference.band_names == tuple(f"b{b:02d}" for b in range(1, 14))
    assert georeference.nodata is None

    labels, label_georeference = read_chip(tmp_path / "labels" / f"{name}.tif", siblings=False)
    np.testing.assert_array_equal(labels[0], label[:, :, 0])
    assert label_georeference.band_names == ("band_1",) and label_georeference.nodata == 255
    np.testing.assert_array_equal(read_chip_pixels(tmp_path / "images" / f"{name}.tif", channels_last=True), image)


def test_read_chip_header_of_png_without_decoding(tmp_path):
    make_chip_folder(tmp_path, "png", count=1)
    header = read_chip_header(tmp_path / "images" / "000000000.png")
    assert (header.format, header.shape, header.dtype, header.bits, header.paletted) == (
        "PNG",
        (SIZE, SIZE, 3),
        "uint8",
        8,
        False,
    )
    assert header.georeference.crs == "EPSG:32613"  # from the .aux.xml sidecar
    assert header.georeference.transform == TRANSFORM


def test_corrupt_and_missing_chips_name_the_file(tmp_path):
    make_chip_folder(tmp_path, "uint16", count=1)
    path = tmp_path / "images" / "16#0#10.0#13#0#0.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChipError, match="16#0#10.0#13#0#0.tif"):
        read_chip(path)
    path.write_bytes(b"not a raster at all")
    with pytest.raises(ChipError, match="not a readable raster"):
        read_chip_header(path)
    with pytest.raises(ChipError, match="nothing.tif"):
        read_chip(tmp_path / "nothing.tif")


def test_manifest_ours_esri_and_none(tmp_path):
    assert read_manifest(tmp_path).statistics is None and read_manifest(tmp_path).class_names is None
    (tmp_path / "model.emd").write_text(json.dumps({"Classes": [{"Value": 1, "Name": "Building", "Color": [1, 2, 3]}]}))
    assert read_manifest(tmp_path).class_names == {"1": "Building"}
    statistics = {"bands": [{"name": "red", "mean": 1.5, "std": 2, "min": 0, "max": 9}], "class_counts": {"0": 3}}
    (tmp_path / "manifest.json").write_text(json.dumps({"statistics": statistics, "class_names": {0: "background"}}))
    manifest = read_manifest(tmp_path)
    assert manifest.statistics == statistics and manifest.class_names == {"0": "background"}
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ChipError, match="manifest.json"):
        read_manifest(tmp_path)


def test_manifest_that_is_not_an_object_or_unreadable_names_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ChipError, match=r"manifest\.json: not a valid chip manifest .*JSON object"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"statistics": [1, 2]}))
    with pytest.raises(ChipError, match=r"manifest\.json: not a valid chip manifest .*statistics"):
        read_manifest(tmp_path)
    not_a_folder = tmp_path / "manifest.json"
    with pytest.raises(ChipError, match=r"manifest\.json: cannot read chip manifest"):
        read_manifest(not_a_folder)  # listing it fails: an OSError, reported as a ChipError naming it


def test_chips_read_in_threads_leave_the_warning_filters_alone(tmp_path, monkeypatch):
    """Two header reads that overlap; the first one ends first (what a thread pool does at random)."""
    import threading

    write_raster(str(tmp_path / "a.png"), np.zeros((1, 4, 4), "uint8"), "PNG", crs=None, transform=None)
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()
    opened = rasterio.open

    def overlapping_open(path, *args, **kwargs):
        if not first_inside.is_set():
            first_inside.set()
            second_inside.wait(5)
        else:
            second_inside.set()
            first_done.wait(5)
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", overlapping_open)
    before = list(warnings.filters)
    second = threading.Thread(target=lambda: (first_inside.wait(5), read_chip_header(tmp_path / "a.png")))
    second.start()
    read_chip_header(tmp_path / "a.png")
    first_done.set()
    second.join(10)
    assert warnings.filters == before
