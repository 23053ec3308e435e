import io
import json
import re

import numpy as np
import pytest
import test_inspect
from PIL import Image
from test_inspect import run

from tfchips.chip_folder import write_chip_pair
from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.inspect import inspect_dataset, load_pair, open_dataset, sample_chips
from tfchips import preview
from tfchips.manifest import PALETTE, class_colour
from tfchips.preview import (
    ALPHA,
    BACKGROUND,
    NODATA_COLOUR,
    display_bands,
    overlay,
    preview_dataset,
    stretch,
    stretch_limits,
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


def test_overlay_blends_class_colours_and_leaves_background_and_ignored_pixels():
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20
    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    painted = overlay(rgb, label, 255)
    for row, col in ((0, 1), (1, 0)):
        expected = np.round((1 - ALPHA) * rgb[row, col] + ALPHA * np.array(PALETTE[label[row, col]]))
        assert (painted[row, col] == expected).all() and (painted[row, col] != rgb[row, col]).any()
    assert (painted[0, 0] == rgb[0, 0]).all() and (painted[1, 1] == rgb[1, 1]).all()


def test_stretch_limits_are_the_percentiles_of_the_valid_pixels_of_all_images():
    rng = np.random.default_rng(3)
    first, second = rng.normal(100, 10, (20, 20, 2)), rng.normal(300, 50, (10, 30, 2))
    first[:2, :, 1] = np.nan  # invalid in one shown band: left out of both
    second[0, :5, 0] = -1.0
    low, high = stretch_limits([(first, (1, 0), None), (second, (1, 0), -1.0)])
    values = np.concatenate([first[2:].reshape(-1, 2), second[0, 5:], second[1:].reshape(-1, 2)])[:, ::-1]
    assert np.allclose(low, np.percentile(values, 2, axis=0)) and np.allclose(high, np.percentile(values, 98, axis=0))
    rgb = stretch(second, (0,), -1.0, (low[1:], high[1:]))
    assert (rgb[0, :5] == NODATA_COLOUR).all()
    assert rgb[1, 0, 0] == round(np.clip((second[1, 0, 0] - low[1]) / (high[1] - low[1]), 0, 1) * 255)
    assert [a.tolist() for a in stretch_limits([(np.full((2, 2, 1), np.nan), (0,), None)])] == [[0.0], [0.0]]


def test_stretch_limits_sample_every_kth_pixel_past_the_bound(monkeypatch):
    monkeypatch.setattr(preview, "STRETCH_SAMPLE", 10)
    first, second = np.arange(50.0).reshape(5, 10, 1), np.arange(1000.0, 1050.0).reshape(5, 10, 1) ** 2
    low, high = stretch_limits([(first, (0,), None), (second, (0,), None)])
    sampled = np.concatenate([first.ravel()[::10], second.ravel()[::10]])  # 100 valid pixels: every 10th
    assert np.allclose([low[0], high[0]], np.percentile(sampled, [2, 98]))
    assert not np.allclose(low, np.percentile(np.concatenate([first.ravel(), second.ravel()]), 2))


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
    assert [colour for _, colour in sheet.legend[:4]] == [BACKGROUND] + [class_colour(v) for v in range(1, 4)]
    pairs = {p.name: p for p in open_dataset(demo_chips).folder.pairs}
    chips = {name: load_pair(pair) for name, pair in pairs.items()}
    limits = stretch_limits([(chip.image, (2, 1, 0), chip.image_layout.nodata) for chip in chips.values()])
    boxes = []
    for panel in sheet.panels:
        chip = chips[panel.name]
        assert panel.scale == 2 and panel.size == (128, 128)
        rgb = stretch(chip.image, (2, 1, 0), chip.image_layout.nodata, limits)
        assert (panel_pixels(sheet, panel.image_xy, panel.size) == upscale(rgb, 2)).all()
        shown = panel_pixels(sheet, panel.overlay_xy, panel.size)
        # Pixels without imagery hold the ignore value (the label nodata), which keeps the image's colour.
        ignore = chip.label_layout.nodata
        assert ignore == 255 and (shown == upscale(overlay(rgb, chip.label, ignore), 2)).all()
        background = upscale(chip.label == 0, 2)
        assert background.any() and (shown[background] == upscale(rgb, 2)[background]).all()
        for value in set(np.unique(chip.label)) - {0, ignore}:
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
    limits = stretch_limits([(load_pair(pair).image, (2, 1, 0), None) for pair in open_dataset(rgb).folder.pairs])
    assert (panel_pixels(sheet, panel.image_xy, panel.size)[::4, ::4] == stretch(chip.image, (2, 1, 0), None, limits)).all()

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


def flat_ground_folder(root, rng):
    """Two one-band chips of the same flat ground (1000 +- 10), the first with a bright field (4000) over a quarter."""
    ground = rng.normal(1000, 10, (1, 32, 32)).round().astype(np.uint16)
    field = ground.copy()
    field[0, :16, :16] = 4000
    labels = [np.zeros((32, 32), np.uint8)] * 2
    return write_folder(root, [field, ground], labels, ("pan",), None)


def panels_by_key(sheet):
    return {p.key: panel_pixels(sheet, p.image_xy, p.size)[::4, ::4, 0] for p in sheet.panels}


def test_the_sheet_stretch_gives_the_same_ground_the_same_grey_in_every_chip(tmp_path):
    folder = flat_ground_folder(tmp_path / "chips", np.random.default_rng(4))
    keys = ("32:0:10.0:13:-132:6170", "32:0:10.0:13:-131:6170")
    ground = np.ones((32, 32), bool)
    ground[:16, :16] = False
    field, plain = (panels_by_key(preview_dataset(folder, 2))[key] for key in keys)
    assert (field[ground] == plain[ground]).all()
    assert (field[~ground] == 255).all() and plain[ground].max() < 64  # flat ground stays dark and flat
    field, plain = (panels_by_key(preview_dataset(folder, 2, stretch="chip"))[key] for key in keys)
    assert (field[ground] != plain[ground]).mean() > 0.9
    assert plain.min() == 0 and plain.max() == 255  # on its own, the flat chip spans black to white


def test_a_constant_chip_is_not_stretched_into_noise(tmp_path):
    rng = np.random.default_rng(5)
    varied = rng.integers(0, 1000, (1, 32, 32), dtype=np.uint16)
    almost = (500 + rng.integers(0, 2, (1, 32, 32))).astype(np.uint16)  # one count of sensor noise
    labels = [np.zeros((32, 32), np.uint8)] * 2
    folder = write_folder(tmp_path / "chips", [varied, almost], labels, ("pan",), None)
    key = "32:0:10.0:13:-131:6170"
    shown = panels_by_key(preview_dataset(folder, 2))[key]
    assert 120 <= shown.min() and shown.max() <= 135  # mid grey, one count wide
    assert set(np.unique(panels_by_key(preview_dataset(folder, 2, stretch="chip"))[key])) == {0, 255}
    constant = write_folder(tmp_path / "constant", [np.full((1, 32, 32), 7, np.uint16)], labels[:1], ("pan",), None)
    for mode in ("sheet", "chip"):
        assert (panels_by_key(preview_dataset(constant, 1, stretch=mode))["32:0:10.0:13:-132:6170"] == 128).all()


@pytest.mark.timeout(30)
def test_stretch_option_on_the_command_line(tmp_path):
    folder = flat_ground_folder(tmp_path / "chips", np.random.default_rng(4))
    for mode in ("sheet", "chip"):
        out = tmp_path / f"{mode}.png"
        result = run("preview", folder, "--out", out, "--stretch", mode)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == preview_dataset(folder, 16, stretch=mode).png()
    assert (tmp_path / "sheet.png").read_bytes() != (tmp_path / "chip.png").read_bytes()
    result = run("preview", folder, "--out", tmp_path / "x.png", "--stretch", "band")
    assert result.exit_code == 2 and "'band' is not one of 'sheet', 'chip'" in result.output
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ConfigError, match="stretch must be one of sheet, chip, got 'band'"):
        preview_dataset(folder, 2, stretch="band")
