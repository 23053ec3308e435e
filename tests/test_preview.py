import io
import json
import re

import numpy as np
import pytest
import test_inspect
from PIL import Image
from test_inspect import run

from tfchips.chips import write_chip_pair
from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.inspect import inspect_dataset, load_pair, open_dataset, sample_chips
from tfchips.manifest import PALETTE, class_colour
from tfchips.preview import (
    ALPHA,
    NODATA_COLOUR,
    display_bands,
    overlay,
    preview_dataset,
    stretch,
)

# The demo chip folder and its TFRecords, built once per module.
demo_chips = test_inspect.demo_chips
demo_records = test_inspect.demo_records


def write_folder(root, images, labels, band_names, nodata, label_nodata=None, class_names=None):
    """A chip folder of 32 x 32 px chips on neighbouring tiles, from (bands, rows, cols) arrays."""
    for index, (image, label) in enumerate(zip(images, labels)):
        tile = Tile(32, 0, 10.0, 13, -132 + index, 6170)
        write_chip_pair(str(root), tile, image, nodata, band_names, label, label_nodata, ())
    if class_names:
        (root / "manifest.json").write_text(json.dumps({"class_names": class_names}))
    return root


def panel_pixels(sheet, xy, size):
    x, y = xy
    return np.asarray(sheet.image)[y : y + size[1], x : x + size[0]]


def upscale(array, scale):
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)


def test_stretch_maps_the_2nd_and_98th_percentiles_to_0_and_255():
    image = np.arange(101, dtype=np.float32).reshape(1, 101, 1)  # percentiles 2 and 98 are 2 and 98
    rgb = stretch(image, (0,), None)
    assert rgb.shape == (1, 101, 3) and rgb.dtype == np.uint8
    assert (rgb[0, :3, 0] == [0, 0, 0]).all() and (rgb[0, 98:, 0] == 255).all()
    assert rgb[0, 50, 0] == round((50 - 2) / 96 * 255)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()  # one band is grey


def test_overlay_blends_class_colours_and_leaves_ignored_pixels():
    rgb = np.full((2, 2, 3), 100, dtype=np.uint8)
    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    painted = overlay(rgb, label, 255)
    for (row, col), value in (((0, 0), 0), ((0, 1), 1), ((1, 0), 2)):
        expected = np.round((1 - ALPHA) * 100 + ALPHA * np.array(PALETTE[value]))
        assert (painted[row, col] == expected).all()
    assert (painted[1, 1] == 100).all()


def test_demo_preview_shows_each_chip_beside_its_labels(demo_chips, tmp_path):
    out = tmp_path / "preview.png"
    result = run("preview", demo_chips, "--out", out, "--n", 16)
    assert result.exit_code == 0, result.output
    sheet = preview_dataset(demo_chips, 16)
    written = Image.open(out)
    assert written.size == sheet.image.size and (np.asarray(written) == np.asarray(sheet.image)).all()
    summary = f"tfchips preview: wrote {out}: 16 of 16 chips, {written.size[0]} x {written.size[1]} pixels"
    assert re.fullmatch(re.escape(summary) + r" \(\d+\.\d s\)\n", result.stderr), result.stderr
    assert sorted(p.name for p in sheet.panels) == sorted(f.name.removesuffix(".tif") for f in (demo_chips / "images").iterdir())
    assert sheet.band_names == ("red", "green", "blue")
    assert [text for text, _ in sheet.legend[:4]] == ["0 background", "1 building", "2 water", "3 vegetation"]
    assert [colour for _, colour in sheet.legend[:4]] == [class_colour(v) for v in range(4)]
    pairs = {p.name: p for p in open_dataset(demo_chips).folder.pairs}
    boxes = []
    for panel in sheet.panels:
        chip = load_pair(pairs[panel.name])
        assert panel.scale == 2 and panel.size == (128, 128)
        rgb = stretch(chip.image, (2, 1, 0), chip.image_layout.nodata)
        assert (panel_pixels(sheet, panel.image_xy, panel.size) == upscale(rgb, 2)).all()
        shown = panel_pixels(sheet, panel.overlay_xy, panel.size)
        assert (shown == upscale(overlay(rgb, chip.label, None), 2)).all()
        for value in set(np.unique(chip.label)) - {0}:
            row, col = np.argwhere(chip.label == value)[0]
            expected = np.round((1 - ALPHA) * rgb[row, col] + ALPHA * np.array(class_colour(int(value))))
            assert (shown[2 * row + 1, 2 * col + 1] == expected).all()
        boxes.append((*panel.image_xy, panel.overlay_xy[0] + panel.size[0], panel.image_xy[1] + panel.size[1]))
    width, height = sheet.image.size
    assert all(0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height for x0, y0, x1, y1 in boxes)
    assert len({(x0, y0) for x0, y0, _, _ in boxes}) == 16


def test_one_band_float_chips_with_nodata_and_ignored_labels(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.random((1, 32, 32)).astype(np.float32) for _ in range(3)]
    images[0][0, :4, :] = np.nan
    labels = [np.zeros((32, 32), np.uint8) for _ in range(3)]
    labels[0][10:20, 10:20] = 5
    labels[0][30:, :] = 255
    folder = write_folder(tmp_path / "chips", images, labels, ("elevation",), float("nan"), 255, {"0": "flat", "5": "ridge"})
    inspection = inspect_dataset(folder)
    assert inspection.ignored_pixels == 2 * 32
    assert [(c.value, c.name, c.pixels) for c in inspection.classes] == [("0", "flat", 3 * 32 * 32 - 100 - 64), ("5", "ridge", 100)]
    assert inspection.counts["decoded"] == 3 and inspection.bands[0].count == 3 * 32 * 32 - 4 * 32
    sheet = preview_dataset(folder, 8)
    assert len(sheet.panels) == 3 and sheet.band_names == ("elevation",)
    assert [text for text, _ in sheet.legend] == ["0 flat", "5 ridge", "no data"]
    assert sheet.legend[-1][1] == NODATA_COLOUR
    first = next(p for p in sheet.panels if p.key == "32:0:10.0:13:-132:6170")
    assert first.scale == 4
    image = panel_pixels(sheet, first.image_xy, first.size)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert (image[:16] == NODATA_COLOUR).all()
    painted = panel_pixels(sheet, first.overlay_xy, first.size)
    assert (painted[30 * 4 :] == image[30 * 4 :]).all()  # ignored labels are not drawn
    ridge = np.round((1 - ALPHA) * image[12 * 4, 12 * 4].astype(float) + ALPHA * np.array(class_colour(5)))
    assert (painted[12 * 4, 12 * 4] == ridge).all()


def test_band_choice_for_rgb_and_many_band_chips(tmp_path):
    rng = np.random.default_rng(2)
    rgb_images = [rng.integers(0, 255, (3, 32, 32), dtype=np.uint8) for _ in range(2)]
    labels = [np.zeros((32, 32), np.uint8)] * 2
    rgb = write_folder(tmp_path / "rgb", rgb_images, labels, ("Blue", "Green", "Red"), None)
    sheet = preview_dataset(rgb, 2)
    assert sheet.band_names == ("Red", "Green", "Blue")
    panel = sheet.panels[0]
    chip = load_pair(open_dataset(rgb).folder.pairs[0])
    assert panel.name == open_dataset(rgb).folder.pairs[0].name
    assert (panel_pixels(sheet, panel.image_xy, panel.size)[::4, ::4] == stretch(chip.image, (2, 1, 0), None)).all()

    names = tuple(f"B{i:02d}" for i in range(1, 13)) + ("B8A",)
    many = write_folder(
        tmp_path / "many", [rng.integers(1, 10000, (13, 32, 32), dtype=np.uint16) for _ in range(2)], labels, names, 0
    )
    assert preview_dataset(many, 2).band_names == ("B01", "B02", "B03")
    assert preview_dataset(many, 2, bands=("b04", "B03", "B02")).band_names == ("B04", "B03", "B02")
    assert preview_dataset(many, 2, bands=("B8A",)).band_names == ("B8A",)
    with pytest.raises(ConfigError, match="no band named red; the chips have B01"):
        preview_dataset(many, 2, bands=("red", "B03", "B02"))
    assert display_bands(("a", "b"), None) == (0,)
    result = run("preview", many, "--out", tmp_path / "x.png", "--bands", "B04,B03")
    assert result.exit_code == 2 and "one band (grey) or three" in result.output


def test_record_previews_are_seeded_and_captioned_with_their_split(demo_records, tmp_path):
    first = preview_dataset(demo_records, 4, seed=3)
    again = preview_dataset(demo_records, 4, seed=3)
    other = preview_dataset(demo_records, 4, seed=4)
    assert first.png() == again.png()
    assert [p.name for p in first.panels] != [p.name for p in other.panels]
    assert first.total == 16 and len(first.panels) == 4
    dataset = json.loads((demo_records / "dataset.json").read_text())
    assert {p.split for p in first.panels} <= set(dataset["splits"])
    assert [(p.split, p.name) for p in first.panels] == sorted((p.split, p.name) for p in first.panels)
    chips = sample_chips(open_dataset(demo_records), 4, seed=3).chips
    assert [c.name for c in chips] == [p.name for p in first.panels]
    out = tmp_path / "records.png"
    assert run("preview", demo_records, "--out", out, "--n", 4, "--seed", 3).exit_code == 0
    assert out.read_bytes() == first.png()
    assert Image.open(io.BytesIO(first.png())).size == first.image.size
