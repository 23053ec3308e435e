"""``tfchips inspect``: counts, schema, statistics and an integrity check of chips or TFRecords."""

from __future__ import annotations

import json

import click

from tfchips.cli.main import summary


def _table(header: list[str], rows: list[list[str]], right: int = 1) -> list[str]:
    """Aligned columns; every column from index ``right`` on is right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < right else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(row) for row in rows)]


def format_inspection(inspection) -> str:
    """The human-readable report of an `Inspection`."""
    from tfchips.inspect import format_number as number

    unit = "chips" if inspection.kind == "chips" else "records"
    counts = inspection.counts
    if inspection.kind == "chips":
        lines = [f"chip folder {inspection.path}: {counts['chips']} chip pairs, {counts['unpaired']} unpaired files"]
    else:
        lines = [f"TFRecords {inspection.path}: {counts['records']} records in {counts['shards']} shards"]
        for split, records in inspection.splits.items():
            lines.append(f"  {split}: {records} records")
    lines.append("")
    for side, layouts in inspection.schema.items():
        for layout, count in layouts:
            lines.append(f"{side:<6} {layout.describe()}  ({count} {unit})")
    if inspection.bands:
        lines += ["", *_table(
            ["band", "pixels", "mean", "std", "min", "p2", "median", "p98", "max"],
            [
                [b.name, number(b.count), number(b.mean), number(b.std), number(b.minimum),
                 *(number(p) for p in (b.percentiles or (None,) * 3)), number(b.maximum)]
                for b in inspection.bands
            ],
        )]
    if inspection.classes:
        lines += ["", *_table(
            ["class", "name", "pixels", "share"],
            [[c.value, c.name or "", number(c.pixels), f"{100 * c.frequency:.2f}%"] for c in inspection.classes],
            right=2,
        )]
        if inspection.ignored_pixels:
            lines.append(f"ignored (label nodata): {number(inspection.ignored_pixels)} pixels")
    fraction = inspection.valid_fraction
    if fraction.mean is not None:
        bins = fraction.histogram
        lines += [
            "",
            (
                f"valid-pixel fraction per {unit[:-1]}: min {fraction.minimum:.3f}, median {fraction.median:.3f}, "
                f"mean {fraction.mean:.3f}, max {fraction.maximum:.3f}"
            ),
            "  " + "  ".join(
                f"{low:.1f}-{high:.1f}: {count}" for low, high, count in zip(bins.edges, bins.edges[1:], bins.counts) if count
            ),
        ]
    if inspection.shards:
        lines += ["", *_table(
            ["shard", "split", "records", "expected", "sha256", "check"],
            [
                [s.file, s.split, str(s.records), "-" if s.expected_records is None else str(s.expected_records),
                 (s.sha256 or "-")[:12], "ok" if s.ok else "FAILED"]
                for s in inspection.shards
            ],
            right=2,
        )]
    lines.append("")
    if inspection.verified:
        lines.append(f"verified: {counts['decoded']} {unit}, no problem")
    else:
        lines.append(f"{len(inspection.problems)} problems:")
        lines += [f"  {p.path}: {p.message}" for p in inspection.problems]
        lines.append("NOT verified")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON document.")
def command(path: str, as_json: bool) -> None:
    """Count, describe and verify the chip folder, TFRecord folder or shards (glob pattern) at PATH.

    Every record is checked against dataset.json (encoding, shape, dtype, bands), every
    shard's record count and SHA-256 too. Exits 0 when everything verified, 1 when a
    problem was found (each is named) or dataset.json cannot be read (the field is named).
    """
    from tfchips.console import progress_bars
    from tfchips.inspect import inspect_dataset

    with progress_bars() as on_progress:
        inspection = inspect_dataset(path, on_progress=on_progress)
    click.echo(json.dumps(inspection.as_json(), indent=1) if as_json else format_inspection(inspection))
    counts = inspection.counts
    checked = f"{counts.get('decoded', 0)} {'chips' if inspection.kind == 'chips' else 'records'} decoded"
    summary(f"{checked}, verified" if inspection.verified else f"{checked}, {len(inspection.problems)} problems")
    if not inspection.verified:
        raise SystemExit(1)
