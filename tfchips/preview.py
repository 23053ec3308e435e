"""Contact sheets: a few chips, each beside itself with its label drawn over it.

Images are stretched for display band by band between the 2nd and 98th
percentiles of valid pixels: by default those of all the chips on the sheet
together, so that the same ground takes the same colour in every chip and flat
ground stays flat; or, with ``stretch="chip"``, each chip's own. One band shows
as grey, three as RGB. Labels are blended over the stretched image in the fixed
class colours of `tfchips.manifest.PALETTE`; background (class 0) and label
nodata ("ignore") pixels are left as the image shows them, image nodata pixels
are dark grey. A legend names the classes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tfchips import storage
from tfchips.chips import valid_pixels
from tfchips.errors import ConfigError
from tfchips.dataset_reader import (
    ChipSample,
    DecodedChip,
    Problem,
    open_dataset,
    sample_chips,
)
from tfchips.dataset_reader import OnProgress, no_progress
from tfchips.manifest import class_colour

PANEL = 128  # pixels of the longer side of a chip on the sheet
ALPHA = 0.5  # weight of the class colour over the image
STRETCH = (2.0, 98.0)  # percentiles mapped to 0 and 255
STRETCHES = ("sheet", "chip")  # over whose valid pixels the percentiles are taken
STRETCH_SAMPLE = 1_000_000  # at most this many valid pixels per band feed the percentiles
BACKGROUND_CLASS = 0  # label value left undrawn, like label nodata
NODATA_COLOUR = (64, 64, 64)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
_MARGIN, _GAP, _FONT, _TITLE_FONT = 12, 6, 12, 14


@dataclass(frozen=True, slots=True)
class Panel:
    """Where one chip lies on the sheet: the top-left (x, y) of its image and of its overlay.

    Chip pixel (row, col) covers the ``scale`` x ``scale`` block (or, for chips larger
    than the panel, the share) that starts at ``x + col * scale``, ``y + row * scale``.
    """

    name: str
    key: str | None
    split: str | None
    image_xy: tuple[int, int]
    overlay_xy: tuple[int, int]
    size: tuple[int, int]
    scale: float


@dataclass(frozen=True)
class ContactSheet:
    """A rendered sheet (a Pillow RGB image) with the layout tests and reports need."""

    image: Image.Image
    panels: tuple[Panel, ...]
    legend: tuple[tuple[str, tuple[int, int, int]], ...]
    band_names: tuple[str, ...]
    total: int
    problems: tuple[Problem, ...]

    def png(self) -> bytes:
        """The sheet as PNG bytes."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()


def display_bands(band_names: Sequence[str], wanted: Sequence[str] | None = None) -> tuple[int, ...]:
    """Indices of the one or three bands to show.

    ``wanted`` names them; by default red, green, blue when the chips have bands of
    those names (any case), else the first three bands, else the first band.
    """
    lower = [name.lower() for name in band_names]
    if wanted:
        if len(wanted) not in (1, 3):
            raise ConfigError(f"--bands takes one band (grey) or three (RGB), got {len(wanted)}: {','.join(wanted)}")
        missing = [name for name in wanted if name.lower() not in lower]
        if missing:
            raise ConfigError(f"no band named {', '.join(missing)}; the chips have {', '.join(band_names)}")
        return tuple(lower.index(name.lower()) for name in wanted)
    if all(colour in lower for colour in ("red", "green", "blue")):
        return tuple(lower.index(colour) for colour in ("red", "green", "blue"))
    return (0, 1, 2) if len(band_names) >= 3 else (0,)


def stretch_limits(images: Sequence[tuple[np.ndarray, Sequence[int], float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per shown band: its 2nd and 98th percentiles over the valid pixels of all ``images``.

    Args:
        images: (image, bands, nodata) per chip, at least one: the (rows, cols, bands) array,
            the indices of the one or three bands shown, and the image nodata value (None: none).
            Pixels where a shown band is nodata or NaN are left out.

    Returns:
        Two float64 arrays of one value per shown band, in the images' units; both 0 where no
        pixel is valid. Past `STRETCH_SAMPLE` valid pixels, every k-th pixel of each image is
        used (the same k for all), so the figures stay the same from run to run.
    """
    # Two passes, so that no more than one image's float copy and the sample are held at a time.
    step = -(-sum(int(_shown(*image)[1].sum()) for image in images) // STRETCH_SAMPLE) or 1
    values = np.concatenate([shown[valid][::step] for shown, valid in (_shown(*image) for image in images)])
    if not len(values):
        return np.zeros(values.shape[1]), np.zeros(values.shape[1])
    low, high = np.percentile(values, STRETCH, axis=0)
    return low, high


def stretch(
    image: np.ndarray,
    bands: Sequence[int],
    nodata: float | None,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(rows, cols, 3) uint8 display of ``bands`` of (rows, cols, bands), each band from low (0) to high (255).

    Args:
        image: (rows, cols, bands) array.
        bands: indices of the one (grey) or three (RGB) bands shown.
        nodata: the image nodata value, or None.
        limits: (low, high) per shown band in the image's units, as `stretch_limits` gives;
            by default this image's own 2nd and 98th percentiles over its valid pixels.

    Pixels where a shown band is nodata or NaN become `NODATA_COLOUR`. A band whose high is
    not above its low shows that value as mid grey (and values above or below as 255 or 0)
    rather than amplifying the differences.
    """
    low, high = stretch_limits([(image, bands, nodata)]) if limits is None else limits
    values, valid = _shown(image, bands, nodata)
    with np.errstate(invalid="ignore", divide="ignore"):
        span = np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)
        scaled = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.5 + 0.5 * np.sign(values - low))
    grey = np.round(np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = np.repeat(grey, 3, axis=2) if grey.shape[2] == 1 else grey
    rgb[~valid] = NODATA_COLOUR
    return rgb


def _shown(image: np.ndarray, bands: Sequence[int], nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The shown bands of ``image`` as float64 (rows, cols, shown) and where all of them are valid."""
    shown = image[:, :, list(bands)].astype(np.float64)
    return shown, valid_pixels(np.moveaxis(shown, -1, 0), nodata)


def overlay(rgb: np.ndarray, label: np.ndarray, ignore: float | None, alpha: float = ALPHA) -> np.ndarray:
    """``rgb`` (rows, cols, 3) uint8 with each class of ``label`` (rows, cols) blended in its colour.

    Background (`BACKGROUND_CLASS`) pixels and pixels equal to ``ignore`` keep the image's
    colour, so that the image stays readable under its labels.
    """
    painted = rgb.astype(np.float64)
    for value in np.unique(label):
        if value == BACKGROUND_CLASS or (ignore is not None and value == ignore):
            continue
        where = label == value
        painted[where] = (1.0 - alpha) * painted[where] + alpha * np.asarray(class_colour(int(value)), dtype=np.float64)
    return np.round(painted).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(text: str, font, width: int) -> str:
    """``text``, cut at the start with an ellipsis until it fits ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength("…" + text) > width:
        text = text[1:]
    return "…" + text


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer word keeps its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _legend(chips: Sequence[DecodedChip], class_names: dict[str, str] | None) -> list[tuple[str, tuple[int, int, int]]]:
    """(text, colour) per class named or present (ignored values left out), and image nodata if shown.

    The background class, which is not drawn, gets the sheet's own colour: an empty swatch.
    """
    names = {int(value): name for value, name in (class_names or {}).items() if value.lstrip("-").isdigit()}
    values = set(names)
    for chip in chips:
        present = np.unique(chip.label)
        ignore = chip.label_layout.nodata
        values.update(int(v) for v in present if ignore is None or v != ignore)
    return [
        (f"{v} {names.get(v, '')}".rstrip(), BACKGROUND if v == BACKGROUND_CLASS else class_colour(v))
        for v in sorted(values)
    ]


def contact_sheet(
    sample: ChipSample,
    class_names: dict[str, str] | None = None,
    bands: Sequence[str] | None = None,
    title: str = "",
    panel: int = PANEL,
    stretch: str = "sheet",
) -> ContactSheet:
    """Render the chips of ``sample``: per chip its stretched image, the same with its label, and its key.

    Args:
        stretch: "sheet" stretches every chip between the 2nd and 98th percentiles of the valid
            pixels of all the chips shown; "chip" each between its own.
    """
    _check_stretch(stretch)
    chips = sample.chips
    if not chips:
        raise ConfigError(f"{title or 'dataset'}: no chip could be decoded for a preview")
    band_names = chips[0].image_layout.band_names
    indices = display_bands(band_names, bands)
    shown = tuple(band_names[i] for i in indices)
    font, title_font = _font(_FONT), _font(_TITLE_FONT)
    columns = max(1, min(len(chips), round(len(chips) ** 0.5)))
    rows = -(-len(chips) // columns)
    cell_width, cell_height = 2 * panel + _GAP, panel + _GAP + _FONT + 2 * _GAP
    legend = _legend(chips, class_names)
    # Chips of one dataset share their bands; each is still looked up by name in case they do not.
    chosen = [display_bands(chip.image_layout.band_names, bands or shown) for chip in chips]
    if any((~_shown(c.image, i, c.image_layout.nodata)[1]).any() for c, i in zip(chips, chosen)):
        legend.append(("no data", NODATA_COLOUR))
    width = 2 * _MARGIN + columns * cell_width + (columns - 1) * 2 * _GAP
    subtitle = _wrap(
        f"{len(chips)} of {sample.total} chips, random with seed {sample.seed}; bands {', '.join(shown)}, "
        f"{STRETCH[0]:g}-{STRETCH[1]:g} percentile stretch {'over the sheet' if stretch == 'sheet' else 'per chip'}; "
        f"right: labels at {ALPHA:.0%}, class {BACKGROUND_CLASS} and ignore not drawn",
        font, width - 2 * _MARGIN,
    )
    header = _TITLE_FONT + 2 * _GAP + len(subtitle) * (_FONT + 3) + _GAP
    legend_top = _MARGIN + header + rows * cell_height
    sheet = Image.new("RGB", (width, legend_top + _legend_height(legend, width) + _MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    panels = []
    for index, (chip, rgb) in enumerate(zip(chips, _displays(chips, chosen, stretch))):
        column, row = index % columns, index // columns
        x = _MARGIN + column * (cell_width + 2 * _GAP)
        y = _MARGIN + header + row * cell_height
        painted = overlay(rgb, chip.label, chip.label_layout.nodata)
        size, scale = _panel_size(rgb.shape[:2], panel)
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
        sheet.paste(Image.fromarray(rgb).resize(size, resample), (x, y))
        sheet.paste(Image.fromarray(painted).resize(size, resample), (x + panel + _GAP, y))
        caption = f"{chip.split}  {chip.key or chip.name}" if chip.split else chip.key or chip.name
        draw.text((x, y + panel + _GAP // 2), _fit(caption, font, cell_width), fill=TEXT, font=font)
        panels.append(Panel(chip.name, chip.key, chip.split, (x, y), (x + panel + _GAP, y), size, scale))
    draw.text((_MARGIN, _MARGIN), _fit(title or "preview", title_font, width - 2 * _MARGIN), fill=TEXT, font=title_font)
    for line, text in enumerate(subtitle):
        draw.text((_MARGIN, _MARGIN + _TITLE_FONT + _GAP + line * (_FONT + 3)), text, fill=TEXT, font=font)
    _draw_legend(draw, legend, legend_top, width, font)
    return ContactSheet(sheet, tuple(panels), tuple(legend), shown, sample.total, sample.problems)


def _check_stretch(stretch: str) -> None:
    if stretch not in STRETCHES:
        raise ConfigError(f"stretch must be one of {', '.join(STRETCHES)}, got {stretch!r}")


def _displays(chips: Sequence[DecodedChip], bands: Sequence[Sequence[int]], mode: str) -> list[np.ndarray]:
    """The stretched (rows, cols, 3) uint8 image of each chip, under one sheet-wide stretch or each its own."""
    images = [(chip.image, chip_bands, chip.image_layout.nodata) for chip, chip_bands in zip(chips, bands)]
    limits = stretch_limits(images) if mode == "sheet" else None
    return [stretch(*image, limits=limits) for image in images]


def _panel_size(shape: tuple[int, int], panel: int) -> tuple[tuple[int, int], float]:
    """(width, height) on the sheet and pixels per chip pixel: whole multiples up, a fraction down."""
    longest = max(shape)
    scale = float(panel // longest) if longest <= panel else panel / longest
    return (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))), scale


_SWATCH = 14


def _legend_rows(legend, width: int) -> list[list[tuple[str, tuple[int, int, int]]]]:
    """The legend entries broken into rows that fit the sheet's width."""
    font = _font(_FONT)
    rows, used = [[]], 0
    for text, colour in legend:
        entry = _SWATCH + _GAP + int(font.getlength(text)) + 3 * _GAP
        if rows[-1] and used + entry > width - 2 * _MARGIN:
            rows.append([])
            used = 0
        rows[-1].append((text, colour))
        used += entry
    return rows


def _legend_height(legend, width: int) -> int:
    return len(_legend_rows(legend, width)) * (_SWATCH + _GAP) + _GAP


def _draw_legend(draw, legend, top: int, width: int, font) -> None:
    for line, entries in enumerate(_legend_rows(legend, width)):
        x, y = _MARGIN, top + _GAP + line * (_SWATCH + _GAP)
        for text, colour in entries:
            draw.rectangle((x, y, x + _SWATCH - 1, y + _SWATCH - 1), fill=colour, outline=(128, 128, 128))
            draw.text((x + _SWATCH + _GAP, y + 1), text, fill=TEXT, font=font)
            x += _SWATCH + _GAP + int(font.getlength(text)) + 3 * _GAP


def preview_dataset(
    path: str | os.PathLike,
    n: int = 16,
    bands: Sequence[str] | None = None,
    seed: int = 0,
    panel: int = PANEL,
    stretch: str = "sheet",
    on_progress: OnProgress = no_progress,
) -> ContactSheet:
    """Contact sheet of ``n`` seeded-random chips of a chip folder or TFRecords (see `tfchips.dataset_reader.open_dataset`).

    ``stretch`` is "sheet" (one stretch for all the chips shown) or "chip" (see `contact_sheet`);
    ``on_progress`` hears of each record read (see `tfchips.dataset_reader.OnProgress`).
    """
    if n < 1:
        raise ConfigError(f"the number of chips to preview must be at least 1, got {n}")
    _check_stretch(stretch)
    source = open_dataset(path)
    sample = sample_chips(source, n, seed, on_progress)
    return contact_sheet(sample, source.class_names, bands, title=os.fspath(path), panel=panel, stretch=stretch)


def write_preview(sheet: ContactSheet, out: str) -> None:
    """Write the sheet as a PNG at ``out`` (a temporary name first, then renamed)."""
    storage.publish(out, sheet.png())
