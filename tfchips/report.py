"""A dataset report: one self-contained HTML page, readable without a server.

The page holds the figures of `tfchips.inspect.inspect_dataset` as tables, plots
drawn as inline SVG (class frequencies, per-band histograms, valid-pixel
fractions, a lon/lat map of tile footprints coloured by split) and the preview
contact sheet as a base64 PNG. It loads nothing: no script, font, style sheet or
image comes from elsewhere.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence

from tfchips import __version__, storage
from tfchips.dataset_reader import OnProgress, no_progress
from tfchips.errors import TfchipsError
from tfchips.grid import Tile
from tfchips.inspect import Histogram, Inspection, format_number, inspect_dataset
from tfchips.manifest import class_colour
from tfchips.preview import PANEL, ContactSheet, preview_dataset
from tfchips.redaction import redact_text

# Splits keep these colours in the order dataset.json lists them (train, val, test, ...).
SPLIT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_BAR = "#4c72b0"
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 0; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 2px 10px; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; } tr:nth-child(even) { background: #f6f6f6; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
code { font-size: 13px; } svg text { font: 11px system-ui, sans-serif; fill: #333; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #888; vertical-align: middle; }
"""


def escape(text: str) -> str:
    """``text`` for the page: credentials masked (it quotes paths, URLs and error messages), then HTML-escaped."""
    return html.escape(redact_text(text))


def _colour(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        + "".join(body)
        + "</svg>"
    )


def histogram_svg(histogram: Histogram, label: str, colour: str = _BAR, width: int = 260, height: int = 120) -> str:
    """Vertical bars of a histogram, its lowest and highest edges written under the axis."""
    if not histogram.counts:
        return _svg(width, 24, ['<text x="4" y="16">no valid pixel</text>'], label)
    plot = height - 18
    peak = max(histogram.counts) or 1
    step = width / len(histogram.counts)
    body = [f'<line x1="0" y1="{plot}" x2="{width}" y2="{plot}" stroke="#999"/>']
    for index, count in enumerate(histogram.counts):
        bar = plot * count / peak
        body.append(
            f'<rect x="{index * step:.2f}" y="{plot - bar:.2f}" width="{max(step - 0.5, 0.5):.2f}" height="{bar:.2f}" '
            f'fill="{colour}"><title>{format_number(histogram.edges[index])} to '
            f"{format_number(histogram.edges[index + 1])}: {count}</title></rect>"
        )
    body.append(f'<text x="0" y="{height - 4}">{escape(format_number(histogram.edges[0]))}</text>')
    body.append(f'<text x="{width}" y="{height - 4}" text-anchor="end">{escape(format_number(histogram.edges[-1]))}</text>')
    return _svg(width, height, body, label)


def bar_chart_svg(items: Sequence[tuple[str, float, str]], label: str, width: int = 560) -> str:
    """Horizontal bars, one per (label, share in [0, 1], colour), the share written beside each."""
    row, text_width, value_width = 20, 170, 60
    span = width - text_width - value_width
    peak = max((share for _, share, _ in items), default=0) or 1
    body = []
    for index, (name, share, colour) in enumerate(items):
        y = index * row
        bar = span * share / peak
        body.append(f'<text x="0" y="{y + 14}">{escape(name)}</text>')
        body.append(
            f'<rect x="{text_width}" y="{y + 3}" width="{bar:.2f}" height="{row - 6}" fill="{colour}" stroke="#888" '
            f'stroke-width="0.5"><title>{escape(name)}: {100 * share:.2f}%</title></rect>'
        )
        body.append(f'<text x="{text_width + bar + 4:.2f}" y="{y + 14}">{100 * share:.2f}%</text>')
    return _svg(width, max(row * len(items), row), body, label)


def footprint_map_svg(
    footprints: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    colours: dict[str, str],
    width: int = 640,
    height: int = 420,
) -> str:
    """Polygons in lon/lat (equirectangular, x scaled by the cosine of the middle latitude).

    ``footprints`` are (title, group, [(lon, lat), ...]); ``colours`` maps groups to fills.
    """
    points = [p for _, _, ring in footprints for p in ring]
    west, east = min(p[0] for p in points), max(p[0] for p in points)
    south, north = min(p[1] for p in points), max(p[1] for p in points)
    squeeze = math.cos(math.radians((south + north) / 2))
    margin = 8
    scale = min(
        (width - 2 * margin) / max((east - west) * squeeze, 1e-12), (height - 2 * margin - 16) / max(north - south, 1e-12)
    )
    body = []
    for title, group, ring in footprints:
        coordinates = " ".join(
            f"{margin + (lon - west) * squeeze * scale:.1f},{margin + (north - lat) * scale:.1f}" for lon, lat in ring
        )
        body.append(
            f'<polygon points="{coordinates}" fill="{colours[group]}" fill-opacity="0.55" stroke="#333" '
            f'stroke-width="0.5" data-group="{escape(group)}"><title>{escape(title)}</title></polygon>'
        )
    used_height = margin + (north - south) * scale
    body.append(
        f'<text x="{margin}" y="{used_height + 16:.1f}">lon {west:.4f} to {east:.4f}, lat {south:.4f} to {north:.4f} (WGS84)</text>'
    )
    return _svg(width, int(used_height + 24), body, "map of tile footprints")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class="text">{escape(c)}</td>' if i < text_columns else f"<td>{escape(c)}</td>" for i, c in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def _summary(inspection: Inspection) -> str:
    counts = inspection.counts
    status = (
        '<p class="ok">Verified: no problem found.</p>'
        if inspection.verified
        else f'<p class="bad">Not verified: {len(inspection.problems)} problems (listed below).</p>'
    )
    rows = [[name, format_number(value)] for name, value in counts.items()]
    rows += [[f"records in {split}", format_number(records)] for split, records in inspection.splits.items()]
    return _section("summary", "Summary", status, _table(["count", "value"], rows))


def _problems(inspection: Inspection) -> str:
    if inspection.verified:
        return ""
    items = "".join(f"<li><code>{escape(p.path)}</code>: {escape(p.message)}</li>" for p in inspection.problems)
    return _section("problems", "Problems", f"<ul>{items}</ul>")


def _schema(inspection: Inspection) -> str:
    rows = [
        [side, layout.encoding or "file", layout.format or "-", " x ".join(map(str, layout.shape)), layout.dtype,
         ", ".join(layout.band_names), "none" if layout.nodata is None else format_number(layout.nodata), str(count)]
        for side, layouts in inspection.schema.items()
        for layout, count in layouts
    ]
    header = ["side", "encoding", "format", "rows x cols x bands", "dtype", "bands", "nodata", "chips"]
    return _section("schema", "Schema", _table(header, rows, text_columns=6))


def _bands(inspection: Inspection) -> str:
    if not inspection.bands:
        return ""
    rows = [
        [b.name, format_number(b.count), format_number(b.mean), format_number(b.std), format_number(b.minimum),
         *(format_number(p) for p in (b.percentiles or (None,) * 3)), format_number(b.maximum)]
        for b in inspection.bands
    ]
    table = _table(["band", "valid pixels", "mean", "std", "min", "p2", "median", "p98", "max"], rows)
    figures = "".join(
        f"<figure>{histogram_svg(b.histogram, f'histogram of {b.name}')}"
        f"<figcaption>{escape(b.name)} (sample of {format_number(b.sample_size)} valid pixels)</figcaption></figure>"
        for b in inspection.bands
    )
    return _section("bands", "Bands", table, f'<div class="plots">{figures}</div>')


def _class_label(value: str, name: str | None) -> str:
    return f"{value} {name}" if name else value


def _classes(inspection: Inspection) -> str:
    if not inspection.classes:
        return ""

    def colour(value: str) -> str:
        return _colour(class_colour(int(value))) if value.lstrip("-").isdigit() else _BAR

    rows = [
        [c.value, c.name or "", format_number(c.pixels), f"{100 * c.frequency:.2f}%"] for c in inspection.classes
    ]
    chart = bar_chart_svg(
        [(_class_label(c.value, c.name), c.frequency, colour(c.value)) for c in inspection.classes], "class frequencies"
    )
    ignored = (
        f"<p>{format_number(inspection.ignored_pixels)} label pixels are nodata (ignored) and not counted.</p>"
        if inspection.ignored_pixels
        else ""
    )
    return _section("classes", "Class pixel frequencies", _table(["class", "name", "pixels", "share"], rows, 2), ignored, chart)


def _valid(inspection: Inspection) -> str:
    fraction = inspection.valid_fraction
    if fraction.mean is None:
        return ""
    text = (
        f"<p>Fraction of pixels valid in every band, per chip: min {fraction.minimum:.3f}, median {fraction.median:.3f}, "
        f"mean {fraction.mean:.3f}, max {fraction.maximum:.3f}.</p>"
    )
    return _section("valid", "Valid pixels", text, histogram_svg(fraction.histogram, "valid-pixel fraction per chip"))


def split_colours(inspection: Inspection) -> dict[str, str]:
    """Fill of each split on the map: in the order of `Inspection.splits`; ``chips`` for a chip folder."""
    groups = list(inspection.splits) or ["chips"]
    return {group: SPLIT_COLOURS[i % len(SPLIT_COLOURS)] for i, group in enumerate(groups)}


def _map(inspection: Inspection) -> str:
    colours = split_colours(inspection)
    footprints = []
    for chip in inspection.chips:
        if chip.key is None:
            continue
        try:
            ring = list(Tile.from_key(chip.key).geometry.exterior.coords)
        except TfchipsError:
            continue
        footprints.append((f"{chip.key} ({chip.split or 'chips'})", chip.split or "chips", ring))
    if not footprints:
        return _section("map", "Tile footprints", "<p>No chip is named by a tile key: nothing to map.</p>")
    legend = " ".join(
        f'<span class="swatch" style="background:{colour}"></span> {escape(group)}' for group, colour in colours.items()
    )
    return _section("map", "Tile footprints", f"<p>{legend}</p>", footprint_map_svg(footprints, colours))


def _shards(inspection: Inspection) -> str:
    if not inspection.shards:
        return ""
    rows = [
        [s.file, s.split, str(s.records), "-" if s.expected_records is None else str(s.expected_records),
         s.sha256 or "-", "ok" if s.ok else "FAILED"]
        for s in inspection.shards
    ]
    return _section("shards", "Shards", _table(["shard", "split", "records", "expected", "sha256", "check"], rows, 2))


def _preview(sheet: ContactSheet | None) -> str:
    if sheet is None:
        return ""
    data = base64.b64encode(sheet.png()).decode("ascii")
    width, height = sheet.image.size
    return _section(
        "preview", "Preview",
        f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="contact sheet of '
        f'{len(sheet.panels)} chips" style="max-width:100%;height:auto">',
    )


def render_report(inspection: Inspection, sheet: ContactSheet | None = None) -> str:
    """The HTML page of an inspection and its preview sheet."""
    kind = "chip folder" if inspection.kind == "chips" else "TFRecords"
    sections = (
        _summary(inspection), _problems(inspection), _schema(inspection), _bands(inspection), _classes(inspection),
        _valid(inspection), _map(inspection), _shards(inspection), _preview(sheet),
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>tfchips report: {escape(inspection.path)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>tfchips report</h1><p>{kind} <code>{escape(inspection.path)}</code></p>"
        + "".join(sections)
        + f"<footer><p>tfchips {escape(__version__)}</p></footer></body></html>\n"
    )


def report_dataset(
    path: str | os.PathLike,
    n: int = 16,
    bands: Sequence[str] | None = None,
    seed: int = 0,
    stretch: str = "sheet",
    on_progress: OnProgress = no_progress,
    panel: int = PANEL,
) -> tuple[str, Inspection]:
    """The report page of a chip folder or TFRecords (see `tfchips.inspect.open_dataset`), and its inspection.

    ``stretch`` is the preview sheet's: "sheet" or "chip" (see `tfchips.preview.contact_sheet`);
    ``on_progress`` hears of each chip or record read (see `tfchips.dataset_reader.OnProgress`);
    ``panel`` is the most pixels per chip side on the sheet.
    """
    inspection = inspect_dataset(path, on_progress=on_progress)
    sheet = (
        preview_dataset(path, n, bands, seed, panel, stretch=stretch, on_progress=on_progress)
        if inspection.counts.get("decoded")
        else None
    )
    return render_report(inspection, sheet), inspection


def write_report(html: str, out: str) -> None:
    """Write the page at ``out`` (a temporary name first, then renamed)."""
    storage.publish(out, html.encode("utf-8"))
