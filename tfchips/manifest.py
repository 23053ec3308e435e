"""What a chip folder holds: per-tile rows and a summary (ESRI metadata: `tfchips.esri`).

``manifest.json`` holds the job's summary: counts by status, band statistics and class
frequencies, a `ManifestSummary` that merges associatively, so that a Beam combiner
builds it without any worker holding every row. The per-tile rows go to JSON lines,
``manifest/rows-*.jsonl`` (one file locally, shards from Beam); `manifest_rows` reads
them, or the ``tiles`` list of a manifest written before rows moved out of it.
Statistics are `tfchips.statistics.ChipStatistics` per tile, merged over the job, so
that local jobs, Beam combiners and the TFRecord writer share one code path and a
resumed job can fold in tiles written by an earlier run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from tfchips import __version__, storage
from tfchips.chips import MANIFEST_NAME
from tfchips.errors import ChipError
from tfchips.redaction import redact_json
from tfchips.statistics import (
    ChipStatistics,
    chip_statistics,
    empty_statistics,
    statistics_json,
)

ROWS_FOLDER = "manifest"
ROWS_PREFIX = "rows"
ROWS_SUFFIX = ".jsonl"
STATUSES = ("written", "skipped", "failed")

@dataclass(frozen=True)
class ChipRecord:
    """The outcome for one tile: ``written``, ``skipped`` or ``failed``, and why.

    ``scale_offset`` is the (scale, offset) per band that STAC declared, when any band
    declared one: ``scaled`` says whether the chip's values have them applied.
    ``provenance`` is `tfchips.provenance.ChipProvenance.as_json` when the job wrote one.
    """

    key: str
    status: str
    reason: str | None = None
    scenes: tuple[str, ...] = ()
    valid_fraction: float | None = None
    labelled_fraction: float | None = None
    statistics: ChipStatistics | None = None
    resumed: bool = False
    scale_offset: tuple[tuple[float, float], ...] = ()
    scaled: bool = True
    provenance: dict | None = None

    def as_json(self) -> dict:
        entry = {"key": self.key, "status": self.status}
        if self.reason is not None:
            entry["reason"] = self.reason
        if self.status == "written":
            entry.update(
                scenes=list(self.scenes),
                valid_fraction=self.valid_fraction,
                labelled_fraction=self.labelled_fraction,
                class_counts=dict(self.statistics.class_counts),
                resumed=self.resumed,
            )
            if self.scale_offset:
                entry["scale_offset"] = {"applied": self.scaled, "bands": [list(pair) for pair in self.scale_offset]}
            if self.provenance is not None:
                entry["provenance"] = self.provenance
        elif self.valid_fraction is not None:
            entry["valid_fraction"] = self.valid_fraction
        return entry


def chip_record(
    key: str,
    image: np.ndarray,
    valid: np.ndarray,
    label: np.ndarray,
    scenes: tuple[str, ...],
    background: int,
    ignore_value: int | None,
    resumed: bool = False,
) -> ChipRecord:
    """Statistics of a written chip pair: image (bands, rows, cols), valid and label (rows, cols).

    Band moments cover the ``valid`` pixels; class counts leave out ``ignore_value``.
    """
    statistics = chip_statistics(
        np.moveaxis(image, 0, -1), None, label, ignore_value, valid=valid
    )
    return ChipRecord(
        key=key,
        status="written",
        scenes=tuple(scenes),
        valid_fraction=float(valid.mean()),
        labelled_fraction=labelled_fraction(label, background, ignore_value),
        statistics=statistics,
        resumed=resumed,
    )


def labelled_fraction(label: np.ndarray, background: int, ignore_value: int | None) -> float:
    """Share of label pixels that are neither ``background`` nor ``ignore_value``."""
    labelled = label != background
    if ignore_value is not None:
        labelled &= label != ignore_value
    return float(labelled.mean())


@dataclass(frozen=True)
class ManifestSummary:
    """Tile counts by status and the merged statistics of the written tiles; `merge` is associative."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    statistics: ChipStatistics | None = None

    @classmethod
    def of(cls, record: ChipRecord) -> ManifestSummary:
        """The summary of one tile's record."""
        counts = {status: int(record.status == status) for status in STATUSES}
        return cls(counts, record.statistics if record.status == "written" else None)

    def merge(self, other: ManifestSummary) -> ManifestSummary:
        if self.statistics is None or other.statistics is None:
            statistics = self.statistics or other.statistics
        else:
            statistics = self.statistics.merge(other.statistics)
        return ManifestSummary({s: self.counts[s] + other.counts[s] for s in STATUSES}, statistics)


def summarize(records: Iterable[ChipRecord]) -> ManifestSummary:
    """The `ManifestSummary` of ``records``, merged in key order (the same bits however tiles were scheduled)."""
    summary = ManifestSummary()
    for record in sorted(records, key=lambda r: r.key):
        summary = summary.merge(ManifestSummary.of(record))
    return summary


def dataset_statistics(records: list[ChipRecord], band_names: tuple[str, ...]) -> dict:
    """Per-band count, mean, std, min, max over valid pixels; class pixel counts and frequencies."""
    return summary_statistics(summarize(records), band_names)


def summary_statistics(summary: ManifestSummary, band_names: tuple[str, ...]) -> dict:
    """The manifest's ``statistics`` of ``summary``: `dataset_statistics` of its tiles."""
    merged = summary.statistics if summary.statistics is not None else empty_statistics(len(band_names))
    statistics = statistics_json(merged, band_names)
    total = sum(statistics["class_counts"].values())
    statistics["class_frequencies"] = {v: c / total for v, c in statistics["class_counts"].items()} if total else {}
    return statistics


def build_manifest(
    records: list[ChipRecord] | ManifestSummary,
    parameters: dict,
    band_names: tuple[str, ...],
    class_names: dict[int, str],
    ignore_value: int | None,
    fingerprint: dict | None = None,
    unfinished: int | None = None,
) -> dict:
    """The manifest of a create-samples run (see README, "Chip folders"), of its records or their summary.

    ``fingerprint`` is `tfchips.fingerprint.job_fingerprint` of the job. A run that
    did not finish (``unfinished`` tiles left, or None when it did) is marked
    ``complete: false`` and has no ``statistics``: its folder may hold chips no
    record describes, so readers compute them from the chips. The rows are not in
    it: `write_rows` writes them beside it.
    """
    summary = records if isinstance(records, ManifestSummary) else summarize(records)
    counts = dict(summary.counts)
    manifest = {
        "tfchips_version": __version__,
        "complete": unfinished is None,
        "parameters": parameters,
        "fingerprint": fingerprint,
        "band_names": list(band_names),
        "class_names": {str(k): v for k, v in sorted(class_names.items())},
        "ignore_value": ignore_value,
        "counts": counts,
        "statistics": summary_statistics(summary, band_names),
        "rows": f"{ROWS_FOLDER}/{ROWS_PREFIX}-*{ROWS_SUFFIX}",
    }
    if unfinished is not None:
        counts["unfinished"] = unfinished
        del manifest["statistics"]
    return manifest


def row_line(record: ChipRecord) -> str:
    """One manifest row, as a line of ``manifest/rows-*.jsonl`` (credentials masked)."""
    return json.dumps(redact_json(record.as_json()))


def rows_prefix(out: str) -> str:
    """The path of the rows files of ``out`` without their shard name and suffix."""
    return storage.join(out, ROWS_FOLDER, ROWS_PREFIX)


def rows_files(out: str) -> list[str]:
    """The rows files in ``out``, sorted."""
    return storage.glob(f"{rows_prefix(out)}-*{ROWS_SUFFIX}")


def write_rows(out: str, records: Iterable[ChipRecord]) -> None:
    """Publish the rows of ``records`` (sorted by key) as ``out/manifest/rows-00000-of-00001.jsonl``;
    rows files of an earlier run go."""
    path = f"{rows_prefix(out)}-00000-of-00001{ROWS_SUFFIX}"
    publish_text(path, "".join(row_line(r) + "\n" for r in sorted(records, key=lambda r: r.key)))
    remove_stale_rows(out, [path])


def remove_stale_rows(out: str, keep: list[str]) -> None:
    """Remove the rows files of ``out`` that are not in ``keep`` (an earlier run's)."""
    kept = {path.rsplit("/", 1)[-1] for path in keep}  # by name: ``keep`` may spell the folder otherwise
    for path in rows_files(out):
        if path.rsplit("/", 1)[-1] not in kept:
            storage.remove(path)


def manifest_rows(out: str, manifest: dict | None = None) -> Iterator[dict]:
    """The per-tile rows of the chip folder ``out``: its rows files, or the ``tiles`` list of
    ``manifest`` (read from ``out`` when not given) written before rows moved out of it.

    Raises `ChipError` naming a rows file that is not JSON lines.
    """
    if manifest is None:
        path = storage.join(out, MANIFEST_NAME)
        manifest = json.loads(storage.read(path)) if storage.exists(path) else {}
    if isinstance(manifest.get("tiles"), list):
        yield from manifest["tiles"]
        return
    for path in rows_files(out):
        for number, line in enumerate(storage.read(path).decode("utf-8").splitlines(), 1):
            try:
                yield json.loads(line)
            except ValueError as error:
                raise ChipError(f"{path}: line {number} is not a manifest row ({error})") from None


def publish_text(path: str, text: str) -> None:
    storage.publish(path, text.encode("utf-8"))


def write_manifest(out: str, manifest: dict) -> None:
    publish_text(storage.join(out, MANIFEST_NAME), json.dumps(redact_json(manifest), indent=1))


# A fixed palette so that a class keeps its colour across datasets and viewers.
PALETTE = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)


def class_colour(value: int) -> tuple[int, int, int]:
    """RGB colour of a class value, from `PALETTE` (cycled past its end)."""
    return PALETTE[value % len(PALETTE)]
