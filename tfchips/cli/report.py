"""``tfchips report``: one self-contained HTML page about a chip folder or TFRecords."""

from __future__ import annotations

import click

from tfchips import options
from tfchips.cli.main import summary
from tfchips.cli.preview import preview_options


@click.command("report")
@click.argument("path")
@options.out_option("HTML file to write; a file there is replaced.", file=True)
@preview_options
def command(path: str, out: str, n: int, bands: tuple[str, ...] | None, seed: int, panel: int) -> None:
    """Write an HTML report on the chip folder, TFRecord folder or shards (glob pattern) at PATH.

    The page holds the figures of `tfchips inspect`, plots (class frequencies, band
    histograms, valid pixels, a map of tile footprints by split) and a preview sheet;
    it needs no server and loads nothing from elsewhere. Problems found are listed on
    the page and on standard error; the exit code is 0 once the page is written.
    """
    from tfchips.console import progress_bars
    from tfchips.report import report_dataset, write_report

    with progress_bars() as on_progress:
        html, inspection = report_dataset(path, n, bands, seed, panel=panel, on_progress=on_progress)
    write_report(html, out)
    for problem in inspection.problems:
        click.echo(f"problem: {problem.path}: {problem.message}", err=True)
    status = "verified" if inspection.verified else f"{len(inspection.problems)} problems"
    summary(f"wrote {out} ({status})")
