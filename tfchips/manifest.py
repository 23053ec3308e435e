"""What a chip folder holds: per-tile records and dataset statistics (ESRI metadata: `tfchips.esri`).

Statistics are `tfchips.statistics.ChipStatistics` per tile, merged over the
job, so that local jobs, Beam combiners and the TFRecord writer share one code
path and a resumed job can fold in tiles written by an earlier run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tfchips import __version__, storage
from tfchips.chips import MANIFEST_NAME
from tfchips.redaction import redact_json
from tfchips.statistics import (
    ChipStatistics,
    chip_statistics,
    empty_statistics,
    statistics_json,
)

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


def dataset_statistics(records: list[ChipRecord], band_names: tuple[str, ...]) -> dict:
    """Per-band count, mean, std, min, max over valid pixels; class pixel counts and frequencies."""
    merged = None
    # Merging in key order makes the figures the same bits however tiles were scheduled.
    for record in sorted(records, key=lambda r: r.key):
        if record.status == "written":
            merged = record.statistics if merged is None else merged.merge(record.statistics)
    if merged is None:
        merged = empty_statistics(len(band_names))
    summary = statistics_json(merged, band_names)
    total = sum(summary["class_counts"].values())
    summary["class_frequencies"] = {v: c / total for v, c in summary["class_counts"].items()} if total else {}
    return summary


def build_manifest(
    records: list[ChipRecord],
    parameters: dict,
    band_names: tuple[str, ...],
    class_names: dict[int, str],
    ignore_value: int | None,
    fingerprint: dict | None = None,
    unfinished: int | None = None,
) -> dict:
    """The manifest of a create-samples run (see README, "Chip folders").

    ``fingerprint`` is `tfchips.fingerprint.job_fingerprint` of the job. A run that
    did not finish (``unfinished`` tiles left, or None when it did) is marked
    ``complete: false`` and has no ``statistics``: its folder may hold chips no
    record describes, so readers compute them from the chips.
    """
    counts = {status: sum(r.status == status for r in records) for status in ("written", "skipped", "failed")}
    manifest = {
        "tfchips_version": __version__,
        "complete": unfinished is None,
        "parameters": parameters,
        "fingerprint": fingerprint,
        "band_names": list(band_names),
        "class_names": {str(k): v for k, v in sorted(class_names.items())},
        "ignore_value": ignore_value,
        "counts": counts,
        "statistics": dataset_statistics(records, band_names),
        "tiles": [r.as_json() for r in sorted(records, key=lambda r: r.key)],
    }
    if unfinished is not None:
        counts["unfinished"] = unfinished
        del manifest["statistics"]
    return manifest


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
